//! How the kernels lay out convolution weights (see the layout table in the module doc of
//! [`super`]).

use crate::network::TAPS;

/// Where a convolution weight's element for (output channel, input channel, tap) lives. The
/// tap k = 3 ky + kx.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ConvLayout {
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
pub(crate) fn relayout(
    w: &[f32],
    c_in: usize,
    c_out: usize,
    from: ConvLayout,
    to: ConvLayout,
) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
