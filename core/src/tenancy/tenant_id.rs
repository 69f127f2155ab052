//! What a tenant identifier may be.
//!
//! A tenant id ends up in a setting, in RLS comparisons, in audit chain
//! names and in distribution keys, so it is deliberately narrow: 1 to 128
//! bytes of ASCII letters, digits and `_ . : @ + -`. UUIDs, slugs, numeric
//! ids and e-mail-like names fit; quotes, spaces, backslashes and control
//! characters (the raw material of injection and log forging) do not.

use std::fmt;

/// Longest tenant id accepted, in bytes.
pub const MAX_TENANT_ID_BYTES: usize = 128;

/// Why a candidate tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantIdError {
    Empty,
    TooLong { len: usize },
    BadCharacter { position: usize },
}

impl fmt::Display for TenantIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantIdError::Empty => write!(f, "tenant id is empty"),
            TenantIdError::TooLong { len } => {
                write!(
                    f,
                    "tenant id is {len} bytes long; the limit is {MAX_TENANT_ID_BYTES}"
                )
            }
            TenantIdError::BadCharacter { position } => write!(
                f,
                "tenant id has a character that is not allowed at byte {position}"
            ),
        }
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'+' | b'-')
}

/// Accepts `id` as a tenant id or says why not. The error never echoes the
/// offending character: it may be a control character meant for a log.
pub fn validate_tenant_id(id: &str) -> Result<(), TenantIdError> {
    validate_tenant_id_bytes(id.as_bytes())
}

/// [`validate_tenant_id`] on raw bytes, for callers that have not decoded
/// UTF-8: the alphabet is ASCII, so a valid id is valid UTF-8 as well.
pub fn validate_tenant_id_bytes(id: &[u8]) -> Result<(), TenantIdError> {
    if id.is_empty() {
        return Err(TenantIdError::Empty);
    }
    if id.len() > MAX_TENANT_ID_BYTES {
        return Err(TenantIdError::TooLong { len: id.len() });
    }
    match id.iter().position(|&b| !allowed(b)) {
        Some(position) => Err(TenantIdError::BadCharacter { position }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_common_shapes() {
        for id in [
            "acme",
            "tenant_42",
            "7",
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "org:acme.eu",
            "ops+billing@acme.example",
        ] {
            assert_eq!(validate_tenant_id(id), Ok(()), "{id}");
        }
        assert_eq!(validate_tenant_id(&"a".repeat(128)), Ok(()));
    }

    #[test]
    fn refuses_empty_long_and_injection_shapes() {
        assert_eq!(validate_tenant_id(""), Err(TenantIdError::Empty));
        assert_eq!(
            validate_tenant_id(&"a".repeat(129)),
            Err(TenantIdError::TooLong { len: 129 })
        );
        for (id, pos) in [
            ("a' OR '1'='1", 1),
            ("a;b", 1),
            (" a", 0),
            ("a\n", 1),
            ("a\\b", 1),
            ("é", 0),
            ("a\0", 1),
            ("a\"b", 1),
        ] {
            assert_eq!(
                validate_tenant_id(id),
                Err(TenantIdError::BadCharacter { position: pos }),
                "{id:?}"
            );
        }
    }

    #[test]
    fn error_text_never_echoes_the_input() {
        let e = validate_tenant_id("x\u{1b}[31mforged").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'));
        assert!(!e.to_string().contains("forged"));
    }

    proptest! {
        #[test]
        fn accepted_iff_every_byte_allowed(s in ".{0,140}") {
            let expected = !s.is_empty() && s.len() <= MAX_TENANT_ID_BYTES && s.bytes().all(allowed);
            prop_assert_eq!(validate_tenant_id(&s).is_ok(), expected);
        }

        #[test]
        fn bytes_and_str_agree(s in any::<Vec<u8>>()) {
            if let Ok(text) = std::str::from_utf8(&s) {
                prop_assert_eq!(validate_tenant_id(text), validate_tenant_id_bytes(&s));
            } else {
                prop_assert!(validate_tenant_id_bytes(&s).is_err());
            }
        }

        #[test]
        fn valid_alphabet_always_accepted(s in "[A-Za-z0-9_.:@+-]{1,128}") {
            prop_assert_eq!(validate_tenant_id(&s), Ok(()));
        }
    }
}
