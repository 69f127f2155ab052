//! The one way pg_warden raises an error: a standard SQLSTATE, a message
//! that says what went wrong, and optionally a detail and a hint that says
//! what to do. Messages never carry key material or secret values.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, Clone)]
pub struct WardenError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// `value`, or 22004 "<what> must not be NULL" for an SQL NULL argument.
pub fn not_null<T>(value: Option<T>, what: &str) -> T {
    value.unwrap_or_else(|| {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} must not be NULL"),
        )
        .raise()
    })
}

impl WardenError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        WardenError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// 22023 invalid_parameter_value.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// 55000 object_not_in_prerequisite_state.
    pub fn prerequisite(message: impl Into<String>) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message,
        )
    }

    /// 42501 insufficient_privilege.
    pub fn privilege(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message)
    }

    /// Key or nonce generation failed: getrandom(2) returned an error.
    pub fn random_source_failed() -> Self {
        Self::prerequisite("the operating system's random source failed")
    }

    /// The error every function that needs keys, workers or shared memory
    /// raises when the library was loaded by CREATE EXTENSION only.
    pub fn not_preloaded(what: &str) -> Self {
        Self::prerequisite(format!("{what} requires pg_warden to be preloaded"))
            .detail("pg_warden was loaded on demand, so its shared memory and background workers do not exist.")
            .hint("Add pg_warden to shared_preload_libraries in postgresql.conf and restart the server.")
    }

    /// Raises this error at ERROR level; does not return.
    pub fn raise(self) -> ! {
        self.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }

    /// Reports this at WARNING level (for a code of class 01) and goes on.
    pub fn warn(self) {
        self.report(PgLogLevel::WARNING);
    }

    fn report(self, level: PgLogLevel) {
        let mut report = ErrorReport::new(self.code, self.message, "pg_warden");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(level);
    }
}

impl std::fmt::Display for WardenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
