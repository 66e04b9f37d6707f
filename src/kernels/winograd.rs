//! conv2's forward pass as Winograd's F(4x4, 3x3), fused with the 2x2 max-pool that follows.
//!
//! conv2 is ~85% of the forward pass's arithmetic. F(4x4, 3x3) computes each 4x4 block of
//! outputs from a 6x6 block of inputs with 36 products per (input, output) channel pair
//! instead of 144 (Lavin & Gray 2015; what oneDNN and NNPACK do for 3x3 convolutions): the
//! input block and the filter go through fixed linear transforms, are multiplied point by
//! point (per point, a [tiles × 32] · [32 × 64] product over channels), and the product goes
//! through a third transform back to 4x4 outputs. 24 = 6 × 4, so one image's map is 6 x 6
//! tiles and every 2x2 pooling window lies inside one tile: the pooling reads the tile's
//! outputs where the output transform leaves them, and conv2's full map is never stored.
//!
//! Work goes a row of six tiles at a time, so the transformed inputs (27 KB) stay in L1 and
//! the products (55 KB) in L2. Every output is a fixed sequence of adds and multiplies, and
//! each product's sum over channels runs in channel order with fused multiply-adds whatever
//! the vector width, so every instruction set gives the same bytes.

use super::{Buffer, C1, C2, FEATURES, S1, SP, TAPS, array, zeros};

/// Side of an input tile.
const TILE: usize = 6;
/// Side of the output block a tile yields.
const OUT: usize = 4;
/// Tiles per row and per column of an image: 24 / 4.
const TILES: usize = 6;
/// Output channels the output transform and the pooling take at a time: one AVX-512 vector,
/// so that a tile's values stay in registers.
const LANES: usize = 16;
/// Points of the transformed domain: 6 x 6.
const POINTS: usize = TILE * TILE;
/// The transformed inputs of one row of tiles: [point][tile][input channel].
const ROW_INPUTS: usize = POINTS * TILES * C1;
/// Their products with the filters: [point][tile][output channel].
const ROW_PRODUCTS: usize = POINTS * TILES * C2;
/// Their pooled values, channels-last: [2 pooled rows × 12][output channel].
const ROW_POOLED: usize = 2 * SP * C2;
/// Scratch space [`conv2_pool`] needs, in floats.
pub(super) const SCRATCH: usize = ROW_INPUTS + ROW_PRODUCTS + ROW_POOLED;

/// G, the filter transform of F(4x4, 3x3): a 3-tap filter to its 6 transformed values.
const G: [[f64; 3]; TILE] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// conv2's weight in the transformed domain, U = G g Gᵀ for each (input, output) channel
/// pair: [point][input channel][output channel]. Computed in f64 and rounded once.
pub(super) fn filters(w2: &[f32]) -> Buffer {
    assert_eq!(w2.len(), C2 * C1 * TAPS);
    let mut u = zeros(POINTS * C1 * C2);
    for (pair, g) in w2.chunks(TAPS).enumerate() {
        let (o, c) = (pair / C1, pair % C1);
        // G g: [6][3], over the filter's rows.
        let mut gg = [[0f64; 3]; TILE];
        for (row, taps) in gg.iter_mut().zip(&G) {
            for (kx, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|ky| taps[ky] * f64::from(g[ky * 3 + kx])).sum();
            }
        }
        for (i, row) in gg.iter().enumerate() {
            for (j, taps) in G.iter().enumerate() {
                let v: f64 = (0..3).map(|kx| row[kx] * taps[kx]).sum();
                u[((i * TILE + j) * C1 + c) * C2 + o] = v as f32;
            }
        }
    }
    u
}

/// conv2's transformed filters, in the precision the products run in.
pub(super) enum Filters {
    /// f32, as [`filters`] makes them.
    F32(Buffer),
    /// bfloat16 (rounded to nearest from the f32 ones), two input channels to a 32-bit word,
    /// the even one in the low half: [point][input channel pair][output channel]. Only made
    /// where the processor has AVX512_BF16 (see [`Filters::bf16`]).
    Bf16(Vec<u32>),
}

impl Filters {
    /// conv2's weight `w2` (burn's layout) transformed, in f32.
    pub(super) fn f32(w2: &[f32]) -> Filters {
        Filters::F32(filters(w2))
    }

    /// The same in bfloat16, or `None` where this processor lacks AVX512_BF16's dot products.
    pub(super) fn bf16(w2: &[f32]) -> Option<Filters> {
        if !bf16::supported() {
            return None;
        }
        let u = filters(w2);
        let half = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
        let mut packed = vec![0u32; POINTS * C1 / 2 * C2];
        for (point, out) in packed.chunks_exact_mut(C1 / 2 * C2).enumerate() {
            let u = &u[point * C1 * C2..][..C1 * C2];
            for (pair, out) in out.chunks_exact_mut(C2).enumerate() {
                let (even, odd) = (&u[2 * pair * C2..][..C2], &u[(2 * pair + 1) * C2..][..C2]);
                for ((w, &e), &o) in out.iter_mut().zip(even).zip(odd) {
                    *w = half(e) | half(o) << 16;
                }
            }
        }
        Some(Filters::Bf16(packed))
    }
}

simd_fn! {
    /// conv2 of one image's channels-last conv1 maps `a1` [26 × 26 × 32] with the
    /// transformed filters `u` (see [`Filters`]), then the 2x2 max-pool, conv2's bias `b2`
    /// and ReLU once per pooled value (both commute with max), written to `pooled` in burn's
    /// flatten order (channel, y, x). `winner`, when given, records which of the four values
    /// won (0..4, row-major in the window), for the backward pass. `scratch` holds
    /// [`SCRATCH`] floats; its contents do not matter.
    pub(super) fn conv2_pool(
        a1: &[f32],
        u: &Filters,
        b2: &[f32],
        scratch: &mut [f32],
        pooled: &mut [f32],
        winner: Option<&mut [u8]>,
    ) {
        let words = match u {
            Filters::F32(u) => u.len(),
            Filters::Bf16(u) => 2 * u.len(),
        };
        assert!(a1.len() == S1 * S1 * C1 && words == POINTS * C1 * C2);
        assert!(pooled.len() == FEATURES && scratch.len() >= SCRATCH && b2.len() == C2);
        let mut winner = winner;
        let (v, rest) = scratch.split_at_mut(ROW_INPUTS);
        let (m, stage) = rest.split_at_mut(ROW_PRODUCTS);
        let stage = &mut stage[..ROW_POOLED];
        let mut won = [0u8; ROW_POOLED];
        for ty in 0..TILES {
            transform_inputs(a1, ty, v);
            for (point, (v, m)) in v
                .chunks_exact(TILES * C1)
                .zip(m.chunks_exact_mut(TILES * C2))
                .enumerate()
            {
                match u {
                    Filters::F32(u) => {
                        let u = &u[point * C1 * C2..][..C1 * C2];
                        // Accumulators for six tiles × `W` output channels stay in registers:
                        // all 64 channels in AVX-512's 32 registers, 16 at a time in AVX2's 16.
                        if S::F32_LANES >= 16 {
                            products::<64>(v, u, m);
                        } else {
                            products::<16>(v, u, m);
                        }
                    }
                    Filters::Bf16(u) => bf16::products(v, &u[point * C1 / 2 * C2..][..C1 / 2 * C2], m),
                }
            }
            for tx in 0..TILES {
                for first in (0..C2).step_by(LANES) {
                    let y = transform_outputs(m, tx, first);
                    let won = winner.is_some().then_some(&mut won);
                    pool_tile(&y, (b2, first), tx, stage, won);
                }
            }
            // The two pooled rows, channels-last in `stage`, to burn's order: per channel,
            // 24 consecutive values. Transposed here (the compiler gathers) rather than
            // scattered value by value from the pooling, so that the pooling runs on whole
            // vectors: the scattered stores had cost a fifth of the pass.
            let rows = ty * 2 * SP;
            transpose_row(stage, pooled, rows);
            if let Some(w) = winner.as_deref_mut() {
                transpose_row(&won, w, rows);
            }
        }
    }
}

/// `dst[c × 144 + rows + p] = src[p × 64 + c]` for the 24 positions `p` of a row of tiles'
/// pooled values and the 64 channels `c`.
#[inline(always)]
fn transpose_row<T: Copy>(src: &[T], dst: &mut [T], rows: usize) {
    let src = &src[..2 * SP * C2];
    for (c, out) in dst[rows..].chunks_mut(SP * SP).take(C2).enumerate() {
        for (p, o) in out[..2 * SP].iter_mut().enumerate() {
            *o = src[p * C2 + c];
        }
    }
}

/// `v` [point][tile][32] ← Bᵀ d B for each tile d of the ty-th row, per channel.
#[inline(always)]
fn transform_inputs(a1: &[f32], ty: usize, v: &mut [f32]) {
    // rows[i][x]: column x of the tile after the transform along y.
    let mut rows = [[[0f32; C1]; TILE]; TILE];
    let mut out = [[0f32; C1]; TILE];
    for tx in 0..TILES {
        for x in 0..TILE {
            let px = |k: usize| array::<C1>(a1, ((ty * OUT + k) * S1 + tx * OUT + x) * C1);
            let [r0, r1, r2, r3, r4, r5] = &mut rows;
            let column = [px(0), px(1), px(2), px(3), px(4), px(5)];
            input_1d(
                column,
                [
                    &mut r0[x], &mut r1[x], &mut r2[x], &mut r3[x], &mut r4[x], &mut r5[x],
                ],
            );
        }
        for (i, row) in rows.iter().enumerate() {
            let [o0, o1, o2, o3, o4, o5] = &mut out;
            let row = [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]];
            input_1d(row, [o0, o1, o2, o3, o4, o5]);
            for (j, values) in out.iter().enumerate() {
                v[((i * TILE + j) * TILES + tx) * C1..][..C1].copy_from_slice(values);
            }
        }
    }
}

/// Bᵀ applied to six vectors of channels.
#[inline(always)]
fn input_1d<const N: usize>(d: [&[f32; N]; TILE], out: [&mut [f32; N]; TILE]) {
    let [v0, v1, v2, v3, v4, v5] = out;
    for c in 0..N {
        let (d0, d1, d2, d3, d4, d5) = (d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c]);
        v0[c] = 4.0 * d0 - 5.0 * d2 + d4;
        v1[c] = -4.0 * (d1 + d2) + d3 + d4;
        v2[c] = 4.0 * (d1 - d2) - d3 + d4;
        v3[c] = -2.0 * (d1 - d3) - d2 + d4;
        v4[c] = 2.0 * (d1 - d3) - d2 + d4;
        v5[c] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// `m` [tile][64] = `v` [tile][32] · `u` [32][64] for the six tiles of one point, `W`
/// output channels at a time.
#[inline(always)]
fn products<const W: usize>(v: &[f32], u: &[f32], m: &mut [f32]) {
    for first in (0..C2).step_by(W) {
        let mut acc = [[0f32; W]; TILES];
        for c in 0..C1 {
            let u = array::<W>(u, c * C2 + first);
            for (acc, v) in acc.iter_mut().zip(v.chunks_exact(C1)) {
                let v = v[c];
                for (a, u) in acc.iter_mut().zip(u) {
                    *a = v.mul_add(*u, *a);
                }
            }
        }
        for (acc, m) in acc.iter().zip(m.chunks_exact_mut(C2)) {
            m[first..first + W].copy_from_slice(acc);
        }
    }
}

/// The products in bfloat16: AVX512_BF16's `vdpbf16ps` multiplies two pairs of bf16 values
/// and adds both products into an f32 lane, so a pair of input channels costs one instruction
/// where f32 takes two multiply-adds, and the filters take half the cache.
pub(super) mod bf16 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    use super::{C1, C2, TILES};

    /// Whether this processor has the instructions [`products`] runs on.
    pub(in crate::kernels) fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `m` [tile][64] = `v` [tile][32] · `u` [16 pairs][64] for the six tiles of one point,
    /// the inputs rounded to bf16 (nearest even), the sums in f32. Reached only through
    /// [`super::Filters::Bf16`], which exists only where [`supported`] said yes.
    pub(super) fn products(v: &[f32], u: &[u32], m: &mut [f32]) {
        assert!(v.len() >= TILES * C1 && u.len() == C1 / 2 * C2 && m.len() >= TILES * C2);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the processor has AVX-512F and AVX512_BF16 (see above), and the assertion
        // keeps every load and store inside the slices.
        unsafe {
            products_avx512(v, u, m)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("bf16 filters are only made on x86-64");
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn products_avx512(v: &[f32], u: &[u32], m: &mut [f32]) {
        // f32 lanes in a 512-bit vector; as many bf16 pairs.
        const WORDS: usize = 16;
        // Each tile's 32 inputs as 16 bf16 pairs, one broadcast per pair below.
        let mut pairs = [[0u32; C1 / 2]; TILES];
        for (tile, pairs) in pairs.iter_mut().enumerate() {
            let v = &v[tile * C1..][..C1];
            // SAFETY: 16 floats from each half of `v`'s 32, and 16 words into `pairs`.
            unsafe {
                let low = _mm512_loadu_ps(v.as_ptr());
                let high = _mm512_loadu_ps(v[WORDS..].as_ptr());
                let packed = bits(_mm512_cvtne2ps_pbh(high, low));
                _mm512_storeu_si512(pairs.as_mut_ptr().cast(), packed);
            }
        }
        let mut acc = [[_mm512_setzero_ps(); C2 / WORDS]; TILES];
        for pair in 0..C1 / 2 {
            let mut w = [bf16s(_mm512_setzero_si512()); C2 / WORDS];
            for (j, w) in w.iter_mut().enumerate() {
                let u = &u[pair * C2 + j * WORDS..][..WORDS];
                // SAFETY: 16 words of `u`.
                *w = bf16s(unsafe { _mm512_loadu_si512(u.as_ptr().cast()) });
            }
            for (acc, pairs) in acc.iter_mut().zip(&pairs) {
                let x = bf16s(_mm512_set1_epi32(pairs[pair] as i32));
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_dpbf16_ps(*a, x, *w);
                }
            }
        }
        for (tile, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                let m = &mut m[tile * C2 + j * WORDS..][..WORDS];
                // SAFETY: 16 floats of `m`.
                unsafe { _mm512_storeu_ps(m.as_mut_ptr(), *a) };
            }
        }
    }

    /// 32 bf16 values as the 512 bits they are.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn bits(x: __m512bh) -> __m512i {
        // SAFETY: both are plain 512-bit vectors; every bit pattern is valid in either.
        unsafe { std::mem::transmute(x) }
    }

    /// 512 bits as the 32 bf16 values they hold.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn bf16s(x: __m512i) -> __m512bh {
        // SAFETY: as in `bits`.
        unsafe { std::mem::transmute(x) }
    }
}

/// Aᵀ M A for tile `tx` of the row's products, output channels `first..first + LANES`: the
/// tile's 4x4 outputs, [y][x][LANES].
#[inline(always)]
fn transform_outputs(m: &[f32], tx: usize, first: usize) -> [[[f32; LANES]; OUT]; OUT] {
    // cols[i][x]: column x after the transform along y.
    let mut cols = [[[0f32; LANES]; TILE]; OUT];
    for x in 0..TILE {
        let point = |k: usize| array::<LANES>(m, ((k * TILE + x) * TILES + tx) * C2 + first);
        let [c0, c1, c2, c3] = &mut cols;
        let column = [point(0), point(1), point(2), point(3), point(4), point(5)];
        output_1d(column, [&mut c0[x], &mut c1[x], &mut c2[x], &mut c3[x]]);
    }
    let mut y = [[[0f32; LANES]; OUT]; OUT];
    for (row, col) in y.iter_mut().zip(&cols) {
        let [y0, y1, y2, y3] = row;
        output_1d(
            [&col[0], &col[1], &col[2], &col[3], &col[4], &col[5]],
            [y0, y1, y2, y3],
        );
    }
    y
}

/// Aᵀ applied to six vectors of channels.
#[inline(always)]
fn output_1d<const N: usize>(m: [&[f32; N]; TILE], out: [&mut [f32; N]; OUT]) {
    let [y0, y1, y2, y3] = out;
    for c in 0..N {
        let (m0, m1, m2, m3, m4, m5) = (m[0][c], m[1][c], m[2][c], m[3][c], m[4][c], m[5][c]);
        let (a, b) = (m1 + m2, m1 - m2);
        let (p, q) = (m3 + m4, m3 - m4);
        y0[c] = m0 + a + p;
        y1[c] = b + 2.0 * q;
        y2[c] = a + 4.0 * p;
        y3[c] = b + 8.0 * q + m5;
    }
}

/// The four 2x2 pooling windows of tile `tx`'s outputs `y`, for the `LANES` output channels
/// from `first` on: max, then bias and ReLU, into the row's channels-last `stage` (see
/// [`ROW_POOLED`]); and, when asked, which value won (0..4, row-major in the window; the
/// first of equal values) into `won`, laid out alike.
#[inline(always)]
fn pool_tile(
    y: &[[[f32; LANES]; OUT]; OUT],
    (b2, first): (&[f32], usize),
    tx: usize,
    stage: &mut [f32],
    mut won: Option<&mut [u8; ROW_POOLED]>,
) {
    let bias = array::<LANES>(b2, first);
    for wy in 0..2 {
        for wx in 0..2 {
            let (r0, r1) = (&y[2 * wy], &y[2 * wy + 1]);
            let quad = [&r0[2 * wx], &r0[2 * wx + 1], &r1[2 * wx], &r1[2 * wx + 1]];
            let at = (wy * SP + tx * 2 + wx) * C2 + first;
            let mut value = *quad[0];
            for v in &quad[1..] {
                for (m, &x) in value.iter_mut().zip(v.iter()) {
                    *m = if x > *m { x } else { *m };
                }
            }
            // ReLU as a select: LLVM keeps this on whole vectors, where `f32::max` here
            // became sixteen scalar instructions.
            let mut out = value;
            for (v, b) in out.iter_mut().zip(bias) {
                let s = *v + b;
                *v = if s > 0.0 { s } else { 0.0 };
            }
            stage[at..at + LANES].copy_from_slice(&out);
            if let Some(won) = won.as_deref_mut() {
                // The first of the four that holds the maximum.
                let mut best = [3u8; LANES];
                for q in (0..3).rev() {
                    for c in 0..LANES {
                        best[c] = if quad[q][c] == value[c] {
                            q as u8
                        } else {
                            best[c]
                        };
                    }
                }
                won[at..at + LANES].copy_from_slice(&best);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::testing::{assert_close, channels_last, random};
    use crate::reference::{self, Maps};

    /// conv1's maps, conv2's weight and bias, and the reference's pooled features with the
    /// index each came from and conv2's maps (NCHW).
    type Case = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>, Vec<f32>);

    fn case() -> Case {
        // conv1's maps are ReLU outputs: non-negative, with zeros.
        let a1: Vec<f32> = random(S1 * S1 * C1, (-0.5, 1.0), 5)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let w2 = random(C2 * C1 * TAPS, (-0.1, 0.1), 6);
        let b2 = random(C2, (-0.8, 0.0), 7);
        let input = Maps {
            images: 1,
            channels: C1,
            side: S1,
        };
        // The reference reads NCHW: the channels-last maps back to planes.
        let planes: Vec<f32> = (0..C1 * S1 * S1)
            .map(|i| a1[(i % (S1 * S1)) * C1 + i / (S1 * S1)])
            .collect();
        assert_eq!(channels_last(&planes, input), a1);
        let a2 = reference::relu_forward(&reference::conv_forward(&planes, input, &w2, &b2));
        let conv2 = Maps {
            channels: C2,
            side: S1 - 2,
            ..input
        };
        let (want, from) = reference::maxpool_forward(&a2, conv2);
        (a1, w2, b2, want, from, a2)
    }

    /// conv2 + bias + ReLU, then the max-pool, against the reference's three layers.
    #[test]
    fn conv2_pool_matches_its_reference_layers() {
        let (a1, w2, b2, want, from, a2) = case();
        let mut pooled = vec![f32::NAN; FEATURES];
        let mut winner = vec![9u8; FEATURES];
        let mut scratch = vec![f32::NAN; SCRATCH];
        let u = Filters::f32(&w2);
        conv2_pool(&a1, &u, &b2, &mut scratch, &mut pooled, Some(&mut winner));
        assert_close(&pooled, &want, 1e-5, "pooled features");
        // Where the feature is live, the recorded winner is the reference's maximum (up to
        // rounding when two of the window are within it).
        let side = S1 - 2;
        for (at, (&won, &i)) in winner.iter().zip(&from).enumerate() {
            let (c, py, px) = (at / (SP * SP), at / SP % SP, at % SP);
            let (y, x) = (2 * py + usize::from(won / 2), 2 * px + usize::from(won % 2));
            let ours = a2[(c * side + y) * side + x];
            assert!(
                won < 4 && (a2[i] - ours).abs() <= 1e-5 * a2[i].max(1.0),
                "{at}"
            );
        }
        // Both sides of the ReLU were exercised.
        let live = pooled.iter().filter(|&&v| v > 0.0).count();
        assert!(live > FEATURES / 10 && live < FEATURES * 9 / 10, "{live}");
        // Without a winner buffer, the same features.
        let mut again = vec![0.0; FEATURES];
        conv2_pool(&a1, &u, &b2, &mut scratch, &mut again, None);
        assert_eq!(again, pooled);
    }

    /// The bf16 products stay within bf16's rounding of the reference, and are not the f32
    /// path's bytes (so they ran). Where the processor lacks AVX512_BF16 there is no bf16 path.
    #[test]
    fn bf16_conv2_pool_is_close_to_its_reference_layers() {
        let (a1, w2, b2, want, ..) = case();
        let Some(u) = Filters::bf16(&w2) else {
            assert!(!bf16::supported());
            eprintln!("skipped: this processor has no AVX512_BF16, so no bf16 path to test");
            return;
        };
        let mut scratch = vec![f32::NAN; SCRATCH];
        let mut pooled = vec![f32::NAN; FEATURES];
        conv2_pool(&a1, &u, &b2, &mut scratch, &mut pooled, None);
        // bf16 keeps 8 significant bits: each transformed input and filter within 2^-9 of its
        // value. The transforms' coefficients (up to 25 in, 8 out) scale that rounding up.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let errors: Vec<f32> = pooled
            .iter()
            .zip(&want)
            .map(|(p, w)| (p - w).abs() / scale)
            .collect();
        let mean = errors.iter().sum::<f32>() / errors.len() as f32;
        let max = errors.iter().fold(0f32, |m, &e| m.max(e));
        eprintln!("bf16 conv2: mean error {mean:.2e}, largest {max:.2e} of the largest output");
        assert!(mean < 5e-3 && max < 0.1, "mean {mean}, largest {max}");
        let mut exact = vec![f32::NAN; FEATURES];
        conv2_pool(&a1, &Filters::f32(&w2), &b2, &mut scratch, &mut exact, None);
        assert_ne!(pooled, exact);
    }
}
