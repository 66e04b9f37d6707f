//! conv1 + bias + ReLU, directly: the network's first layer on the CPU.

use super::isa::{array, simd_fn};
use crate::network::{CONV1_FILTERS as C1, CONV1_SIDE as S1, PIXELS, SIDE, TAPS};

simd_fn! {
    /// conv1 + bias + ReLU for a group of images, into channels-last maps `a1_nhwc`
    /// [(image, y, x) × 32]. `w1` is the GEMM layout [9 × 32]. Directly, not as a GEMM: with
    /// an inner dimension of 9, a GEMM spends more on packing than on arithmetic. The
    /// reference: `reference::{conv_forward, relu_forward}`.
    pub(crate) fn conv1(images: &[f32], w1: &[f32], b1: &[f32], a1_nhwc: &mut [f32]) {
        // The weights and a pixel's 32 sums stay in registers.
        let w: [[f32; C1]; TAPS] = std::array::from_fn(|k| *array(w1, k * C1));
        let b: [f32; C1] = *array(b1, 0);
        for (img, out) in images.chunks(PIXELS).zip(a1_nhwc.chunks_mut(S1 * S1 * C1)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffers::reuse;
    use crate::layouts::{ConvLayout, relayout};
    use crate::reference::testing::{assert_close, channels_last, random};
    use crate::reference::{self, Maps};

    #[test]
    fn conv1_matches_its_reference_layers() {
        let n = 3;
        let images = random(n * PIXELS, (0.0, 1.0), 1);
        let w = random(C1 * TAPS, (-0.5, 0.5), 2);
        let b = random(C1, (-0.3, 0.3), 3);
        let mut a1_nhwc = reuse(n * S1 * S1 * C1);
        conv1(
            &images,
            &relayout(&w, 1, C1, ConvLayout::Burn, ConvLayout::Gemm),
            &b,
            &mut a1_nhwc,
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
        assert_close(&a1_nhwc, &channels_last(&want, maps), 1e-6, "conv1 + ReLU");
        // Both sides of the ReLU were exercised.
        let zeros = a1_nhwc.iter().filter(|&&v| v == 0.0).count();
        assert!(
            zeros > a1_nhwc.len() / 10 && zeros < a1_nhwc.len() * 9 / 10,
            "{zeros}"
        );
    }
}
