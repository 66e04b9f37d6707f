//! mnist-cnn's numerics, apart from everything else: the network's sizes and named
//! parameters ([`network`]), the network in plain loops ([`reference`](mod@reference), to read
//! first), the fast CPU kernels that are tested against it, Adadelta's update ([`adadelta`]),
//! the scoring of logits ([`metrics`]) and the random streams ([`rng`]). It depends on no
//! engine, file format, network or server crate, so `cargo test -p mnist-cnn-kernels` builds
//! and runs alone; the tests that hold these kernels to burn's own ops and autodiff live in
//! the app crate (`src/engine/held_to_burn.rs`).
//!
//! The kernels: the forward pass, with or without dropout ([`forward`]), which evaluation,
//! prediction and training share, and the training step's backward pass ([`training`]). Each
//! kernel is tested against the reference layers on random inputs. The opt-in bf16
//! evaluation runs on AVX512_BF16, or on AMX's tiles where there are (`amx.rs`).
//!
//! The boundary: kernels take and return plain `f32` slices in row-major layouts (the table
//! below); nothing here knows about tensors. Parameters cross it as
//! [`Params`](crate::network::Params), in burn's own layouts; sizes come from
//! [`network`].
//!
//! Activations are channels-last inside the convolutions, so that a pixel's channels are one
//! vector: the unit of conv1, of conv2's Winograd transforms (`winograd.rs`), and of the
//! three runs of (kx, channel) a 3x3 window is in conv2's sparse backward pass.
//!
//! # Layouts
//!
//! Every buffer is a plain `&[f32]` (or `&[u32]`, `&[u8]`); this table is where each layout is
//! named, outermost index first. `n` images; a *band* is the rows of tiles or pooled cells a
//! loop keeps in cache; names ending `_nhwc` are channels-last maps.
//!
//! | name in the code | layout | written by | read by |
//! |---|---|---|---|
//! | `pixels`, `images` | `[n][28 × 28]`, scaled to `[0, 1]` | `data::batch::pixels` | `conv1` |
//! | `a1_nhwc` | `[n][26][26][32]` | `conv1` (again per group in the backward pass: `Net::conv1_maps`) | `winograd::conv2_pool`, `conv2_backward`, `conv1_backward` |
//! | `features`, `pooled` | `[n][64][12][12]`: burn's flatten order, 9216 an image | `winograd::conv2_pool`, then dropout | the first dense layer (`dense`, `sparse::forward`, `amx::dense`), `sparse::weight_gradient`, `conv2_backward` |
//! | `winner` | `[n][64][12][12]` bytes: which of the 2x2 window won, row-major | `conv2_pool` (traced passes) | `conv2_backward` |
//! | `hidden`, `dh` | `[n][128]` | dense layers | `dense2_backward`, `dense1_backward` |
//! | `logits`, `dlogits` | `[n][10]` | dense layers, `cross_entropy` | `cross_entropy`, `dense2_backward` |
//! | `dfeatures` | `[n][9216]`, as `features` | `dense1_backward` | `conv2_backward` |
//! | `dz1` | `[26][26][32]` for one image | `conv2_backward` | `conv1_backward` |
//! | Winograd `v` | `[row of tiles][point 36][tile 6][in 32]` | `transform_inputs` | the products |
//! | Winograd `m` | `[point 36][tile][out 64]` (bf16: out in blocks of 16) | the products | `pool_band` |
//! | Winograd `stage`, `won` | `[row of tiles][2 × 12 pooled cells][out 64]` | `pool_tile` | `unstage` (to `features`' order) |
//! | bf16 `Band` | `[point][tile][16 pairs of input channels]`, u32 | `Band::pack` | `bf16::products` |
//! | live cells | `[band][channel][≤ 24 cells]`: gradient, window start in `a1_nhwc` | `LiveCells::list` | `conv2_backward`, `bias_gradient` |
//! | partial gradients | per group: conv1's weight (GEMM), bias, conv2's weight (rows), bias | `conv_backward_group` | `sum_partials` |
//! | `Params` | burn's: conv `[out][in][3][3]`, dense `[in][out]` | optimizer, files | every kernel, through the layouts below |
//! | `ConvLayout::Gemm` | `[(ky, kx, in)][out]` | `relayout` | `conv1` |
//! | `ConvLayout::Rows` | `[out][(ky, kx, in)]` | `relayout` | `conv2_backward` (weights and their gradient) |
//! | Winograd filters `u` | f32: `[point][in 32][out 64]`; bf16: `[point][out block of 16][in pair][16]` u32 | `winograd::filters`, `Filters::bf16_on` | the products |
//! | AMX dense weights | `[input pair][out]` u32, the even input in the low half | `DenseWeights::pack` | `amx::products` |
//!
//! PyTorch's layouts (import and export) never reach the kernels: see the app's `src/formats/`.

pub mod adadelta;
mod amx;
mod bf16;
mod buffers;
pub mod choice;
mod conv1;
mod conv_backward;
pub mod dropout;
pub mod forward;
mod gemm;
pub mod isa;
mod layouts;
pub mod metrics;
pub mod network;
pub mod parts;
pub mod reference;
pub mod rng;
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
