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

use warden_core::redact::{
    calls_value_function, redact_literals, redact_literals_in_text, redact_literals_nonstandard,
    redact_quoted,
};

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

/// What a log field becomes: literals redacted when the field itself
/// calls a value-taking function (a logged statement, a context quoting
/// one) or lists bound parameters of a statement that does; every quoted
/// span redacted in an error raised by someone else's code (an input
/// function quoting its input) while such a statement ran. pg_warden's
/// own messages never carry values and are left readable.
fn redact_field(
    field: &mut *mut c_char,
    statement_calls: bool,
    foreign_error: bool,
    standard: bool,
) {
    let Some(text) = text_of(*field) else {
        return;
    };
    let redacted = if calls_value_function(text)
        || (statement_calls && text.to_ascii_lowercase().contains("parameter"))
    {
        redact_literals_in_text(text, standard)
    } else if statement_calls && foreign_error {
        redact_quoted(text, standard)
    } else {
        return;
    };
    if redacted != text {
        *field = palloc_text(&redacted);
    }
}

/// A detail or context of an error raised by someone else's code (an
/// input function) while a statement passed values to pg_warden: they
/// quote the input without quotes (`JSON data, line 1: {"ssn": 12...`),
/// so they are replaced whole.
fn redact_whole(field: &mut *mut c_char) {
    if text_of(*field).is_some() {
        *field =
            palloc_text("(redacted by pg_warden: the statement passes values to its functions)");
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
            let standard = pg_sys::standard_conforming_strings;
            let foreign_error =
                e.elevel >= pg_sys::WARNING as i32 && text_of(e.funcname) != Some("pg_warden");
            if statement_calls && foreign_error {
                redact_whole(&mut e.detail);
                redact_whole(&mut e.detail_log);
                redact_whole(&mut e.context);
                for field in [&mut e.message, &mut e.internalquery] {
                    redact_field(field, statement_calls, foreign_error, standard);
                }
            } else {
                for field in [
                    &mut e.message,
                    &mut e.detail,
                    &mut e.detail_log,
                    &mut e.context,
                    &mut e.internalquery,
                ] {
                    redact_field(field, statement_calls, foreign_error, standard);
                }
            }
            if let (true, false, Some(statement)) = (statement_calls, e.hide_stmt, statement) {
                // the STATEMENT line would print the original text
                e.hide_stmt = true;
                // the log shows detail_log instead of detail: keep both
                let shown = text_of(e.detail_log).or(text_of(e.detail));
                let copy = format!(
                    "statement (values redacted by pg_warden): {}",
                    if standard {
                        redact_literals(statement)
                    } else {
                        redact_literals_nonstandard(statement)
                    }
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
