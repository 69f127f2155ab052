//! `warden.break_glass(reason)`: emergency access across tenants. For a
//! member of `warden_admin`, inside a transaction block: a durable
//! `admin.break_glass` event with the reason is committed first (strict,
//! whatever `warden.audit_strict` says: no event, no access), then the
//! caller acts as `warden_break_glass` (BYPASSRLS, a member of
//! `warden_admin`) until the transaction ends. The caller is not a member
//! of that role, so `SET ROLE` cannot reach it without this function; and
//! while switched, `SET ROLE` is refused (a local user id change), so the
//! access cannot be carried out of the transaction.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{not_null, WardenError};

thread_local! {
    /// The role and security context to go back to at transaction end.
    static SAVED: Cell<Option<(pg_sys::Oid, i32)>> = const { Cell::new(None) };
}

fn role_oid(name: &std::ffi::CStr) -> pg_sys::Oid {
    // SAFETY: a catalog lookup by name.
    unsafe { pg_sys::get_role_oid(name.as_ptr(), true) }
}

fn restore() {
    if let Some((user, context)) = SAVED.take() {
        // SAFETY: what was saved when the glass was broken.
        unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    }
}

fn on_xact(event: crate::dispatch::xact::XactEvent) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => restore(),
        _ => {}
    }
}

/// Subtransactions need nothing: the glass is broken only at the top
/// level of a transaction (no savepoint can predate it), so the user id a
/// rolled-back savepoint or exception block restores is the broken-glass
/// one, and only the transaction end gives the caller back.
fn on_subxact(_event: crate::dispatch::xact::SubXactEvent, _level: i32) {}

/// Whether break-glass access is on in this transaction.
pub(super) fn active() -> bool {
    SAVED.get().is_some()
}

#[pg_extern(volatile, parallel_unsafe)]
fn break_glass(reason: Option<&str>) {
    let reason = not_null(reason, "reason");
    if reason.trim().is_empty() || reason.len() > 1000 {
        WardenError::invalid_parameter("reason must be 1 to 1000 bytes of text")
            .hint("Say why, e.g. 'incident 4711: tenant data recovery'.")
            .raise();
    }
    let (admin, break_glass) = (role_oid(c"warden_admin"), role_oid(c"warden_break_glass"));
    // SAFETY: plain reads of the session's user and transaction state.
    let (user, in_block, switched) = unsafe {
        (
            pg_sys::GetUserId(),
            pg_sys::IsTransactionBlock() && !pg_sys::IsSubTransaction(),
            pg_sys::InLocalUserIdChange() || pg_sys::InSecurityRestrictedOperation(),
        )
    };
    // inside a SECURITY DEFINER function (or a maintenance operation) the
    // user to go back to at transaction end would be the definer's
    if switched {
        WardenError::privilege("warden.break_glass() cannot be called from a SECURITY DEFINER function or a restricted operation")
            .hint("Call it directly, in your own transaction block.")
            .raise();
    }
    if admin == pg_sys::InvalidOid
        || break_glass == pg_sys::InvalidOid
        || !unsafe { pg_sys::has_privs_of_role(user, admin) }
    {
        WardenError::privilege("warden.break_glass() is for members of warden_admin").raise();
    }
    if !in_block {
        WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
            "warden.break_glass() can only be used in a transaction block",
        )
        .detail("The access lasts until the end of the transaction; it is not granted inside a savepoint or an exception block.")
        .hint("Run BEGIN first, then warden.break_glass(reason), then your queries, then COMMIT.")
        .raise();
    }
    let mut fields = serde_json::Map::new();
    fields.insert("reason".into(), reason.into());
    // strict: the access is granted only once the event is committed
    super::durable::record_admin_event_strict("admin.break_glass", None, fields);
    if SAVED.get().is_none() {
        let (mut saved_user, mut saved_context) = (pg_sys::InvalidOid, 0);
        // SAFETY: the user switch of a SECURITY DEFINER function, kept
        // until the transaction ends (restored by on_xact, or by the
        // abort itself).
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            SAVED.set(Some((saved_user, saved_context)));
            pg_sys::SetUserIdAndSecContext(
                break_glass,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        crate::dispatch::xact::subscribe(crate::dispatch::xact::Handler {
            name: "break-glass",
            xact: on_xact,
            subxact: on_subxact,
        });
    }
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.break_glass(text) IS
  'Emergency access (warden_admin members, in a transaction block): records a durable admin.break_glass event with the reason, waits until it is committed, then acts as warden_break_glass (BYPASSRLS) until the transaction ends.';
"#,
    name = "break_glass_comments",
    requires = [break_glass],
);
