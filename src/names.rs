//! Names of catalog objects by oid, for log lines and reports.

use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

/// Copies a palloc'd C string that may be NULL (NULL becomes "").
fn owned(name: *const c_char) -> String {
    if name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string from Postgres.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The current user's name ("" if it has vanished).
pub fn current_role_name() -> String {
    // SAFETY: syscache lookup; noerr = true.
    owned(unsafe { pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true) })
}
