//! mnist-cnn: the Keras MNIST convnet, trained and used from one native binary on burn.
//!
//! The binary is a thin shell over this library: `cli` parses, `data` fetches and decodes
//! MNIST, `model` is the network, `optim` holds Adadelta, `train` and `eval` run the two
//! commands, and `progress` renders Keras's log.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod history;
pub mod interrupt;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod picture;
pub mod predict;
pub mod progress;
pub mod train;

pub use error::{Error, Result};

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Train(args) => train::run(&args),
        cli::Command::Eval(args) => eval::run(&args),
        cli::Command::Predict(args) => predict::run(&args),
        cli::Command::Summary => {
            let model = model::Model::new(&backend::device(cli::BackendChoice::Cpu)?, 0);
            println!("{}", model.summary());
            Ok(())
        }
    }
}
