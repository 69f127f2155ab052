//! The OS random source (getrandom(2)), for keys and nonces.

use ring::rand::{SecureRandom, SystemRandom};

/// Encryption could not be done: the OS random source failed (the only
/// way sealing fails for inputs within Postgres' size limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealError;

/// Fills `buf` with random bytes. Fails only if the OS source fails.
pub fn fill_random(buf: &mut [u8]) -> Result<(), SealError> {
    SystemRandom::new().fill(buf).map_err(|_| SealError)
}
