//! Randomness. On a real host it is the OS RNG; in the simulator it is derived
//! from the scenario seed and the node id, so a seed replays a run.

pub trait Entropy: Send + Sync + 'static {
    fn fill_bytes(&self, dest: &mut [u8]);

    fn next_u64(&self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// A uniform value in `0..bound` (`bound > 0`), without modulo bias.
    fn below(&self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no values");
        let zone = u64::MAX - (u64::MAX % bound);
        // Rejection sampling; the expected number of draws is < 2 for any bound.
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    fn array<const N: usize>(&self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut bytes = [0u8; N];
        self.fill_bytes(&mut bytes);
        bytes
    }
}
