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

/// `schema.relation`, each part quoted as needed, for SQL run on a
/// relation named by the catalog (docs/security.md, rule 2); None when
/// the relation does not exist.
pub fn qualified_relation(rel: pg_sys::Oid) -> Option<String> {
    // SAFETY: syscache lookups by OID; both results checked for NULL.
    unsafe {
        let name = pg_sys::get_rel_name(rel);
        if name.is_null() {
            return None;
        }
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(rel));
        if nsp.is_null() {
            return None;
        }
        Some(owned(pg_sys::quote_qualified_identifier(nsp, name)))
    }
}

/// An identifier quoted as `format('%I')` would, for messages and hints.
pub fn quote_ident(ident: &str) -> String {
    let c = std::ffi::CString::new(ident).unwrap_or_default();
    // SAFETY: returns its argument or a palloc'd quoted copy.
    owned(unsafe { pg_sys::quote_identifier(c.as_ptr()) })
}

/// A relation for messages: schema-qualified, as `regclass` prints it
/// under pg_warden's fixed search_path (its OID when it does not exist).
pub fn regclass_text(rel: pg_sys::Oid) -> String {
    qualified_relation(rel).unwrap_or_else(|| rel.to_u32().to_string())
}
