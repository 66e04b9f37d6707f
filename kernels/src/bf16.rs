//! Rounding to bfloat16 for the opt-in bf16 evaluation: pairs of values to a 32-bit word,
//! the first in the low half, as AVX512_BF16's and AMX's dot products read them.

use super::isa;

/// `low` and `high` rounded to bfloat16 (nearest even) in one word, `low` in the low half:
/// how the bf16 weights are packed, once per model.
pub(crate) fn pair(low: f32, high: f32) -> u32 {
    let half = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
    half(low) | half(high) << 16
}

/// `x` rounded to bfloat16 (nearest even), two consecutive values to a 32-bit word, the first
/// in the low half: the pairs AVX512_BF16's and AMX's dot products read. `x` is whole runs
/// of 32. Only on processors with AVX512_BF16, which the bf16 paths check before they exist.
pub(crate) fn bf16_pairs(x: &[f32], out: &mut [u32]) {
    assert!(x.len().is_multiple_of(32) && out.len() == x.len() / 2);
    #[cfg(target_arch = "x86_64")]
    if isa::avx512_bf16() {
        // SAFETY: the processor has the instructions, checked just above.
        unsafe { bf16_pairs_avx512(x, out) };
        return;
    }
    unreachable!("bf16 values are only made where AVX512_BF16 is");
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
