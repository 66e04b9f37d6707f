//! Writing files so that a reader never sees half of one.

use std::io::Write;
use std::path::Path;

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
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write", temp.path().to_path_buf(), e))?;
    temp.persist(path)
        .map_err(|e| Error::io("cannot replace", path, e.error))?;
    Ok(())
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

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
