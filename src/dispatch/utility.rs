//! The ProcessUtility hook, for every subsystem: installed once when the
//! library loads; handlers run before the statement, in the order added.

use std::cell::UnsafeCell;

use pgrx::pg_sys;

/// Called with the statement about to run (before Postgres' own checks:
/// a handler that acts on it must check the caller's rights itself). A
/// `#[pg_guard]` function: a panic in it becomes an ERROR.
pub type Before = unsafe extern "C-unwind" fn(*mut pg_sys::PlannedStmt);

struct Handlers(UnsafeCell<Vec<Before>>);
// SAFETY: filled while the library loads (single-threaded), read after.
unsafe impl Sync for Handlers {}

static HANDLERS: Handlers = Handlers(UnsafeCell::new(Vec::new()));
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

fn handlers() -> &'static mut Vec<Before> {
    // SAFETY: see Handlers.
    unsafe { &mut *HANDLERS.0.get() }
}

/// Adds a handler; only from a subsystem's `init()` (the library load).
pub fn before(handler: Before) {
    if handlers().is_empty() {
        // SAFETY: chained hook installation while the library loads.
        unsafe {
            PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
            pg_sys::ProcessUtility_hook = Some(process_utility);
        }
    }
    handlers().push(handler);
}

// Not #[pg_guard]: pgrx would turn every ERROR raised inside any utility
// statement of the cluster into a Rust panic and re-raise it, losing the
// cursor position and error fields; the handlers are guarded themselves.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: handlers get the statement Postgres gave us; then the
    // chained call with the same arguments.
    unsafe {
        for h in handlers().iter() {
            h(pstmt);
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => raw_standard_process_utility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}

// The real standard_ProcessUtility, not pgrx's guarded wrapper (see above).
unsafe extern "C-unwind" {
    #[link_name = "standard_ProcessUtility"]
    fn raw_standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}
