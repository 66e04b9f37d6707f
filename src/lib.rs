//! mnist-cnn: the Keras MNIST convnet, trained and used from one native binary on burn.
//!
//! The binary is a thin shell over this library: `cli` parses arguments into each command's
//! options; `data` fetches and decodes MNIST; `network` defines the network once (sizes,
//! dropout, named parameters); `model` is it as burn modules; `kernels` are our CPU forward
//! and backward passes; `engine` chooses between them and burn's autodiff; `optim` holds
//! Adadelta; `metrics` scores rows of logits; `train`, `eval` and `predict` are the commands;
//! `progress` renders Keras's log.

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod download;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod history;
pub mod interrupt;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod network;
pub mod notes;
pub mod optim;
pub mod picture;
pub mod predict;
pub mod progress;
pub mod serve;
pub mod train;

pub use error::{Error, Result};
