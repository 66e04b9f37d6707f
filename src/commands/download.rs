//! The `download` command: fill a data directory with verified MNIST files, or check what one
//! holds without any network — for preparing an offline machine or a CI cache.

use std::io::Write;

use crate::data::{DataSource, FILES, FileStatus};
use crate::error::{Error, Result};

/// What `download` is asked to do.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub data: DataSource,
    /// Only report what is there; no network.
    pub check: bool,
}

/// `mnist-cnn download`: a line per file to `out`; an error when any file is not usable.
pub fn run(opts: &DownloadOptions, out: &mut dyn Write) -> Result<()> {
    let report: Vec<(String, FileStatus)> = if opts.check {
        let checked = opts.data.check().into_iter();
        checked
            .map(|(path, status)| (path.display().to_string(), status))
            .collect()
    } else {
        let fetched = opts.data.fill()?.into_iter();
        fetched
            .map(|(path, status, new)| {
                let mut name = path.display().to_string();
                if new {
                    name.push_str(" (downloaded)");
                }
                (name, status)
            })
            .collect()
    };
    for ((name, status), file) in report.iter().zip(&FILES) {
        writeln!(out, "{name}: {}", status.describe(file.kind)).map_err(Error::stdout)?;
    }
    let unusable = report.iter().filter(|(_, s)| !s.is_usable()).count();
    if unusable == 0 {
        return Ok(());
    }
    let dir = opts.data.dir.display();
    Err(Error::Reported(if opts.check {
        format!(
            "{unusable} of {} files in {dir} are missing or corrupt; `mnist-cnn download --data-dir {dir}` fetches what is missing",
            FILES.len()
        )
    } else {
        format!(
            "{unusable} of {} files in {dir} are corrupt; remove them and run again",
            FILES.len()
        )
    }))
}
