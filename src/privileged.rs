//! The two ways pg_warden changes whose rights it runs with
//! (docs/security.md, rule 1):
//!
//! - `as_superuser`: pg_warden's own tables (`warden.*`), with constant,
//!   schema-qualified SQL and bound parameters only, from functions that
//!   application roles call (they have no rights on those tables). This is
//!   what `SECURITY DEFINER ... SET search_path` does, but only on the cold
//!   path (cache misses, rotation), so the hot path of functions like
//!   `warden.encrypt` pays nothing for it. Never for a relation a user
//!   owns: its triggers, rules, defaults, constraints, index expressions
//!   and column types would run as superuser.
//! - `as_owner`: a relation a user owns, as that user, the way Postgres'
//!   own maintenance commands (VACUUM, CREATE INDEX, REFRESH MATERIALIZED
//!   VIEW) do it: `SECURITY_RESTRICTED_OPERATION` and a fixed
//!   `search_path`, so whatever code the owner attached runs with the
//!   owner's rights and cannot change the session it runs in.

use pgrx::pg_sys;

pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    as_role(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), || {
        with_fixed_search_path(f)
    })
}

/// Runs `f` as `owner` with `SECURITY_RESTRICTED_OPERATION` and
/// `search_path = pg_catalog, pg_temp`, for SQL on relations `owner`
/// owns. Every setting made inside (the tenant `f` sets, and any `SET`
/// the owner's code runs, even a plain session-level one) is undone on
/// return, as Postgres' maintenance commands do: otherwise the owner's
/// `SET search_path` would steer the caller's next unqualified call to
/// the owner's functions.
pub fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    with_fixed_search_path(|| switch_user(owner, pg_sys::SECURITY_RESTRICTED_OPERATION as i32, f))
}

/// Runs `f` in a GUC nest level of its own with a fixed `search_path`.
fn with_fixed_search_path<R>(f: impl FnOnce() -> R) -> R {
    crate::guc::with_settings(&[(c"search_path", c"pg_catalog, pg_temp")], f)
}

/// Runs `f` with `role`'s privileges, as a SECURITY DEFINER function
/// owned by `role` would, but without changing `search_path`: callers run
/// only fully schema-qualified SQL (the SCD2 trigger writing a history as
/// its owner) or pin it themselves (`as_superuser`).
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    switch_user(role, 0, f)
}

fn switch_user<R>(role: pg_sys::Oid, extra_context: i32, f: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: standard user-switching calls, restored below on success and
    // by transaction abort on error.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            role,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | extra_context,
        );
    }
    // As in fmgr_security_definer: on error nothing is restored here; the
    // (sub)transaction abort that follows resets the user and the settings.
    let result = f();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}

/// Whether the current user owns `rel` (or is a member of its owner).
pub fn caller_owns(rel: pg_sys::Oid) -> bool {
    // SAFETY: reads the current user id.
    let me = unsafe { pg_sys::GetUserId() };
    crate::spi_read::read_one::<bool>(
        "SELECT pg_catalog.pg_has_role($2, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[rel.into(), me.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}
