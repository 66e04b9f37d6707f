//! AMX, the tile multiplier of Intel's server processors since Sapphire Rapids: whether this
//! process may use it, and the first dense layer of `cpu-bf16` evaluation on it (conv2's
//! products on it live with the rest of the Winograd code, `winograd::bf16`).
//!
//! A tile is up to 16 rows of 64 bytes. `tdpbf16ps` multiplies a tile of 16 rows × 32 bf16
//! by one of 16 pairs of rows × 16 columns (bf16 pairs, even row in the low half) and adds
//! the 16 × 16 products into an f32 tile: 8,192 multiply-adds in one instruction. Rust's AMX
//! intrinsics are not stable, so the tile instructions are `asm!`.

use rayon::prelude::*;

use super::isa;

/// Rows of a tile, and images per block of the dense layer.
const TILE_ROWS: usize = 16;
/// Output columns per multiply: a row of 64 bytes of f32.
const COLUMNS: usize = 16;
/// Input pairs a multiply takes: a row of 64 bytes of bf16.
const PAIRS: usize = 16;
/// Input pairs per pass over the blocks: 512 pairs × 128 outputs of weights (256 KB) stay in
/// L2 while every block of images goes through them.
const PAIR_CHUNK: usize = 512;
/// Blocks of 16 images per parallel task.
const TASK: usize = 4;

/// A dense layer's weight [inputs × outputs] in bf16 (nearest even), as AMX's B tiles read
/// it: [inputs / 2][outputs] pairs, the even input in the low half.
pub(super) struct DenseWeights {
    words: Vec<u32>,
    inputs: usize,
    outputs: usize,
}

impl DenseWeights {
    /// `w` [inputs × outputs], row-major; `inputs` a multiple of 32, `outputs` of 64.
    pub(super) fn pack(w: &[f32], inputs: usize, outputs: usize) -> DenseWeights {
        assert!(inputs.is_multiple_of(2 * PAIRS) && outputs.is_multiple_of(4 * COLUMNS));
        assert_eq!(w.len(), inputs * outputs);
        let mut words = vec![0u32; inputs / 2 * outputs];
        for (pair, out) in words.chunks_exact_mut(outputs).enumerate() {
            let (even, odd) = (&w[2 * pair * outputs..], &w[(2 * pair + 1) * outputs..]);
            for ((o, &e), &d) in out.iter_mut().zip(even).zip(odd) {
                *o = super::bf16::pair(e, d);
            }
        }
        DenseWeights {
            words,
            inputs,
            outputs,
        }
    }
}

/// `x` [rows × inputs] · `w` + `bias`, then ReLU if asked, with `x` and `w` in bf16 and the
/// sums in f32: [`super::dense`] on AMX. Only where [`isa::amx_bf16`] said yes. The
/// reference: `reference::dense_forward` (to bf16's rounding).
pub(super) fn dense(x: &[f32], w: &DenseWeights, bias: &[f32], relu: bool) -> Vec<f32> {
    assert!(isa::amx_bf16() && bias.len() == w.outputs && x.len().is_multiple_of(w.inputs));
    let (inputs, outputs) = (w.inputs, w.outputs);
    let rows = x.len() / inputs;
    // Whole blocks of 16 images: the rows past `rows` stay zero and are dropped at the end.
    let padded = rows.div_ceil(TILE_ROWS) * TILE_ROWS;
    // The bf16 inputs, in a spare buffer: a fresh one this size (9 MB for 500 images) costs
    // its page faults and zeroing every call.
    let mut space = super::reuse(padded * inputs / 2);
    let a: &mut [u32] = bytemuck::cast_slice_mut(&mut space[..]);
    a[rows * inputs / 2..].fill(0);
    a.par_chunks_mut(inputs / 2)
        .zip(x.par_chunks(inputs))
        .for_each(|(a, x)| super::bf16::bf16_pairs(x, a));
    let mut out = vec![0f32; padded * outputs];
    out.par_chunks_mut(TASK * TILE_ROWS * outputs)
        .zip(a.par_chunks(TASK * TILE_ROWS * inputs / 2))
        // SAFETY: `isa::amx_bf16` said yes above; the blocks are whole, and `w` was packed for
        // these shapes.
        .for_each(|(out, a)| unsafe { products(a, w, out) });
    super::spare(space);
    out.truncate(rows * outputs);
    super::bias_relu(&mut out, bias, relu);
    out
}

/// The tiles' shapes, as `ldtilecfg` reads them (64 bytes, palette 1).
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
pub(super) struct TileConfig([u8; 64]);

#[cfg(target_arch = "x86_64")]
impl TileConfig {
    /// Tiles tmm0.. with `rows[t]` rows of 64 bytes each (0: tile unused).
    pub(super) const fn new(rows: [u8; 8]) -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            if rows[t] > 0 {
                c[16 + 2 * t] = 64;
                c[48 + t] = rows[t];
            }
            t += 1;
        }
        TileConfig(c)
    }

    /// Runs `work` with the tiles configured so, and gives the tile state back after.
    ///
    /// # Safety
    /// The processor has AMX and the operating system has granted it ([`available`]).
    #[inline(always)]
    pub(super) unsafe fn with(&self, work: impl FnOnce()) {
        // SAFETY: the caller guarantees AMX; the configuration is a valid palette-1 one.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
        work();
        // SAFETY: gives the tile state back; nothing reads the tiles after `work`.
        unsafe { std::arch::asm!("tilerelease", options(nostack)) };
    }
}

/// The dense layer's tiles, 16 rows each: tmm0-3 the sums of a block of 16 images for 64
/// outputs, tmm4 the images' inputs, tmm5-7 the weights.
#[cfg(target_arch = "x86_64")]
const DENSE_TILES: TileConfig = TileConfig::new([TILE_ROWS as u8; 8]);

/// `out` [blocks × 16 × outputs] += `a` [blocks × 16 × inputs/2 pairs] · `w`, a chunk of
/// inputs at a time over all the blocks, the sums going through memory between chunks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn products(a: &[u32], w: &DenseWeights, out: &mut [f32]) {
    let (pairs, outputs) = (w.inputs / 2, w.outputs);
    let blocks = a.len() / (TILE_ROWS * pairs);
    assert!(a.len() == blocks * TILE_ROWS * pairs && out.len() == blocks * TILE_ROWS * outputs);
    // Bytes between rows: of the inputs, and of the weights and the sums.
    let (a_row, w_row) = (pairs * 4, outputs * 4);
    let work = || {
        for first in (0..pairs).step_by(PAIR_CHUNK) {
            let last = (first + PAIR_CHUNK).min(pairs);
            for block in 0..blocks {
                for column in (0..outputs).step_by(4 * COLUMNS) {
                    let sums = out[block * TILE_ROWS * outputs + column..].as_mut_ptr();
                    // SAFETY: four tiles of 16 rows × 16 floats, `outputs` apart, inside the
                    // block's rows of `out` (column + 64 <= outputs).
                    unsafe { tiles::load_sums(sums, w_row) };
                    for pair in (first..last).step_by(PAIRS) {
                        let x = a[block * TILE_ROWS * pairs + pair..].as_ptr();
                        let ws = w.words[pair * outputs + column..].as_ptr();
                        // SAFETY: the input tile reads 16 rows of 16 words, `pairs` apart, inside
                        // the block's rows of `a` (pair + 16 <= pairs); each weight tile 16 rows
                        // of 16 words, `outputs` apart, inside `w` (pair + 16 <= pairs,
                        // column + 64 <= outputs).
                        unsafe { tiles::multiply(x, a_row, ws, w_row) };
                    }
                    // SAFETY: as the loads above.
                    unsafe { tiles::store_sums(sums, w_row) };
                }
            }
        }
    };
    // SAFETY: the caller guarantees AMX.
    unsafe { DENSE_TILES.with(work) };
}

/// The three tile steps of [`products`], with [`DENSE_TILES`] configured: sums in tiles 0-3
/// (four 16 × 16 blocks of f32 side by side), inputs in tile 4, weights in tiles 5-7.
#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;

    /// Loads the four sum tiles from `sums`, rows `row` bytes apart.
    ///
    /// # Safety
    /// AMX configured as [`super::DENSE_TILES`]; 16 rows of 256 bytes readable at `sums`.
    #[inline(always)]
    pub(super) unsafe fn load_sums(sums: *const f32, row: usize) {
        // SAFETY: as the caller guarantees.
        unsafe {
            asm!(
                "tileloadd tmm0, [{c} + {row}*1]",
                "tileloadd tmm1, [{c} + {row}*1 + 64]",
                "tileloadd tmm2, [{c} + {row}*1 + 128]",
                "tileloadd tmm3, [{c} + {row}*1 + 192]",
                c = in(reg) sums,
                row = in(reg) row,
                options(nostack),
            );
        }
    }

    /// Adds one input tile (16 rows of 16 bf16 pairs at `x`, `x_row` bytes apart) times four
    /// weight tiles (16 pairs × 64 outputs at `w`, `w_row` bytes apart) into the sums.
    ///
    /// # Safety
    /// AMX configured as [`super::DENSE_TILES`]; both regions readable.
    #[inline(always)]
    pub(super) unsafe fn multiply(x: *const u32, x_row: usize, w: *const u32, w_row: usize) {
        // SAFETY: as the caller guarantees.
        unsafe {
            asm!(
                "tileloadd tmm4, [{x} + {a_row}*1]",
                "tileloadd tmm5, [{w} + {w_row}*1]",
                "tdpbf16ps tmm0, tmm4, tmm5",
                "tileloadd tmm6, [{w} + {w_row}*1 + 64]",
                "tdpbf16ps tmm1, tmm4, tmm6",
                "tileloadd tmm7, [{w} + {w_row}*1 + 128]",
                "tdpbf16ps tmm2, tmm4, tmm7",
                "tileloadd tmm5, [{w} + {w_row}*1 + 192]",
                "tdpbf16ps tmm3, tmm4, tmm5",
                x = in(reg) x,
                w = in(reg) w,
                a_row = in(reg) x_row,
                w_row = in(reg) w_row,
                options(nostack),
            );
        }
    }

    /// Stores the four sum tiles to `sums`, rows `row` bytes apart.
    ///
    /// # Safety
    /// AMX configured as [`super::DENSE_TILES`]; 16 rows of 256 bytes writable at `sums`.
    #[inline(always)]
    pub(super) unsafe fn store_sums(sums: *mut f32, row: usize) {
        // SAFETY: as the caller guarantees.
        unsafe {
            asm!(
                "tilestored [{c} + {row}*1], tmm0",
                "tilestored [{c} + {row}*1 + 64], tmm1",
                "tilestored [{c} + {row}*1 + 128], tmm2",
                "tilestored [{c} + {row}*1 + 192], tmm3",
                c = in(reg) sums,
                row = in(reg) row,
                options(nostack),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn products(a: &[u32], w: &DenseWeights, out: &mut [f32]) {
    unreachable!(
        "AMX is x86-64's ({} {} {})",
        a.len(),
        w.words.len(),
        out.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::testing::random;

    /// The dense layer on AMX against the f32 reference: within bf16's rounding of inputs
    /// and weights, for a partial last block and both ReLU settings.
    #[test]
    fn dense_is_close_to_its_reference_layer() {
        if !isa::amx_bf16() {
            eprintln!("skipped: this processor (or operating system) has no AMX-BF16 to test");
            return;
        }
        // 37 rows: two whole blocks of 16 and a partial one; inputs span three chunks.
        let (rows, inputs, outputs) = (37, 2 * PAIR_CHUNK * 2 + 64, 128);
        let x = random(rows * inputs, (-1.0, 1.0), 4);
        let w = random(inputs * outputs, (-0.1, 0.1), 5);
        let b = random(outputs, (-0.5, 0.5), 6);
        let packed = DenseWeights::pack(&w, inputs, outputs);
        let want = crate::reference::dense_forward(&x, &w, &b);
        let got = dense(&x, &packed, &b, false);
        assert_eq!(got.len(), want.len());
        // Each product's two factors within 2^-9 of theirs: the sum's error is about
        // 2^-8 × sqrt(inputs) × |x| |w| at most by chance; far below a misplaced tile's.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut largest = 0f32;
        for (g, w) in got.iter().zip(&want) {
            largest = largest.max((g - w).abs() / scale);
        }
        eprintln!("bf16 dense on AMX: largest error {largest:.2e} of the largest output");
        assert!(largest < 2e-2, "{largest}");
        assert_ne!(got, want);
        let relu = dense(&x, &packed, &b, true);
        for (r, g) in relu.iter().zip(&got) {
            assert_eq!(*r, g.max(0.0));
        }
    }
}
