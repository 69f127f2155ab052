//! Encoding v1 of `warden.hash_diff`.
//!
//! ```text
//! hash_diff = SHA-256( "pg_warden.hash_diff.v1" 0x00 field* )
//! field     = 0x00                                  -- NULL
//!           | 0x01 tag:u32be len:u32be bytes[len]   -- a value
//! ```
//!
//! Fields follow the column order; NULL fields after the last non-NULL one
//! are not written, so adding a nullable column changes no hash. The tag
//! names the type family and the length prefix makes every field
//! self-delimiting, so no two different rows share an encoding (`'ab','c'`
//! vs `'a','bc'`, NULL vs `''` vs `'NULL'`). Arrays and composite values
//! nest the same framing inside `bytes` (see [`RowEncoder::nested`]).

use ring::digest;

/// Prefix of every encoding; a new version gets a new prefix.
pub const HASH_DIFF_DOMAIN: &[u8] = b"pg_warden.hash_diff.v1\0";

const NULL_FIELD: u8 = 0x00;
const VALUE_FIELD: u8 = 0x01;

/// Writes fields in the v1 framing, holding back trailing NULLs until a
/// value follows them.
#[derive(Debug, Default, Clone)]
pub struct RowEncoder {
    out: Vec<u8>,
    pending_nulls: usize,
}

impl RowEncoder {
    /// An encoder for a top-level row (starts with the domain prefix).
    pub fn row() -> Self {
        // room for a typical row without growing
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(HASH_DIFF_DOMAIN);
        RowEncoder {
            out,
            pending_nulls: 0,
        }
    }

    /// An encoder for the fields of a nested value (no prefix).
    pub fn nested() -> Self {
        RowEncoder::default()
    }

    /// A NULL field.
    pub fn null(&mut self) {
        self.pending_nulls += 1;
    }

    /// A non-NULL field of type family `tag`.
    pub fn value(&mut self, tag: u32, bytes: &[u8]) {
        self.flush_nulls();
        let len = u32::try_from(bytes.len()).expect("Postgres values are below 1 GiB");
        self.out.push(VALUE_FIELD);
        self.out.extend_from_slice(&tag.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(bytes);
    }

    /// Raw bytes that belong to a nested value's header (array
    /// dimensions), written in place.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.flush_nulls();
        self.out.extend_from_slice(bytes);
    }

    /// NULLs inside arrays are positional: written at once, never trimmed.
    pub fn null_in_place(&mut self) {
        self.flush_nulls();
        self.out.push(NULL_FIELD);
    }

    fn flush_nulls(&mut self) {
        for _ in 0..self.pending_nulls {
            self.out.push(NULL_FIELD);
        }
        self.pending_nulls = 0;
    }

    /// The encoded fields; trailing NULLs are dropped.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// SHA-256 of the encoding.
    pub fn finish(self) -> HashDiff {
        let d = digest::digest(&digest::SHA256, &self.out);
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        HashDiff(h)
    }
}

/// A 32-byte hash_diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashDiff(pub [u8; 32]);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEXT: u32 = 25;

    fn hash(fields: &[Option<&[u8]>]) -> HashDiff {
        let mut e = RowEncoder::row();
        for f in fields {
            match f {
                Some(b) => e.value(TEXT, b),
                None => e.null(),
            }
        }
        e.finish()
    }

    #[test]
    fn known_answer_for_the_spec() {
        // SHA-256("pg_warden.hash_diff.v1\0" 01 00000019 00000001 'a' 00 01 00000019 00000000)
        let mut e = RowEncoder::row();
        e.value(TEXT, b"a");
        e.null();
        e.value(TEXT, b"");
        let mut expected = b"pg_warden.hash_diff.v1\0".to_vec();
        expected.extend_from_slice(&[
            1, 0, 0, 0, 25, 0, 0, 0, 1, b'a', 0, 1, 0, 0, 0, 25, 0, 0, 0, 0,
        ]);
        assert_eq!(e.clone().into_bytes(), expected);
        assert_eq!(
            hex(&e.finish().0),
            hex(digest::digest(&digest::SHA256, &expected).as_ref())
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn null_empty_and_the_word_null_differ() {
        let a = hash(&[None, Some(b"x")]);
        let b = hash(&[Some(b""), Some(b"x")]);
        let c = hash(&[Some(b"NULL"), Some(b"x")]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }

    #[test]
    fn shifted_delimiters_differ() {
        assert_ne!(
            hash(&[Some(b"ab"), Some(b"c")]),
            hash(&[Some(b"a"), Some(b"bc")])
        );
        assert_ne!(
            hash(&[Some(b"a|"), Some(b"b")]),
            hash(&[Some(b"a"), Some(b"|b")])
        );
    }

    #[test]
    fn trailing_nulls_do_not_count_but_inner_ones_do() {
        assert_eq!(hash(&[Some(b"a")]), hash(&[Some(b"a"), None, None]));
        assert_ne!(
            hash(&[Some(b"a"), None, Some(b"b")]),
            hash(&[Some(b"a"), Some(b"b")])
        );
        assert_eq!(hash(&[]), hash(&[None]));
    }

    #[test]
    fn tags_separate_types_with_equal_bytes() {
        let mut a = RowEncoder::row();
        a.value(25, b"\x00\x00\x00\x01");
        let mut b = RowEncoder::row();
        b.value(23, b"\x00\x00\x00\x01");
        assert_ne!(a.finish(), b.finish());
    }

    proptest! {
        // equal iff the field lists are equal once trailing NULLs are cut
        #[test]
        fn equal_iff_same_fields(
            a in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)), 0..6),
            b in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)), 0..6),
        ) {
            fn trim(v: &[Option<Vec<u8>>]) -> &[Option<Vec<u8>>] {
                let end = v.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
                &v[..end]
            }
            let ha = hash(&a.iter().map(|f| f.as_deref()).collect::<Vec<_>>());
            let hb = hash(&b.iter().map(|f| f.as_deref()).collect::<Vec<_>>());
            prop_assert_eq!(ha == hb, trim(&a) == trim(&b));
        }
    }
}
