//! `warden.set_tenant` and `warden.current_tenant` as bare V1 C functions.
//!
//! Every RLS-protected statement calls `current_tenant()` and every
//! transaction calls `set_tenant()`, so pgrx's per-call wrapper (argument
//! unboxing, panic guard, a `sigsetjmp` around each Postgres call) was
//! measurable next to the built-ins `set_config`/`current_setting`
//! (benches/RESULTS.md). These functions do the common case with no
//! wrapper and no value that needs dropping, so a Postgres ERROR raised by
//! the calls they make may longjmp through them safely. Anything unusual
//! (NULL, an invalid id, no transaction block, `warden.require_tenant_token`)
//! is handed to the guarded `set_tenant` in `context.rs`, which raises the
//! documented error; there is one set of rules, checked in one place.

use std::ffi::{c_char, c_int};

use pgrx::pg_sys;
use pgrx::prelude::*;

use warden_core::tenancy::{validate_tenant_id_bytes, MAX_TENANT_ID_BYTES};

use crate::guc;

// Called unguarded on purpose (see the module comment); none of the
// frames between these calls and Postgres hold anything to drop.
unsafe extern "C-unwind" {
    #[link_name = "cstring_to_text_with_len"]
    fn pg_cstring_to_text_with_len(s: *const c_char, len: c_int) -> *mut pg_sys::text;
    #[link_name = "pg_detoast_datum_packed"]
    fn pg_detoast_datum_packed(datum: *mut pg_sys::varlena) -> *mut pg_sys::varlena;
    #[link_name = "IsTransactionBlock"]
    fn pg_is_transaction_block() -> bool;
    #[link_name = "IsSubTransaction"]
    fn pg_is_sub_transaction() -> bool;
    #[link_name = "GetConfigOptionResetString"]
    fn pg_get_config_option_reset_string(name: *const c_char) -> *const c_char;
    #[link_name = "set_config_option"]
    fn pg_set_config_option(
        name: *const c_char,
        value: *const c_char,
        context: pg_sys::GucContext::Type,
        source: pg_sys::GucSource::Type,
        action: pg_sys::GucAction::Type,
        change_val: bool,
        elevel: c_int,
        is_reload: bool,
    ) -> c_int;
}

unsafe extern "C-unwind" {
    // The guarded, SQL-less `set_tenant` from context.rs: same rules,
    // proper errors.
    fn set_tenant_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

crate::fmgr::function_info_v1!(pg_finfo_current_tenant_fast);

/// `warden.current_tenant()`: the tenant of the transaction, NULL when
/// unset or empty.
///
/// # Safety
/// Called by the function manager with a valid `fcinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn current_tenant_fast(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    match guc::tenant() {
        // SAFETY: the string is valid for this call; the copy is palloc'd
        // in the caller's memory context.
        Some(t) => pg_sys::Datum::from(unsafe {
            pg_cstring_to_text_with_len(t.as_ptr().cast(), t.len() as c_int)
        }),
        None => {
            // SAFETY: fcinfo is valid for this call.
            unsafe { (*fcinfo).isnull = true };
            pg_sys::Datum::from(0)
        }
    }
}

crate::fmgr::function_info_v1!(pg_finfo_set_tenant_fast);

/// `warden.set_tenant(text)`: sets the tenant for the rest of the
/// transaction.
///
/// # Safety
/// Called by the function manager with a valid `fcinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn set_tenant_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // Room for the longest valid id and its NUL.
    let mut value = [0u8; MAX_TENANT_ID_BYTES + 1];
    // SAFETY: fcinfo is valid; a non-null text argument is a varlena.
    let ready = unsafe { copy_valid_tenant(fcinfo, &mut value) }
        && !guc::require_tenant_token()
        && unsafe { pg_is_transaction_block() || pg_is_sub_transaction() }
        && !pinned_elsewhere(&value);
    if !ready {
        // SAFETY: same fcinfo; the guarded function raises the error.
        return unsafe { set_tenant_wrapper(fcinfo) };
    }
    // SAFETY: both are NUL-terminated; elevel ERROR raises on refusal.
    unsafe {
        pg_set_config_option(
            guc::TENANT_GUC.as_ptr(),
            value.as_ptr().cast(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            PgLogLevel::ERROR as c_int,
            false,
        );
    }
    pg_sys::Datum::from(0)
}

/// `context::pinned_elsewhere` without the guard, for the NUL-terminated
/// id in `value`; the guarded function then refuses.
fn pinned_elsewhere(value: &[u8]) -> bool {
    let wanted = &value[..value.iter().position(|&b| b == 0).unwrap_or(value.len())];
    // SAFETY: our own setting exists; the string is owned by the GUC code.
    unsafe {
        super::pins_another(
            pg_get_config_option_reset_string(guc::TENANT_GUC.as_ptr()),
            wanted,
        )
    }
}

/// Copies argument 0 into `out` NUL-terminated when it is a valid tenant
/// id; false otherwise (NULL, invalid), leaving the error to the caller.
///
/// # Safety
/// `fcinfo` must be valid, with a text argument 0.
unsafe fn copy_valid_tenant(
    fcinfo: pg_sys::FunctionCallInfo,
    out: &mut [u8; MAX_TENANT_ID_BYTES + 1],
) -> bool {
    // SAFETY: per the function's contract.
    unsafe {
        if pgrx::fcinfo::pg_arg_is_null(fcinfo, 0) {
            return false;
        }
        let raw = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>();
        let text = pg_detoast_datum_packed(raw);
        let len = pgrx::varlena::varsize_any_exhdr(text);
        if len > MAX_TENANT_ID_BYTES {
            return false;
        }
        let bytes = std::slice::from_raw_parts(pgrx::varlena::vardata_any(text).cast::<u8>(), len);
        if validate_tenant_id_bytes(bytes).is_err() {
            return false;
        }
        out[..len].copy_from_slice(bytes);
        out[len] = 0;
        true
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden.set_tenant(tenant text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_tenant_fast';
CREATE FUNCTION warden.current_tenant() RETURNS text
  STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'current_tenant_fast';
"#,
    name = "tenancy_context_functions",
);
