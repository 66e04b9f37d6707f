//! Typed errors and the exit codes they map to.

use std::path::PathBuf;

/// Exit code for a runtime failure (bad data, bad model file, network, I/O).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for a usage error (bad flag, impossible option combination). clap uses it too.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when interrupted by Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can end a command. Each variant renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file that is not a valid MNIST IDX file.
    #[error("{}: {fault}", path.display())]
    Idx { path: PathBuf, fault: IdxFault },

    /// No mirror delivered a valid copy of a data file: each mirror's reason, then what to do.
    #[error("{}", download_message(file, dir, tried))]
    Download {
        file: String,
        dir: PathBuf,
        /// "URL: reason" per mirror tried.
        tried: Vec<String>,
    },

    /// A model file that cannot be read or does not fit this model.
    #[error("cannot load model {}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },

    /// A file-system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The options do not make sense together, or ask for something this build lacks.
    #[error("{0}")]
    Usage(String),

    /// `--backend wgpu` found no GPU driver.
    #[error(
        "--backend wgpu: no GPU adapter found: no Vulkan, Metal, DX12 or OpenGL driver answered \
         (without a GPU on Debian/Ubuntu, `apt install mesa-vulkan-drivers` gives a slow \
         software one; or use --backend cpu)"
    )]
    NoGpu,

    /// `--backend cpu-bf16` on a processor without AVX512_BF16.
    #[error(
        "--backend cpu-bf16: this processor has no AVX512_BF16 instructions (bf16 dot products); \
         use --backend cpu"
    )]
    NoBf16,

    /// burn's optimizer state could not be read from or handed to burn's engine.
    #[error("burn's optimizer state: {0}")]
    OptimizerState(String),

    /// A model or checkpoint could not be turned into bytes.
    #[error("cannot serialise the {what}: {reason}")]
    Serialise { what: &'static str, reason: String },

    /// The HTTP client (downloads) or the server (`serve`) could not start or failed.
    #[error("{what}: {reason}")]
    Network { what: &'static str, reason: String },

    /// Training diverged: the loss stopped being a finite number.
    #[error("training diverged: loss is {value} at epoch {epoch}, step {step}")]
    Diverged {
        epoch: usize,
        step: usize,
        value: f64,
    },

    /// Some inputs failed and each was already reported; this sums up.
    #[error("{0}")]
    Reported(String),

    /// Stopped by Ctrl-C; the message says what was kept and how to go on.
    #[error("{0}")]
    Interrupted(String),
}

fn download_message(file: &str, dir: &std::path::Path, tried: &[String]) -> String {
    let mut text = format!("could not download {file} into {}; tried:", dir.display());
    if tried.is_empty() {
        text.push_str(" no mirror (give one with --mirror)");
    }
    for reason in tried {
        text.push_str(&format!("\n  {reason}"));
    }
    text.push_str(
        "\nwithout network: --data-dir DIR (or MNIST_DATA_DIR=DIR) for a directory holding the \
         four MNIST .gz files,\nor --mirror file:///DIR/; `mnist-cnn download --data-dir DIR` \
         fetches and checks them where there is network",
    );
    text
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Interrupted(_) => EXIT_INTERRUPTED,
            _ => EXIT_FAILURE,
        }
    }

    /// Writing a command's output failed (a closed pipe, a full disk behind a redirect).
    pub fn stdout(source: std::io::Error) -> Self {
        Error::io("cannot write to", "stdout", source)
    }

    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// What is wrong with an IDX file; the file name is added by [`Error::Idx`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdxFault {
    #[error("file is empty")]
    Empty,
    #[error("header is truncated ({0} bytes, expected {1})")]
    ShortHeader(usize, usize),
    #[error("bad magic number {found} (expected {expected}); not an IDX {kind} file")]
    Magic {
        found: u32,
        expected: u32,
        kind: &'static str,
    },
    #[error("images are {rows}x{cols}, expected 28x28")]
    ImageSize { rows: u32, cols: u32 },
    #[error("payload is truncated: {found} bytes, header declares {expected}")]
    Truncated { found: u64, expected: u64 },
    #[error("payload is longer than the header declares ({expected} bytes)")]
    TrailingBytes { expected: u64 },
    #[error("label {label} at index {index} is not a digit 0..9")]
    Label { index: usize, label: u8 },
    #[error("{images} images but {labels} labels")]
    CountMismatch { images: usize, labels: usize },
    #[error("header declares {0} items, more than this program accepts")]
    TooLarge(u64),
    #[error("gzip stream is corrupt: {0}")]
    Gzip(String),
    #[error("read failed: {0}")]
    Read(String),
}
