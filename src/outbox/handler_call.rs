//! Calling a subscription's handler: in a subtransaction of its own, as
//! the subscription's owner (switched the way a SECURITY DEFINER function
//! switches, with SECURITY_RESTRICTED_OPERATION and a fixed search_path,
//! so `SET ROLE`, `SET SESSION AUTHORIZATION` and the like are refused and
//! every setting it makes is undone), with the message's tenant, actor
//! `system` and a statement timeout of the subscription's handler
//! timeout. An error or a timeout rolls back the handler's effects and
//! nothing else.

use pgrx::pg_sys;
use pgrx::IntoDatum;

use crate::guc;
use crate::privileged::as_owner;
use crate::subtransaction::{in_subtransaction, Failed};

// utils/timeout.h (not in pgrx's bindings); STATEMENT_TIMEOUT is the same
// enumerator on every supported major version.
unsafe extern "C-unwind" {
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// One handler call.
pub struct HandlerCall<'a> {
    pub handler: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub timeout_ms: i32,
    pub tenant: Option<&'a str>,
    pub message_id: i64,
}

/// Calls the handler with `msg` (a `warden.message`). Its effects are
/// kept on success and rolled back on error, which comes back as a value.
pub fn call_handler(
    call: &HandlerCall,
    msg: pgrx::composite_type!('static, "warden.message"),
) -> Result<(), Failed> {
    let datum = msg.into_datum();
    in_subtransaction(|| {
        as_owner(call.owner, || {
            match call.tenant {
                Some(t) => guc::set_local(guc::TENANT_GUC, t),
                None => guc::set_local(guc::TENANT_GUC, ""),
            }
            guc::set_local(guc::ACTOR_GUC, "system");
            guc::set_local(guc::ACTOR_KIND_GUC, "system");
            guc::set_local(
                guc::CORRELATION_ID_GUC,
                &format!("outbox:{}", call.message_id),
            );
            // SAFETY: the timer Postgres arms for each statement; its
            // handler is registered in every backend with a database
            // connection, background workers included. Disarmed below, and
            // by the abort's LockErrorCleanup path on error (disarmed again
            // by the caller of in_subtransaction below as well).
            unsafe { enable_timeout_after(STATEMENT_TIMEOUT, call.timeout_ms.max(1)) };
            crate::fmgr::call_function(call.handler, &[datum]);
            // a timeout that fired as the handler returned still counts
            pg_sys::check_for_interrupts!();
            // SAFETY: disarms the timer armed above.
            unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
        })
    })
    .inspect_err(|_| {
        // SAFETY: the timer may still be armed when the handler raised.
        unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
    })
}
