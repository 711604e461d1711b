//! [`hm_env::Entropy`] from the operating system's random number generator.

use hm_env::Entropy;

/// The OS RNG (`getrandom(2)` on Linux). Keys, nonces and connection IDs come
/// from here on a real host.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    /// # Panics
    ///
    /// If the OS RNG fails. On Linux that means no kernel entropy interface
    /// at all (seccomp forbidding `getrandom` and no `/dev/urandom`): nothing
    /// secure can proceed — keys and nonces would be predictable — and the
    /// trait has no error path because no caller could recover either.
    fn fill_bytes(&self, dest: &mut [u8]) {
        if let Err(error) = getrandom::fill(dest) {
            panic!(
                "the operating system's random number generator failed ({error}); refusing to run without secure randomness"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_byte_and_differs_between_draws() {
        let entropy = OsEntropy;
        let a: [u8; 32] = entropy.array();
        let b: [u8; 32] = entropy.array();
        // 2^-256 chance of a false failure.
        assert_ne!(a, b);
        // The OS wrote the whole buffer: in 64 KiB of uniform bytes every
        // value appears (a miss has probability about 256·e^-256).
        let mut big = vec![0u8; 64 * 1024];
        entropy.fill_bytes(&mut big);
        let mut seen = [false; 256];
        for byte in &big {
            seen[usize::from(*byte)] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "64 KiB of OS randomness misses some byte values"
        );
        assert!(entropy.below(10) < 10);
    }
}
