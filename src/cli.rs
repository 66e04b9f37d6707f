//! Command-line interface. The doc comments here are the `--help` text.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::commands::download::DownloadOptions;
use crate::commands::eval::EvalOptions;
use crate::commands::export::ExportOptions;
use crate::commands::predict::PredictOptions;
use crate::commands::serve::ServeOptions;
use crate::commands::train::TrainOptions;
use crate::data::{DEFAULT_MIRRORS, DataSource, Fetcher};
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::formats::Format;
use crate::progress::Verbosity;
use crate::settings::{Given, MAX_BATCH, MAX_EPOCHS, Settings};

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 runtime failure (bad data or model file, network, I/O),
2 usage error, 130 interrupted.

Examples:
  mnist-cnn train                        download MNIST into ./data, train 12 epochs, save model.bin
  mnist-cnn train --data-dir ~/mnist     use (or fill) another data directory
  mnist-cnn train --mirror file:///srv/mnist/   take the files from a local mirror
  mnist-cnn eval model.bin               report loss and accuracy on the 10,000 test images
  mnist-cnn eval model.bin --report --errors errors.png
                                         confusion matrix, and a sheet of the misread digits
  mnist-cnn predict model.bin digit.jpg  read your own handwriting
  mnist-cnn export model.bin mnist.onnx  for ONNX Runtime, OpenVINO, tract (or .safetensors for PyTorch)
  mnist-cnn download --data-dir ~/mnist  fetch and verify the data only (--check: offline report)
  mnist-cnn train --resume model.bin.ckpt   finish an interrupted run";

/// Train, evaluate and use the classic Keras MNIST convnet, natively.
///
/// mnist-cnn downloads MNIST, trains the convolutional network of Keras's mnist_cnn.py
/// (two 3x3 convolutions, max-pooling, dropout, two dense layers; 1,199,882 parameters)
/// with Adadelta, prints a Keras-style log, and saves the model for `eval`.
#[derive(Debug, Parser)]
#[command(name = "mnist-cnn", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train the network on MNIST, validate after every epoch, and save it.
    Train(TrainArgs),
    /// Load a saved model and report its loss and accuracy on the MNIST test set.
    Eval(EvalArgs),
    /// Read your own digit images and say which digit each shows.
    ///
    /// Each picture is prepared the way MNIST was made: grey levels, inverted when the page is
    /// light, cropped to the ink, scaled to 20 px with anti-aliasing and centred by its centre
    /// of mass in 28x28. Unreadable or blank files are reported and the rest still printed.
    /// A picture whose header declares more than 50 megapixels is refused before decoding.
    Predict(PredictArgs),
    /// Print the network's layers, output shapes and parameter counts, Keras-style.
    Summary,
    /// Serve a page to draw digits on (or drop a photo of one) and watch the model read them,
    /// and its JSON API: POST /api/predict with an image body, GET /api/model. Ctrl-C stops
    /// it (exit status 0).
    ///
    /// GET /api/model.onnx gives the served model as `export` writes it to ONNX.
    ///
    /// Uploads are limited to 5 MB and `--upload-timeout`; a picture whose header declares
    /// more than 50 megapixels is answered 413 before decoding; large pictures are prepared in
    /// a lane of their own (full: 503 with Retry-After), and every request ends within 30 s.
    Serve(ServeArgs),
    /// Write the model for other tools: an ONNX graph or PyTorch-layout safetensors.
    ///
    /// ONNX: standard operators (opset 13), input `input` float32 [N, 1, 28, 28] with pixels
    /// scaled to [0, 1], outputs `probabilities` and `logits` [N, 10]; the training run's
    /// figures (epochs, seed, test accuracy) as metadata when the model file has them.
    /// safetensors: `conv1.weight` … `dense2.bias` in PyTorch's layouts, which a module with
    /// those attribute names loads with `load_state_dict(strict=True)`. Such a file (your own
    /// PyTorch weights too) is accepted as MODEL by eval, predict, serve and export.
    Export(ExportArgs),
    /// Fetch and verify the four MNIST files into the data directory without training, or
    /// with --check report what it holds without any network. For preparing an offline
    /// machine or a CI cache.
    Download(DownloadArgs),
    /// Print a shell completion script: `mnist-cnn completions bash > ~/.local/share/bash-completion/completions/mnist-cnn`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `mnist-cnn man > mnist-cnn.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model file written by `mnist-cnn train` (or a safetensors of PyTorch weights, as
    /// `export` writes them).
    pub model: PathBuf,

    /// Address to listen on. The default answers this machine only; `--host 0.0.0.0` opts in
    /// to every machine that can reach this one, with no authentication: anyone there can use
    /// the page and the API.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one (the URL printed names it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Seconds a client has to deliver its whole upload; a slower one is answered 408 and
    /// holds nothing meanwhile.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_timeout: u64,

    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model file: written by `mnist-cnn train`, or a safetensors of PyTorch weights.
    pub model: PathBuf,

    /// Where to write; replaced only once the export is whole.
    pub out: PathBuf,

    /// The format [default: from OUT's extension, .onnx or .safetensors].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl ExportArgs {
    pub fn options(&self) -> ExportOptions {
        ExportOptions {
            model: self.model.clone(),
            out: self.out.clone(),
            format: self.format,
        }
    }
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Only report each file (canonical MNIST, another valid IDX file, corrupt, missing); no
    /// network. Exit status 1 when any is missing or corrupt.
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model file written by `mnist-cnn train` (or a safetensors of PyTorch weights, as
    /// `export` writes them).
    pub model: PathBuf,

    /// PNG, JPEG, PGM/PBM pictures of one digit each, or IDX image files (with --index).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,

    /// Which image of an IDX file to classify (0-based).
    #[arg(long, value_name = "N")]
    pub index: Option<usize>,

    /// Print one JSON array instead of a line per image.
    #[arg(long)]
    pub json: bool,

    /// Write the 28x28 each image became into DIR, to see what the model saw.
    #[arg(long, value_name = "DIR")]
    pub show: Option<PathBuf>,

    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `help` of a setting that a resumed run takes from its checkpoint, with its default from
/// [`Settings::DEFAULT`].
fn setting(what: &str, default: impl std::fmt::Debug) -> String {
    // Debug: the learning rate shows as 1.0, not 1.
    format!("{what} [default: {default:?}; resuming: the checkpoint's]")
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, help = setting(
        &format!("Passes over the training set, 1 to {MAX_EPOCHS}; resuming, a larger number extends the run"),
        Settings::DEFAULT.epochs,
    ))]
    pub epochs: Option<usize>,

    #[arg(long, help = setting(&format!("Images per gradient step, 1 to {MAX_BATCH}"), Settings::DEFAULT.batch))]
    pub batch: Option<usize>,

    #[arg(long, help = setting(
        "Adadelta learning rate (Keras's; rho 0.95 and epsilon 1e-7 are fixed)",
        Settings::DEFAULT.lr,
    ))]
    pub lr: Option<f64>,

    #[arg(long, help = setting(
        "Seed for weight initialisation, shuffling and dropout: the same seed gives a \
         byte-identical model file",
        Settings::DEFAULT.seed,
    ))]
    pub seed: Option<u64>,

    /// Train on only the first N training images.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,

    /// Validate on only the first N test images.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,

    /// Where to save the trained model (burn's burnpack format) [default: model.bin, or
    /// beside the checkpoint when resuming]. Replaced only once the new file is completely
    /// written. After every epoch a checkpoint is kept next to it, as PATH.ckpt.
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Continue an interrupted run from its checkpoint (PATH.ckpt). Epochs, seed, batch size,
    /// learning rate and the data limits come from the checkpoint (given ones must agree,
    /// except a larger --epochs); the result is byte-identical to a run that was never
    /// interrupted.
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,

    /// 0 = silent, 1 = progress bar, 2 = one line per epoch (as Keras).
    #[arg(long, short, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub verbose: u8,

    /// Print the layer table before training.
    #[arg(long)]
    pub summary: bool,

    /// Draw loss and accuracy per epoch, training and validation, into a PNG (redrawn after
    /// every epoch). The numbers themselves are always written as CSV beside the model
    /// (model.bin → model.history.csv).
    #[arg(long, value_name = "PNG")]
    pub plot: Option<PathBuf>,

    #[command(flatten)]
    pub compute: ComputeArgs,

    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file written by `mnist-cnn train` (or a safetensors of PyTorch weights, as
    /// `export` writes them).
    pub model: PathBuf,

    /// Evaluate on only the first N test images.
    #[arg(long, value_name = "N", value_parser = positive())]
    pub limit_test: Option<usize>,

    /// Also print the confusion matrix and per-class precision and recall.
    #[arg(long)]
    pub report: bool,

    /// Draw the misclassified test digits, each labelled true→predicted, into a PNG.
    #[arg(long, value_name = "PNG")]
    pub errors: Option<PathBuf>,

    /// Print one JSON object (loss, accuracy, count; with --report the confusion matrix and
    /// per-class figures) instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub compute: ComputeArgs,

    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct ComputeArgs {
    /// Which engine computes: `cpu`, our own kernels (multi-threaded, with AVX-512 or AVX2
    /// where the processor has them; the fastest on a CPU); `cpu-bf16`, the same with conv2's
    /// products in bfloat16 (evaluation only, on processors with AVX512_BF16; where there is
    /// AMX, on its tiles, with the first dense layer's products too: faster, and close to but
    /// not the same numbers as `cpu`, nor the same with AMX as without); `flex`, burn's own
    /// CPU backend through
    /// burn's autodiff (the code path a GPU run takes, on the CPU); `wgpu`, a GPU through burn
    /// (needs a build with `--features wgpu`). Checkpoints resume on any of them.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
}

/// Counts of 1 and more (`eval`'s image limit).
fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory holding the four MNIST .gz files; missing ones are downloaded into it.
    /// Files you place there yourself (any valid IDX set) are used as they are.
    #[arg(
        long,
        env = "MNIST_DATA_DIR",
        default_value = "data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Base URL to download from, instead of the public mirrors; repeat to give several,
    /// tried in order. `file:///path/` reads a local directory.
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,

    /// Seconds to wait for a connection or for data before a download attempt fails.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Extra attempts per mirror after a transient failure.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub retries: u32,
}

impl DataArgs {
    pub fn source(&self) -> DataSource {
        let mirrors = if self.mirror.is_empty() {
            DEFAULT_MIRRORS.iter().map(|m| m.to_string()).collect()
        } else {
            self.mirror.clone()
        };
        DataSource {
            dir: self.data_dir.clone(),
            fetcher: Fetcher {
                mirrors,
                timeout: std::time::Duration::from_secs(self.timeout),
                retries: self.retries,
                ..Fetcher::default()
            },
        }
    }
}

/// Parses the command line, runs it, prints any error as one line, and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    match run(cli, &mut stdout.lock()) {
        Ok(()) => 0,
        Err(err) => {
            // The message may quote a file's names or a decoder's words about its bytes:
            // nothing in it reaches the terminal as a control sequence.
            let message = err.to_string();
            let message = crate::escape::escaped_keeping_lines(&message);
            if matches!(err, Error::Interrupted(_)) {
                eprintln!("{message}");
            } else {
                eprintln!("error: {message}");
            }
            err.exit_code()
        }
    }
}

/// Runs one parsed command line, writing its output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    match cli.command {
        Command::Train(args) => crate::commands::train::run(&args.options()?, out),
        Command::Eval(args) => crate::commands::eval::run(&args.options(), out),
        Command::Predict(args) => crate::commands::predict::run(&args.options(), out),
        Command::Summary => writeln!(out, "{}", crate::model::summary()).map_err(Error::stdout),
        Command::Download(args) => crate::commands::download::run(&args.options(), out),
        Command::Export(args) => crate::commands::export::run(&args.options(), out),
        Command::Serve(args) => crate::commands::serve::run(&args.options(), out),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mnist-cnn", out);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(out)
            .map_err(Error::stdout),
    }
}

impl TrainArgs {
    /// The options; the settings' rules are checked where they are resolved
    /// ([`Given::resolve`]), for flags and checkpoints alike.
    pub fn options(&self) -> Result<TrainOptions> {
        Ok(TrainOptions {
            given: Given {
                epochs: self.epochs,
                batch: self.batch,
                lr: self.lr,
                seed: self.seed,
                limit_train: self.limit_train,
                limit_test: self.limit_test,
            },
            verbosity: Verbosity::from_level(self.verbose),
            interactive: std::io::stdout().is_terminal(),
            out: self.out.clone(),
            resume: self.resume.clone(),
            plot: self.plot.clone(),
            summary: self.summary,
            backend: self.compute.backend,
            data: self.data.source(),
        })
    }
}

impl ServeArgs {
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            model: self.model.clone(),
            host: self.host.clone(),
            port: self.port,
            upload_timeout: std::time::Duration::from_secs(self.upload_timeout),
            backend: self.compute.backend,
        }
    }
}

impl DownloadArgs {
    pub fn options(&self) -> DownloadOptions {
        DownloadOptions {
            data: self.data.source(),
            check: self.check,
        }
    }
}

impl EvalArgs {
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            model: self.model.clone(),
            limit_test: self.limit_test,
            report: self.report,
            errors: self.errors.clone(),
            json: self.json,
            backend: self.compute.backend,
            data: self.data.source(),
        }
    }
}

impl PredictArgs {
    pub fn options(&self) -> PredictOptions {
        PredictOptions {
            model: self.model.clone(),
            images: self.images.clone(),
            index: self.index,
            json: self.json,
            show: self.show.clone(),
            backend: self.compute.backend,
        }
    }
}
