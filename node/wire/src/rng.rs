//! Adapters from [`hm_env::Entropy`] to the RNG traits the crypto crates
//! take. All randomness in this crate flows through them, so a simulated
//! run that seeds its Entropy replays every key, nonce and signature.

use hm_env::Entropy;
use std::convert::Infallible;

/// `rand_core` 0.6 traits, as re-exported by `fn-dsa`.
pub(crate) struct FnDsaRng<'a, E: ?Sized>(pub(crate) &'a E);

impl<E: Entropy + ?Sized> fn_dsa::RngCore for FnDsaRng<'_, E> {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.0.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.0.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), fn_dsa::RngError> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

// Entropy's contract is cryptographic strength in production (OS RNG) and
// reproducibility in simulation; that is what CryptoRng asserts.
impl<E: Entropy + ?Sized> fn_dsa::CryptoRng for FnDsaRng<'_, E> {}

/// `rand_core` 0.10 traits, as taken by `ml-kem` 0.3.
pub(crate) struct KemRng<'a, E: ?Sized>(pub(crate) &'a E);

impl<E: Entropy + ?Sized> rand_core::TryRng for KemRng<'_, E> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.0.fill_bytes(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.0.fill_bytes(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl<E: Entropy + ?Sized> rand_core::TryCryptoRng for KemRng<'_, E> {}
