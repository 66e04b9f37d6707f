//! `mnist-cnn predict MODEL IMAGE...`: which digit each picture shows, as lines or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::digits::{self, Guess, Unreadable, classify};
use crate::engine::{self, Backend};
use crate::error::{Error, Result};
use crate::network::SIDE;

/// What `predict` is asked to do.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub model: PathBuf,
    /// Pictures of one digit each, or IDX image files (with `index`).
    pub images: Vec<PathBuf>,
    /// Which image of an IDX file.
    pub index: Option<usize>,
    /// One JSON array instead of a line per image.
    pub json: bool,
    /// Write the 28x28 each image became into this directory.
    pub show: Option<PathBuf>,
    pub backend: Backend,
}

/// Where `--show` writes what the model saw for input number `i`.
fn shown_path(dir: &Path, input: &Path, i: usize) -> PathBuf {
    let stem = input.file_stem().unwrap_or_default().to_string_lossy();
    dir.join(format!("{i:03}-{stem}.png"))
}

/// Each input prepared, or the reason it could not be.
type Prepared<'a> = (&'a Path, std::result::Result<Vec<u8>, Unreadable>);

/// Reads and prepares every input, writing what each became into `show` if asked.
fn prepare_all(opts: &PredictOptions) -> Result<Vec<Prepared<'_>>> {
    if let Some(dir) = &opts.show {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    }
    let mut inputs = Vec::with_capacity(opts.images.len());
    for (i, path) in opts.images.iter().enumerate() {
        let pixels = digits::load(path, opts.index);
        if let (Some(dir), Ok(pixels)) = (&opts.show, &pixels) {
            let side = SIDE as u32;
            let picture = GrayImage::from_raw(side, side, pixels.clone()).expect("28x28");
            let out = shown_path(dir, path, i);
            crate::charts::save_png(&out, &picture, image::ExtendedColorType::L8)?;
        }
        inputs.push((path.as_path(), pixels));
    }
    Ok(inputs)
}

/// `mnist-cnn predict MODEL IMAGE...`: the answers go to `out`, unreadable inputs to stderr.
pub fn run(opts: &PredictOptions, out: &mut dyn Write) -> Result<()> {
    opts.backend.available()?;
    let net = engine::forward(opts.backend, crate::formats::read_params(&opts.model)?)?;
    let (mut read, mut failures) = (Vec::new(), Vec::new());
    for (path, prepared) in prepare_all(opts)? {
        match prepared {
            Ok(pixels) => read.push((path, pixels)),
            Err(reason) => failures.push((path, reason)),
        }
    }
    let (paths, images): (Vec<&Path>, Vec<Vec<u8>>) = read.into_iter().unzip();
    let guesses = classify(net.as_ref(), &images);
    let text = if opts.json {
        json_report(&paths, &guesses, &failures)
    } else {
        text_report(&paths, &guesses)
    };
    out.write_all(text.as_bytes()).map_err(Error::stdout)?;
    match failures.as_slice() {
        [] => Ok(()),
        // A single input's failure is the whole story: one line.
        [(path, reason)] if opts.images.len() == 1 => {
            Err(Error::Reported(format!("{}: {reason}", path.display())))
        }
        _ => {
            for (path, reason) in &failures {
                let line = format!("{}: {reason}", path.display());
                eprintln!("error: {}", crate::escape::escaped(&line));
            }
            Err(Error::Reported(format!(
                "{} of {} inputs could not be read",
                failures.len(),
                opts.images.len()
            )))
        }
    }
}

/// A line per classified input.
fn text_report(paths: &[&Path], guesses: &[Guess]) -> String {
    let mut text = String::new();
    for (path, g) in paths.iter().zip(guesses) {
        text.push_str(&format!(
            "{}: {} ({:.1}%), runner-up {} ({:.1}%)\n",
            crate::escape::escaped(&path.display().to_string()),
            g.digit,
            100.0 * g.probability,
            g.runner_up,
            100.0 * g.runner_up_probability
        ));
    }
    text
}

/// One JSON array: the classified inputs, then the failed ones with their reasons.
fn json_report(paths: &[&Path], guesses: &[Guess], failures: &[(&Path, Unreadable)]) -> String {
    let mut rows: Vec<serde_json::Value> = paths
        .iter()
        .zip(guesses)
        .map(|(path, g)| {
            serde_json::json!({
                "file": path.display().to_string(),
                "digit": g.digit,
                "probability": g.probability,
                "runner_up": g.runner_up,
                "runner_up_probability": g.runner_up_probability,
            })
        })
        .collect();
    rows.extend(failures.iter().map(
        |(path, reason)| serde_json::json!({ "file": path.display().to_string(), "error": reason.to_string() }),
    ));
    format!("{}\n", serde_json::Value::Array(rows))
}
