//! Builds a jsonb datum straight from serde values with the jsonb
//! builder Postgres uses itself (`pushJsonbValue`), instead of writing
//! JSON text and parsing it back with `jsonb_in`: a captured row's event
//! was half its cost in that round trip.

use pgrx::pg_sys::{self, Datum};
use pgrx::PgSqlErrorCode;
use serde_json::Value;

use crate::error::WardenError;

type Token = pg_sys::JsonbIteratorToken::Type;

/// The jsonb of `value` (an object or an array), palloc'd in the current
/// memory context.
pub(super) fn jsonb_datum(value: &Value) -> Datum {
    let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
    // SAFETY: the builder's documented protocol; every string it is
    // handed lives in `value`, which outlives the conversion below.
    unsafe {
        let root = push(&mut state, value, pg_sys::JsonbIteratorToken::WJB_ELEM);
        Datum::from(pg_sys::JsonbValueToJsonb(root))
    }
}

/// The jsonb array of `values`.
pub(super) fn jsonb_array_datum(values: &[Value]) -> Datum {
    let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
    // SAFETY: as above.
    unsafe {
        pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY,
            std::ptr::null_mut(),
        );
        for v in values {
            push(&mut state, v, pg_sys::JsonbIteratorToken::WJB_ELEM);
        }
        let root = pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_END_ARRAY,
            std::ptr::null_mut(),
        );
        Datum::from(pg_sys::JsonbValueToJsonb(root))
    }
}

/// Pushes `value` (as an array element or object value, `scalar_token`);
/// returns what the builder returned (the root once it is closed).
unsafe fn push(
    state: &mut *mut pg_sys::JsonbParseState,
    value: &Value,
    scalar_token: Token,
) -> *mut pg_sys::JsonbValue {
    // SAFETY: per the caller's contract.
    unsafe {
        pg_sys::check_stack_depth();
        match value {
            Value::Object(map) => {
                pg_sys::pushJsonbValue(
                    state,
                    pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
                    std::ptr::null_mut(),
                );
                for (key, v) in map {
                    let mut k = string(key);
                    pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_KEY, &mut k);
                    push(state, v, pg_sys::JsonbIteratorToken::WJB_VALUE);
                }
                pg_sys::pushJsonbValue(
                    state,
                    pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
                    std::ptr::null_mut(),
                )
            }
            Value::Array(items) => {
                pg_sys::pushJsonbValue(
                    state,
                    pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY,
                    std::ptr::null_mut(),
                );
                for v in items {
                    push(state, v, pg_sys::JsonbIteratorToken::WJB_ELEM);
                }
                pg_sys::pushJsonbValue(
                    state,
                    pg_sys::JsonbIteratorToken::WJB_END_ARRAY,
                    std::ptr::null_mut(),
                )
            }
            scalar => {
                let mut v = scalar_value(scalar);
                pg_sys::pushJsonbValue(state, scalar_token, &mut v)
            }
        }
    }
}

fn string(s: &str) -> pg_sys::JsonbValue {
    // jsonb text cannot hold NUL (jsonb_in refuses \u0000 the same way)
    if s.as_bytes().contains(&0) {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
            "an audited value holds a NUL character, which jsonb cannot store",
        )
        .raise();
    }
    // SAFETY: a JsonbValue is plain data; the string is borrowed until
    // the builder copies it into the jsonb.
    unsafe {
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        v.type_ = pg_sys::jbvType::jbvString;
        v.val.string.len = s.len() as i32;
        v.val.string.val = s.as_ptr().cast_mut().cast();
        v
    }
}

fn scalar_value(value: &Value) -> pg_sys::JsonbValue {
    // SAFETY: as above; numerics are palloc'd.
    unsafe {
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        match value {
            Value::Null => v.type_ = pg_sys::jbvType::jbvNull,
            Value::Bool(b) => {
                v.type_ = pg_sys::jbvType::jbvBool;
                v.val.boolean = *b;
            }
            Value::Number(n) => {
                v.type_ = pg_sys::jbvType::jbvNumeric;
                v.val.numeric = match n.as_i64() {
                    Some(i) => pg_sys::int64_to_numeric(i),
                    None => {
                        // the number as written (serde_json's arbitrary
                        // precision), read as jsonb_in reads it
                        let text = std::ffi::CString::new(n.to_string()).unwrap_or_default();
                        pgrx::direct_function_call_as_datum(
                            pg_sys::numeric_in,
                            &[
                                Some(Datum::from(text.as_ptr())),
                                Some(Datum::from(pg_sys::InvalidOid)),
                                Some(Datum::from(-1i32)),
                            ],
                        )
                        .expect("numeric_in returns a value or raises")
                        .cast_mut_ptr()
                    }
                };
            }
            Value::String(s) => return string(s),
            Value::Array(_) | Value::Object(_) => unreachable!("containers are pushed"),
        }
        v
    }
}
