//! Running pg_warden's own catalog SQL with the privileges of the
//! bootstrap superuser and a fixed `search_path`, from functions that
//! application roles call (they have no rights on pg_warden's tables).
//!
//! This is what `SECURITY DEFINER ... SET search_path` does, but only on
//! the cold path (cache misses, rotation), so the hot path of functions
//! like `warden.encrypt` pays nothing for it. The SQL run here must still
//! schema-qualify every table and operator.

use pgrx::pg_sys;

pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    as_role(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), || {
        // SAFETY: a GUC nest level of our own, undone below.
        let nest = unsafe { pg_sys::NewGUCNestLevel() };
        unsafe {
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let result = f();
        // SAFETY: undoes the setting above.
        unsafe { pg_sys::AtEOXact_GUC(true, nest) };
        result
    })
}

/// Runs `f` with `role`'s privileges, as a SECURITY DEFINER function
/// owned by `role` would, but without changing `search_path`: callers run
/// only fully schema-qualified SQL (the SCD2 trigger writing a history as
/// its owner) or pin it themselves (`as_superuser`).
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: standard user-switching calls, restored below on success and
    // by transaction abort on error.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            role,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    // As in fmgr_security_definer: on error nothing is restored here; the
    // (sub)transaction abort that follows resets the user and the settings.
    let result = f();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}
