//! Dropout: which units a step drops, drawn where they are applied. Each unit's fate is a
//! hash of (seed, layer, position in the batch), so the same seed drops the same units however
//! the work is split among threads, in every instruction set. The reference takes the same
//! masks ([`Dropout::masks`]) as plain arrays.

use super::isa::{array_mut, simd_fn};
use crate::network::{DROPOUT_HIDDEN, DROPOUT_POOLED, FEATURES, HIDDEN};
use crate::rng::splitmix64;

/// The two layers dropout acts on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layer {
    /// The 9216 pooled features of each image, in burn's flatten order.
    Pooled,
    /// The 128 outputs of the first dense layer.
    Hidden,
}

impl Layer {
    pub(super) fn rate(self) -> f32 {
        match self {
            Layer::Pooled => DROPOUT_POOLED as f32,
            Layer::Hidden => DROPOUT_HIDDEN as f32,
        }
    }

    /// Where the layer's units start in the hash's position space: far apart, so the two
    /// layers never share a draw whatever the batch size.
    fn first_position(self) -> u64 {
        match self {
            Layer::Pooled => 0,
            Layer::Hidden => 1 << 48,
        }
    }
}

/// Dropout for one step. Each unit's fate depends only on the seed, the layer and the unit's
/// position in the batch, so masks are drawn where they are applied, by whichever thread
/// holds the values, and the same seed drops the same units however the work is split.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dropout {
    /// Keep every unit, unscaled.
    Off,
    /// Drop at Keras's rates, from this seed; the kept units are scaled by 1/(1 - rate).
    Seeded(u64),
}

impl Dropout {
    /// What a kept unit of `layer` is multiplied by.
    pub fn scale(self, layer: Layer) -> f32 {
        match self {
            Dropout::Off => 1.0,
            Dropout::Seeded(_) => 1.0 / (1.0 - layer.rate()),
        }
    }

    /// Multiplies `values`, the units of `layer` from position `first` of the batch on, by
    /// their masks: 0 or [`Dropout::scale`]. `first` and the length are multiples of 4. The
    /// reference: `reference::dropout_forward` with [`Dropout::masks`].
    pub fn apply(self, layer: Layer, first: usize, values: &mut [f32]) {
        if let Dropout::Seeded(seed) = self {
            assert!(first.is_multiple_of(4) && values.len().is_multiple_of(4));
            let position = layer.first_position() + (first / 4) as u64;
            apply_dropout(seed, position, layer.rate(), values);
        }
    }

    /// The masks themselves, for `images` images: [images × 9216] and [images × 128].
    pub fn masks(self, images: usize) -> (Vec<f32>, Vec<f32>) {
        let mut pooled = vec![1.0; images * FEATURES];
        let mut hidden = vec![1.0; images * HIDDEN];
        self.apply(Layer::Pooled, 0, &mut pooled);
        self.apply(Layer::Hidden, 0, &mut hidden);
        (pooled, hidden)
    }
}

/// Units per pass of [`apply_dropout`]: the hashes of 16 quads fill two 512-bit vectors, and
/// their 16-bit fields then map onto the units lane for lane. Four quads a pass, each unit's
/// bits shifted out of its quad's hash (which the compiler did with gathers), a batch's
/// pooled units took ~1 ms of one thread with AVX-512; this way ~0.14 (~0.24 with AVX2).
const DROPOUT_BLOCK: usize = 64;

simd_fn! {
    /// Each group of four units shares one 64-bit hash of (seed, position): SplitMix64, whose
    /// bits are independent and well mixed. A unit is dropped when its 16 bits fall below
    /// `rate` × 2¹⁶ (0.35 becomes 0.350006).
    fn apply_dropout(seed: u64, first_quad: u64, rate: f32, values: &mut [f32]) {
        let quads = (DROPOUT_BLOCK / 4) as u64;
        let last = first_quad + (values.len() / DROPOUT_BLOCK) as u64 * quads;
        let mut blocks = values.chunks_exact_mut(DROPOUT_BLOCK);
        for (b, block) in (&mut blocks).enumerate() {
            mask(seed, first_quad + quads * b as u64, rate, array_mut(block, 0));
        }
        // The last few quads through a whole block's pass: the hashes past them go unused.
        let rest = blocks.into_remainder();
        if !rest.is_empty() {
            let mut block = [0.0; DROPOUT_BLOCK];
            block[..rest.len()].copy_from_slice(rest);
            mask(seed, last, rate, &mut block);
            rest.copy_from_slice(&block[..rest.len()]);
        }
    }
}

/// Multiplies the block of units from quad `first` on by their masks: 0 where a unit's 16
/// bits (bits 16 (i % 4) on of quad i / 4's hash) fall below `rate` × 2¹⁶, else 1/(1 - rate).
#[inline(always)]
fn mask(seed: u64, first: u64, rate: f32, units: &mut [f32; DROPOUT_BLOCK]) {
    let scale = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * 65536.0).round() as u32;
    let mut z = [0u64; DROPOUT_BLOCK / 4];
    for (q, z) in z.iter_mut().enumerate() {
        let quad = first + q as u64;
        *z =
            splitmix64(seed.wrapping_add(quad.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    // Unit i's 16 bits are the i-th 16-bit field of the hashes, low fields first.
    let bits: [u16; DROPOUT_BLOCK] = bytemuck::cast(z.map(u64::to_le));
    for (v, bits) in units.iter_mut().zip(bits) {
        *v *= if u32::from(u16::from_le(bits)) >= threshold {
            scale
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each unit is kept or dropped by its own 16 bits of its quad's hash, wherever a slice
    /// starts and whatever its length, in every instruction set.
    #[test]
    fn each_unit_is_dropped_by_its_own_bits() {
        let (seed, layer) = (7, Layer::Hidden);
        let (rate, scale) = (layer.rate(), Dropout::Seeded(seed).scale(layer));
        let threshold = (f64::from(rate) * 65536.0).round() as u64;
        let kept = |unit: usize| {
            let quad = layer.first_position() + (unit / 4) as u64;
            let z = splitmix64(seed.wrapping_add((quad + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            (z >> (16 * (unit % 4))) & 0xFFFF >= threshold
        };
        // Whole passes of 64 units, a slice's last few units, both.
        for (first, len) in [(0, 64), (4, 36), (20, 8), (48, 100), (8, 192)] {
            let runs = crate::isa::on_every_instruction_set(|| {
                let mut values = vec![1.0; len];
                Dropout::Seeded(seed).apply(layer, first, &mut values);
                values
            });
            for (set, values) in runs {
                for (i, &v) in values.iter().enumerate() {
                    let want = if kept(first + i) { scale } else { 0.0 };
                    assert_eq!(v, want, "unit {} of a slice from {first}, {set}", first + i);
                }
                assert!(values.contains(&0.0) || len < 16);
            }
        }
    }

    #[test]
    fn masks_drop_at_keras_rates_and_scale_the_rest() {
        let (pooled, hidden) = Dropout::Seeded(42).masks(100);
        for (mask, layer) in [(&pooled, Layer::Pooled), (&hidden, Layer::Hidden)] {
            let (rate, scale) = (layer.rate(), Dropout::Seeded(42).scale(layer));
            assert_eq!(scale, 1.0 / (1.0 - rate));
            assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
            let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f32 / mask.len() as f32;
            assert!(
                (dropped - rate).abs() < 0.01,
                "rate {rate}: dropped {dropped}"
            );
        }
        assert_eq!(pooled, Dropout::Seeded(42).masks(100).0);
        assert_ne!(pooled, Dropout::Seeded(43).masks(100).0);
        // Not one pattern repeated per image, nor one draw shared by the two layers (with
        // one draw, a unit kept at the higher rate would always be kept at the lower).
        assert_ne!(pooled[..FEATURES], pooled[FEATURES..2 * FEATURES]);
        let disagree = hidden
            .iter()
            .zip(&pooled)
            .filter(|&(h, p)| *h != 0.0 && *p == 0.0);
        assert!(disagree.count() > 100 * HIDDEN / 10);
        // Applied piecewise, as the groups of a step apply it, it drops the same units.
        let mut pieces = vec![1.0; 100 * FEATURES];
        for (i, piece) in pieces.chunks_mut(3 * FEATURES).enumerate() {
            Dropout::Seeded(42).apply(Layer::Pooled, i * 3 * FEATURES, piece);
        }
        assert_eq!(pieces, pooled);
        assert_eq!(
            Dropout::Off.masks(3),
            (vec![1.0; 3 * FEATURES], vec![1.0; 3 * HIDDEN])
        );
    }
}
