//! Running a piece of work in a subtransaction of its own, as a PL/pgSQL
//! block with EXCEPTION does: what it did is kept when it returns, rolled
//! back when it raises, and the error comes back as a value, leaving the
//! enclosing transaction usable. The subtransaction's abort also undoes
//! what the work changed of the session (the current user, settings made
//! in it, SPI connections it left open).

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;

/// An error raised inside the subtransaction.
#[derive(Debug, Clone)]
pub struct Failed {
    pub message: String,
    /// The five-character SQLSTATE ('XX000' for a Rust panic).
    pub sqlstate: String,
}

/// Runs `f` in a subtransaction: committed into the enclosing transaction
/// when `f` returns, rolled back when it raises.
pub fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, Failed> {
    // SAFETY: the bracket of a PL/pgSQL exception block (pl_exec.c
    // exec_stmt_block): begin, run, release; on error roll back, and in
    // both cases return to the caller's memory context and resource owner.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let mut released = false;
        let outcome = PgTryBuilder::new(AssertUnwindSafe(|| {
            let r = f();
            pg_sys::ReleaseCurrentSubTransaction();
            released = true;
            Ok(r)
        }))
        .catch_others(|caught| Err(failed(&caught)))
        .execute();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        if outcome.is_err() && !released {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        outcome
    }
}

/// The message and SQLSTATE of an error caught by `PgTryBuilder`.
pub(crate) fn failed(caught: &CaughtError) -> Failed {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => Failed {
            message: report.message().to_string(),
            sqlstate: sqlstate(report.sql_error_code()),
        },
        CaughtError::RustPanic { ereport, .. } => Failed {
            message: format!("panic: {}", ereport.message()),
            sqlstate: "XX000".into(),
        },
    }
}

/// The five characters of an error code (Postgres packs them six bits
/// each, first character lowest).
fn sqlstate(code: pgrx::PgSqlErrorCode) -> String {
    let packed = code as i32;
    (0..5)
        .map(|i| (((packed >> (6 * i)) & 0x3f) as u8 + b'0') as char)
        .collect()
}
