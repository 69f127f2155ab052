//! Reading the datums of stored rows without SQL: varlena bytes and text
//! (detoasted), hashes, and the canonical encoding of a stored jsonb,
//! built by walking it (`CanonicalBuilder`), which gives the same bytes as
//! parsing its text. Used by the sequencer and by `audit_verify`, so what
//! is hashed and what is checked are read the same way.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};
use warden_core::audit::CanonicalBuilder;

/// # Safety
/// A non-null varlena datum.
pub(super) unsafe fn bytes<'a>(d: Datum) -> &'a [u8] {
    // SAFETY: detoasted (a copy in the current memory context when it
    // was toasted or compressed), then read in place.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        std::slice::from_raw_parts(
            pgrx::vardata_any(v).cast::<u8>(),
            pgrx::varsize_any_exhdr(v),
        )
    }
}

/// # Safety
/// As `bytes`; text.
pub(super) unsafe fn text(d: Datum, null: bool) -> Option<String> {
    if null {
        return None;
    }
    // SAFETY: per the contract.
    match std::str::from_utf8(unsafe { bytes(d) }) {
        Ok(s) => Some(s.to_string()),
        // the chain's format is UTF-8 text: a value of another server
        // encoding would be hashed as something other than what is stored
        Err(_) => crate::error::WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "an audit event holds text that is not UTF-8",
        )
        .hint("pg_warden's audit chain needs a database created with ENCODING 'UTF8'.")
        .raise(),
    }
}

pub(super) fn hash32(b: &[u8]) -> [u8; 32] {
    // a wrong length cannot be what was chained: it will not match
    b.try_into().unwrap_or([0xff; 32])
}

/// The canonical encoding of a stored jsonb.
///
/// # Safety
/// A jsonb datum.
pub(super) unsafe fn canonical_jsonb(d: Datum) -> Vec<u8> {
    let mut b = CanonicalBuilder::new();
    // SAFETY: the iterator walks the detoasted jsonb; scalar values it
    // hands out point into it.
    unsafe {
        let jb = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
        let mut it = pg_sys::JsonbIteratorInit(&raw mut (*jb).root);
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        // a scalar stored as jsonb is a one-element "raw scalar" array
        let mut raw_scalar = Vec::new();
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut v, false) {
                pg_sys::JsonbIteratorToken::WJB_DONE => break,
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY => {
                    raw_scalar.push(v.val.array.rawScalar);
                    if !v.val.array.rawScalar {
                        b.begin_array();
                    }
                }
                pg_sys::JsonbIteratorToken::WJB_END_ARRAY => {
                    if !raw_scalar.pop().unwrap_or(false) {
                        b.end();
                    }
                }
                pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT => b.begin_object(),
                pg_sys::JsonbIteratorToken::WJB_END_OBJECT => b.end(),
                pg_sys::JsonbIteratorToken::WJB_KEY => b.key(string(&v)),
                _ => match v.type_ {
                    pg_sys::jbvType::jbvNull => b.null(),
                    pg_sys::jbvType::jbvBool => b.boolean(v.val.boolean),
                    pg_sys::jbvType::jbvString => b.string(string(&v)),
                    pg_sys::jbvType::jbvNumeric => {
                        // printed as jsonb prints it
                        let out = pgrx::direct_function_call_as_datum(
                            pg_sys::numeric_out,
                            &[Some(Datum::from(v.val.numeric))],
                        )
                        .expect("numeric_out returns a value");
                        let out = out.cast_mut_ptr::<std::ffi::c_char>();
                        b.number(&CStr::from_ptr(out).to_string_lossy());
                        pg_sys::pfree(out.cast());
                    }
                    // nothing else is ever stored in a jsonb
                    _ => b.null(),
                },
            }
        }
    }
    b.finish().unwrap_or_default()
}

/// # Safety
/// A string JsonbValue pointing into a live jsonb.
unsafe fn string(v: &pg_sys::JsonbValue) -> &[u8] {
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(v.val.string.val.cast::<u8>(), v.val.string.len as usize) }
}
