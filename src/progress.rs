//! Keras 2's training log: the progress bar line and the per-epoch summary.
//!
//! [`Progbar`] is pure: it turns counts, elapsed seconds and metric values into the strings
//! Keras 2.0's `Progbar` prints, so tests can pin them. [`EpochPrinter`] decides what to write
//! where (in place on a terminal, one line per epoch otherwise).

use std::io::Write;
use std::time::{Duration, Instant};

/// One epoch's progress as Keras renders it: samples done of the target, and the values to
/// show (means kept elsewhere, see [`crate::metrics::RunningMeans`]).
#[derive(Debug, Clone)]
pub struct Progbar {
    target: usize,
    seen: usize,
    values: Vec<(&'static str, f64)>,
}

/// Width of the bar between the brackets.
const BAR_WIDTH: usize = 30;

impl Progbar {
    pub fn new(target: usize) -> Self {
        Progbar {
            target,
            seen: 0,
            values: Vec::new(),
        }
    }

    /// `current` samples are now done, and these are the values to show, in order.
    pub fn update(&mut self, current: usize, values: &[(&'static str, f64)]) {
        self.seen = current;
        self.values = values.to_vec();
    }

    /// `  128/60000 [>.....] - ETA: 446s - loss: 0.3450` while running, and
    /// `60000/60000 [======] - 446s - loss: ...` once done (verbose 1).
    pub fn bar_line(&self, elapsed: Duration) -> String {
        let digits = self.target.max(1).to_string().len();
        let mut line = format!(
            "{:>digits$}/{:>digits$} [",
            self.seen,
            self.target,
            digits = digits
        );
        let done = self.seen as f64 / self.target.max(1) as f64;
        let filled = ((BAR_WIDTH as f64 * done) as usize).min(BAR_WIDTH);
        if filled > 0 {
            line.push_str(&"=".repeat(filled - 1));
            line.push(if self.seen < self.target { '>' } else { '=' });
        }
        line.push_str(&".".repeat(BAR_WIDTH - filled));
        line.push(']');
        if self.seen < self.target {
            let per_sample = if self.seen > 0 {
                elapsed.as_secs_f64() / self.seen as f64
            } else {
                0.0
            };
            let eta = per_sample * (self.target - self.seen) as f64;
            line.push_str(&format!(" - ETA: {}s", eta as u64));
        } else {
            line.push_str(&format!(" - {}s", elapsed.as_secs()));
        }
        line.push_str(&self.values());
        line
    }

    /// `446s - loss: 0.3450 - acc: ...`, the one line per epoch of verbose 2.
    pub fn summary_line(&self, elapsed: Duration) -> String {
        format!("{}s{}", elapsed.as_secs(), self.values())
    }

    fn values(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.values {
            out.push_str(&format!(" - {name}: {}", format_value(*value)));
        }
        out
    }
}

/// Python's `'%.4f'` above 1e-3 in magnitude and `'%.4e'` (e.g. `1.2340e-04`) below, as Keras.
pub fn format_value(value: f64) -> String {
    if value.abs() > 1e-3 || !value.is_finite() {
        return format!("{value:.4}");
    }
    let text = format!("{value:.4e}");
    // Rust writes `1.2340e-4`; Python writes a sign and at least two exponent digits.
    let (mantissa, exponent) = text.split_once('e').expect("exponent form");
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exponent),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

/// How much to print, as Keras's `verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Silent,
    Bar,
    EpochLine,
}

impl Verbosity {
    pub fn from_level(level: u8) -> Self {
        match level {
            0 => Verbosity::Silent,
            1 => Verbosity::Bar,
            _ => Verbosity::EpochLine,
        }
    }
}

/// Writes one epoch's progress: in place on a terminal, else only the final line.
pub struct EpochPrinter<W: Write> {
    out: W,
    verbosity: Verbosity,
    interactive: bool,
    start: Instant,
    last_draw: Option<Instant>,
    drawn_width: usize,
}

/// Keras redraws at most every 50 ms.
const REDRAW: Duration = Duration::from_millis(50);

impl<W: Write> EpochPrinter<W> {
    pub fn new(out: W, verbosity: Verbosity, interactive: bool) -> Self {
        EpochPrinter {
            out,
            verbosity,
            interactive,
            start: Instant::now(),
            last_draw: None,
            drawn_width: 0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// After a batch: redraw the running line on a terminal (verbose 1 only).
    pub fn batch(&mut self, bar: &Progbar) -> std::io::Result<()> {
        if self.verbosity != Verbosity::Bar || !self.interactive {
            return Ok(());
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now - t < REDRAW) {
            return Ok(());
        }
        self.last_draw = Some(now);
        let line = bar.bar_line(self.elapsed());
        self.redraw(&line)?;
        self.out.flush()
    }

    /// At the end of the epoch, with validation values already added to `bar`.
    pub fn finish(&mut self, bar: &Progbar) -> std::io::Result<()> {
        match self.verbosity {
            Verbosity::Silent => return Ok(()),
            Verbosity::Bar => {
                let line = bar.bar_line(self.elapsed());
                if self.interactive {
                    self.redraw(&line)?;
                    writeln!(self.out)?;
                } else {
                    writeln!(self.out, "{line}")?;
                }
            }
            Verbosity::EpochLine => writeln!(self.out, "{}", bar.summary_line(self.elapsed()))?,
        }
        self.out.flush()
    }

    /// When the epoch stops early: end a bar drawn in place, so that what follows (the
    /// interruption message on stderr) starts on its own line.
    pub fn abandon(&mut self) -> std::io::Result<()> {
        if self.drawn_width > 0 {
            writeln!(self.out)?;
            self.drawn_width = 0;
        }
        self.out.flush()
    }

    fn redraw(&mut self, line: &str) -> std::io::Result<()> {
        // Pad over a longer previous line so no stale characters stay on screen.
        let pad = self.drawn_width.saturating_sub(line.len());
        write!(self.out, "\r{line}{}", " ".repeat(pad))?;
        self.drawn_width = line.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn final_line_is_keras_2() {
        let mut bar = Progbar::new(60000);
        bar.update(
            60000,
            &[
                ("loss", 0.3450),
                ("acc", 0.8933),
                ("val_loss", 0.0865),
                ("val_acc", 0.9735),
            ],
        );
        assert_eq!(
            bar.bar_line(Duration::from_millis(446_900)),
            "60000/60000 [==============================] - 446s - loss: 0.3450 - acc: 0.8933 - val_loss: 0.0865 - val_acc: 0.9735"
        );
        assert_eq!(
            bar.summary_line(secs(446)),
            "446s - loss: 0.3450 - acc: 0.8933 - val_loss: 0.0865 - val_acc: 0.9735"
        );
    }

    #[test]
    fn running_line_has_head_and_eta() {
        let mut bar = Progbar::new(60000);
        bar.update(128, &[("loss", 2.3), ("acc", 0.1)]);
        // 30 * 128/60000 rounds down to 0: no head yet, as in Keras.
        assert_eq!(
            bar.bar_line(secs(1)),
            "  128/60000 [..............................] - ETA: 467s - loss: 2.3000 - acc: 0.1000"
        );
        bar.update(30080, &[("loss", 0.5), ("acc", 0.9)]);
        let line = bar.bar_line(secs(200));
        assert!(
            line.starts_with("30080/60000 [==============>...............] - ETA: 198s - loss: "),
            "{line}"
        );
    }

    #[test]
    fn small_values_use_python_exponent_form() {
        assert_eq!(format_value(0.0865), "0.0865");
        assert_eq!(format_value(0.00012345), "1.2345e-04");
        assert_eq!(format_value(0.0), "0.0000e+00");
        assert_eq!(format_value(-2.5e-12), "-2.5000e-12");
    }

    #[test]
    fn non_terminal_output_is_one_plain_line_per_epoch() {
        let mut bar = Progbar::new(256);
        let mut buf = Vec::new();
        {
            let mut printer = EpochPrinter::new(&mut buf, Verbosity::Bar, false);
            bar.update(128, &[("loss", 1.0)]);
            printer.batch(&bar).unwrap();
            bar.update(256, &[("loss", 1.0)]);
            printer.finish(&bar).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.contains('\r') && !text.contains('\u{8}'), "{text:?}");
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("256/256 [==============================] - 0s - loss: 1.0000"));
    }

    #[test]
    fn terminal_output_redraws_in_place() {
        let mut bar = Progbar::new(256);
        let mut buf = Vec::new();
        {
            let mut printer = EpochPrinter::new(&mut buf, Verbosity::Bar, true);
            bar.update(128, &[("loss", 1.0)]);
            printer.batch(&bar).unwrap();
            bar.update(256, &[("loss", 1.0)]);
            printer.finish(&bar).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("\r128/256 [==============>...............] - ETA: "));
        assert!(
            text.ends_with("\n") && text.matches('\r').count() == 2,
            "{text:?}"
        );
    }

    #[test]
    fn an_abandoned_bar_ends_its_line_and_only_a_drawn_one() {
        let mut bar = Progbar::new(256);
        let mut buf = Vec::new();
        {
            let mut printer = EpochPrinter::new(&mut buf, Verbosity::Bar, true);
            bar.update(128, &[("loss", 1.0)]);
            printer.batch(&bar).unwrap();
            printer.abandon().unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("\r128/256 [") && text.ends_with("\n"),
            "{text:?}"
        );
        let mut buf = Vec::new();
        EpochPrinter::new(&mut buf, Verbosity::Bar, false)
            .abandon()
            .unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    fn verbose_two_and_zero() {
        let mut bar = Progbar::new(10);
        bar.update(10, &[("loss", 0.5)]);
        let mut buf = Vec::new();
        EpochPrinter::new(&mut buf, Verbosity::EpochLine, true)
            .finish(&bar)
            .unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "0s - loss: 0.5000\n");
        let mut buf = Vec::new();
        EpochPrinter::new(&mut buf, Verbosity::Silent, true)
            .finish(&bar)
            .unwrap();
        assert!(buf.is_empty());
    }
}
