//! The convolutions' backward pass on the CPU, per group of images: max-pool, dropout, ReLU
//! and conv2 backwards ([`conv2_backward`], walking only the pooled cells that pass a
//! gradient), then ReLU and conv1 ([`conv1_backward`]; the images need no gradient). Each
//! group's gradients are partial sums, added in group order ([`sum_partials`]), so the bytes
//! do not depend on the threads' timing. The references: `reference::{maxpool_backward,
//! dropout_backward, relu_backward, conv_backward}`.

use std::cell::RefCell;

use rayon::prelude::*;

use super::ConvLayout::{Burn, Rows};
use super::dropout::{Dropout, Layer};
use super::forward::{Net, Pass, Trace};
use super::isa;
use super::parts::Laps;
use super::{
    C1, C2, FEATURES, GROUP, K2, S1, SP, TAPS, array, axpy, relayout, reuse, simd_fn, spare,
};
use crate::network::{PIXELS, SIDE};

/// Pooled rows conv2's backward pass walks at a time (see [`conv2_backward`]).
const BAND: usize = 2;

/// The convolutions' gradients, per group of images; the groups' partial sums are kept apart
/// and added in group order. Returns their sum, laid out as a group's (see [`split_partial`]).
pub(super) fn conv_backward(
    net: &Net<'_>,
    pixels: &[f32],
    (forward, trace): (&Pass, &Trace),
    dfeatures: &[f32],
    dropout: Dropout,
) -> Vec<f32> {
    let mut laps = Laps::start();
    let w = net.params();
    let w2 = relayout(&w.conv2.weight, C1, C2, Burn, Rows);
    let scale = dropout.scale(Layer::Pooled);
    // Each group's gradients, side by side in one buffer reused from step to step; each task
    // clears its own.
    let mut partials = reuse(pixels.len().div_ceil(GROUP * PIXELS) * PARTIAL);
    partials
        .par_chunks_mut(PARTIAL)
        .zip(pixels.par_chunks(GROUP * PIXELS))
        .zip(dfeatures.par_chunks(GROUP * FEATURES))
        .zip(forward.features.par_chunks(GROUP * FEATURES))
        .zip(trace.winner.par_chunks(GROUP * FEATURES))
        .for_each(|((((partial, images), grad), features), winner)| {
            partial.fill(0.0);
            // conv1's maps again, as the forward pass computed them (the same bytes).
            let mut a1_nhwc = reuse(images.len() / PIXELS * S1 * S1 * C1);
            net.conv1_maps(images, &mut a1_nhwc);
            let pooled = (grad, features, winner, scale);
            conv_backward_group(images, &a1_nhwc, pooled, &w2, partial);
            spare(a1_nhwc);
        });
    laps.lap("convolutions' backward pass, per group");
    let sum = sum_partials(&partials);
    spare(partials);
    laps.lap("convolutions' partial gradients added");
    sum
}

/// Floats of one group's gradients in the partial sums: conv1's weight (GEMM layout), conv1's
/// bias, conv2's weight (in rows), conv2's bias.
const PARTIAL: usize = TAPS * C1 + C1 + K2 * C2 + C2;

/// One group's gradients, `PARTIAL` floats, as (conv1's weight, its bias, conv2's weight, its
/// bias).
pub(super) fn split_partial(p: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
    let (w1, rest) = p.split_at_mut(TAPS * C1);
    let (b1, rest) = rest.split_at_mut(C1);
    let (w2, b2) = rest.split_at_mut(K2 * C2);
    (w1, b1, w2, b2)
}

/// The groups' partial gradients (`PARTIAL` floats each) added in group order, each value as
/// one thread would add them; the values are split between the threads (on one, this took
/// ~0.4 ms of each step).
fn sum_partials(partials: &[f32]) -> Vec<f32> {
    /// Values a task adds.
    const TASK_VALUES: usize = 1024;
    let mut total = vec![0.0f32; PARTIAL];
    total
        .par_chunks_mut(TASK_VALUES)
        .enumerate()
        .for_each(|(k, sums)| {
            for p in partials.chunks_exact(PARTIAL) {
                let part = &p[k * TASK_VALUES..][..sums.len()];
                sums.iter_mut().zip(part).for_each(|(a, b)| *a += b);
            }
        });
    total
}

/// What the backward pass needs of one image's pooled features, each in burn's flatten order.
#[derive(Clone, Copy)]
struct Pooled<'a> {
    /// The loss's gradient with respect to the features after dropout.
    grad: &'a [f32],
    /// The features after dropout: zero where the ReLU or dropout stopped the gradient.
    features: &'a [f32],
    /// Which of its window's four values each feature came from.
    winner: &'a [u8],
    /// Dropout's multiplier for the units it kept.
    scale: f32,
}

/// conv2's and conv1's gradients for one group of images (`w2` in rows), added into `grads`
/// (`PARTIAL` floats, see [`split_partial`]): per image, [`conv2_backward`] then
/// [`conv1_backward`].
fn conv_backward_group(
    images: &[f32],
    a1_nhwc: &[f32],
    (grad, features, winner, scale): (&[f32], &[f32], &[u8], f32),
    w2: &[f32],
    grads: &mut [f32],
) {
    let (dw1, db1, dw2, db2) = split_partial(grads);
    // conv1's output gradient, written in full for each image by conv2's backward pass.
    let mut dz1 = reuse(S1 * S1 * C1);
    let mut live = LIVE
        .with_borrow_mut(Option::take)
        .unwrap_or_else(LiveCells::new);
    let per_image = grad
        .chunks(FEATURES)
        .zip(features.chunks(FEATURES))
        .zip(winner.chunks(FEATURES));
    for ((img, a1_nhwc), ((grad, features), winner)) in images
        .chunks(PIXELS)
        .zip(a1_nhwc.chunks(S1 * S1 * C1))
        .zip(per_image)
    {
        let pooled = Pooled {
            grad,
            features,
            winner,
            scale,
        };
        conv2_backward(a1_nhwc, pooled, w2, dw2, db2, &mut dz1, &mut live);
        conv1_backward(img, a1_nhwc, &dz1, dw1, db1);
    }
    spare(dz1);
    LIVE.with_borrow_mut(|slot| *slot = Some(live));
}

thread_local! {
    /// Each thread's live-cell lists, kept from group to group: 74 KB to allocate and clear
    /// for every group otherwise.
    static LIVE: RefCell<Option<Box<LiveCells>>> = const { RefCell::new(None) };
}

simd_fn! {
    /// Max-pool, dropout, ReLU and conv2 backwards for one image: adds conv2's weight (in rows)
    /// and bias gradients into `dw2` and `db2`, and writes conv1's output gradient `dz1`
    /// (channels-last [26 × 26 × 32]). The reference: `reference::{dropout_backward,
    /// maxpool_backward, relu_backward, conv_backward}`.
    ///
    /// Not as GEMMs: the max-pool passes each pooled gradient to one of four positions, and
    /// dropout and ReLU stop most of the rest, so conv2's output gradient is mostly zeros.
    /// Walking only the others ("live cells"), each adds its 3x3x32 input window into its
    /// channel's weight gradient and its channel's weights into the window's input gradient: a
    /// fraction of the dense products' arithmetic, and no im2col. Memory, not arithmetic, sets
    /// its pace: see the comments on the band and the registers below.
    fn conv2_backward(
        a1_nhwc: &[f32],
        pooled: Pooled<'_>,
        w2: &[f32],
        dw2: &mut [f32],
        db2: &mut [f32],
        dz1: &mut [f32],
        live: &mut LiveCells,
    ) {
        dz1.fill(0.0);
        // A window's three rows of (kx, channel): 96 contiguous values each, a map row apart.
        let run = 3 * C1;
        #[cfg(target_arch = "x86_64")]
        if isa::vectors::<S>() {
            // SAFETY: pulp picks 8- or 16-lane f32 vectors on x86-64 only with AVX2 or more.
            unsafe {
                live.list_avx2(pooled);
                live.bias_gradient_avx2(db2);
            }
        } else {
            live.list(pooled);
            live.bias_gradient(db2);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            live.list(pooled);
            live.bias_gradient(db2);
        }
        // A band of pooled rows at a time, every channel walking it: the band's windows
        // (6 map rows: 20 KB of `a1_nhwc` and 20 KB of `dz1`) stay in L1 while 64 channels
        // read and add into them, rather than each channel streaming both whole maps.
        for band in 0..BANDS {
            let rows = dw2.chunks_mut(K2).zip(w2.chunks(K2));
            for (c, (dw, w)) in rows.enumerate() {
                let cells = live.cells(band, c);
                // The channel's weight gradient stays in registers while its cells are
                // walked, so a cell costs loads of its window and no stores: all of it in 18
                // of AVX-512's 32 registers, a window row (12 of AVX2's 16) at a time
                // otherwise. Each value's sum runs in cell order either way.
                if isa::wide::<S>() {
                    weight_gradient::<K2>(a1_nhwc, cells, dw);
                } else {
                    weight_gradient::<{ 3 * C1 }>(a1_nhwc, cells, dw);
                }
                let w: [f32; K2] = *array(w, 0);
                for (&g, &at) in cells.0.iter().zip(cells.1) {
                    let at = at as usize;
                    for (ky, w) in w.chunks_exact(run).enumerate() {
                        axpy(g, w, &mut dz1[at + ky * S1 * C1..][..run]);
                    }
                }
            }
        }
    }
}

/// Bands of [`BAND`] pooled rows in an image.
const BANDS: usize = SP / BAND;

/// One image's live cells (those that pass a gradient to conv2) by band and channel: each
/// cell's gradient and where its 3x3 window starts in conv1's channels-last maps.
struct LiveCells {
    /// [band][channel][up to BAND × 12 cells], each list from its start.
    grad: [[[f32; BAND_CELLS]; C2]; BANDS],
    at: [[[u32; BAND_CELLS]; C2]; BANDS],
    count: [[u8; C2]; BANDS],
}

/// Cells in a band of one channel.
const BAND_CELLS: usize = BAND * SP;

/// For each 8-bit mask, the lanes it selects, in order, then zeros: the permutation that packs
/// those lanes to the front of an AVX2 vector.
#[cfg(target_arch = "x86_64")]
static PACK: [[u32; 8]; 256] = {
    let mut table = [[0u32; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut n) = (0, 0);
        while lane < 8 {
            if mask & (1 << lane) != 0 {
                table[mask][n] = lane as u32;
                n += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    table
};

impl LiveCells {
    /// Lists them in one pass over the pooled values in their stored order (channel, row):
    /// read band by band for every channel, as the walk goes, the three arrays are read 576
    /// bytes apart and the loads wait on memory.
    #[inline(always)]
    fn list(&mut self, pooled: Pooled<'_>) {
        let live = self;
        for c in 0..C2 {
            for band in 0..BANDS {
                let first = c * SP * SP + band * BAND_CELLS;
                let grad = &pooled.grad[first..][..BAND_CELLS];
                let features = &pooled.features[first..][..BAND_CELLS];
                let winner = &pooled.winner[first..][..BAND_CELLS];
                // The cells that pass a gradient, listed without branching: which ones do is
                // close to a coin toss, and mispredicted branches cost more.
                let mut which = [0u8; BAND_CELLS];
                let mut count = 0;
                for (cell, &f) in features.iter().enumerate() {
                    which[count] = cell as u8;
                    count += usize::from(f > 0.0);
                }
                let slots = live.grad[band][c].iter_mut().zip(&mut live.at[band][c]);
                for ((g_slot, at_slot), &cell) in slots.zip(&which[..count]) {
                    let cell = usize::from(cell);
                    *g_slot = grad[cell] * pooled.scale;
                    *at_slot = window(band, cell, winner[cell]) as u32;
                }
                live.count[band][c] = count as u8;
            }
        }
    }

    /// Adds each channel's listed cell gradients, in band and cell order, into conv2's bias
    /// gradient `db2`. The reference: `reference::conv_backward`'s bias sum.
    #[inline(always)]
    fn bias_gradient(&self, db2: &mut [f32]) {
        for (c, db) in db2.iter_mut().enumerate() {
            // The running sum in a register: added into memory per cell, each add would wait
            // on the last one's store.
            let mut bias = *db;
            for band in 0..BANDS {
                bias = self.cells(band, c).0.iter().fold(bias, |sum, g| sum + g);
            }
            *db = bias;
        }
    }

    /// [`LiveCells::list`] with AVX2 (AVX-512 processors run it too), the same values in the
    /// same order: 8 cells at a time, their gradients and window starts computed in lanes, the
    /// live ones packed to the front by a permutation looked up from their mask. The scalar
    /// loop spent ~5 cycles a cell, listing and addressing one cell at a time.
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn list_avx2(&mut self, pooled: Pooled<'_>) {
        use super::isa::AVX2_F32S;
        use std::arch::x86_64::*;
        let live = self;
        assert!(
            pooled.grad.len() >= FEATURES
                && pooled.features.len() >= FEATURES
                && pooled.winner.len() >= FEATURES
        );
        let base: [[u32; AVX2_F32S]; BAND_CELLS / AVX2_F32S] = std::array::from_fn(|part| {
            std::array::from_fn(|i| window(0, part * AVX2_F32S + i, 0) as u32)
        });
        let base = base.map(|b| {
            // SAFETY: 8 words.
            unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
        });
        let scale = _mm256_set1_ps(pooled.scale);
        let zero = _mm256_setzero_ps();
        // [`window`] in lanes: the band's start plus the cell's, then a map row down for the
        // winners below (2, 3) and a column across for those on the right (1, 3).
        let row = _mm256_set1_epi32((S1 * C1) as i32);
        let column = _mm256_set1_epi32(C1 as i32);
        let one = _mm256_set1_epi32(1);
        for c in 0..C2 {
            for band in 0..BANDS {
                let first = c * SP * SP + band * BAND_CELLS;
                let band_start = _mm256_set1_epi32(window(band, 0, 0) as i32);
                let mut count = 0;
                for (part, base) in base.iter().enumerate() {
                    let at = first + part * AVX2_F32S;
                    // SAFETY: 8 cells of this band (the assertion above), and 8 slots from
                    // `count`, at most 8 a part before this one: inside the list's 24.
                    unsafe {
                        let f = _mm256_loadu_ps(pooled.features.as_ptr().add(at));
                        let g = _mm256_loadu_ps(pooled.grad.as_ptr().add(at));
                        let won = _mm_loadl_epi64(pooled.winner.as_ptr().add(at).cast());
                        let keep = _mm256_movemask_ps(_mm256_cmp_ps(f, zero, _CMP_GT_OQ)) as usize;
                        let g = _mm256_mul_ps(g, scale);
                        let won = _mm256_cvtepu8_epi32(won);
                        let down = _mm256_mullo_epi32(_mm256_srli_epi32(won, 1), row);
                        let across = _mm256_mullo_epi32(_mm256_and_si256(won, one), column);
                        let offset = _mm256_add_epi32(_mm256_add_epi32(down, across), band_start);
                        let at = _mm256_add_epi32(*base, offset);
                        let pack = _mm256_loadu_si256(PACK[keep].as_ptr().cast());
                        _mm256_storeu_ps(
                            live.grad[band][c][count..].as_mut_ptr(),
                            _mm256_permutevar8x32_ps(g, pack),
                        );
                        _mm256_storeu_si256(
                            live.at[band][c][count..].as_mut_ptr().cast(),
                            _mm256_permutevar8x32_epi32(at, pack),
                        );
                        count += keep.count_ones() as usize;
                    }
                }
                live.count[band][c] = count as u8;
            }
        }
    }

    /// [`LiveCells::bias_gradient`] with AVX2, the same sums in the same order: eight
    /// channels' sums in lanes; a lane past its channel's count adds -0, which leaves every
    /// sum as it was. One channel's chain at a time, each add waited on the last, took ~0.25
    /// ms of a step.
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn bias_gradient_avx2(&self, db2: &mut [f32]) {
        use super::isa::AVX2_F32S;
        use std::arch::x86_64::*;
        let live = self;
        assert!(db2.len() >= C2);
        let nothing = _mm256_set1_ps(-0.0);
        let lists = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let lists = _mm256_mullo_epi32(lists, _mm256_set1_epi32(BAND_CELLS as i32));
        for (first, db) in (0..C2)
            .step_by(AVX2_F32S)
            .zip(db2.chunks_exact_mut(AVX2_F32S))
        {
            // SAFETY: 8 of the `C2` sums.
            let mut bias = unsafe { _mm256_loadu_ps(db.as_ptr()) };
            for band in 0..BANDS {
                let counts: [u8; AVX2_F32S] =
                    live.count[band][first..][..AVX2_F32S].try_into().unwrap();
                let most = counts.iter().copied().max().unwrap_or(0);
                // SAFETY: 8 counts.
                let counts =
                    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(counts.as_ptr().cast())) };
                let grads = live.grad[band][first..][..AVX2_F32S].as_ptr().cast::<f32>();
                for k in 0..usize::from(most) {
                    let listed = _mm256_cmpgt_epi32(counts, _mm256_set1_epi32(k as i32));
                    // SAFETY: lane j reads cell k of channel first + j's list in this band,
                    // only where k is below its count: inside `live.grad`.
                    let g = unsafe {
                        _mm256_mask_i32gather_ps::<4>(
                            nothing,
                            grads.add(k),
                            lists,
                            _mm256_castsi256_ps(listed),
                        )
                    };
                    bias = _mm256_add_ps(bias, g);
                }
            }
            // SAFETY: as the load above.
            unsafe { _mm256_storeu_ps(db.as_mut_ptr(), bias) };
        }
    }

    /// Space for an image's lists, reused from image to image: only listed cells are read.
    fn new() -> Box<LiveCells> {
        Box::new(LiveCells {
            grad: [[[0.0; BAND_CELLS]; C2]; BANDS],
            at: [[[0; BAND_CELLS]; C2]; BANDS],
            count: [[0; C2]; BANDS],
        })
    }

    /// A band's cells of channel `c`: their gradients and where their windows start.
    fn cells(&self, band: usize, c: usize) -> (&[f32], &[u32]) {
        let n = usize::from(self.count[band][c]);
        (&self.grad[band][c][..n], &self.at[band][c][..n])
    }
}

/// Where in conv1's channels-last maps the 3x3 window of the `cell`-th pooled cell of `band`
/// starts, for the window position `won` its max-pool picked (row-major in the 2x2 window).
#[inline(always)]
fn window(band: usize, cell: usize, won: u8) -> usize {
    let y = 2 * (band * BAND + cell / SP) + usize::from(won / 2);
    let x = 2 * (cell % SP) + usize::from(won % 2);
    (y * S1 + x) * C1
}

/// Adds each cell's 3x3x32 window of `a1_nhwc`, times its gradient, into conv2's weight gradient
/// `dw` (one channel's row, [(ky, kx, in)]), `W` values at a time (whole window rows), with
/// those `W` sums in registers over all the cells.
#[inline(always)]
fn weight_gradient<const W: usize>(a1_nhwc: &[f32], (grad, at): (&[f32], &[u32]), dw: &mut [f32]) {
    let run = 3 * C1;
    for (part, dw) in dw.chunks_exact_mut(W).enumerate() {
        let mut acc: [f32; W] = *array(dw, 0);
        for (&g, &at) in grad.iter().zip(at) {
            let at = at as usize;
            for (r, acc) in acc.chunks_exact_mut(run).enumerate() {
                let ky = part * W / run + r;
                let window = &a1_nhwc[at + ky * S1 * C1..][..run];
                for (a, v) in acc.iter_mut().zip(window) {
                    *a = g.mul_add(*v, *a);
                }
            }
        }
        dw.copy_from_slice(&acc);
    }
}

simd_fn! {
    /// ReLU and conv1 backwards for one image: adds conv1's weight (GEMM layout [9 × 32]) and
    /// bias gradients into `dw1` and `db1`, from conv1's output gradient `dz1` (channels-last)
    /// where the ReLU passed it. The images need no gradient. The reference:
    /// `reference::{relu_backward, conv_backward}`.
    fn conv1_backward(img: &[f32], a1_nhwc: &[f32], dz1: &[f32], dw1: &mut [f32], db1: &mut [f32]) {
        // Both gradients stay in registers over the image's pixels: every channel's weight
        // gradient in 18 of AVX-512's 32 and its bias gradient in 2 more; eight channels a
        // pass otherwise (9 + 1 of AVX2's 16). Each value's sum runs in pixel order either way.
        if isa::wide::<S>() {
            conv1_gradients::<C1>(img, a1_nhwc, dz1, dw1, db1);
        } else {
            conv1_gradients::<8>(img, a1_nhwc, dz1, dw1, db1);
        }
    }
}

/// [`conv1_backward`] for channels `W` at a time.
#[inline(always)]
fn conv1_gradients<const W: usize>(
    img: &[f32],
    a1_nhwc: &[f32],
    dz1: &[f32],
    dw1: &mut [f32],
    db1: &mut [f32],
) {
    for first in (0..C1).step_by(W) {
        let mut w_acc: [[f32; W]; TAPS] = std::array::from_fn(|k| *array(dw1, k * C1 + first));
        let mut b_acc: [f32; W] = *array(db1, first);
        for y in 0..S1 {
            let rows = &img[y * SIDE..][..3 * SIDE];
            for x in 0..S1 {
                let at = (y * S1 + x) * C1 + first;
                let mut d: [f32; W] = *array(dz1, at);
                for (d, &a) in d.iter_mut().zip(array::<W>(a1_nhwc, at)) {
                    if a <= 0.0 {
                        *d = 0.0;
                    }
                }
                for (b, d) in b_acc.iter_mut().zip(&d) {
                    *b += d;
                }
                for (k, dw) in w_acc.iter_mut().enumerate() {
                    let p = rows[k / 3 * SIDE + x + k % 3];
                    for (w, d) in dw.iter_mut().zip(&d) {
                        *w = p.mul_add(*d, *w);
                    }
                }
            }
        }
        for (k, dw) in w_acc.iter().enumerate() {
            dw1[k * C1 + first..][..W].copy_from_slice(dw);
        }
        db1[first..][..W].copy_from_slice(&b_acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts::ConvLayout::Gemm;
    use crate::network::CONV2_SIDE;
    use crate::reference;
    use crate::reference::testing::{assert_close, channels_last, random};
    use crate::training::testing::Case;

    /// Max-pool, dropout, ReLU and conv2 backwards for each image, on the reference's forward
    /// values, against the reference's four layers.
    #[test]
    fn conv2_backward_matches_its_reference_layers() {
        let case = Case::new(Dropout::Seeded(5));
        let act = reference::forward(&case.w, &case.pixels, case.masks());
        let dfeatures = random(act.features.len(), (-1.0, 1.0), 9);
        let dpooled = reference::dropout_backward(&dfeatures, &case.masks.0);
        let da2 = reference::maxpool_backward(&dpooled, &act.from, act.a2.len());
        let dz2 = reference::relu_backward(&act.a2, &da2);
        let want =
            reference::conv_backward(&act.a1, case.conv1_maps(), &case.w.conv2.weight, &dz2, true);

        let a1_nhwc = channels_last(&act.a1, case.conv1_maps());
        // Which of its window's four values each pooled feature came from.
        let winner: Vec<u8> = act
            .from
            .iter()
            .map(|&i| (2 * (i / CONV2_SIDE % 2) + i % 2) as u8)
            .collect();
        let scale = case.dropout.scale(Layer::Pooled);
        let w2 = relayout(&case.w.conv2.weight, C1, C2, Burn, Rows);
        let (mut dw2, mut db2) = (vec![0.0; K2 * C2], vec![0.0; C2]);
        // Whatever the buffer held is overwritten: NaN here, as a reused buffer in debug builds.
        let mut dz1 = vec![f32::NAN; a1_nhwc.len()];
        let mut live = LiveCells::new();
        for (k, dz1) in dz1.chunks_mut(S1 * S1 * C1).enumerate() {
            let image = k * FEATURES..(k + 1) * FEATURES;
            let pooled = Pooled {
                grad: &dfeatures[image.clone()],
                features: &act.features[image.clone()],
                winner: &winner[image],
                scale,
            };
            let a1_nhwc = &a1_nhwc[k * S1 * S1 * C1..][..S1 * S1 * C1];
            conv2_backward(a1_nhwc, pooled, &w2, &mut dw2, &mut db2, dz1, &mut live);
        }
        let dw2 = relayout(&dw2, C1, C2, Rows, Burn);
        assert_close(&dw2, &want.dweight, 1e-5, "conv2 weight");
        assert_close(&db2, &want.dbias, 1e-5, "conv2 bias");
        let da1 = channels_last(want.dx.as_ref().unwrap(), case.conv1_maps());
        assert_close(&dz1, &da1, 1e-5, "conv1's output gradient");
    }

    #[test]
    fn conv1_backward_matches_its_reference_layers() {
        let case = Case::new(Dropout::Off);
        let act = reference::forward(&case.w, &case.pixels, None);
        let da1 = random(act.a1.len(), (-1.0, 1.0), 10);
        let dz1 = reference::relu_backward(&act.a1, &da1);
        let input = reference::Maps {
            images: case.n(),
            channels: 1,
            side: SIDE,
        };
        let want = reference::conv_backward(&case.pixels, input, &case.w.conv1.weight, &dz1, false);

        let a1_nhwc = channels_last(&act.a1, case.conv1_maps());
        let d = channels_last(&da1, case.conv1_maps());
        let (mut dw1, mut db1) = (vec![0.0; TAPS * C1], vec![0.0; C1]);
        let map = S1 * S1 * C1;
        for k in 0..case.n() {
            let img = &case.pixels[k * PIXELS..][..PIXELS];
            let d = &d[k * map..][..map];
            conv1_backward(img, &a1_nhwc[k * map..][..map], d, &mut dw1, &mut db1);
        }
        assert_close(
            &relayout(&dw1, 1, C1, Gemm, Burn),
            &want.dweight,
            1e-5,
            "conv1 weight",
        );
        assert_close(&db1, &want.dbias, 1e-5, "conv1 bias");
    }

    /// The register blockings the instruction sets choose between (all at once with AVX-512,
    /// a slice at a time otherwise) give the same bytes, whichever this processor runs.
    #[test]
    fn every_register_blocking_gives_the_same_gradients() {
        let a1_nhwc = random(S1 * S1 * C1, (-0.5, 1.0), 12);
        let grad = [0.7, -1.3, 0.2];
        let at = [0, 5 * C1, (9 * S1 + 3) * C1].map(|at| at as u32);
        let start = random(K2, (-1.0, 1.0), 13);
        let (mut whole, mut rows) = (start.clone(), start);
        weight_gradient::<K2>(&a1_nhwc, (&grad, &at), &mut whole);
        weight_gradient::<{ 3 * C1 }>(&a1_nhwc, (&grad, &at), &mut rows);
        assert_eq!(whole, rows);
        assert_ne!(whole, random(K2, (-1.0, 1.0), 13));

        let img = random(PIXELS, (0.0, 1.0), 14);
        let dz1 = random(S1 * S1 * C1, (-1.0, 1.0), 15);
        let grads = |width: usize| {
            let (mut dw1, mut db1) = (vec![0.5; TAPS * C1], vec![0.25; C1]);
            match width {
                C1 => conv1_gradients::<C1>(&img, &a1_nhwc, &dz1, &mut dw1, &mut db1),
                _ => conv1_gradients::<8>(&img, &a1_nhwc, &dz1, &mut dw1, &mut db1),
            }
            (dw1, db1)
        };
        assert_eq!(grads(C1), grads(8));
        assert_ne!(grads(8).0, vec![0.5; TAPS * C1]);
    }

    /// Both ways of listing the live cells give the same lists and bias sums, with features
    /// that are negative, zero (either sign), NaN and positive.
    #[test]
    fn both_listings_list_the_same_cells() {
        let mut features = random(FEATURES, (-1.0, 1.0), 16);
        for (i, f) in features.iter_mut().enumerate().step_by(7) {
            *f = [0.0, -0.0, f32::NAN][i % 3];
        }
        features[5 * SP * SP..][..SP * SP].fill(-1.0);
        let grad = random(FEATURES, (-1.0, 1.0), 17);
        let winner: Vec<u8> = (0..FEATURES).map(|i| (i * 7 % 4) as u8).collect();
        let pooled = Pooled {
            grad: &grad,
            features: &features,
            winner: &winner,
            scale: 1.0 / 0.65,
        };
        // Sums that start at -0 too, one of them in a channel with no live cells: a lane
        // that added +0 would make it +0.
        let mut db = random(C2, (-1.0, 1.0), 18);
        db.iter_mut().step_by(5).for_each(|v| *v = -0.0);
        let (mut scalar, mut db_scalar) = (LiveCells::new(), db.clone());
        scalar.list(pooled);
        scalar.bias_gradient(&mut db_scalar);
        let listed: usize = (0..BANDS)
            .flat_map(|band| (0..C2).map(move |c| (band, c)))
            .map(|(band, c)| scalar.cells(band, c).0.len())
            .sum();
        let live = features.iter().filter(|&&f| f > 0.0).count();
        assert_eq!(listed, live);
        #[cfg(target_arch = "x86_64")]
        if isa::level() >= isa::Level::Avx2 {
            let (mut vector, mut db_vector) = (LiveCells::new(), db.clone());
            // SAFETY: the level says this processor has AVX2.
            unsafe {
                vector.list_avx2(pooled);
                vector.bias_gradient_avx2(&mut db_vector);
            }
            for (band, c) in (0..BANDS).flat_map(|band| (0..C2).map(move |c| (band, c))) {
                let (g, at) = scalar.cells(band, c);
                let (vg, vat) = vector.cells(band, c);
                assert_eq!(at, vat, "band {band}, channel {c}");
                assert!(g.iter().zip(vg).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            assert!(
                db_scalar
                    .iter()
                    .zip(&db_vector)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            return;
        }
        eprintln!("no AVX2 on this processor: only the scalar listing checked");
    }
}
