//! The OS random source (getrandom(2)), for keys and nonces.

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `buf` with random bytes. Fails only if the OS source fails.
pub fn fill_random(buf: &mut [u8]) -> Result<(), ()> {
    SystemRandom::new().fill(buf).map_err(|_| ())
}
