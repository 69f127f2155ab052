//! `warden.hash_diff(record)` and `warden.hash_diff(record, cols text[])`.

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::scd2::RowEncoder;

use super::type_encoding::{encode_composite, encode_value};
use crate::error::WardenError;

fn bytea_datum(bytes: &[u8]) -> Datum {
    Datum::from(pgrx::rust_byte_slice_to_bytea(bytes).into_pg())
}

crate::fmgr::function_info_v1!(pg_finfo_hash_diff_record);

/// `warden.hash_diff(record)`: every column in declared order.
///
/// # Safety
/// Called by the function manager (STRICT) with a composite argument.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn hash_diff_record(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    let mut out = RowEncoder::row();
    // SAFETY: STRICT, so argument 0 is a non-NULL composite.
    unsafe { encode_composite(&mut out, pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0), None) };
    bytea_datum(&out.finish().0)
}

crate::fmgr::function_info_v1!(pg_finfo_hash_diff_columns);

/// `warden.hash_diff(record, cols text[])`: the named columns in the
/// given order.
///
/// # Safety
/// Called by the function manager (STRICT) with a composite and a text[].
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn hash_diff_columns(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: STRICT, so argument 1 is a non-NULL text[].
    let cols = unsafe {
        Vec::<Option<String>>::from_polymorphic_datum(
            pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 1),
            false,
            pg_sys::TEXTARRAYOID,
        )
    }
    .expect("non-NULL argument");
    let columns = column_list(cols);
    let mut out = RowEncoder::row();
    // SAFETY: STRICT, so argument 0 is a non-NULL composite.
    unsafe {
        encode_composite(
            &mut out,
            pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0),
            Some(&columns),
        )
    };
    bytea_datum(&out.finish().0)
}

crate::fmgr::function_info_v1!(pg_finfo_hash_diff_values);

/// `warden.hash_diff_values(VARIADIC "any")`: the hash_diff of a row of
/// these values, without building the row; `scd2_merge` passes the
/// tracked columns of each staging row, equal to `hash_diff(s, tracked)`.
///
/// # Safety
/// Called by the function manager.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn hash_diff_values(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: fcinfo is valid; argument types come from the call's parse tree.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if pg_sys::get_fn_expr_variadic(flinfo) {
            WardenError::invalid_parameter("warden.hash_diff_values takes values, not an array")
                .hint("Pass each value as its own argument.")
                .raise();
        }
        let mut out = RowEncoder::row();
        for i in 0..(*fcinfo).nargs as usize {
            if pgrx::fcinfo::pg_arg_is_null(fcinfo, i) {
                out.null();
            } else {
                let typid = pg_sys::get_fn_expr_argtype(flinfo, i as i32);
                encode_value(
                    &mut out,
                    typid,
                    pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, i),
                );
            }
        }
        bytea_datum(&out.finish().0)
    }
}

/// Checks a column list: not empty (a hash of no columns is a constant,
/// the bug that freezes SCD2 history), no NULLs, no duplicates.
pub fn column_list(cols: Vec<Option<String>>) -> Vec<String> {
    if cols.is_empty() {
        WardenError::invalid_parameter("warden.hash_diff needs at least one column")
            .detail(
                "A hash of no columns is the same for every row, so no change would ever be seen.",
            )
            .hint("Pass the columns whose changes matter, e.g. ARRAY['name', 'email'].")
            .raise();
    }
    let mut out: Vec<String> = Vec::with_capacity(cols.len());
    for c in cols {
        let Some(c) = c else {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "column names must not be NULL",
            )
            .hint("Remove the NULL from the column list.")
            .raise()
        };
        if out.contains(&c) {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
                format!("column \"{c}\" is listed twice"),
            )
            .hint("Name each column once.")
            .raise();
        }
        out.push(c);
    }
    out
}

extension_sql!(
    r#"
CREATE FUNCTION warden.hash_diff(row_value record) RETURNS bytea
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hash_diff_record';
CREATE FUNCTION warden.hash_diff(row_value record, cols text[]) RETURNS bytea
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hash_diff_columns';
CREATE FUNCTION warden.hash_diff_values(VARIADIC "any") RETURNS bytea
  IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hash_diff_values';
COMMENT ON FUNCTION warden.hash_diff_values("any") IS
  'hash_diff of a row made of these values, without building the row: hash_diff_values(t.a, t.b) = hash_diff(t, ARRAY[''a'', ''b'']).';
COMMENT ON FUNCTION warden.hash_diff(record) IS
  'SHA-256 of the row''s canonical encoding v1 (binary send forms with type tags, length prefixes and NULL markers; trailing NULL columns ignored). Independent of DateStyle, TimeZone, IntervalStyle, extra_float_digits, lc_* and client_encoding. See the README for the specification.';
COMMENT ON FUNCTION warden.hash_diff(record, text[]) IS
  'hash_diff over the named columns, in the given order (case-sensitive names; at least one).';
"#,
    name = "scd2_hash_diff",
);
