//! The tenant of the current transaction.
//!
//! It lives in the `SUSET` setting `warden.tenant`, so an application
//! role's `SET warden.tenant`, `set_config('warden.tenant', ...)` or
//! `ALTER ROLE ... SET` is refused by Postgres itself; only these functions
//! (which pass `PGC_SUSET` internally) and superusers can change it. The
//! value is always transaction-local, so a pooled connection never hands
//! one client's tenant to the next.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::tenancy::{canonical_int, canonical_uuid, validate_tenant_id};

use crate::error::WardenError;
use crate::guc;

/// Sets the tenant for the rest of the current transaction. The SQL
/// function is `fast_path::set_tenant_fast`, which calls this (through its
/// pgrx wrapper) whenever the argument or the situation is not the plain
/// valid case, so every refusal is raised here.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn set_tenant(tenant: Option<&str>) {
    let Some(tenant) = tenant else {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "tenant must not be NULL",
        )
        .hint("Pass the tenant id as text, e.g. warden.set_tenant('acme').")
        .raise();
    };
    validate_tenant_or_raise(tenant);
    refuse_if_pinned_elsewhere(tenant);
    if guc::require_tenant_token() && !is_warden_admin() {
        WardenError::privilege("warden.set_tenant() is disabled by warden.require_tenant_token")
            .detail("Only members of warden_admin may set a tenant without a token.")
            .hint("Call warden.set_tenant_token(<token from warden.tenant_token()>) instead.")
            .raise();
    }
    require_transaction_block("warden.set_tenant()");
    set_tenant_setting(tenant);
}

/// Whether the session is pinned to a tenant other than `tenant`: a login
/// role given a tenant with `ALTER ROLE ... SET warden.tenant` (or a
/// database with `ALTER DATABASE`) makes that the setting's reset value,
/// and then no function may switch it to another tenant.
pub(crate) fn pinned_elsewhere(tenant: &[u8]) -> bool {
    // SAFETY: our own setting exists; the string is owned by the GUC code.
    unsafe {
        pins_another(
            pg_sys::GetConfigOptionResetString(guc::TENANT_GUC.as_ptr()),
            tenant,
        )
    }
}

/// Whether `reset`, the reset value of `warden.tenant`, pins the session
/// to a tenant other than `tenant` (shared with the unguarded fast path,
/// which reads the reset value itself).
///
/// # Safety
/// `reset` is null or a NUL-terminated string.
pub(crate) unsafe fn pins_another(reset: *const std::ffi::c_char, tenant: &[u8]) -> bool {
    if HANDLING.load(std::sync::atomic::Ordering::Relaxed) {
        // an outbox handler runs: the pin is its owner's, not the worker's
        return HANDLER_PIN.with(|p| p.borrow().as_deref().is_some_and(|pin| pin != tenant));
    }
    if reset.is_null() {
        return false;
    }
    // SAFETY: per the contract.
    let pinned = unsafe { std::ffi::CStr::from_ptr(reset) }.to_bytes();
    !pinned.is_empty() && pinned != tenant
}

/// Whether an outbox handler runs in this process (the worker), whose
/// owner's pin then replaces the session's.
static HANDLING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
thread_local! {
    static HANDLER_PIN: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// While alive, the tenant pin is `pinned` (the outbox handler's owner's,
/// read from `ALTER ROLE ... SET warden.tenant`), not the worker's own.
pub struct PinWhileHandling;

impl PinWhileHandling {
    pub fn new(pinned: Option<&str>) -> PinWhileHandling {
        HANDLER_PIN.with(|p| *p.borrow_mut() = pinned.map(|t| t.as_bytes().to_vec()));
        HANDLING.store(true, std::sync::atomic::Ordering::Relaxed);
        PinWhileHandling
    }
}

impl Drop for PinWhileHandling {
    fn drop(&mut self) {
        HANDLING.store(false, std::sync::atomic::Ordering::Relaxed);
        HANDLER_PIN.with(|p| *p.borrow_mut() = None);
    }
}

/// Raises 42501 when the session is pinned to another tenant.
pub(crate) fn refuse_if_pinned_elsewhere(tenant: &str) {
    if pinned_elsewhere(tenant.as_bytes()) {
        WardenError::privilege("this session is pinned to another tenant")
            .detail("warden.tenant is set for this role or database (ALTER ROLE ... SET warden.tenant), so it cannot switch tenants.")
            .hint("Connect as a role that is not pinned to switch tenants.")
            .raise();
    }
}

/// Raises 22023 with the reason when `tenant` is not a valid tenant id.
pub fn validate_tenant_or_raise(tenant: &str) {
    if let Err(e) = validate_tenant_id(tenant) {
        WardenError::invalid_parameter("invalid tenant id")
            .detail(format!("The {e}."))
            .hint("A tenant id is 1 to 128 ASCII letters, digits and _ . : @ + -.")
            .raise();
    }
}

/// Refuses to run as a single autocommit statement, where a
/// transaction-local tenant would vanish with the statement: a silent
/// no-op. A subtransaction (a PL/pgSQL block with EXCEPTION) counts as a
/// block, since statements after it in the same transaction see the tenant.
pub(crate) fn require_transaction_block(function: &str) {
    require_transaction_block_for(function, "The tenant");
}

/// As `require_transaction_block`, for a function that sets `what` (named
/// in the error's detail) for the rest of the transaction.
pub(crate) fn require_transaction_block_for(function: &str, what: &str) {
    // SAFETY: plain reads of transaction state.
    if unsafe { pg_sys::IsTransactionBlock() || pg_sys::IsSubTransaction() } {
        return;
    }
    WardenError::new(
        PgSqlErrorCode::ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
        format!("{function} can only be used in a transaction block"),
    )
    .detail(format!("{what} lasts until the end of the transaction; outside BEGIN ... COMMIT it would vanish with this statement."))
    .hint(format!("Run BEGIN first, then {function}, then your queries, then COMMIT."))
    .raise();
}

/// Whether the current user has warden_admin's rights (superusers do).
pub(crate) fn is_warden_admin() -> bool {
    // SAFETY: catalog lookups; a missing role means nobody is a member.
    unsafe {
        let admin = pg_sys::get_role_oid(c"warden_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), admin)
    }
}

/// Writes `warden.tenant` transaction-locally with superuser context, the
/// one path by which non-superusers change it.
pub(crate) fn set_tenant_setting(tenant: &str) {
    write_tenant_setting(tenant);
}

/// Clears `warden.tenant` for the rest of the transaction (or of the GUC
/// nest level the caller opened): no tenant.
pub(crate) fn reset_tenant_setting() {
    write_tenant_setting("");
}

fn write_tenant_setting(tenant: &str) {
    guc::set_local(guc::TENANT_GUC, tenant);
}

/// The current tenant as a bigint, for the policies of tables whose tenant
/// column is bigint: NULL when unset or not the canonical text of a
/// bigint (`042` and `+42` are not `42`; keys and tokens bind the text).
#[pg_extern(stable, parallel_safe)]
fn current_tenant_bigint() -> Option<i64> {
    guc::tenant().and_then(|t| canonical_int(t, 64))
}

/// As `current_tenant_bigint`, for integer tenant columns.
#[pg_extern(stable, parallel_safe)]
fn current_tenant_integer() -> Option<i32> {
    guc::tenant()
        .and_then(|t| canonical_int(t, 32))
        .map(|n| n as i32)
}

/// As `current_tenant_bigint`, for uuid tenant columns: lower-case,
/// hyphenated, as Postgres prints a uuid.
#[pg_extern(stable, parallel_safe)]
fn current_tenant_uuid() -> Option<pgrx::Uuid> {
    guc::tenant()
        .and_then(canonical_uuid)
        .map(pgrx::Uuid::from_bytes)
}

/// The tenant of the current transaction; raises when none is set.
#[pg_extern(stable, parallel_safe)]
fn require_tenant() -> &'static str {
    tenant_or_raise()
}

/// The tenant of the current transaction, for subsystems that need one;
/// raises 55000 when none is set.
pub fn tenant_or_raise() -> &'static str {
    match guc::tenant() {
        Some(t) => t,
        None => WardenError::prerequisite("no tenant is set for this transaction")
            .hint(
                "Call warden.set_tenant('<tenant>') inside the transaction before this statement.",
            )
            .raise(),
    }
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.set_tenant(text) IS
  'Sets the tenant for the rest of the current transaction (transaction block only; validated; reverts at COMMIT/ROLLBACK).';
COMMENT ON FUNCTION warden.current_tenant() IS
  'Tenant of the current transaction, or NULL when unset or empty; use as (select warden.current_tenant()) in RLS policies.';
COMMENT ON FUNCTION warden.current_tenant_bigint() IS
  'Tenant of the current transaction as bigint, for bigint tenant columns; NULL when unset or not written canonically (no sign, no leading zeros).';
COMMENT ON FUNCTION warden.current_tenant_integer() IS
  'Tenant of the current transaction as integer, for integer tenant columns; NULL when unset or not written canonically.';
COMMENT ON FUNCTION warden.current_tenant_uuid() IS
  'Tenant of the current transaction as uuid, for uuid tenant columns; NULL when unset or not lower-case hyphenated.';
COMMENT ON FUNCTION warden.require_tenant() IS
  'Tenant of the current transaction; raises SQLSTATE 55000 when no tenant is set.';
"#,
    name = "tenancy_context_comments",
    requires = [
        "tenancy_context_functions",
        require_tenant,
        current_tenant_bigint,
        current_tenant_integer,
        current_tenant_uuid
    ],
);
