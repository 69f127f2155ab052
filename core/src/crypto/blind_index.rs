//! Blind indexes: HMAC-SHA256 under the tenant's `blind_index` data key
//! over `len|"pg_warden.blind_index.v1" || len|context || value`. Equal
//! values in the same context give equal indexes, so an encrypted column
//! can be searched by equality, while the index reveals nothing without
//! the key.

use ring::hmac;

use super::encoding::put_field;
use super::root_key::KEY_BYTES;

pub fn blind_index(key: &[u8; KEY_BYTES], context: &[u8], value: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    let mut prefix = Vec::with_capacity(40 + context.len());
    put_field(&mut prefix, b"pg_warden.blind_index.v1");
    put_field(&mut prefix, context);
    ctx.update(&prefix);
    ctx.update(value);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_equal_index_and_context_separates() {
        let k = [3u8; 32];
        assert_eq!(
            blind_index(&k, b"email", b"a@x"),
            blind_index(&k, b"email", b"a@x")
        );
        assert_ne!(
            blind_index(&k, b"email", b"a@x"),
            blind_index(&k, b"phone", b"a@x")
        );
        assert_ne!(
            blind_index(&k, b"email", b"a@x"),
            blind_index(&[4u8; 32], b"email", b"a@x")
        );
        // the context/value boundary cannot be shifted
        assert_ne!(blind_index(&k, b"ab", b"c"), blind_index(&k, b"a", b"bc"));
    }
}
