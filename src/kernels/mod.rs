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
                type Output = $crate::kernels::simd_fn!(@output $($ret)?);
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
                    let ($($arg,)*) = self.0;
                    $body
                }
            }
            $crate::kernels::arch().dispatch(Op(($($arg,)*)))
        }
    };
    (@output) => { () };
    (@output $ret:ty) => { $ret };
}
pub(crate) use simd_fn;

mod amx;
pub mod forward;
pub mod parts;
mod sparse;
pub mod training;
mod transpose;
mod winograd;

#[cfg(test)]
use std::cell::Cell;
use std::cell::RefCell;

use crate::network::{
    CONV1_FILTERS as C1, CONV1_SIDE as S1, CONV2_FILTERS as C2, FEATURES, PIXELS,
    POOLED_SIDE as SP, SIDE, TAPS,
};

/// conv2's inner dimension: a 3x3 window of conv1's channels.
const K2: usize = TAPS * C1;
/// Images per parallel task, and per partial sum of the convolutions' gradients (added in
/// group order, so that the bytes do not depend on the threads' timing). Small groups keep a
/// group's maps in cache; 2 and 1 were faster than 4 or 8.
const GROUP: usize = 2;

/// A buffer of floats that starts on a cache line: vector loads and stores that straddle two
/// lines cost about twice as much (see docs/performance.md). Its own alignment, whatever the
/// allocator; [`crate::allocator`] aligns large `Vec`s as well, for the parameters and their
/// gradients.
type Buffer = aligned_vec::AVec<f32>;

/// A [`Buffer`] of `len` zeros.
fn zeros(len: usize) -> Buffer {
    aligned_vec::avec![0.0; len]
}

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
    /// an inner dimension of 9, a GEMM spends more on packing than on arithmetic. The
    /// reference: `reference::{conv_forward, relu_forward}`.
    fn conv1(images: &[f32], w1: &[f32], b1: &[f32], a1: &mut [f32]) {
        // The weights and a pixel's 32 sums stay in registers.
        let w: [[f32; C1]; TAPS] = std::array::from_fn(|k| *array(w1, k * C1));
        let b: [f32; C1] = *array(b1, 0);
        for (img, out) in images.chunks(PIXELS).zip(a1.chunks_mut(S1 * S1 * C1)) {
            for (y, out) in out.chunks_exact_mut(S1 * C1).enumerate() {
                let rows = &img[y * SIDE..][..3 * SIDE];
                for (x, px) in out.chunks_exact_mut(C1).enumerate() {
                    let mut acc = b;
                    for (k, w) in w.iter().enumerate() {
                        let a = rows[k / 3 * SIDE + x + k % 3];
                        for (s, w) in acc.iter_mut().zip(w) {
                            *s = a.mul_add(*w, *s);
                        }
                    }
                    for (v, s) in px.iter_mut().zip(acc) {
                        *v = s.max(0.0);
                    }
                }
            }
        }
    }
}

/// `x` rounded to bfloat16 (nearest even), two consecutive values to a 32-bit word, the first
/// in the low half: the pairs AVX512_BF16's and AMX's dot products read. `x` is whole runs
/// of 32. Only on processors with AVX512_BF16, which the bf16 paths check before they exist.
fn bf16_pairs(x: &[f32], out: &mut [u32]) {
    assert!(x.len().is_multiple_of(32) && out.len() == x.len() / 2);
    #[cfg(target_arch = "x86_64")]
    if avx512_bf16() {
        // SAFETY: the processor has the instructions, checked just above.
        unsafe { bf16_pairs_avx512(x, out) };
        return;
    }
    unreachable!("bf16 values are only made where AVX512_BF16 is");
}

/// Whether this processor has AVX-512 with AVX512_BF16, which both bf16 paths (and the
/// rounding to bf16 they share) run on.
fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16_pairs_avx512(x: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    for (x, out) in x.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        // SAFETY: 32 floats in, 16 words out; the two vector types are the same 512 bits.
        unsafe {
            let low = _mm512_loadu_ps(x.as_ptr());
            let high = _mm512_loadu_ps(x[16..].as_ptr());
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(out.as_mut_ptr().cast(), packed);
        }
    }
}

/// The `N` values of `s` from `at` on, as an array: fixed sizes let the kernels keep rows of
/// weights and sums in registers.
#[inline(always)]
fn array<const N: usize>(s: &[f32], at: usize) -> &[f32; N] {
    s[at..at + N].try_into().expect("N values")
}

/// [`array`], to write.
#[inline(always)]
fn array_mut<const N: usize>(s: &mut [f32], at: usize) -> &mut [f32; N] {
    (&mut s[at..at + N]).try_into().expect("N values")
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
pub(crate) fn arch() -> pulp::Arch {
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

/// `work` run once per instruction set this processor can run [`simd_fn!`] bodies in
/// (scalar first), each on a two-thread pool whose threads are pinned to it, with the set's
/// name. Says on stderr which were compared.
#[cfg(test)]
pub(crate) fn on_every_instruction_set<R: Send>(
    work: impl Fn() -> R + Sync,
) -> Vec<(&'static str, R)> {
    #[allow(unused_mut)]
    let mut arches = vec![("scalar", pulp::Arch::Scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = pulp::x86::V3::try_new().map(pulp::Arch::V3);
        arches.extend(v3.map(|a| ("AVX2 + FMA", a)));
        let v4 = pulp::x86::V4::try_new().map(pulp::Arch::V4);
        arches.extend(v4.map(|a| ("AVX-512", a)));
    }
    let names: Vec<&str> = arches.iter().map(|(name, _)| *name).collect();
    if arches.len() == 1 {
        eprintln!("only the scalar loops run on this processor: no instruction sets compared");
    } else {
        eprintln!("instruction sets compared: {}", names.join(", "));
    }
    arches
        .into_iter()
        .map(|(name, arch)| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .start_handler(move |_| PINNED.set(Some(arch)))
                .build()
                .unwrap();
            (name, pool.install(&work))
        })
        .collect()
}

thread_local! {
    /// Large buffers a pass has finished with, kept for the next pass on this thread (and each
    /// worker thread's scratch space, kept from group to group). Fresh allocations this size
    /// come from the operating system as zeroed pages, and faulting them in every pass cost
    /// a noticeable share of a step.
    static SPARE: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats: the smallest spare one that is big enough, else a new one. Its
/// contents are unspecified (NaN in debug builds): callers write all of it before reading.
fn reuse(len: usize) -> Buffer {
    let found = SPARE.with_borrow_mut(|spare| {
        let (i, _) = spare
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())?;
        Some(spare.swap_remove(i))
    });
    let mut v = found.unwrap_or_else(|| Buffer::new(0));
    v.resize(len, 0.0);
    // Debug builds (the tests) poison it, so that a kernel reading a value before writing it
    // gets NaN, which every test against the reference catches.
    #[cfg(debug_assertions)]
    v.fill(f32::NAN);
    v
}

/// Keeps `v` for a later [`reuse`] on this thread: four at most, the largest, so that
/// evaluation's larger batches between training steps find theirs too.
fn spare(v: Buffer) {
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < 4 {
            spare.push(v);
        } else if let Some(smallest) = spare.iter_mut().min_by_key(|s| s.capacity())
            && smallest.capacity() < v.capacity()
        {
            *smallest = v;
        }
    });
}

/// The convolutional half of the forward pass for a group of images, shared by evaluation
/// and training: conv1 + ReLU into channels-last maps [(image, y, x) × 32], kept only while
/// conv2 reads them, then conv2, max-pool, bias and ReLU into `pooled` (see
/// [`winograd::conv2_pool`], which also explains `winner`). `w1` is in the GEMM layout, `u2`
/// conv2's transformed filters.
fn features(
    images: &[f32],
    (w1, b1): (&[f32], &[f32]),
    (u2, b2): (&winograd::Filters, &[f32]),
    pooled: &mut [f32],
    mut winner: Option<&mut [u8]>,
) {
    let maps = images.len() / PIXELS * S1 * S1 * C1;
    let mut space = reuse(maps + winograd::SCRATCH);
    let (a1, scratch) = space.split_at_mut(maps);
    conv1(images, w1, b1, a1);
    for (i, (a1, pooled)) in a1
        .chunks(S1 * S1 * C1)
        .zip(pooled.chunks_mut(FEATURES))
        .enumerate()
    {
        let winner = winner
            .as_deref_mut()
            .map(|w| &mut w[i * FEATURES..][..FEATURES]);
        winograd::conv2_pool(a1, u2, b2, scratch, pooled, winner);
    }
    spare(space);
}

/// `rows · weights + bias`, then ReLU if asked: a dense layer over rows of `input`. The
/// reference: `reference::dense_forward`.
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
    bias_relu(&mut out, bias, relu);
    out
}

/// Adds `bias` to each row of a dense layer's outputs `out`, then ReLU if asked.
fn bias_relu(out: &mut [f32], bias: &[f32], relu: bool) {
    for row in out.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::testing::{assert_close, channels_last, random};
    use crate::reference::{self, Maps};

    #[test]
    fn conv1_matches_its_reference_layers() {
        let n = 3;
        let images = random(n * PIXELS, (0.0, 1.0), 1);
        let w = random(C1 * TAPS, (-0.5, 0.5), 2);
        let b = random(C1, (-0.3, 0.3), 3);
        let mut a1 = reuse(n * S1 * S1 * C1);
        conv1(
            &images,
            &relayout(&w, 1, C1, ConvLayout::Burn, ConvLayout::Gemm),
            &b,
            &mut a1,
        );
        let input = Maps {
            images: n,
            channels: 1,
            side: SIDE,
        };
        let want = reference::relu_forward(&reference::conv_forward(&images, input, &w, &b));
        let maps = Maps {
            images: n,
            channels: C1,
            side: S1,
        };
        assert_close(&a1, &channels_last(&want, maps), 1e-6, "conv1 + ReLU");
        // Both sides of the ReLU were exercised.
        let zeros = a1.iter().filter(|&&v| v == 0.0).count();
        assert!(
            zeros > a1.len() / 10 && zeros < a1.len() * 9 / 10,
            "{zeros}"
        );
    }

    #[test]
    fn dense_matches_its_reference_layers() {
        let (rows, inputs, outputs) = (7, 300, 20);
        let x = random(rows * inputs, (-1.0, 1.0), 4);
        let w = random(inputs * outputs, (-0.1, 0.1), 5);
        let b = random(outputs, (-0.5, 0.5), 6);
        let want = reference::dense_forward(&x, &w, &b);
        for threads in [1, 2] {
            assert_close(&dense(&x, &w, &b, false, threads), &want, 1e-6, "dense");
            let relu = reference::relu_forward(&want);
            assert_close(
                &dense(&x, &w, &b, true, threads),
                &relu,
                1e-6,
                "dense + ReLU",
            );
        }
    }

    /// In debug builds a reused buffer comes back as NaN whatever it held, so a kernel that
    /// reads one before writing it fails the tests against the reference.
    #[test]
    #[cfg(debug_assertions)]
    fn reused_buffers_come_back_poisoned() {
        let mut v = reuse(1000);
        v.fill(1.0);
        spare(v);
        let again = reuse(800);
        assert!(again.iter().all(|x| x.is_nan()));
    }

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
