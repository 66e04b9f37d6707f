//! Hand-written CPU kernels for paths where burn's generic `flex` ops leave most of the
//! machine idle: the forward pass, with or without dropout ([`forward`]), which evaluation,
//! prediction and training share, and the training step's backward pass ([`training`]). Each
//! kernel is tested against burn's own ops or the reference layers on random inputs. The
//! opt-in bf16 evaluation runs on AVX512_BF16, or on AMX's tiles where there are (`amx.rs`).
//!
//! The boundary: kernels take and return plain `f32` slices in row-major layouts stated at
//! each function; nothing here knows about burn tensors. Parameters cross it as
//! [`Params`](crate::network::Params), in burn's own layouts; sizes come from
//! [`network`](crate::network).
//!
//! Activations are channels-last inside the convolutions, so that a pixel's channels are one
//! vector: the unit of conv1, of conv2's Winograd transforms (`winograd.rs`), and of the
//! three runs of (kx, channel) a 3x3 window is in conv2's sparse backward pass.

mod amx;
mod bf16;
mod buffers;
pub mod choice;
mod conv1;
pub mod dropout;
pub mod forward;
mod gemm;
pub mod isa;
mod layouts;
pub mod parts;
mod sparse;
pub mod training;
mod transpose;
mod winograd;

pub(crate) use buffers::{Buffer, reuse, spare, zeros};
use conv1::conv1;
pub use gemm::{Stored, matmul, matmul_stored};
use gemm::{bias_relu, dense};
#[cfg(test)]
pub(crate) use isa::on_every_instruction_set;
pub(crate) use isa::simd_fn;
use isa::{array, array_mut, axpy};
use layouts::{ConvLayout, relayout};

use crate::network::{
    CONV1_FILTERS as C1, CONV1_SIDE as S1, CONV2_FILTERS as C2, FEATURES, POOLED_SIDE as SP, TAPS,
};

/// conv2's inner dimension: a 3x3 window of conv1's channels.
const K2: usize = TAPS * C1;
/// Images per parallel task, and per partial sum of the convolutions' gradients (added in
/// group order, so that the bytes do not depend on the threads' timing). Small groups keep a
/// group's maps in cache; 2 and 1 were faster than 4 or 8.
const GROUP: usize = 2;
