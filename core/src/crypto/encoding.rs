//! Length-prefixed encoding for additional authenticated data: every
//! variable-length field is preceded by its length as a big-endian u32, so
//! no two different field lists encode to the same bytes.

pub fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_boundaries_encode_differently() {
        let mut a = Vec::new();
        put_field(&mut a, b"ab");
        put_field(&mut a, b"c");
        let mut b = Vec::new();
        put_field(&mut b, b"a");
        put_field(&mut b, b"bc");
        assert_ne!(a, b);
    }
}
