//! The shape of a jsonb datum, read in place: whether it is an object,
//! how deep it nests, how large it is. pg_warden refuses input its
//! encoders and workers could not handle before storing it, with a clear
//! error, rather than failing later for everyone.

use pgrx::pg_sys::{self, Datum};

/// What the checks found.
pub struct JsonbShape {
    pub object: bool,
    /// Bytes of the detoasted datum.
    pub size: usize,
    /// Deepest nesting of arrays and objects (a scalar: 0), counted up to
    /// one past `max_depth`.
    pub depth: usize,
}

/// The detoasted jsonb datum of an argument.
pub fn detoasted(datum: Datum) -> Datum {
    // SAFETY: a jsonb datum.
    Datum::from(unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) })
}

/// Walks a detoasted jsonb with the server's iterator, stopping once it
/// nests deeper than `max_depth`.
pub fn shape(jsonb: Datum, max_depth: usize) -> JsonbShape {
    // SAFETY: a detoasted jsonb; the iterator walks its containers.
    unsafe {
        let jb = jsonb.cast_mut_ptr::<pg_sys::Jsonb>();
        let header = (*jb).root.header;
        let object = header & pg_sys::JB_FOBJECT != 0 && header & pg_sys::JB_FSCALAR == 0;
        let size = pgrx::varsize_any(jb.cast());
        let mut it = pg_sys::JsonbIteratorInit(&raw mut (*jb).root);
        let mut value = std::mem::zeroed::<pg_sys::JsonbValue>();
        let (mut depth, mut deepest) = (0usize, 0usize);
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut value, false) {
                pg_sys::JsonbIteratorToken::WJB_DONE => break,
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY
                | pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT => {
                    depth += 1;
                    deepest = deepest.max(depth);
                    if deepest > max_depth {
                        break;
                    }
                }
                pg_sys::JsonbIteratorToken::WJB_END_ARRAY
                | pg_sys::JsonbIteratorToken::WJB_END_OBJECT => depth -= 1,
                _ => {}
            }
        }
        // a scalar is stored as a one-element raw array
        let scalar = header & pg_sys::JB_FSCALAR != 0;
        JsonbShape {
            object,
            size,
            depth: if scalar { 0 } else { deepest },
        }
    }
}
