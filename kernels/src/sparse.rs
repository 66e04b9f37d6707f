//! The first dense layer's products, walking only the terms that are not zero: both backward
//! products, and the forward product in training (and in evaluation where timing says it
//! pays: [`super::choice`]).
//!
//! ReLU and dropout leave about 73% of the pooled features and 75% of the hidden layer's
//! gradient at zero, and a GEMM multiplies every one of them. Here each output is one fused
//! multiply-add chain over the inner dimension in ascending order, starting from zero, with the
//! zero terms left out. Adding a zero product changes no sum, and a GEMM adds in that order
//! too within each of its blocks of the inner dimension (512 features for the forward
//! product; the backward products' 128 fit one), adding the blocks' sums in order, as the
//! forward walk does; so these are the GEMM's bytes, and the training run's numbers did not
//! move (`the_products_are_the_gemms_bytes`). Each output is a vector lane's own chain, so
//! every instruction set gives the same bytes. The forward walk leaves out the zero features;
//! both backward walks, the zero gradients of the hidden layer (a list of about 32 images a
//! unit for the weight gradient, of 32 units an image for the input gradient).

use rayon::prelude::*;

use super::isa;
use super::transpose::{Shape, transpose};
use super::{FEATURES, array, array_mut, axpy, reuse, simd_fn, spare};
use crate::network::HIDDEN;

/// Features per block of the input gradient: the block's weights, transposed, take 32 KB, an
/// L1 cache's worth, and its sums 8 of AVX2's 16 registers (4 of AVX-512's).
const BLOCK_FEATURES: usize = 64;
/// Features per task of the weight gradient: each image's 64 of them, copied side by side (32
/// KB for a batch of 128), stay in L1 while every hidden unit reads them.
const TASK_FEATURES: usize = 64;
/// Hidden units of the weight gradient summed before their sums are transposed.
const UNITS: usize = 16;
/// Outputs the forward walk sums at a time in registers without AVX-512 (8 of AVX2's 16
/// registers, as [`BLOCK_FEATURES`]).
const HALF: usize = HIDDEN / 2;

/// Whether the training step's products walk their nonzero terms here rather than run as
/// GEMMs: either gives the same bytes. A fixed rule, not a timed one ([`super::choice`] times
/// evaluation's): with dropout leaving ~30% of the features and ~25% of the hidden gradients,
/// every walk beat its GEMM on every x86-64 processor measured (docs/performance.md has the
/// figures), and the step is timed by the bench, not by the process.
pub(super) fn pays() -> bool {
    cfg!(target_arch = "x86_64")
}

/// The loss's gradient with respect to the features, `dfeatures[i][j] = Σ_o dh[i][o] ·
/// w[j][o]`: `dh` [n × 128], the hidden layer's gradient before its ReLU; `w` the layer's
/// weights [9216 × 128]; written in full into `out` [n × 9216]. The reference:
/// `reference::dense_backward`'s input gradient (held to the GEMM's bytes and, through
/// `dense_backward`, to the reference).
pub(super) fn input_gradient(dh: &[f32], w: &[f32], out: &mut [f32]) {
    assert_eq!(w.len(), FEATURES * HIDDEN);
    assert_eq!(out.len() / FEATURES, dh.len() / HIDDEN);
    let live: Vec<Vec<Term>> = dh.chunks(HIDDEN).map(nonzero).collect();
    // A range of blocks a thread, for every image: each block's weights are read and
    // transposed once, where a task of images had to do it for every block.
    let blocks = FEATURES / BLOCK_FEATURES;
    let per = blocks.div_ceil(rayon::current_num_threads().clamp(1, blocks));
    let mut parts: Vec<Vec<&mut [f32]>> = (0..blocks.div_ceil(per)).map(|_| Vec::new()).collect();
    for mut row in out.chunks_exact_mut(FEATURES) {
        for part in &mut parts {
            let (head, rest) = row.split_at_mut((per * BLOCK_FEATURES).min(row.len()));
            part.push(head);
            row = rest;
        }
    }
    parts.into_par_iter().enumerate().for_each(|(p, mut rows)| {
        // One block of BLOCK_FEATURES features at a time, transposed to [128][BLOCK_FEATURES] into L1, so
        // that a hidden unit's weights for the block are contiguous vectors.
        let mut wt = reuse(BLOCK_FEATURES * HIDDEN);
        let first = p * per;
        for b in first..(first + per).min(blocks) {
            transpose_block(
                &w[b * BLOCK_FEATURES * HIDDEN..][..BLOCK_FEATURES * HIDDEN],
                &mut wt,
            );
            input_gradient_block(&live, &wt, (b - first) * BLOCK_FEATURES, &mut rows);
        }
        spare(wt);
    });
}

/// Images per task of the forward walk, which reads all the layer's weights for each task
/// (from L3): one task a thread.
fn images_per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads()).clamp(8, 64)
}

/// The gradient of the weights, `dw[j][o] = Σ_i features[i][j] · dh[i][o]`: `features`
/// [n × 9216] after dropout, `dh` [n × 128]; written in full into `dw` [9216 × 128]. The
/// reference: `reference::dense_backward`'s weight gradient.
pub(super) fn weight_gradient(features: &[f32], dh: &[f32], dw: &mut [f32]) {
    let n = dh.len() / HIDDEN;
    assert_eq!(features.len(), n * FEATURES);
    assert_eq!(dw.len(), FEATURES * HIDDEN);
    // Each hidden unit's nonzero gradients, by image in order: 128 short lists, every task's.
    let live: Vec<Vec<Term>> = (0..HIDDEN)
        .map(|o| nonzero(&dh[o..].iter().step_by(HIDDEN).copied().collect::<Vec<_>>()))
        .collect();
    dw.par_chunks_mut(TASK_FEATURES * HIDDEN)
        .enumerate()
        .for_each(|(task, dw)| weight_gradient_task(features, &live, task * TASK_FEATURES, dw));
}

/// Features per block of the forward product: the GEMM's `kc` for this layer's shapes (the
/// `gemm` crate's floor for it; `the_products_are_the_gemms_bytes` holds us to it). It sums
/// each output as one chain from zero per block, and adds the blocks' sums in order.
const KC: usize = 512;
/// Features per step of the forward product's walk: their weights (32 KB) are read from L1
/// or L2 while every image of the task walks its nonzero ones among them.
const SUB: usize = 64;

/// The first dense layer's product, `out[i][o] = Σ_j features[i][j] · w[j][o]`: `features`
/// [n × 9216], `w` [9216 × 128]; written in full into `out` [n × 128]. The reference:
/// `reference::dense_forward` (without its bias).
pub(super) fn forward(features: &[f32], w: &[f32], out: &mut [f32]) {
    assert_eq!(w.len(), FEATURES * HIDDEN);
    let n = out.len() / HIDDEN;
    assert_eq!(features.len(), n * FEATURES);
    let images = images_per_task(n);
    out.par_chunks_mut(images * HIDDEN)
        .zip(features.par_chunks(images * FEATURES))
        .for_each(|(out, features)| forward_task(features, w, out));
}

simd_fn! {
    /// [`forward`] for a few images. SUB features at a time: each image lists its nonzero
    /// ones ([`Terms`]), then walks them ([`walk`]), its sums in registers and its chains in
    /// `chain` between steps.
    fn forward_task(features: &[f32], w: &[f32], out: &mut [f32]) {
        let images = out.len() / HIDDEN;
        let mut chain = reuse(out.len());
        // One list a row with AVX-512, walked before the next row is listed; one an image
        // otherwise.
        let lists = if isa::wide::<S>() { 1 } else { images };
        let mut lists = vec![Terms::default(); lists];
        for (b, w) in w.chunks_exact(KC * HIDDEN).enumerate() {
            chain.fill(0.0);
            for (s, w) in w.chunks_exact(SUB * HIDDEN).enumerate() {
                let first = b * KC + s * SUB;
                let rows = features.chunks_exact(FEATURES);
                // All 128 sums in 8 of AVX-512's 32 registers, each image walking its terms
                // as soon as it has listed them; half of them (8 of AVX2's 16) otherwise,
                // every image listed first and walked twice.
                if isa::wide::<S>() {
                    let terms = &mut lists[0];
                    for (row, chain) in rows.zip(chain.chunks_exact_mut(HIDDEN)) {
                        terms.list::<S>(row, first);
                        walk::<HIDDEN>(terms, w, array_mut(chain, 0), 0);
                    }
                } else {
                    for (row, terms) in rows.zip(&mut lists) {
                        terms.list::<S>(row, first);
                    }
                    for part in 0..HIDDEN / HALF {
                        for (terms, chain) in lists.iter().zip(chain.chunks_exact_mut(HIDDEN)) {
                            walk::<HALF>(terms, w, array_mut(chain, part * HALF), part);
                        }
                    }
                }
            }
            for (out, chain) in out.chunks_exact_mut(HIDDEN).zip(chain.chunks_exact(HIDDEN)) {
                if b == 0 {
                    out.copy_from_slice(chain);
                } else {
                    out.iter_mut().zip(chain).for_each(|(o, c)| *o += c);
                }
            }
        }
        spare(chain);
    }
}

/// One image's nonzero features among SUB, in order: their values and positions.
#[derive(Clone, Copy)]
struct Terms {
    x: [f32; SUB],
    at: [u8; SUB],
    count: usize,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            x: [0.0; SUB],
            at: [0; SUB],
            count: 0,
        }
    }
}

impl Terms {
    /// Lists `row`'s nonzero values among the SUB from `first`.
    #[inline(always)]
    fn list<S: pulp::Simd>(&mut self, row: &[f32], first: usize) {
        // The next step's features of this row, 36 KB past the previous row's: too many
        // streams for the hardware's prefetcher to follow.
        if let Some(next) = row.get(first + SUB..first + 2 * SUB) {
            prefetch(next);
        }
        let row: &[f32; SUB] = array(row, first);
        #[cfg(target_arch = "x86_64")]
        if isa::wide::<S>() {
            // SAFETY: pulp picks 16-lane f32 vectors on x86-64 only with AVX-512.
            self.count = unsafe { compress_avx512(row, &mut self.x, &mut self.at) };
            return;
        }
        self.count = nonzero_at::<S>(row, &mut self.at);
        for (x, &j) in self.x.iter_mut().zip(&self.at[..self.count]) {
            *x = row[usize::from(j)];
        }
    }
}

/// [`Terms::list`] with AVX-512's compress, 16 values a time: a branch-free listing, where the
/// bits' loop mispredicts its end for every row (about a fifth of the forward walk's time).
/// Writes the values and positions to the front of `x` and `at` (and zeros to up to 16 slots
/// after them); returns how many.
///
/// # Safety
/// The processor must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn compress_avx512(row: &[f32; SUB], x: &mut [f32; SUB], at: &mut [u8; SUB]) -> usize {
    use super::isa::AVX512_F32S;
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut count = 0;
    for (k, values) in row.chunks_exact(AVX512_F32S).enumerate() {
        // SAFETY: 16 values; the stores start at `count` ≤ 16 k, so they end by SUB. Each
        // writes 16 lanes, the compressed ones first and zeros after, which the next chunk's
        // stores overwrite from its own count on.
        unsafe {
            let v = _mm512_loadu_ps(values.as_ptr());
            // Unordered: NaN counts as not zero, as `!=` has it.
            let live = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, zero);
            let positions = _mm512_add_epi32(lanes, _mm512_set1_epi32((k * AVX512_F32S) as i32));
            _mm512_storeu_ps(x.as_mut_ptr().add(count), _mm512_maskz_compress_ps(live, v));
            let positions = _mm512_maskz_compress_epi32(live, positions);
            _mm_storeu_si128(
                at.as_mut_ptr().add(count).cast(),
                _mm512_cvtepi32_epi8(positions),
            );
            count += live.count_ones() as usize;
        }
    }
    count
}

/// One image's walk of its listed terms for `P` of the outputs (`part` counts them), their
/// sums in registers and its chain in `chain`.
#[inline(always)]
fn walk<const P: usize>(terms: &Terms, w: &[f32], chain: &mut [f32; P], part: usize) {
    let mut sum = *chain;
    for (&x, &j) in terms.x.iter().zip(&terms.at).take(terms.count) {
        axpy(
            x,
            array::<P>(w, usize::from(j) * HIDDEN + part * P),
            &mut sum,
        );
    }
    *chain = sum;
}

/// Asks for `values`' cache lines to be brought into L1; a hint, with no effect on the results.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch reads nothing and faults on no address; this one is in bounds.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}

/// Writes the positions of `row`'s nonzero values, in order, to the front of `list`; returns
/// how many.
#[inline(always)]
fn nonzero_at<S: pulp::Simd>(row: &[f32; SUB], list: &mut [u8; SUB]) -> usize {
    let mut live = live::<S, SUB>(row);
    let mut n = 0;
    while live != 0 {
        list[n] = live.trailing_zeros() as u8;
        n += 1;
        live &= live - 1;
    }
    n
}

/// Which of `N` values (at most 64, in eights) are not zero, as bits.
#[inline(always)]
fn live<S: pulp::Simd, const N: usize>(values: &[f32; N]) -> u64 {
    const { assert!(N <= 64 && N.is_multiple_of(8)) };
    #[cfg(target_arch = "x86_64")]
    if isa::vectors::<S>() {
        // SAFETY: pulp picks 8- or 16-lane f32 vectors on x86-64 only with AVX2 or more.
        return unsafe { live_avx2(values) };
    }
    let mut live = 0u64;
    for (k, &v) in values.iter().enumerate() {
        live |= u64::from(v != 0.0) << k;
    }
    live
}

/// [`live`] with a compare and a movemask per 8 values: from the portable loop, the compiler
/// builds the bits on AVX-512 from mask registers shifted into place one at a time.
///
/// # Safety
/// The processor must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn live_avx2<const N: usize>(values: &[f32; N]) -> u64 {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_ps();
    let mut live = 0u64;
    for (k, v) in values.chunks_exact(8).enumerate() {
        // SAFETY: 8 values.
        let v = unsafe { _mm256_loadu_ps(v.as_ptr()) };
        // Unordered: NaN counts as not zero, as `!=` has it.
        let bits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, zero)) as u32;
        live |= u64::from(bits) << (8 * k);
    }
    live
}

/// One nonzero term of a sum: its index along the inner dimension, and its factor.
#[derive(Clone, Copy, Default)]
struct Term {
    at: u32,
    factor: f32,
}

/// A row's nonzero values, in order.
fn nonzero(row: &[f32]) -> Vec<Term> {
    let terms = row.iter().enumerate().filter(|(_, v)| **v != 0.0);
    terms
        .map(|(at, &factor)| Term {
            at: at as u32,
            factor,
        })
        .collect()
}

/// `w` [BLOCK_FEATURES × 128] into `t` [128 × BLOCK_FEATURES].
fn transpose_block(w: &[f32], t: &mut [f32]) {
    assert!(w.len() == BLOCK_FEATURES * HIDDEN && t.len() == BLOCK_FEATURES * HIDDEN);
    let shape = Shape {
        rows: BLOCK_FEATURES,
        cols: HIDDEN,
        from: HIDDEN,
        to: BLOCK_FEATURES,
    };
    transpose(w, t, shape);
}

simd_fn! {
    /// [`input_gradient`] for every image (`live`: each one's nonzero terms of `dh`), the
    /// BLOCK_FEATURES features from `first` of each of its `out` rows; `wt` their weights,
    /// transposed.
    fn input_gradient_block(live: &[Vec<Term>], wt: &[f32], first: usize, out: &mut [&mut [f32]]) {
        for (terms, out) in live.iter().zip(out) {
            let mut sum = [0.0f32; BLOCK_FEATURES];
            for t in terms {
                axpy(t.factor, &wt[t.at as usize * BLOCK_FEATURES..][..BLOCK_FEATURES], &mut sum);
            }
            out[first..][..BLOCK_FEATURES].copy_from_slice(&sum);
        }
    }
}

simd_fn! {
    /// [`weight_gradient`] for the TASK_FEATURES features from `first`: each hidden unit sums the rows
    /// of those features of the images where its gradient is not zero (`live`, from
    /// [`weight_gradient`]), UNITS units at a time, then their sums are transposed into the
    /// gradient's rows.
    fn weight_gradient_task(features: &[f32], live: &[Vec<Term>], first: usize, dw: &mut [f32]) {
        let mut sums = [0.0f32; UNITS * TASK_FEATURES];
        let n = features.len() / FEATURES;
        // The images' rows are 36,864 bytes apart, 9 x 4 KB: read in place, all of them fall
        // in the same four of L1's 64 sets, of which only 12 lines a set fit, and the walk
        // waited on L2 for most of its loads.
        let mut block = reuse(n * TASK_FEATURES);
        for (b, x) in block.chunks_exact_mut(TASK_FEATURES).zip(features.chunks_exact(FEATURES)) {
            b.copy_from_slice(&x[first..][..TASK_FEATURES]);
        }
        for (g, lists) in live.chunks_exact(UNITS).enumerate() {
            // Four units' chains at once with AVX-512 (16 of its 32 registers), so that
            // each multiply-add need not wait on its chain's last; one unit's (8 of AVX2's
            // 16) otherwise.
            if isa::wide::<S>() {
                for (lists, sums) in lists.chunks_exact(4).zip(sums.chunks_exact_mut(4 * TASK_FEATURES)) {
                    unit_sums::<4>(&block, lists, sums);
                }
            } else {
                for (lists, sums) in lists.chunks_exact(1).zip(sums.chunks_exact_mut(TASK_FEATURES)) {
                    unit_sums::<1>(&block, lists, sums);
                }
            }
            let shape = Shape {
                rows: UNITS,
                cols: TASK_FEATURES,
                from: TASK_FEATURES,
                to: HIDDEN,
            };
            transpose(&sums, &mut dw[g * UNITS..], shape);
        }
        spare(block);
    }
}

/// The sums over `P` units' listed images of their rows in `block` ([n × TASK_FEATURES]), into `sums`
/// ([P × TASK_FEATURES]): the units walk their lists side by side as far as the shortest goes, then
/// each finishes its own; each sum is one chain in image order either way.
#[inline(always)]
fn unit_sums<const P: usize>(block: &[f32], lists: &[Vec<Term>], sums: &mut [f32]) {
    let mut sum = [[0.0f32; TASK_FEATURES]; P];
    let common = lists.iter().map(Vec::len).min().unwrap_or(0);
    for k in 0..common {
        for (sum, terms) in sum.iter_mut().zip(lists) {
            let t = terms[k];
            axpy(
                t.factor,
                array::<TASK_FEATURES>(block, t.at as usize * TASK_FEATURES),
                sum,
            );
        }
    }
    for (sum, terms) in sum.iter_mut().zip(lists) {
        for t in &terms[common..] {
            axpy(
                t.factor,
                array::<TASK_FEATURES>(block, t.at as usize * TASK_FEATURES),
                sum,
            );
        }
    }
    for (out, sum) in sums.chunks_exact_mut(TASK_FEATURES).zip(&sum) {
        out.copy_from_slice(sum);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::super::Stored::{AsIs, Transposed};
    use super::super::{matmul_stored, on_every_instruction_set};
    use super::*;

    /// Values like the layer's: mostly zeros, the rest of either sign.
    fn sparse(len: usize, live: f64, rng: &mut StdRng) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if rng.random_bool(live) {
                    rng.random_range(-1.0..1.0)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Each walk, in every instruction set this processor has, against the GEMM.
    #[test]
    fn the_products_are_the_gemms_bytes() {
        let mut rng = StdRng::seed_from_u64(5);
        // A batch, and a size that is not a multiple of the tasks' sizes; the features about
        // as dense as in training (dropout on) and as in evaluation (off).
        for (n, density) in [(128, 0.3), (37, 0.3), (128, 0.45)] {
            let case = Case::new(n, density, &mut rng);
            let gemm = case.gemms();
            for (set, ours) in on_every_instruction_set(|| case.walks()) {
                for ((product, a), b) in ["forward", "input gradient", "weight gradient"]
                    .iter()
                    .zip(&gemm)
                    .zip(&ours)
                {
                    let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{product}, {set}, batch of {n}, density {density}");
                }
            }
        }
    }

    /// The three products' operands, shaped like the layer's.
    struct Case {
        features: Vec<f32>,
        dh: Vec<f32>,
        w: Vec<f32>,
    }

    impl Case {
        fn new(n: usize, density: f64, rng: &mut StdRng) -> Case {
            Case {
                features: sparse(n * FEATURES, density, rng),
                dh: sparse(n * HIDDEN, 0.25, rng),
                w: (0..FEATURES * HIDDEN)
                    .map(|_| rng.random_range(-0.05..0.05))
                    .collect(),
            }
        }

        /// The forward product, the input gradient and the weight gradient by the GEMM (one
        /// thread).
        fn gemms(&self) -> [Vec<f32>; 3] {
            let n = self.dh.len() / HIDDEN;
            let gemm = |lhs, rhs, dims: (usize, usize, usize)| {
                let mut out = vec![0.0; dims.0 * dims.2];
                matmul_stored(&mut out, lhs, rhs, dims, false, 1);
                out
            };
            let (x, dh, w) = (&self.features, &self.dh, &self.w);
            [
                gemm((x, AsIs), (w, AsIs), (n, FEATURES, HIDDEN)),
                gemm((dh, AsIs), (w, Transposed), (n, HIDDEN, FEATURES)),
                gemm((x, Transposed), (dh, AsIs), (FEATURES, n, HIDDEN)),
            ]
        }

        /// The same by the walks, into buffers that start as NaN.
        fn walks(&self) -> [Vec<f32>; 3] {
            let n = self.dh.len() / HIDDEN;
            let mut out =
                [n * HIDDEN, n * FEATURES, FEATURES * HIDDEN].map(|len| vec![f32::NAN; len]);
            forward(&self.features, &self.w, &mut out[0]);
            input_gradient(&self.dh, &self.w, &mut out[1]);
            weight_gradient(&self.features, &self.dh, &mut out[2]);
            out
        }
    }
}
