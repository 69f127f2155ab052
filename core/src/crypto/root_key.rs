//! The root key (key encryption key) file: one key per line,
//! `v<N>:<64 hex digits>`, N a positive version number. The highest
//! version is active (wraps new data keys); older ones only unwrap. Blank
//! lines and lines starting with `#` are ignored. `warden.key_command`
//! prints the same format.
//!
//! Errors name the line number and what is wrong, never the line's text:
//! it may hold key material.

use std::collections::BTreeMap;
use std::fmt;

use ring::hmac;
use zeroize::{Zeroize, Zeroizing};

pub const KEY_BYTES: usize = 32;

/// Root keys by version, zeroized when dropped.
pub struct RootKeyring {
    keys: BTreeMap<u32, Zeroizing<[u8; KEY_BYTES]>>,
}

impl fmt::Debug for RootKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the key bytes
        f.debug_struct("RootKeyring")
            .field("versions", &self.versions())
            .finish()
    }
}

impl RootKeyring {
    pub fn active(&self) -> (u32, &[u8; KEY_BYTES]) {
        let (v, k) = self
            .keys
            .iter()
            .next_back()
            .expect("a keyring is never empty");
        (*v, k)
    }

    pub fn get(&self, version: u32) -> Option<&[u8; KEY_BYTES]> {
        self.keys.get(&version).map(|k| &**k)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Where each key's bytes live, so the caller can keep those pages out
    /// of core dumps and swap.
    pub fn key_regions(&self) -> Vec<(*const u8, usize)> {
        self.keys
            .values()
            .map(|k| (k.as_ptr(), KEY_BYTES))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    Empty,
    BadLine { line: usize, problem: &'static str },
    DuplicateVersion { line: usize, version: u32 },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Empty => write!(
                f,
                "no key found; expected lines of the form v1:<64 hex digits>"
            ),
            KeyFileError::BadLine { line, problem } => {
                write!(f, "line {line}: {problem}; expected v<N>:<64 hex digits>")
            }
            KeyFileError::DuplicateVersion { line, version } => {
                write!(f, "line {line}: version {version} appears more than once")
            }
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a key file. The input is not copied anywhere but the keys.
pub fn parse_root_keys(text: &str) -> Result<RootKeyring, KeyFileError> {
    let mut keys = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |problem| KeyFileError::BadLine { line, problem };
        let rest = l.strip_prefix('v').ok_or(bad("missing the leading 'v'"))?;
        let (version, hex) = rest
            .split_once(':')
            .ok_or(bad("missing ':' after the version"))?;
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || version.len() > 9 {
            return Err(bad("the version is not a number"));
        }
        let version: u32 = version
            .parse()
            .map_err(|_| bad("the version is not a number"))?;
        if version == 0 {
            return Err(bad("versions start at 1"));
        }
        let hex = hex.as_bytes();
        if hex.len() != 2 * KEY_BYTES {
            return Err(bad("the key is not 64 hex digits (32 bytes)"));
        }
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        for i in 0..KEY_BYTES {
            match (hex_value(hex[2 * i]), hex_value(hex[2 * i + 1])) {
                (Some(hi), Some(lo)) => key[i] = (hi << 4) | lo,
                _ => return Err(bad("the key has a character that is not a hex digit")),
            }
        }
        if keys.insert(version, key).is_some() {
            return Err(KeyFileError::DuplicateVersion { line, version });
        }
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(RootKeyring { keys })
}

/// A key check value: 16 bytes of HMAC-SHA256(key, fixed label). Stored
/// with the keyring, it tells a wrong root key from a corrupt ciphertext
/// without revealing anything about the key.
pub fn check_value(key: &[u8; KEY_BYTES]) -> [u8; 16] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, b"pg_warden key check value v1");
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag.as_ref()[..16]);
    out
}

impl Drop for RootKeyring {
    fn drop(&mut self) {
        // Zeroizing already wipes each key; also forget the map's shape.
        for (_, k) in self.keys.iter_mut() {
            k.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn highest_version_is_active() {
        let ring = parse_root_keys(&format!("# keys\nv1:{K1}\n\n  v2:{K2}  \n")).unwrap();
        assert_eq!(ring.versions(), vec![1, 2]);
        let (v, k) = ring.active();
        assert_eq!(v, 2);
        assert_eq!(k[0], 0xff);
        assert_eq!(ring.get(1).unwrap()[31], 0x1f);
        assert!(ring.get(3).is_none());
    }

    #[test]
    fn bad_files_are_refused_without_echoing_key_material() {
        let cases = [
            ("", KeyFileError::Empty),
            ("# only a comment\n", KeyFileError::Empty),
            (
                K1,
                KeyFileError::BadLine {
                    line: 1,
                    problem: "missing the leading 'v'",
                },
            ),
            (
                "v1",
                KeyFileError::BadLine {
                    line: 1,
                    problem: "missing ':' after the version",
                },
            ),
            (
                "vx:00",
                KeyFileError::BadLine {
                    line: 1,
                    problem: "the version is not a number",
                },
            ),
            (
                "v0:00",
                KeyFileError::BadLine {
                    line: 1,
                    problem: "versions start at 1",
                },
            ),
            (
                "v1:abcd",
                KeyFileError::BadLine {
                    line: 1,
                    problem: "the key is not 64 hex digits (32 bytes)",
                },
            ),
        ];
        for (text, err) in cases {
            assert_eq!(parse_root_keys(text).unwrap_err(), err, "{text:?}");
        }
        let bad_hex = format!("v1:{}zz", &K1[..62]);
        let e = parse_root_keys(&bad_hex).unwrap_err();
        assert!(!e.to_string().contains(&K1[..62]));
        assert_eq!(
            parse_root_keys(&format!("v1:{K1}\nv1:{K2}")).unwrap_err(),
            KeyFileError::DuplicateVersion {
                line: 2,
                version: 1
            }
        );
    }

    #[test]
    fn debug_output_has_no_key_bytes() {
        let ring = parse_root_keys(&format!("v7:{K1}")).unwrap();
        let dbg = format!("{ring:?}");
        assert!(!dbg.contains("0102") && !dbg.contains("[0, 1"), "{dbg}");
    }

    #[test]
    fn check_values_differ_per_key_and_are_stable() {
        let ring = parse_root_keys(&format!("v1:{K1}\nv2:{K2}")).unwrap();
        let a = check_value(ring.get(1).unwrap());
        assert_eq!(a, check_value(ring.get(1).unwrap()));
        assert_ne!(a, check_value(ring.get(2).unwrap()));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_root_keys(&s);
        }

        #[test]
        fn any_32_bytes_round_trip(key in proptest::array::uniform32(any::<u8>()), v in 1u32..100_000) {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let ring = parse_root_keys(&format!("v{v}:{hex}")).unwrap();
            prop_assert_eq!(ring.get(v).unwrap(), &key);
        }
    }
}
