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

use rayon::prelude::*;

use super::transpose::{Shape, transpose, transpose_bytes};
use super::{Buffer, C1, C2, FEATURES, S1, SP, TAPS, array, simd_fn, zeros};

/// Side of an input tile.
const TILE: usize = 6;
/// Side of the output block a tile yields.
const OUT: usize = 4;
/// Tiles per row and per column of an image: 24 / 4.
const TILES: usize = 6;
/// Output channels the output transform and the pooling take at a time: one AVX-512 vector,
/// so that a tile's values stay in registers.
const CHANNEL_BLOCK: usize = 16;
/// Points of the transformed domain: 6 x 6.
const POINTS: usize = TILE * TILE;
/// The transformed inputs of one row of tiles: [point][tile][input channel].
const ROW_INPUTS: usize = POINTS * TILES * C1;
/// Their products with the filters: [point][tile][output channel].
const ROW_PRODUCTS: usize = POINTS * TILES * C2;
/// A row of tiles' pooled values, channels-last: [2 pooled rows × 12][output channel].
const ROW_POOLED: usize = 2 * SP * C2;
/// Rows of tiles the bf16 products take at a time: an AMX tile multiply then covers 12
/// tiles (of its 16 rows) rather than 6.
const BF16_ROWS: usize = 2;
/// Scratch space [`conv2_pool`] needs, in floats.
pub(super) const SCRATCH: usize = BF16_ROWS * (ROW_INPUTS + ROW_POOLED) + ROW_PRODUCTS;

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
    // Each pair's values, then laid out by point, both on every thread: the layout's writes
    // land 256 bytes apart, and on one thread the whole took ~0.3 ms of each training step.
    let pairs: Vec<[f32; POINTS]> = w2.par_chunks(TAPS).map(transform_filter).collect();
    let mut u = zeros(POINTS * C1 * C2);
    u.par_chunks_mut(TILE * C1 * C2)
        .enumerate()
        .for_each(|(i, u)| {
            for (pair, values) in pairs.iter().enumerate() {
                let (o, c) = (pair / C1, pair % C1);
                for (j, &v) in values[i * TILE..][..TILE].iter().enumerate() {
                    u[(j * C1 + c) * C2 + o] = v;
                }
            }
        });
    u
}

/// G g Gᵀ of one 3x3 filter `g`, row-major by point.
fn transform_filter(g: &[f32]) -> [f32; POINTS] {
    // G g: [6][3], over the filter's rows.
    let mut gg = [[0f64; 3]; TILE];
    for (row, taps) in gg.iter_mut().zip(&G) {
        for (kx, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|ky| taps[ky] * f64::from(g[ky * 3 + kx])).sum();
        }
    }
    let mut u = [0f32; POINTS];
    for (i, row) in gg.iter().enumerate() {
        for (j, taps) in G.iter().enumerate() {
            let v: f64 = (0..3).map(|kx| row[kx] * taps[kx]).sum();
            u[i * TILE + j] = v as f32;
        }
    }
    u
}

/// conv2's transformed filters, in the precision the products run in.
#[derive(Clone)]
pub(super) enum Filters {
    /// f32, as [`filters`] makes them.
    F32(Buffer),
    /// bfloat16 (rounded to nearest from the f32 ones), two input channels to a 32-bit word,
    /// the even one in the low half: [point][group of 16 output channels][input channel
    /// pair][16], so that what a multiply reads (a run of vectors for `vdpbf16ps`, an AMX
    /// tile) is 1 KB in a row. Only made where the processor has AVX512_BF16 (see
    /// [`Filters::bf16`]); `unit` says which instructions multiply them.
    Bf16 { words: Vec<u32>, unit: bf16::Unit },
}

impl Filters {
    /// conv2's weight `w2` (burn's layout) transformed, in f32.
    pub(super) fn f32(w2: &[f32]) -> Filters {
        Filters::F32(filters(w2))
    }

    /// The same in bfloat16, multiplied on `unit`; `None` where this processor lacks it.
    pub(super) fn bf16_on(w2: &[f32], unit: bf16::Unit) -> Option<Filters> {
        if !unit.available() {
            return None;
        }
        let u = filters(w2);
        let mut words = vec![0u32; POINTS * C1 / 2 * C2];
        for (at, w) in words.iter_mut().enumerate() {
            // `at` is ((point × 4 + group) × 16 + pair) × 16 + lane.
            let (lane, pair) = (at % CHANNEL_BLOCK, at / CHANNEL_BLOCK % (C1 / 2));
            let (group, point) = (
                at / (CHANNEL_BLOCK * C1 / 2) % (C2 / CHANNEL_BLOCK),
                at / (C1 / 2 * C2),
            );
            let u = |c: usize| u[(point * C1 + c) * C2 + group * CHANNEL_BLOCK + lane];
            *w = crate::bf16::pair(u(2 * pair), u(2 * pair + 1));
        }
        Some(Filters::Bf16 { words, unit })
    }
}

simd_fn! {
    /// conv2 of one image's channels-last conv1 maps `a1_nhwc` [26 × 26 × 32] with the
    /// transformed filters `u` (see [`Filters`]), then the 2x2 max-pool, conv2's bias `b2`
    /// and ReLU once per pooled value (both commute with max), written to `pooled` in burn's
    /// flatten order (channel, y, x). `winner`, when given, records which of the four values
    /// won (0..4, row-major in the window), for the backward pass. `scratch` holds
    /// [`SCRATCH`] floats; its contents do not matter. The reference:
    /// `reference::{conv_forward, relu_forward, maxpool_forward}`.
    pub(super) fn conv2_pool(
        a1_nhwc: &[f32],
        u: &Filters,
        b2: &[f32],
        scratch: &mut [f32],
        pooled: &mut [f32],
        winner: Option<&mut [u8]>,
    ) {
        let words = match u {
            Filters::F32(u) => u.len(),
            Filters::Bf16 { words, .. } => 2 * words.len(),
        };
        assert!(a1_nhwc.len() == S1 * S1 * C1 && words == POINTS * C1 * C2);
        assert!(pooled.len() == FEATURES && scratch.len() >= SCRATCH && b2.len() == C2);
        // Rows of tiles per pass: one in f32, whose transformed inputs then stay in L1 and
        // products in L2; two in bf16, whose products go 16 output channels at a time. A
        // constant either way, so that the indices below fold.
        let wide = crate::isa::wide::<S>();
        match u {
            Filters::F32(_) => passes::<1>(a1_nhwc, u, b2, scratch, pooled, winner, wide),
            Filters::Bf16 { .. } => passes::<BF16_ROWS>(a1_nhwc, u, b2, scratch, pooled, winner, wide),
        }
    }
}

/// [`conv2_pool`]'s work, `ROWS` rows of tiles at a time; `wide` when the f32 products'
/// accumulators for all 64 output channels fit in registers (AVX-512).
#[inline(always)]
fn passes<const ROWS: usize>(
    a1_nhwc: &[f32],
    u: &Filters,
    b2: &[f32],
    scratch: &mut [f32],
    pooled: &mut [f32],
    mut winner: Option<&mut [u8]>,
    wide: bool,
) {
    let band = ROWS;
    let tiles = band * TILES;
    let (v, rest) = scratch.split_at_mut(band * ROW_INPUTS);
    let (m, stage) = rest.split_at_mut(ROW_PRODUCTS);
    let stage = &mut stage[..band * ROW_POOLED];
    let mut won = [[0u8; ROW_POOLED]; ROWS];
    let won = &mut won[..];
    let keep = winner.is_some();
    for first_row in (0..TILES).step_by(band) {
        for row in 0..band {
            transform_inputs(a1_nhwc, first_row + row, (tiles, row * TILES), v);
        }
        let pooling = (b2, &mut *stage, keep.then_some(&mut *won));
        multiply_and_pool(u, v, m, pooling, wide);
        unstage(stage, won, first_row, pooled, winner.as_deref_mut());
    }
}

/// One band's products and pooling: its transformed inputs `v` times the filters `u` into
/// `m`, then the output transform and pooling of `m` (see [`pool_band`]).
#[inline(always)]
fn multiply_and_pool(u: &Filters, v: &[f32], m: &mut [f32], pooling: Pooling<'_>, wide: bool) {
    match u {
        Filters::F32(u) => {
            for ((v, m), u) in v
                .chunks_exact(TILES * C1)
                .zip(m.chunks_exact_mut(TILES * C2))
                .zip(u.chunks_exact(C1 * C2))
            {
                // Accumulators for six tiles × `W` output channels stay in registers: all
                // 64 channels in AVX-512's 32 registers, 16 at a time in AVX2's 16.
                if wide {
                    products::<64>(v, u, m);
                } else {
                    products::<16>(v, u, m);
                }
            }
            pool_band(m, (C2, 0..C2), pooling);
        }
        Filters::Bf16 { words, unit } => {
            // The products of 16 output channels (27 KB) stay in L1 until pooled.
            let packed = bf16::Band::pack(v);
            let (b2, stage, mut won) = pooling;
            for first in (0..C2).step_by(CHANNEL_BLOCK) {
                bf16::products(*unit, &packed, words, first, m);
                let won = won.as_deref_mut();
                let channels = (CHANNEL_BLOCK, first..first + CHANNEL_BLOCK);
                pool_band(m, channels, (b2, &mut *stage, won));
            }
        }
    }
}

/// A band's pooled rows, channels-last in `stage` (and `won`), to burn's order in `pooled`
/// (and `winner`): per channel, 24 consecutive values. Transposed here (in 8 x 8 tiles)
/// rather than scattered value by value from the pooling, so that the pooling runs on whole
/// vectors: the scattered stores had cost a fifth of the pass.
#[inline(always)]
fn unstage(
    stage: &[f32],
    won: &[[u8; ROW_POOLED]],
    first_row: usize,
    pooled: &mut [f32],
    mut winner: Option<&mut [u8]>,
) {
    for (row, (stage, won)) in stage.chunks_exact(ROW_POOLED).zip(won).enumerate() {
        let rows = (first_row + row) * 2 * SP;
        let shape = Shape {
            rows: 2 * SP,
            cols: C2,
            from: C2,
            to: SP * SP,
        };
        transpose(&stage[..2 * SP * C2], &mut pooled[rows..], shape);
        if let Some(w) = winner.as_deref_mut() {
            transpose_bytes(won, &mut w[rows..], shape);
        }
    }
}

/// What [`pool_band`] needs besides the products: conv2's bias, the band's rows of pooled
/// values (channels-last, [`ROW_POOLED`] each) and, when asked, which value won.
type Pooling<'a> = (&'a [f32], &'a mut [f32], Option<&'a mut [[u8; ROW_POOLED]]>);

/// Output transform and pooling of a band's products `m` [point][tile][`width`] for output
/// channels `channels` (`width` of them, from `m`'s first), each row of tiles into its
/// `stage` (and `won`) row; see [`pool_tile`].
#[inline(always)]
fn pool_band(
    m: &[f32],
    (width, channels): (usize, std::ops::Range<usize>),
    (b2, stage, mut won): Pooling<'_>,
) {
    let tiles = stage.len() / ROW_POOLED * TILES;
    for (row, stage) in stage.chunks_exact_mut(ROW_POOLED).enumerate() {
        for tx in 0..TILES {
            for first in channels.clone().step_by(CHANNEL_BLOCK) {
                let at = (width, first - channels.start);
                let y = transform_outputs(m, (tiles, row * TILES + tx), at);
                let won = won.as_deref_mut().map(|w| &mut w[row]);
                pool_tile(&y, (b2, first), tx, stage, won);
            }
        }
    }
}

/// `v` [point][tile][32] ← Bᵀ d B for each tile d of the ty-th row, per channel: the row's
/// six tiles from tile `first` on, of `tiles` per point.
#[inline(always)]
fn transform_inputs(a1_nhwc: &[f32], ty: usize, (tiles, first): (usize, usize), v: &mut [f32]) {
    // rows[i][x]: column x of the tile after the transform along y.
    let mut rows = [[[0f32; C1]; TILE]; TILE];
    let mut out = [[0f32; C1]; TILE];
    for tx in 0..TILES {
        for x in 0..TILE {
            let px = |k: usize| array::<C1>(a1_nhwc, ((ty * OUT + k) * S1 + tx * OUT + x) * C1);
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
                v[((i * TILE + j) * tiles + first + tx) * C1..][..C1].copy_from_slice(values);
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

/// The products in bfloat16, on one of two units. AVX512_BF16's `vdpbf16ps` multiplies two
/// pairs of bf16 values and adds both products into an f32 lane, so a pair of input channels
/// costs one instruction where f32 takes two multiply-adds, and the filters take half the
/// cache. AMX's `tdpbf16ps` multiplies whole tiles: a point's 12 tiles × 32 input channels by
/// its 32 × 16 filters in one instruction. The two add a lane's products in different
/// orders, so their bytes differ (both within bf16's rounding of the f32 path).
pub(super) mod bf16 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    use super::{BF16_ROWS, C1, C2, CHANNEL_BLOCK, POINTS, ROW_INPUTS, TILES};

    /// Tiles per point in a band of [`BF16_ROWS`] rows.
    const BAND: usize = BF16_ROWS * TILES;

    /// The instructions that multiply the bf16 values.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) enum Unit {
        /// AVX-512's `vdpbf16ps`, 16 lanes at a time.
        Avx512,
        /// AMX's tile multiply, on processors with AMX-BF16 (Intel's since Sapphire Rapids).
        Amx,
    }

    impl Unit {
        /// Whether this processor (and, for AMX, the operating system) lets us run it.
        pub(crate) fn available(self) -> bool {
            match self {
                Unit::Avx512 => crate::isa::avx512_bf16(),
                Unit::Amx => crate::isa::amx_bf16(),
            }
        }
    }

    /// A band's transformed inputs in bf16: [point][tile][16 pairs of input channels], each
    /// pair's even channel in the low half. A broadcast per pair for `vdpbf16ps`; for AMX a
    /// point's 12 tiles are the rows of its A tile.
    #[repr(C, align(64))]
    pub(super) struct Band([[u32; C1 / 2]; POINTS * BAND]);

    impl Band {
        /// `v` [point][tile][32] (f32) rounded to bf16, nearest even.
        pub(super) fn pack(v: &[f32]) -> Band {
            let mut band = Band([[0; C1 / 2]; POINTS * BAND]);
            crate::bf16::bf16_pairs(&v[..BF16_ROWS * ROW_INPUTS], band.0.as_flattened_mut());
            band
        }
    }

    /// `m` [point][tile][16] = `band` [point][tile][16 pairs] · `u` [point][group][16 pairs]
    /// [16] for the group of 16 output channels from `first` on, sums in f32, on `unit`
    /// (checked: a `Unit` is a plain value, whoever made it).
    pub(super) fn products(unit: Unit, band: &Band, u: &[u32], first: usize, m: &mut [f32]) {
        assert!(
            unit.available(),
            "{unit:?} is not available on this processor"
        );
        assert!(
            u.len() == POINTS * C1 / 2 * C2 && first.is_multiple_of(CHANNEL_BLOCK) && first < C2
        );
        assert!(m.len() >= POINTS * BAND * CHANNEL_BLOCK);
        #[cfg(target_arch = "x86_64")]
        match unit {
            // SAFETY: the processor has AVX-512F and AVX512_BF16 (`Unit::available`, asserted
            // above), and the assertions keep every load and store inside the slices.
            Unit::Avx512 => unsafe { products_avx512(band, u, first, m) },
            // SAFETY: as above, and AMX-BF16 with the operating system's leave to use it.
            Unit::Amx => unsafe { amx::products(band, u, first, m) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("bf16 filters are only made on x86-64 ({unit:?})");
    }

    /// [`products`] on AVX-512: each tile's 16 sums in a register, a pair of input channels
    /// per instruction, pairs in order.
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX512_BF16; `u`, `first` and `m` as
    /// [`products`] asserts them.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn products_avx512(band: &Band, u: &[u32], first: usize, m: &mut [f32]) {
        let points = band
            .0
            .chunks_exact(BAND)
            .zip(m.chunks_exact_mut(BAND * CHANNEL_BLOCK));
        for (point, (pairs, m)) in points.enumerate() {
            let u = &u[point * C1 / 2 * C2 + first * C1 / 2..][..C1 / 2 * CHANNEL_BLOCK];
            let mut acc = [_mm512_setzero_ps(); BAND];
            for pair in 0..C1 / 2 {
                let w = &u[pair * CHANNEL_BLOCK..][..CHANNEL_BLOCK];
                // SAFETY: 16 words of `u`.
                let w = bf16s(unsafe { _mm512_loadu_si512(w.as_ptr().cast()) });
                for (a, pairs) in acc.iter_mut().zip(pairs) {
                    let x = bf16s(_mm512_set1_epi32(pairs[pair] as i32));
                    *a = _mm512_dpbf16_ps(*a, x, w);
                }
            }
            for (a, m) in acc.iter().zip(m.chunks_exact_mut(CHANNEL_BLOCK)) {
                // SAFETY: 16 floats of `m`.
                unsafe { _mm512_storeu_ps(m.as_mut_ptr(), *a) };
            }
        }
    }

    /// The products on AMX's tiles, written with `asm!` (Rust's AMX intrinsics are not stable).
    #[cfg(target_arch = "x86_64")]
    mod amx {
        use std::arch::asm;

        use super::{BAND, Band, C1, C2, CHANNEL_BLOCK, POINTS};
        use crate::amx::TileConfig;

        /// The tiles, two sets so that one point's multiply overlaps the next's loads and
        /// stores: products tmm0 and tmm3 (12 tiles × 16 f32), inputs tmm1 and tmm4 (12
        /// tiles × 16 bf16 pairs), filters tmm2 and tmm5 (16 pairs × 16 output channels).
        const CONFIG: TileConfig = {
            let (tiles, pairs) = (BAND as u8, (C1 / 2) as u8);
            TileConfig::new([tiles, tiles, pairs, tiles, tiles, pairs, 0, 0])
        };

        /// See [`super::products`].
        ///
        /// # Safety
        /// The processor must have AMX-BF16 with the operating system's leave to use it (and
        /// AVX-512F and AVX512_BF16); `u`, `first` and `m` as [`super::products`] asserts them.
        #[target_feature(enable = "avx512f,avx512bf16")]
        pub(super) unsafe fn products(band: &Band, u: &[u32], first: usize, m: &mut [f32]) {
            // Bytes between rows of every tile: 16 words.
            let rows = CHANNEL_BLOCK * 4;
            let work = || {
                for point in (0..POINTS).step_by(2) {
                    let mut at = |p: usize| {
                        let a = band.0[p * BAND..][..BAND].as_ptr();
                        let u = u[p * C1 / 2 * C2 + first * C1 / 2..][..C1 / 2 * CHANNEL_BLOCK]
                            .as_ptr();
                        let m = m[p * BAND * CHANNEL_BLOCK..][..BAND * CHANNEL_BLOCK].as_mut_ptr();
                        (a, u, m)
                    };
                    let ((a0, u0, m0), (a1_nhwc, u1, m1)) = (at(point), at(point + 1));
                    // SAFETY: each input tile reads a point's 12 × 64 bytes of `band`; each
                    // filter tile 16 rows of 64 bytes in a row, inside `u` (sliced above); each
                    // product tile writes 12 rows of 64 bytes inside the point's part of `m`.
                    unsafe {
                        asm!(
                            "tilezero tmm0",
                            "tileloadd tmm1, [{a0} + {rows}*1]",
                            "tileloadd tmm2, [{u0} + {rows}*1]",
                            "tilezero tmm3",
                            "tileloadd tmm4, [{a1_nhwc} + {rows}*1]",
                            "tileloadd tmm5, [{u1} + {rows}*1]",
                            "tdpbf16ps tmm0, tmm1, tmm2",
                            "tdpbf16ps tmm3, tmm4, tmm5",
                            "tilestored [{m0} + {rows}*1], tmm0",
                            "tilestored [{m1} + {rows}*1], tmm3",
                            a0 = in(reg) a0,
                            u0 = in(reg) u0,
                            m0 = in(reg) m0,
                            a1_nhwc = in(reg) a1_nhwc,
                            u1 = in(reg) u1,
                            m1 = in(reg) m1,
                            rows = in(reg) rows,
                            options(nostack),
                        );
                    }
                }
            };
            // SAFETY: the caller guarantees AMX-BF16 and the OS's leave.
            unsafe { CONFIG.with(work) };
        }
    }

    /// 512 bits as the 32 bf16 values they hold.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn bf16s(x: __m512i) -> __m512bh {
        // SAFETY: both are plain 512-bit vectors; every bit pattern is valid in either.
        unsafe { std::mem::transmute(x) }
    }
}

/// Aᵀ M A for tile `tile` of the products `m` [point][tile][`width`], `tiles` per point,
/// the `CHANNEL_BLOCK` channels from `first` of each `width`: the tile's 4x4 outputs, [y][x][CHANNEL_BLOCK].
#[inline(always)]
fn transform_outputs(
    m: &[f32],
    (tiles, tile): (usize, usize),
    (width, first): (usize, usize),
) -> [[[f32; CHANNEL_BLOCK]; OUT]; OUT] {
    // cols[i][x]: column x after the transform along y.
    let mut cols = [[[0f32; CHANNEL_BLOCK]; TILE]; OUT];
    for x in 0..TILE {
        let at = |k: usize| ((k * TILE + x) * tiles + tile) * width + first;
        let point = |k: usize| array::<CHANNEL_BLOCK>(m, at(k));
        let [c0, c1, c2, c3] = &mut cols;
        let column = [point(0), point(1), point(2), point(3), point(4), point(5)];
        output_1d(column, [&mut c0[x], &mut c1[x], &mut c2[x], &mut c3[x]]);
    }
    let mut y = [[[0f32; CHANNEL_BLOCK]; OUT]; OUT];
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

/// The four 2x2 pooling windows of tile `tx`'s outputs `y`, for the `CHANNEL_BLOCK` output channels
/// from `first` on: max, then bias and ReLU, into the row's channels-last `stage` (see
/// [`ROW_POOLED`]); and, when asked, which value won (0..4, row-major in the window; the
/// first of equal values) into `won`, laid out alike.
#[inline(always)]
fn pool_tile(
    y: &[[[f32; CHANNEL_BLOCK]; OUT]; OUT],
    (b2, first): (&[f32], usize),
    tx: usize,
    stage: &mut [f32],
    mut won: Option<&mut [u8; ROW_POOLED]>,
) {
    let bias = array::<CHANNEL_BLOCK>(b2, first);
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
            stage[at..at + CHANNEL_BLOCK].copy_from_slice(&out);
            if let Some(won) = won.as_deref_mut() {
                // The first of the four that holds the maximum.
                let mut best = [3u8; CHANNEL_BLOCK];
                for q in (0..3).rev() {
                    for c in 0..CHANNEL_BLOCK {
                        best[c] = if quad[q][c] == value[c] {
                            q as u8
                        } else {
                            best[c]
                        };
                    }
                }
                won[at..at + CHANNEL_BLOCK].copy_from_slice(&best);
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
        let a1_nhwc: Vec<f32> = random(S1 * S1 * C1, (-0.5, 1.0), 5)
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
            .map(|i| a1_nhwc[(i % (S1 * S1)) * C1 + i / (S1 * S1)])
            .collect();
        assert_eq!(channels_last(&planes, input), a1_nhwc);
        let a2 = reference::relu_forward(&reference::conv_forward(&planes, input, &w2, &b2));
        let conv2 = Maps {
            channels: C2,
            side: S1 - 2,
            ..input
        };
        let (want, from) = reference::maxpool_forward(&a2, conv2);
        (a1_nhwc, w2, b2, want, from, a2)
    }

    /// conv2 + bias + ReLU, then the max-pool, against the reference's three layers.
    #[test]
    fn conv2_pool_matches_its_reference_layers() {
        let (a1_nhwc, w2, b2, want, from, a2) = case();
        let mut pooled = vec![f32::NAN; FEATURES];
        let mut winner = vec![9u8; FEATURES];
        let mut scratch = vec![f32::NAN; SCRATCH];
        let u = Filters::f32(&w2);
        conv2_pool(
            &a1_nhwc,
            &u,
            &b2,
            &mut scratch,
            &mut pooled,
            Some(&mut winner),
        );
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
        conv2_pool(&a1_nhwc, &u, &b2, &mut scratch, &mut again, None);
        assert_eq!(again, pooled);
    }

    /// The bf16 products stay within bf16's rounding of the reference, on every unit this
    /// processor has, and are not the f32 path's bytes (so they ran).
    #[test]
    fn bf16_conv2_pool_is_close_to_its_reference_layers() {
        let (a1_nhwc, w2, b2, want, ..) = case();
        let mut scratch = vec![f32::NAN; SCRATCH];
        let mut exact = vec![f32::NAN; FEATURES];
        conv2_pool(
            &a1_nhwc,
            &Filters::f32(&w2),
            &b2,
            &mut scratch,
            &mut exact,
            None,
        );
        for unit in [bf16::Unit::Avx512, bf16::Unit::Amx] {
            let Some(u) = Filters::bf16_on(&w2, unit) else {
                eprintln!("skipped: this processor has no {unit:?} bf16 products to test");
                continue;
            };
            let mut pooled = vec![f32::NAN; FEATURES];
            conv2_pool(&a1_nhwc, &u, &b2, &mut scratch, &mut pooled, None);
            // bf16 keeps 8 significant bits: each transformed input and filter within 2^-9
            // of its value. The transforms' coefficients (up to 25 in, 8 out) scale that up.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let errors: Vec<f32> = pooled
                .iter()
                .zip(&want)
                .map(|(p, w)| (p - w).abs() / scale)
                .collect();
            let mean = errors.iter().sum::<f32>() / errors.len() as f32;
            let max = errors.iter().fold(0f32, |m, &e| m.max(e));
            eprintln!("bf16 conv2 on {unit:?}: mean error {mean:.2e}, largest {max:.2e}");
            assert!(
                mean < 5e-3 && max < 0.1,
                "{unit:?}: mean {mean}, largest {max}"
            );
            assert_ne!(pooled, exact);
        }
    }

    /// AMX's tiles and AVX512_BF16's lanes multiply the same bf16 values: their sums agree
    /// to f32 rounding (they add in different orders), which a misplaced row, tile or stride
    /// would break by far.
    #[test]
    fn amx_products_match_avx512s() {
        let w2 = random(C2 * C1 * TAPS, (-0.1, 0.1), 8);
        let Some(Filters::Bf16 { words, .. }) = Filters::bf16_on(&w2, bf16::Unit::Amx) else {
            eprintln!("skipped: this processor (or operating system) has no AMX-BF16 to test");
            return;
        };
        let band = bf16::Band::pack(&random(BF16_ROWS * ROW_INPUTS, (-3.0, 3.0), 9));
        for first in (0..C2).step_by(CHANNEL_BLOCK) {
            let on = |unit| {
                let mut m = vec![f32::NAN; POINTS * BF16_ROWS * TILES * CHANNEL_BLOCK];
                bf16::products(unit, &band, &words, first, &mut m);
                m
            };
            let (amx, avx512) = (on(bf16::Unit::Amx), on(bf16::Unit::Avx512));
            let scale = avx512.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.1, "{scale}");
            for (i, (a, b)) in amx.iter().zip(&avx512).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{first} {i}: AMX {a}, AVX-512 {b}"
                );
            }
        }
    }
}
