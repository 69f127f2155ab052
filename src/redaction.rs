//! An `emit_log_hook` that keeps the values passed to pg_warden's
//! value-taking functions (tenant tokens, plaintexts; later secrets) out
//! of the server log: when the statement being run, or the log message
//! itself, calls one of them, every string literal in the message, its
//! detail, context and internal query is redacted, and the STATEMENT line
//! is replaced by a redacted copy (docs/security.md, rule 9).
//!
//! `pg_stat_activity` shows the statement as the client sent it, which no
//! hook can change: pass values as bind parameters (`$1`), which keeps
//! them out of the query text everywhere.

use std::ffi::{c_char, CStr, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;

use warden_core::redact::{calls_value_function, redact_literals, redact_literals_in_text};

static mut PREV_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Installs the hook (once per process: `_PG_init` runs once).
pub fn init() {
    // SAFETY: chained hook installation from _PG_init.
    unsafe {
        PREV_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(redact_log);
    }
}

fn text_of<'a>(s: *const c_char) -> Option<&'a str> {
    // SAFETY: a NUL-terminated string from Postgres, or null.
    (!s.is_null())
        .then(|| unsafe { CStr::from_ptr(s) }.to_str().ok())
        .flatten()
}

/// A palloc'd copy of `s` (in the error context Postgres is reporting in).
fn palloc_text(s: &str) -> *mut c_char {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: copies a NUL-terminated string into the current context.
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
}

/// Redacts a field that calls a value-taking function itself, or that
/// lists bound parameters of a statement that does; other text (say, an
/// error message with an apostrophe) is left as it is.
fn redact_field(field: &mut *mut c_char, statement_calls: bool) {
    if let Some(text) = text_of(*field) {
        if calls_value_function(text) || (statement_calls && text.contains("parameters: $")) {
            let redacted = redact_literals_in_text(text);
            if redacted != text {
                *field = palloc_text(&redacted);
            }
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn redact_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: Postgres passes the error being reported; its strings are
    // replaced by copies in the current (error) memory context.
    unsafe {
        let e = &mut *edata;
        if e.output_to_server {
            let statement = text_of(pg_sys::debug_query_string);
            let statement_calls = statement.is_some_and(calls_value_function);
            for field in [
                &mut e.message,
                &mut e.detail,
                &mut e.detail_log,
                &mut e.context,
                &mut e.internalquery,
            ] {
                redact_field(field, statement_calls);
            }
            if let (true, false, Some(statement)) = (statement_calls, e.hide_stmt, statement) {
                // the STATEMENT line would print the original text
                e.hide_stmt = true;
                // the log shows detail_log instead of detail: keep both
                let shown = text_of(e.detail_log).or(text_of(e.detail));
                let copy = format!(
                    "statement (values redacted by pg_warden): {}",
                    redact_literals(statement)
                );
                e.detail_log = palloc_text(&match shown {
                    Some(d) => format!("{d}\n{copy}"),
                    None => copy,
                });
            }
        }
        if let Some(prev) = PREV_EMIT_LOG_HOOK {
            prev(edata);
        }
    }
}
