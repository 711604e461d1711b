//! A tiny deterministic PRNG (SplitMix64). The core never asks the OS for
//! randomness: the shell passes a seed (from `hm_env::Entropy`), so a
//! simulated run replays bit for bit.

#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `0..bound`; `bound` must be > 0. Lemire's multiply-shift:
    /// the bias (< bound / 2^64) is irrelevant for peer selection.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        debug_assert!(bound > 0, "below(0) has no values");
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// True with probability `numerator / denominator` (certain if `numerator >= denominator`).
    pub(crate) fn chance(&mut self, numerator: usize, denominator: usize) -> bool {
        numerator >= denominator || self.below(denominator) < numerator
    }
}

/// SplitMix64's finaliser: a strong 64-bit mix, also used for table hashing.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_below_is_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            seen[x] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value of 0..10 is drawn");
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }
}
