//! mnist-cnn: the Keras MNIST convnet, trained and used from one native binary on burn.
//!
//! The binary is a thin shell: [`cli`] parses arguments and runs one of the [`commands`].
//! Below them, one concept a module (docs/architecture.md maps them):
//!
//! - the network: [`network`] defines it once (sizes, dropout, named parameters);
//!   [`reference`](mod@reference) is it in plain loops, to read first; [`model`] is it as burn modules and the
//!   model file;
//! - computing it: [`engine`] chooses between our [`kernels`] and burn's autodiff; [`optim`]
//!   holds Adadelta; [`metrics`] scores rows of logits;
//! - training: [`settings`] owns a run's settings, [`fit`] is the epoch loop, [`rng`] its random
//!   streams, [`checkpoint`] its state on disk, [`history`] and [`progress`] its record and log;
//! - using a model: [`evaluate`] (loss, accuracy, confusion), [`digits`] (people's pictures),
//!   [`formats`] (reading PyTorch's safetensors; exporting ONNX and safetensors);
//! - data: [`data`] fetches and decodes MNIST;
//! - output: [`charts`] draws, [`fsutil`] writes atomically, [`error`] types every failure;
//! - the process: [`allocator`] starts large blocks on a cache line.

pub mod allocator;
pub mod charts;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod digits;
pub mod engine;
pub mod error;
pub mod escape;
pub mod evaluate;
pub mod fit;
pub mod formats;
pub mod fsutil;
pub mod history;
pub mod interrupt;
pub mod model;
pub mod notes;
pub mod optim;
pub mod progress;
pub mod settings;

pub use error::{Error, Result};
/// The numerics, a crate of their own (`kernels/`): the network's sizes and parameters, the
/// reference, the fast CPU kernels, Adadelta's update, the metrics and the random streams.
pub use mnist_cnn_kernels as kernels;
pub use mnist_cnn_kernels::{metrics, network, reference, rng};

/// Every binary and test that links this crate allocates through it.
#[global_allocator]
static ALLOCATOR: allocator::LineAligned = allocator::LineAligned;
