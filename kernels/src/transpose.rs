//! Matrices transposed: floats in 16 x 16 tiles in AVX-512 registers or 8 x 8 tiles in AVX2's,
//! as the processor has them ([`super::isa::level`]), bytes in 8 x 8 tiles in SSE2's on
//! x86-64, else one value at a time. One value at a
//! time, each strided store (or load) touches a cache line of its own, and the compiler leaves
//! the loop scalar; the tiles take a fraction of that. A copy either way, so every way gives
//! the same bytes.

#[cfg(target_arch = "x86_64")]
use super::isa::{Level, level};

/// Which values [`transpose`] moves: a `rows` × `cols` matrix whose row r starts at
/// `r * from`, written as `cols` rows whose row c starts at `c * to`.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub rows: usize,
    pub cols: usize,
    pub from: usize,
    pub to: usize,
}

impl Shape {
    /// Panics unless the shape is whole tiles and `src` and `dst` hold it.
    fn check(self, src: usize, dst: usize) {
        let Shape {
            rows,
            cols,
            from,
            to,
        } = self;
        assert!(rows.is_multiple_of(8) && cols.is_multiple_of(8) && rows > 0 && cols > 0);
        assert!(from >= cols && to >= rows);
        assert!(src >= (rows - 1) * from + cols && dst >= (cols - 1) * to + rows);
    }
}

/// `dst[c * to + r] = src[r * from + c]` for every r < rows and c < cols, both multiples of 8.
pub(super) fn transpose(src: &[f32], dst: &mut [f32], shape: Shape) {
    shape.check(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    {
        let whole = shape.rows.is_multiple_of(16) && shape.cols.is_multiple_of(16);
        if whole && level() == Level::Avx512 {
            // SAFETY: the processor runs AVX-512 (`isa::level`); the assertions above and `whole` keep every
            // 16 x 16 tile inside the slices.
            return unsafe { transpose_avx512(src, dst, shape) };
        }
        if level() >= Level::Avx2 {
            // SAFETY: the processor runs AVX2 (`isa::level`); the assertions above keep every tile inside the
            // slices.
            return unsafe { transpose_avx2(src, dst, shape) };
        }
    }
    transpose_scalar(src, dst, shape);
}

fn transpose_scalar<T: Copy>(src: &[T], dst: &mut [T], shape: Shape) {
    for c in 0..shape.cols {
        for r in 0..shape.rows {
            dst[c * shape.to + r] = src[r * shape.from + c];
        }
    }
}

/// [`transpose`] for bytes: in 8 x 8 tiles in SSE2's registers on x86-64 (one at a time, the
/// max-pool's winners took ~0.3 ms of a training step), else one at a time.
pub(super) fn transpose_bytes(src: &[u8], dst: &mut [u8], shape: Shape) {
    shape.check(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: x86-64 always has SSE2; the assertions above keep every tile inside the slices.
    return unsafe { transpose_bytes_sse2(src, dst, shape) };
    #[cfg(not(target_arch = "x86_64"))]
    transpose_scalar(src, dst, shape);
}

/// [`transpose_bytes`] in 8 x 8 tiles: eight rows of eight bytes interleaved by bytes, then
/// pairs, then quads, so that each 8-byte half of the results is one column.
///
/// # Safety
/// The slices must hold the shape (as [`transpose_bytes`] asserts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn transpose_bytes_sse2(src: &[u8], dst: &mut [u8], shape: Shape) {
    use std::arch::x86_64::*;
    for g in 0..shape.rows / 8 {
        for h in 0..shape.cols / 8 {
            let r: [__m128i; 8] = std::array::from_fn(|j| {
                // SAFETY: row g*8 + j, columns h*8.. of the shape, inside `src`.
                unsafe {
                    _mm_loadl_epi64(src.as_ptr().add((g * 8 + j) * shape.from + h * 8).cast())
                }
            });
            let a0 = _mm_unpacklo_epi8(r[0], r[1]);
            let a1 = _mm_unpacklo_epi8(r[2], r[3]);
            let a2 = _mm_unpacklo_epi8(r[4], r[5]);
            let a3 = _mm_unpacklo_epi8(r[6], r[7]);
            let b0 = _mm_unpacklo_epi16(a0, a1);
            let b1 = _mm_unpackhi_epi16(a0, a1);
            let b2 = _mm_unpacklo_epi16(a2, a3);
            let b3 = _mm_unpackhi_epi16(a2, a3);
            // Columns (0, 1), (2, 3), (4, 5), (6, 7) of the tile.
            let c = [
                _mm_unpacklo_epi32(b0, b2),
                _mm_unpackhi_epi32(b0, b2),
                _mm_unpacklo_epi32(b1, b3),
                _mm_unpackhi_epi32(b1, b3),
            ];
            for (k, c) in c.into_iter().enumerate() {
                let column = |i: usize| (h * 8 + 2 * k + i) * shape.to + g * 8;
                // SAFETY: columns h*8 + 2k and + 1, rows g*8.. of the shape, inside `dst`.
                unsafe {
                    _mm_storel_epi64(dst.as_mut_ptr().add(column(0)).cast(), c);
                    _mm_storel_epi64(
                        dst.as_mut_ptr().add(column(1)).cast(),
                        _mm_srli_si128::<8>(c),
                    );
                }
            }
        }
    }
}

/// [`transpose`] in 8 x 8 tiles: eight rows of eight loaded, transposed in registers, stored
/// as eight rows of eight.
///
/// # Safety
/// The processor must have AVX2, and the slices must hold the shape (as [`transpose`]
/// asserts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(src: &[f32], dst: &mut [f32], shape: Shape) {
    use std::arch::x86_64::*;
    for g in 0..shape.rows / 8 {
        for h in 0..shape.cols / 8 {
            let r: [__m256; 8] = std::array::from_fn(|j| {
                // SAFETY: row g*8 + j, columns h*8.. of the shape, inside `src`.
                unsafe { _mm256_loadu_ps(src.as_ptr().add((g * 8 + j) * shape.from + h * 8)) }
            });
            // Pairs, then quads, then the two 128-bit halves.
            let a0 = _mm256_unpacklo_ps(r[0], r[1]);
            let a1 = _mm256_unpackhi_ps(r[0], r[1]);
            let a2 = _mm256_unpacklo_ps(r[2], r[3]);
            let a3 = _mm256_unpackhi_ps(r[2], r[3]);
            let a4 = _mm256_unpacklo_ps(r[4], r[5]);
            let a5 = _mm256_unpackhi_ps(r[4], r[5]);
            let a6 = _mm256_unpacklo_ps(r[6], r[7]);
            let a7 = _mm256_unpackhi_ps(r[6], r[7]);
            let b0 = _mm256_shuffle_ps::<0x44>(a0, a2);
            let b1 = _mm256_shuffle_ps::<0xEE>(a0, a2);
            let b2 = _mm256_shuffle_ps::<0x44>(a1, a3);
            let b3 = _mm256_shuffle_ps::<0xEE>(a1, a3);
            let b4 = _mm256_shuffle_ps::<0x44>(a4, a6);
            let b5 = _mm256_shuffle_ps::<0xEE>(a4, a6);
            let b6 = _mm256_shuffle_ps::<0x44>(a5, a7);
            let b7 = _mm256_shuffle_ps::<0xEE>(a5, a7);
            let c = [
                _mm256_permute2f128_ps::<0x20>(b0, b4),
                _mm256_permute2f128_ps::<0x20>(b1, b5),
                _mm256_permute2f128_ps::<0x20>(b2, b6),
                _mm256_permute2f128_ps::<0x20>(b3, b7),
                _mm256_permute2f128_ps::<0x31>(b0, b4),
                _mm256_permute2f128_ps::<0x31>(b1, b5),
                _mm256_permute2f128_ps::<0x31>(b2, b6),
                _mm256_permute2f128_ps::<0x31>(b3, b7),
            ];
            for (o, c) in c.into_iter().enumerate() {
                // SAFETY: row h*8 + o of the transpose, its columns g*8.., inside `dst`.
                unsafe {
                    _mm256_storeu_ps(dst.as_mut_ptr().add((h * 8 + o) * shape.to + g * 8), c)
                };
            }
        }
    }
}

/// [`transpose`] in 16 x 16 tiles: as [`transpose_avx2`]'s three steps within each 128-bit
/// lane, then two steps moving whole lanes. A third fewer shuffles a value than 8 x 8 tiles.
///
/// # Safety
/// The processor must have AVX-512F, the shape's rows and columns must be multiples of 16,
/// and the slices must hold the shape (as [`transpose`] asserts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(src: &[f32], dst: &mut [f32], shape: Shape) {
    use std::arch::x86_64::*;
    for g in 0..shape.rows / 16 {
        for h in 0..shape.cols / 16 {
            let r: [__m512; 16] = std::array::from_fn(|j| {
                // SAFETY: row g*16 + j, columns h*16.. of the shape, inside `src`.
                unsafe { _mm512_loadu_ps(src.as_ptr().add((g * 16 + j) * shape.from + h * 16)) }
            });
            // Pairs, then quads: in lane L of `quads[q][m]`, column 4 L + m of rows 4 q...
            let pairs: [__m512; 16] = std::array::from_fn(|k| {
                let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
                if k % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            let quads: [[__m512; 4]; 4] = std::array::from_fn(|q| {
                let p = &pairs[4 * q..][..4];
                [
                    _mm512_shuffle_ps::<0x44>(p[0], p[2]),
                    _mm512_shuffle_ps::<0xEE>(p[0], p[2]),
                    _mm512_shuffle_ps::<0x44>(p[1], p[3]),
                    _mm512_shuffle_ps::<0xEE>(p[1], p[3]),
                ]
            });
            for m in 0..4 {
                let v = quads.map(|q| q[m]);
                // Lanes (0, 2) and (1, 3) of row groups 0-1 and 2-3, then of all four.
                let x0 = _mm512_shuffle_f32x4::<0x88>(v[0], v[1]);
                let x1 = _mm512_shuffle_f32x4::<0xDD>(v[0], v[1]);
                let y0 = _mm512_shuffle_f32x4::<0x88>(v[2], v[3]);
                let y1 = _mm512_shuffle_f32x4::<0xDD>(v[2], v[3]);
                let columns = [
                    _mm512_shuffle_f32x4::<0x88>(x0, y0),
                    _mm512_shuffle_f32x4::<0x88>(x1, y1),
                    _mm512_shuffle_f32x4::<0xDD>(x0, y0),
                    _mm512_shuffle_f32x4::<0xDD>(x1, y1),
                ];
                for (lane, c) in columns.into_iter().enumerate() {
                    let o = h * 16 + 4 * lane + m;
                    // SAFETY: row o of the transpose, its columns g*16.., inside `dst`.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(o * shape.to + g * 16), c) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way moves every value to its place and nothing else, for a dense block (the
    /// first dense layer's weights) and for rows written into a wider matrix (conv2's pooled
    /// rows into burn's order, the weight gradient's sums into its rows).
    #[test]
    fn every_way_transposes() {
        let shapes = [
            Shape {
                rows: 64,
                cols: 128,
                from: 128,
                to: 64,
            },
            Shape {
                rows: 24,
                cols: 64,
                from: 64,
                to: 144,
            },
            Shape {
                rows: 16,
                cols: 64,
                from: 64,
                to: 128,
            },
        ];
        for shape in shapes {
            let src: Vec<f32> = (0..shape.rows * shape.from).map(|i| i as f32).collect();
            let check = |name: &str, dst: &[f32]| {
                for (i, &v) in dst.iter().enumerate() {
                    let (c, r) = (i / shape.to, i % shape.to);
                    if r < shape.rows {
                        assert_eq!(v, src[r * shape.from + c], "{name}: ({r}, {c})");
                    } else {
                        assert!(v.is_nan(), "{name}: {i} written");
                    }
                }
            };
            let mut dst = vec![f32::NAN; shape.cols * shape.to];
            transpose_scalar(&src, &mut dst, shape);
            check("scalar", &dst);
            #[cfg(target_arch = "x86_64")]
            if level() >= Level::Avx2 {
                let mut dst = vec![f32::NAN; shape.cols * shape.to];
                // SAFETY: the processor runs AVX2; the slices hold the shape.
                unsafe { transpose_avx2(&src, &mut dst, shape) };
                check("AVX2", &dst);
                let whole = shape.rows % 16 == 0 && shape.cols % 16 == 0;
                if whole && level() == Level::Avx512 {
                    let mut dst = vec![f32::NAN; shape.cols * shape.to];
                    // SAFETY: the processor runs AVX-512; the slices hold the shape, whole tiles.
                    unsafe { transpose_avx512(&src, &mut dst, shape) };
                    check("AVX-512", &dst);
                } else if whole {
                    eprintln!("no AVX-512 on this processor: its transposition not checked");
                }
                continue;
            }
            eprintln!("no AVX2 on this processor: only the scalar transposition checked");
        }
    }

    /// Bytes, against the definition.
    #[test]
    fn bytes_transpose() {
        let shape = Shape {
            rows: 24,
            cols: 64,
            from: 64,
            to: 144,
        };
        let src: Vec<u8> = (0..shape.rows * shape.from)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut got = vec![255u8; shape.cols * shape.to];
        transpose_bytes(&src, &mut got, shape);
        let mut scalar = vec![255u8; shape.cols * shape.to];
        transpose_scalar(&src, &mut scalar, shape);
        assert_eq!(got, scalar);
        for c in 0..shape.cols {
            for r in 0..shape.rows {
                assert_eq!(got[c * shape.to + r], src[r * shape.from + c], "({r}, {c})");
            }
            assert!(
                got[c * shape.to + shape.rows..][..shape.to - shape.rows]
                    .iter()
                    .all(|&b| b == 255)
            );
        }
    }
}
