//! The envelope: the self-describing ciphertext format pg_warden returns.
//!
//! ```text
//! offset  size  field
//! 0       2     magic 0xE7 0x57
//! 2       1     format version (1)
//! 3       4     key id, big-endian u32 (warden.keys.key_id)
//! 7       12    nonce, random per encryption
//! 19      n     AES-256-GCM ciphertext (n = plaintext length)
//! 19+n    16    GCM tag
//! ```
//!
//! Additional authenticated data, in this order, each variable field
//! preceded by its length as a big-endian u32:
//! `len|"pg_warden.envelope.v1"`, the 7 header bytes (magic, version,
//! key id), `len|tenant`, `len|context`. So a ciphertext moved to another
//! tenant, another context string, or relabelled with another key id does
//! not decrypt.
//!
//! Every failure to open is the same `DecryptError`, whatever the cause.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::encoding::put_field;
use super::random::{fill_random, SealError};
use super::root_key::KEY_BYTES;

pub const MAGIC: [u8; 2] = [0xE7, 0x57];
pub const FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: usize = 7;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;
const AAD_LABEL: &[u8] = b"pg_warden.envelope.v1";

/// The one error of decryption: deliberately without detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

/// An unwrapped data key, expanded for AES-256-GCM.
pub struct DataKey {
    aead: LessSafeKey,
}

impl DataKey {
    pub fn new(key: &[u8; KEY_BYTES]) -> DataKey {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32 bytes is an AES-256 key");
        DataKey {
            aead: LessSafeKey::new(unbound),
        }
    }
}

/// The parsed fixed part of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    pub key_id: u32,
}

fn aad(header: &[u8], tenant: &str, context: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + AAD_LABEL.len() + HEADER_BYTES + 8 + tenant.len() + context.len());
    put_field(&mut out, AAD_LABEL);
    out.extend_from_slice(header);
    put_field(&mut out, tenant.as_bytes());
    put_field(&mut out, context);
    out
}

/// Reads the header, checking only the shape (magic, version, minimum
/// length). Never panics, whatever the input.
pub fn parse_envelope(bytes: &[u8]) -> Result<EnvelopeHeader, DecryptError> {
    if bytes.len() < ENVELOPE_OVERHEAD || bytes[..2] != MAGIC || bytes[2] != FORMAT_VERSION {
        return Err(DecryptError);
    }
    let key_id = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
    Ok(EnvelopeHeader { key_id })
}

/// Encrypts `plaintext` into `out`, which must be exactly
/// `plaintext.len() + ENVELOPE_OVERHEAD` bytes (the caller allocates it,
/// so the result can be written straight into a Postgres datum).
pub fn seal(
    key: &DataKey,
    key_id: u32,
    tenant: &str,
    context: &[u8],
    plaintext: &[u8],
    out: &mut [u8],
) -> Result<(), SealError> {
    let mut nonce = [0u8; NONCE_BYTES];
    fill_random(&mut nonce)?;
    seal_with_nonce(key, key_id, tenant, context, plaintext, nonce, out)
}

/// `seal` with a caller-chosen nonce: for known-answer tests only. A nonce
/// must never repeat under one key.
pub fn seal_with_nonce(
    key: &DataKey,
    key_id: u32,
    tenant: &str,
    context: &[u8],
    plaintext: &[u8],
    nonce: [u8; NONCE_BYTES],
    out: &mut [u8],
) -> Result<(), SealError> {
    assert_eq!(
        out.len(),
        plaintext.len() + ENVELOPE_OVERHEAD,
        "envelope buffer size"
    );
    out[..2].copy_from_slice(&MAGIC);
    out[2] = FORMAT_VERSION;
    out[3..7].copy_from_slice(&key_id.to_be_bytes());
    out[7..19].copy_from_slice(&nonce);
    let aad = aad(&out[..HEADER_BYTES], tenant, context);
    let body_end = HEADER_BYTES + NONCE_BYTES + plaintext.len();
    let body = &mut out[HEADER_BYTES + NONCE_BYTES..body_end];
    body.copy_from_slice(plaintext);
    let tag = key
        .aead
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .map_err(|_| SealError)?;
    out[body_end..].copy_from_slice(tag.as_ref());
    Ok(())
}

/// Decrypts `envelope` into `out`, which must be exactly
/// `envelope.len() - ENVELOPE_OVERHEAD` bytes. On failure `out` holds no
/// plaintext (it is zeroed).
pub fn open(
    key: &DataKey,
    tenant: &str,
    context: &[u8],
    envelope: &[u8],
    out: &mut [u8],
) -> Result<(), DecryptError> {
    parse_envelope(envelope)?;
    if out.len() + ENVELOPE_OVERHEAD != envelope.len() {
        return Err(DecryptError);
    }
    let nonce: [u8; NONCE_BYTES] = envelope[7..19].try_into().map_err(|_| DecryptError)?;
    let tag_at = envelope.len() - TAG_BYTES;
    let tag = aead::Tag::try_from(&envelope[tag_at..]).map_err(|_| DecryptError)?;
    out.copy_from_slice(&envelope[HEADER_BYTES + NONCE_BYTES..tag_at]);
    let aad = aad(&envelope[..HEADER_BYTES], tenant, context);
    let result = key.aead.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        tag,
        out,
        0..,
    );
    match result {
        Ok(_) => Ok(()),
        Err(_) => {
            out.fill(0);
            Err(DecryptError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> DataKey {
        DataKey::new(&[byte; 32])
    }

    fn sealed(k: &DataKey, key_id: u32, tenant: &str, ctx: &[u8], pt: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; pt.len() + ENVELOPE_OVERHEAD];
        seal(k, key_id, tenant, ctx, pt, &mut out).unwrap();
        out
    }

    fn opened(k: &DataKey, tenant: &str, ctx: &[u8], env: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let mut out = vec![0u8; env.len().saturating_sub(ENVELOPE_OVERHEAD)];
        open(k, tenant, ctx, env, &mut out).map(|_| out)
    }

    #[test]
    fn round_trips_empty_one_byte_and_64_kib() {
        let k = key(7);
        for len in [0usize, 1, 65536] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let env = sealed(&k, 42, "acme", b"users.email", &pt);
            assert_eq!(env.len(), len + ENVELOPE_OVERHEAD);
            assert_eq!(parse_envelope(&env), Ok(EnvelopeHeader { key_id: 42 }));
            assert_eq!(opened(&k, "acme", b"users.email", &env).unwrap(), pt);
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let k = key(1);
        let mut out = vec![0u8; 3 + ENVELOPE_OVERHEAD];
        seal_with_nonce(&k, 0x01020304, "t", b"", b"abc", [9; 12], &mut out).unwrap();
        assert_eq!(&out[..7], &[0xE7, 0x57, 1, 1, 2, 3, 4]);
        assert_eq!(&out[7..19], &[9; 12]);
        assert_eq!(out.len(), 19 + 3 + 16);
        // nonces are random: two encryptions differ
        assert_ne!(
            sealed(&k, 1, "t", b"", b"abc"),
            sealed(&k, 1, "t", b"", b"abc")
        );
    }

    #[test]
    fn wrong_key_tenant_context_or_key_id_fails_alike() {
        let env = sealed(&key(1), 5, "acme", b"ctx", b"secret");
        assert_eq!(opened(&key(2), "acme", b"ctx", &env), Err(DecryptError));
        assert_eq!(opened(&key(1), "globex", b"ctx", &env), Err(DecryptError));
        assert_eq!(opened(&key(1), "acme", b"other", &env), Err(DecryptError));
        let mut relabelled = env.clone();
        relabelled[6] ^= 1;
        assert_eq!(
            opened(&key(1), "acme", b"ctx", &relabelled),
            Err(DecryptError)
        );
        // tenant/context boundary shifts are different AAD
        let env2 = sealed(&key(1), 5, "ab", b"c", b"x");
        assert_eq!(opened(&key(1), "a", b"bc", &env2), Err(DecryptError));
    }

    #[test]
    fn every_single_byte_flip_and_every_truncation_fails() {
        let k = key(3);
        let env = sealed(&k, 9, "acme", b"c", b"sixteen byte msg");
        for i in 0..env.len() {
            for bit in 0..8 {
                let mut t = env.clone();
                t[i] ^= 1 << bit;
                assert_eq!(
                    opened(&k, "acme", b"c", &t),
                    Err(DecryptError),
                    "flip byte {i} bit {bit}"
                );
            }
        }
        for len in 0..env.len() {
            assert_eq!(
                opened(&k, "acme", b"c", &env[..len]),
                Err(DecryptError),
                "truncated to {len}"
            );
        }
        let mut longer = env.clone();
        longer.push(0);
        assert_eq!(opened(&k, "acme", b"c", &longer), Err(DecryptError));
    }

    #[test]
    fn unknown_format_version_fails() {
        let k = key(3);
        let mut env = sealed(&k, 9, "acme", b"", b"x");
        env[2] = 2;
        assert_eq!(parse_envelope(&env), Err(DecryptError));
    }

    #[test]
    fn failed_open_leaves_no_plaintext() {
        let k = key(4);
        let mut env = sealed(&k, 1, "t", b"", b"plaintext!");
        let last = env.len() - 1;
        env[last] ^= 0x80;
        let mut out = vec![0xAAu8; 10];
        assert_eq!(open(&k, "t", b"", &env, &mut out), Err(DecryptError));
        assert!(out.iter().all(|b| *b == 0));
    }

    proptest! {
        #[test]
        fn random_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2048), tenant in "[a-z]{1,12}", ctx in proptest::collection::vec(any::<u8>(), 0..64), key_id in any::<u32>()) {
            let k = key(5);
            let env = sealed(&k, key_id, &tenant, &ctx, &pt);
            prop_assert_eq!(opened(&k, &tenant, &ctx, &env).unwrap(), pt);
        }

        #[test]
        fn random_flip_or_truncation_fails(pt in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
            let k = key(6);
            let env = sealed(&k, 3, "t", b"c", &pt);
            let mut flipped = env.clone();
            let i = pos.index(env.len());
            flipped[i] ^= 1 << bit;
            prop_assert_eq!(opened(&k, "t", b"c", &flipped), Err(DecryptError));
            let n = cut.index(env.len());
            prop_assert_eq!(opened(&k, "t", b"c", &env[..n]), Err(DecryptError));
        }

        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_envelope(&bytes);
            let mut out = vec![0u8; bytes.len().saturating_sub(ENVELOPE_OVERHEAD)];
            prop_assert!(open(&key(8), "t", b"", &bytes, &mut out).is_err());
        }
    }
}
