//! Every access to a secret, whatever its outcome, is an audit event on
//! the audit chain's durable path (`secret.get`, `secret.set`, ...): it
//! exists whether or not the caller's transaction commits, and under
//! `warden.audit_strict` the call returns only once it is committed (a
//! value is then released only after its access is on record). Events
//! carry the name, version, key, the value's keyed fingerprint, the
//! outcome, and never the value.

use pgrx::PgSqlErrorCode;
use warden_core::secrets::{access_fields, Access, Outcome};

use crate::error::WardenError;

/// The name of the current user.
pub(super) fn current_role_name() -> String {
    // SAFETY: reads the current user's name (copied at once).
    unsafe {
        let name = pgrx::pg_sys::GetUserNameFromId(pgrx::pg_sys::GetUserId(), true);
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Records an access, with the role that made it (warden.actor is the
/// application's say; the role is the database's).
pub(super) fn record(event: &str, outcome: Outcome, access: &Access) {
    let role = current_role_name();
    let access = Access {
        role: Some(&role),
        ..access.clone()
    };
    crate::audit::record_durable(event, &access_fields(outcome, &access), false);
}

/// Records a refused access, then raises `error`: the event outlives
/// the error's rollback.
pub(super) fn refuse(event: &str, outcome: Outcome, access: &Access, error: WardenError) -> ! {
    record(event, outcome, access);
    error.raise()
}

/// The refusal of a name that breaks the naming rule (not echoed).
pub(super) fn check_name(event: &str, name: &str) {
    if !warden_core::secrets::valid_secret_name(name) {
        refuse(
            event,
            Outcome::Invalid,
            &Access::default(),
            WardenError::invalid_parameter("invalid secret name").detail(format!(
                "A secret name is 1 to {} characters of A-Z a-z 0-9 _ . : / -.",
                warden_core::secrets::MAX_NAME_CHARS
            )),
        );
    }
}

/// "no such secret (version)": P0002, with where to look.
pub(super) fn not_found(message: String) -> WardenError {
    WardenError::new(PgSqlErrorCode::ERRCODE_NO_DATA_FOUND, message).hint(
        "warden.secret_catalog lists the current tenant's secrets and the state of each version.",
    )
}
