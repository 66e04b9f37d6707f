//! The random streams of a training run, each with a named purpose.
//!
//! A run draws from its seed in three places: the epoch's shuffle, and dropout's masks (one
//! stream per epoch, then one per step). Each is its own stream, a function of (seed, epoch or
//! step, purpose) only, so that any epoch can be replayed alone and the same seed gives the
//! same bytes however the work is split across threads. Weight initialisation draws from the
//! seed itself ([`crate::network::Params::glorot`]).

/// What a stream is for; the purposes keep streams apart that share a seed and an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The order of an epoch's training images.
    Shuffle = 1,
    /// The seed of an epoch's dropout, from which each step's is drawn.
    EpochDropout = 2,
    /// The seed of one step's dropout masks.
    StepDropout = 3,
}

/// The seed of the stream for `purpose` at `index` (an epoch or a step, from 1) of `seed`.
pub fn stream(seed: u64, index: usize, purpose: Purpose) -> u64 {
    splitmix64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (purpose as u64) << 56)
}

/// SplitMix64's finaliser: nearby inputs give unrelated, well-mixed 64-bit outputs. The
/// streams above and dropout's per-unit hash both draw from it.
#[inline(always)]
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_seed_index_and_purpose() {
        let a = stream(1, 1, Purpose::Shuffle);
        assert_eq!(a, stream(1, 1, Purpose::Shuffle));
        assert_ne!(a, stream(2, 1, Purpose::Shuffle));
        assert_ne!(a, stream(1, 2, Purpose::Shuffle));
        assert_ne!(a, stream(1, 1, Purpose::EpochDropout));
        // The values every saved run was made with: changing them changes every model.
        assert_eq!(splitmix64(0), 0);
        assert_eq!(splitmix64(1), 0x5692_161D_100B_05E5);
    }
}
