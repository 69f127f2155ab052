//! Postgres' timers (utils/timeout.h, not in pgrx's bindings): the C
//! symbols themselves, which the hard deadline also calls from a signal
//! handler (pgrx's wrappers are not async-signal-safe).

unsafe extern "C-unwind" {
    pub(super) fn RegisterTimeout(
        id: std::ffi::c_int,
        handler: unsafe extern "C-unwind" fn(),
    ) -> std::ffi::c_int;
    pub(super) fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    pub(super) fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
    pub(super) fn get_timeout_indicator(id: std::ffi::c_int, reset_indicator: bool) -> bool;
}

/// STATEMENT_TIMEOUT: the same enumerator on every supported major version.
pub(super) const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// USER_TIMEOUT: asks RegisterTimeout for a free user-defined timer.
#[cfg(not(feature = "pg18"))]
pub(super) const USER_TIMEOUT: std::ffi::c_int = 12;
#[cfg(feature = "pg18")]
pub(super) const USER_TIMEOUT: std::ffi::c_int = 13;
