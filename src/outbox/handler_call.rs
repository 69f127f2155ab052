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

use pgrx::PgSqlErrorCode;

use crate::error::WardenError;
use crate::guc;
use crate::privileged::as_owner;
use crate::subtransaction::{in_subtransaction, Failed};

use super::timers::{
    disable_timeout, enable_timeout_after, get_timeout_indicator, STATEMENT_TIMEOUT,
};

/// One handler call.
pub struct HandlerCall<'a> {
    pub handler: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub timeout_ms: i32,
    pub tenant: Option<&'a str>,
    /// The tenant the owner's sessions are pinned to (ALTER ROLE ... SET
    /// warden.tenant), which the handler may not switch away from either.
    pub pinned: Option<&'a str>,
    pub message_id: i64,
    /// The delivery, for the hard deadline.
    pub subscription_id: i32,
    pub delivery_id: i64,
}

/// Disarms the statement timer; if it fired and its cancel is still
/// pending, takes the cancel back (so it cannot hit the worker's own next
/// statement) and says so.
fn disarm() -> bool {
    // SAFETY: timer calls of utils/timeout.h; QueryCancelPending is the
    // flag the timer's handler set (a signal-safe global).
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, true);
        let fired = get_timeout_indicator(STATEMENT_TIMEOUT, true);
        if fired {
            pg_sys::QueryCancelPending = 0;
        }
        fired
    }
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
                Some(t) => crate::tenant_context::set_tenant_setting(t),
                None => crate::tenant_context::reset_tenant_setting(),
            }
            guc::set_local(guc::ACTOR_GUC, "system");
            guc::set_local(guc::ACTOR_KIND_GUC, "system");
            guc::set_local(
                guc::CORRELATION_ID_GUC,
                &format!("outbox:{}", call.message_id),
            );
            // the handler's lock waits end with its timeout too
            guc::set_local(c"lock_timeout", &call.timeout_ms.max(1).to_string());
            let _pin = crate::tenant_context::PinWhileHandling::new(call.pinned);
            // SAFETY: the timer Postgres arms for each statement; its
            // handler is registered in every backend with a database
            // connection, background workers included. Disarmed below,
            // and after an error by the caller below.
            unsafe { enable_timeout_after(STATEMENT_TIMEOUT, call.timeout_ms.max(1)) };
            super::hard_deadline::arm(call.subscription_id, call.delivery_id, call.timeout_ms);
            crate::fmgr::call_function(call.handler, &[datum]);
            super::hard_deadline::disarm();
            // a timeout that fired as the handler returned still counts,
            // inside the subtransaction
            if disarm() {
                WardenError::new(
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                    "canceling statement due to statement timeout",
                )
                .raise();
            }
        })
    })
    .inspect_err(|_| {
        // the timer may still be armed, or have fired during the rollback
        disarm();
        super::hard_deadline::disarm();
    })
}
