//! Writing files so that a reader never sees half of one.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory, flushed to disk
/// and then renamed over the target: the old file stays intact until the new one is whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_writable_target(path)?;
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let mut temp = new_temp(dir, &format!(".{name}."), ".tmp")?;
    // Through the plain file, so that an error is the system's own, named once by the file the
    // user asked for: tempfile's writer adds "at path <the hidden temporary>" to it.
    temp.as_file_mut()
        .write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write", path, e))?;
    temp.persist(path)
        .map_err(|e| Error::io("cannot replace", path, e.error))?;
    Ok(())
}

/// Reads a whole regular file of at most `max` bytes (`what` names it in the refusal). What
/// is not a regular file (a pipe, a device such as /dev/zero, a directory) is refused before
/// it is opened for reading, so nothing waits on a pipe's writer or reads an endless device;
/// the size comes from the file's metadata before a byte is read, and the read stops past
/// `max` should the file grow meanwhile. Memory: the file's own size, once.
pub fn read_regular(path: &Path, max: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let not_regular = || {
        Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, pipe or device)",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = open_without_waiting(path)?;
    // Asked again of the open file: the path may have been swapped in between.
    let size = file.metadata()?;
    if !size.is_file() {
        return Err(not_regular());
    }
    let too_large = || {
        Error::new(
            ErrorKind::FileTooLarge,
            format!("larger than the {} MiB {what} can be", max >> 20),
        )
    };
    if size.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(size.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens for reading without blocking: on Linux a FIFO swapped in after the check would
/// otherwise hold `open` until some writer appears.
fn open_without_waiting(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// A hidden temporary file in `dir`, readable like any file the user makes (tempfile's own
/// default, 0600, would carry over to the renamed result). Leftovers of killed processes with
/// the same prefix are removed first.
pub fn new_temp(dir: &Path, prefix: &str, suffix: &str) -> Result<tempfile::NamedTempFile> {
    remove_stale(dir, prefix, suffix);
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    builder
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))
}

/// Fails early, before hours of training, if `path` can never be written as a file.
pub fn check_writable_target(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::io(
            "cannot write",
            path,
            std::io::Error::other("it is a directory"),
        ));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::io(
            "cannot write into",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    Ok(())
}

/// A temporary this old was left by a killed process: a live writer touches its file far
/// more often.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// Deletes leftovers `<prefix>*<suffix>` in `dir` from a process that was killed mid-write.
/// Best effort: what cannot be listed or removed is left alone.
pub fn remove_stale(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_AFTER));
        if name.starts_with(prefix) && name.ends_with(suffix) && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn replaces_whole_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".model.bin.abc123.tmp");
        let fresh = dir.path().join(".model.bin.def456.tmp");
        let other = dir.path().join("notes.tmp");
        for p in [&stale, &fresh, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for p in [&stale, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        }
        write_atomic(&dir.path().join("model.bin"), b"m").unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists() && other.exists());
    }

    #[test]
    fn bounded_reads_refuse_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_regular(&path, 100, "a model").unwrap().len(), 100);
        let err = read_regular(&path, 99, "a model").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("a model can be"), "{err}");
        // A sparse file is refused from its size, not read.
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(300 << 20).unwrap();
        let err = read_regular(&dir.path().join("sparse"), 8 << 20, "a model").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        for special in [Path::new("/dev/zero"), dir.path()] {
            let err = read_regular(special, 8 << 20, "a model").unwrap_err();
            assert!(err.to_string().starts_with("not a regular file"), "{err}");
        }
    }

    #[test]
    fn refuses_directories_and_missing_parents() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomic(dir.path(), b"x").is_err());
        let missing = dir.path().join("nope").join("model.bin");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(err.to_string().contains("no such directory"), "{err}");
    }
}
