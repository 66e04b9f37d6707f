//! Hand-written CPU kernels for paths where burn's generic `flex` ops leave most of the
//! machine idle: the forward pass, with or without dropout ([`forward`]), which evaluation,
//! prediction and training share, and the training step's backward pass ([`training`]). Each
//! kernel is tested against burn's own ops on random inputs.
//!
//! The boundary: kernels take and return plain `f32` slices in row-major layouts stated at
//! each function; nothing here knows about burn tensors. Parameters cross it as
//! [`Params`](crate::network::Params), in burn's own layouts; sizes come from
//! [`network`](crate::network).
//!
//! Activations are channels-last inside the convolutions, so that a 3x3 window of a map is
//! three contiguous runs of (kx, channel): one im2col row for conv2's forward GEMM, three
//! vector runs for its sparse backward pass.

/// Defines a function whose body is compiled once per instruction set pulp dispatches to
/// (AVX-512, AVX2 + FMA, plain x86-64) and run in the best this processor has, so that one
/// portable binary still vectorises our loops. The body is inlined into pulp's
/// `#[target_feature]` functions; closures in it are compiled on their own, for plain x86-64,
/// so loops belong in the body or in `#[inline(always)]` helpers such as [`axpy`].
macro_rules! simd_fn {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            struct Op<A>(A);
            impl pulp::WithSimd for Op<($($ty,)*)> {
                type Output = simd_fn!(@output $($ret)?);
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
                    let ($($arg,)*) = self.0;
                    $body
                }
            }
            crate::kernels::arch().dispatch(Op(($($arg,)*)))
        }
    };
    (@output) => { () };
    (@output $ret:ty) => { $ret };
}

pub mod forward;
pub mod training;

#[cfg(test)]
use std::cell::Cell;
use std::cell::RefCell;

use crate::network::{
    CONV1_FILTERS as C1, CONV1_SIDE as S1, CONV2_FILTERS as C2, CONV2_SIDE as S2, FEATURES, PIXELS,
    POOLED_SIDE as SP, SIDE, TAPS,
};

/// conv2's inner dimension: a 3x3 window of conv1's channels.
const K2: usize = TAPS * C1;
/// Images per parallel task: conv2's GEMM has M = 2 × 576 rows and its im2col buffer
/// (1.3 MB) fits a 2 MB per-core L2. Groups of 2 and 1 measured a little faster for training
/// than 4 or 8, and clearly faster for evaluation.
const GROUP: usize = 2;

/// How a GEMM operand is stored: as the matrix itself or as its transpose, row-major either way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stored {
    AsIs,
    Transposed,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, all row-major and contiguous. `threads` > 1 lets the
/// GEMM split the work over rayon's pool; inside a task that is already parallel, pass 1.
pub fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    matmul_stored(
        dst,
        (lhs, Stored::AsIs),
        (rhs, Stored::AsIs),
        dims,
        accumulate,
        threads,
    );
}

/// [`matmul`] where either operand may be stored transposed (`lhs` as [k×m], `rhs` as [n×k]).
pub fn matmul_stored(
    dst: &mut [f32],
    (lhs, lhs_stored): (&[f32], Stored),
    (rhs, rhs_stored): (&[f32], Stored),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // (column stride, row stride) of each operand.
    let (lhs_cs, lhs_rs) = match lhs_stored {
        Stored::AsIs => (1, k),
        Stored::Transposed => (m, 1),
    };
    let (rhs_cs, rhs_rs) = match rhs_stored {
        Stored::AsIs => (1, n),
        Stored::Transposed => (k, 1),
    };
    // SAFETY: the assertion above keeps every index the strides reach inside the slices (each
    // operand spans exactly rows × columns elements in either storage); `dst` is borrowed
    // mutably and cannot alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// conv2's im2col over channels-last conv1 maps: each output pixel's row is three runs of
/// 3 × 32 contiguous values (ky, kx, channel).
fn im2col2(a1: &[f32], cols: &mut [f32]) {
    for (act, dst) in a1.chunks(S1 * S1 * C1).zip(cols.chunks_mut(S2 * S2 * K2)) {
        for y in 0..S2 {
            for x in 0..S2 {
                let row = &mut dst[(y * S2 + x) * K2..][..K2];
                for ky in 0..3 {
                    let src = &act[((y + ky) * S1 + x) * C1..][..3 * C1];
                    row[ky * 3 * C1..(ky + 1) * 3 * C1].copy_from_slice(src);
                }
            }
        }
    }
}

/// Where a convolution weight's element for (output channel, input channel, tap) lives. The
/// tap k = 3 ky + kx.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConvLayout {
    /// burn's [out, in, ky, kx].
    Burn,
    /// The GEMM operand of a channels-last convolution: [(ky, kx, in), out].
    Gemm,
    /// One row per output channel: [out, (ky, kx, in)], as the backward pass walks it.
    Rows,
}

impl ConvLayout {
    fn index(self, (o, c, k): (usize, usize, usize), c_in: usize, c_out: usize) -> usize {
        match self {
            ConvLayout::Burn => (o * c_in + c) * TAPS + k,
            ConvLayout::Gemm => (k * c_in + c) * c_out + o,
            ConvLayout::Rows => (o * TAPS + k) * c_in + c,
        }
    }
}

/// `w` (a c_out × c_in × 3x3 convolution weight) moved from one layout to another.
fn relayout(w: &[f32], c_in: usize, c_out: usize, from: ConvLayout, to: ConvLayout) -> Vec<f32> {
    assert_eq!(w.len(), TAPS * c_in * c_out);
    let mut out = vec![0.0; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for k in 0..TAPS {
                let at = (o, c, k);
                out[to.index(at, c_in, c_out)] = w[from.index(at, c_in, c_out)];
            }
        }
    }
    out
}

simd_fn! {
    /// conv1 + bias + ReLU for a group of images, into channels-last maps `a1`
    /// [(image, y, x) × 32]. `w1` is the GEMM layout [9 × 32]. Directly, not as a GEMM: with
    /// an inner dimension of 9, a GEMM spends more on packing than on arithmetic.
    fn conv1(images: &[f32], w1: &[f32], b1: &[f32], a1: &mut [f32]) {
        for (img, out) in images.chunks(PIXELS).zip(a1.chunks_mut(S1 * S1 * C1)) {
            for (at, px) in out.chunks_mut(C1).enumerate() {
                let (y, x) = (at / S1, at % S1);
                px.copy_from_slice(b1);
                for (k, w) in w1.chunks(C1).enumerate() {
                    axpy(img[(y + k / 3) * SIDE + x + k % 3], w, px);
                }
                for v in px {
                    *v = v.max(0.0);
                }
            }
        }
    }
}

/// `y += a x`, fused multiply-adds where the processor has them.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

/// The instruction set [`simd_fn!`] bodies run in: the best this processor has, unless a
/// test has pinned one on this thread.
fn arch() -> pulp::Arch {
    #[cfg(test)]
    if let Some(arch) = PINNED.get() {
        return arch;
    }
    pulp::Arch::new()
}

#[cfg(test)]
thread_local! {
    /// Lets a test run every instruction set's version of the loops on one machine.
    static PINNED: Cell<Option<pulp::Arch>> = const { Cell::new(None) };
}

thread_local! {
    /// Each worker thread's scratch space for conv2's im2col rows and outputs: reused from
    /// group to group rather than allocated and zeroed afresh (1.6 MB per group of two).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch space, at least `len` long; its contents are whatever
/// the last user left.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// The convolutional half of the forward pass for a group of images, shared by evaluation
/// and training: conv1 + ReLU into channels-last maps `a1` [(image, y, x) × 32], then conv2
/// (bias left for after the pooling), max-pool, bias and ReLU into `pooled` (see [`pool`],
/// which also explains `winner`). `w1` and `w2` are in the GEMM layouts.
fn features(
    images: &[f32],
    (w1, b1): (&[f32], &[f32]),
    (w2, b2): (&[f32], &[f32]),
    a1: &mut [f32],
    pooled: &mut [f32],
    winner: Option<&mut [u8]>,
) {
    conv1(images, w1, b1, a1);
    let rows = images.len() / PIXELS * S2 * S2;
    with_scratch(rows * (K2 + C2), |scratch| {
        let (cols, z2) = scratch.split_at_mut(rows * K2);
        im2col2(a1, cols);
        matmul(z2, cols, w2, (rows, K2, C2), false, 1);
        pool(z2, b2, pooled, winner);
    });
}

/// 2x2 max-pool of conv2's pre-activations, then conv2's bias and ReLU once per pooled value
/// (both commute with max), for each image of a group; written in burn's flatten order
/// (channel, y, x), 9216 per image. `winner`, when given, records which of the four values
/// won (0..4, row-major in the window), for the backward pass.
fn pool(z2: &[f32], b2: &[f32], out: &mut [f32], mut winner: Option<&mut [u8]>) {
    for (i, (act, dst)) in z2
        .chunks(S2 * S2 * C2)
        .zip(out.chunks_mut(FEATURES))
        .enumerate()
    {
        for py in 0..SP {
            for px in 0..SP {
                let at =
                    |dy: usize, dx: usize| &act[((2 * py + dy) * S2 + 2 * px + dx) * C2..][..C2];
                let quad = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                for c in 0..C2 {
                    let (mut best, mut value) = (0, quad[0][c]);
                    for (q, v) in quad.iter().enumerate().skip(1) {
                        if v[c] > value {
                            (best, value) = (q, v[c]);
                        }
                    }
                    let at = c * SP * SP + py * SP + px;
                    dst[at] = (value + b2[c]).max(0.0);
                    if let Some(w) = winner.as_deref_mut() {
                        w[i * FEATURES + at] = best as u8;
                    }
                }
            }
        }
    }
}

/// `rows · weights + bias`, then ReLU if asked: a dense layer over rows of `input`.
fn dense(input: &[f32], weights: &[f32], bias: &[f32], relu: bool, threads: usize) -> Vec<f32> {
    let (outputs, inputs) = (bias.len(), weights.len() / bias.len());
    let rows = input.len() / inputs;
    let mut out = vec![0.0f32; rows * outputs];
    matmul(
        &mut out,
        input,
        weights,
        (rows, inputs, outputs),
        false,
        threads,
    );
    for row in out.chunks_mut(outputs) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lhs: &[f32], rhs: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|j| lhs[i / n * k + j] * rhs[j * n + i % n])
                    .sum()
            })
            .collect()
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| a[(i % rows) * cols + i / rows])
            .collect()
    }

    #[test]
    fn matmul_matches_the_definition_in_every_storage() {
        let (m, k, n) = (5, 7, 3);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let want = naive(&lhs, &rhs, (m, k, n));
        let (lhs_t, rhs_t) = (transpose(&lhs, m, k), transpose(&rhs, k, n));
        for threads in [1, 2] {
            for (l, r) in [
                ((&lhs, Stored::AsIs), (&rhs, Stored::AsIs)),
                ((&lhs_t, Stored::Transposed), (&rhs, Stored::AsIs)),
                ((&lhs, Stored::AsIs), (&rhs_t, Stored::Transposed)),
                ((&lhs_t, Stored::Transposed), (&rhs_t, Stored::Transposed)),
            ] {
                let mut dst = vec![f32::NAN; m * n];
                let (l, r) = ((l.0.as_slice(), l.1), (r.0.as_slice(), r.1));
                matmul_stored(&mut dst, l, r, (m, k, n), false, threads);
                for (a, b) in dst.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
                matmul_stored(&mut dst, l, r, (m, k, n), true, threads);
                for (a, b) in dst.iter().zip(&want) {
                    assert!((a - 2.0 * b).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn conv_weight_layouts_round_trip() {
        use ConvLayout::{Burn, Gemm, Rows};
        let w: Vec<f32> = (0..9 * 3 * 4).map(|i| i as f32).collect();
        let g = relayout(&w, 3, 4, Burn, Gemm);
        let r = relayout(&w, 3, 4, Burn, Rows);
        assert_ne!(g, w);
        assert_ne!(r, w);
        // Output channel 1, input channel 2, ky 0, kx 2 (k = 2).
        assert_eq!(g[(2 * 3 + 2) * 4 + 1], w[(3 + 2) * 9 + 2]);
        assert_eq!(r[(9 + 2) * 3 + 2], w[(3 + 2) * 9 + 2]);
        assert_eq!(relayout(&g, 3, 4, Gemm, Burn), w);
        assert_eq!(relayout(&r, 3, 4, Rows, Gemm), g);
    }
}
