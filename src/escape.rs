//! Text from a file, made safe to print: a model's tensor names, its metadata and what a
//! decoder says about a stranger's bytes can hold escape sequences that clear, retitle or
//! rewrite a terminal. Everything such text reaches the terminal through goes through here.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) and bidirectional override written as
/// a Rust escape (`\u{1b}`, `\n`), so it prints as one inert line.
pub fn escaped(text: &str) -> Cow<'_, str> {
    escape_but(text, None)
}

/// [`escaped`], keeping line breaks: for messages that are several lines by design (a failed
/// download lists each mirror on its own line).
pub fn escaped_keeping_lines(text: &str) -> Cow<'_, str> {
    escape_but(text, Some('\n'))
}

fn escape_but(text: &str, keep: Option<char>) -> Cow<'_, str> {
    let unsafe_char = |c: char| Some(c) != keep && is_unsafe(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Control characters, and the bidirectional controls that make a line read other than it is
/// (U+202A–U+202E, U+2066–U+2069).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert!(matches!(escaped("conv1.weight"), Cow::Borrowed(_)));
        assert_eq!(escaped("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escaped("x\ny\r\t\u{7}"), "x\\ny\\r\\t\\u{7}");
        assert_eq!(escaped("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(escaped("abc\u{202e}fed"), "abc\\u{202e}fed");
        // Printable text outside ASCII stays as it is.
        assert_eq!(escaped("5→3 é"), "5→3 é");
        assert_eq!(
            escaped_keeping_lines("one\n  \u{1b}]0;two"),
            "one\n  \\u{1b}]0;two"
        );
        for text in ["\u{1b}]0;title\u{7}", "\u{0}\u{1f}\u{85}"] {
            assert!(!escaped(text).chars().any(|c| c.is_control()));
        }
    }
}
