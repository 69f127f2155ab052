//! Data keys wrapped under a root key (AES-256-GCM). The wrapped form is
//! `nonce (12) || encrypted key (32) || tag (16)`; the additional data
//! binds it to its tenant, purpose, key id and root key version, so a
//! wrapped key copied to another row does not unwrap.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::{Zeroize, Zeroizing};

use super::encoding::put_field;
use super::envelope::DecryptError;
use super::purpose::Purpose;
use super::random::{fill_random, SealError};
use super::root_key::KEY_BYTES;

pub const WRAPPED_BYTES: usize = 12 + KEY_BYTES + 16;

/// Where a data key belongs; all of it is authenticated.
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    pub tenant: &'a str,
    pub purpose: Purpose,
    pub key_id: u32,
    pub root_version: u32,
}

fn aad(ctx: &WrapContext<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ctx.tenant.len());
    put_field(&mut out, b"pg_warden.dek.v1");
    put_field(&mut out, ctx.tenant.as_bytes());
    put_field(&mut out, ctx.purpose.as_str().as_bytes());
    out.extend_from_slice(&ctx.key_id.to_be_bytes());
    out.extend_from_slice(&ctx.root_version.to_be_bytes());
    out
}

fn root(root_key: &[u8; KEY_BYTES]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, root_key).expect("32-byte key"))
}

pub fn wrap_data_key(
    root_key: &[u8; KEY_BYTES],
    ctx: &WrapContext<'_>,
    data_key: &[u8; KEY_BYTES],
) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; 12];
    fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(WRAPPED_BYTES);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(data_key);
    let tag = root(root_key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(ctx)),
            &mut out[12..],
        )
        .map_err(|_| {
            // still the data key in the clear
            out.zeroize();
            SealError
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

pub fn unwrap_data_key(
    root_key: &[u8; KEY_BYTES],
    ctx: &WrapContext<'_>,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; KEY_BYTES]>, DecryptError> {
    if wrapped.len() != WRAPPED_BYTES {
        return Err(DecryptError);
    }
    let nonce: [u8; 12] = wrapped[..12].try_into().map_err(|_| DecryptError)?;
    let mut buf = Zeroizing::new(wrapped[12..].to_vec());
    let plain = root(root_key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(ctx)),
            &mut buf,
        )
        .map_err(|_| DecryptError)?;
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    key.copy_from_slice(plain);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tenant: &str) -> WrapContext<'_> {
        WrapContext {
            tenant,
            purpose: Purpose::Data,
            key_id: 7,
            root_version: 1,
        }
    }

    #[test]
    fn wraps_and_unwraps() {
        let root = [1u8; 32];
        let dek = [2u8; 32];
        let w = wrap_data_key(&root, &ctx("acme"), &dek).unwrap();
        assert_eq!(w.len(), WRAPPED_BYTES);
        assert!(
            !w.windows(32).any(|win| win == dek),
            "the key is not in the clear"
        );
        assert_eq!(*unwrap_data_key(&root, &ctx("acme"), &w).unwrap(), dek);
    }

    #[test]
    fn any_context_change_or_tamper_fails() {
        let root = [1u8; 32];
        let w = wrap_data_key(&root, &ctx("acme"), &[2u8; 32]).unwrap();
        assert!(unwrap_data_key(&[9u8; 32], &ctx("acme"), &w).is_err());
        assert!(unwrap_data_key(&root, &ctx("globex"), &w).is_err());
        let other_purpose = WrapContext {
            purpose: Purpose::Token,
            ..ctx("acme")
        };
        assert!(unwrap_data_key(&root, &other_purpose, &w).is_err());
        let other_id = WrapContext {
            key_id: 8,
            ..ctx("acme")
        };
        assert!(unwrap_data_key(&root, &other_id, &w).is_err());
        let other_root_version = WrapContext {
            root_version: 2,
            ..ctx("acme")
        };
        assert!(unwrap_data_key(&root, &other_root_version, &w).is_err());
        for i in 0..w.len() {
            let mut t = w.clone();
            t[i] ^= 1;
            assert!(unwrap_data_key(&root, &ctx("acme"), &t).is_err());
        }
        assert!(unwrap_data_key(&root, &ctx("acme"), &w[..59]).is_err());
    }
}
