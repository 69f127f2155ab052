//! Writes to `warden.scd2_registry`, which need pg_warden's rights (the
//! registry is not writable by users).
//!
//! Not SECURITY DEFINER on purpose: the caller is checked first, as who
//! they really are, to own the tables; only then is the registry row
//! written, and nothing else runs with pg_warden's rights (the initial
//! load of the history runs in `scd2_track` as the caller: a history is
//! the caller's table, and its triggers, rules, defaults, constraints,
//! index expressions and column types are the caller's code).

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::WardenError;
use crate::names::current_role_name;
use crate::privileged::as_superuser;

pub(super) use crate::privileged::caller_owns;

pub(super) fn require_owner(rel: pg_sys::Oid, what: &str) {
    if !caller_owns(rel) {
        WardenError::privilege(format!(
            "must own the {what} table to change its SCD2 tracking"
        ))
        .hint("Run it as the table's owner (or a member of the owning role).")
        .raise();
    }
}

/// Records `src` as tracked into `hist` (through `queue` when deferred).
pub(super) fn register(
    src: pg_sys::Oid,
    hist: pg_sys::Oid,
    business_key: Vec<String>,
    tracked: Vec<String>,
    queue: Option<pg_sys::Oid>,
) {
    require_owner(src, "source");
    require_owner(hist, "history");
    if let Some(queue) = queue {
        require_owner(queue, "queue");
        if !crate::preload::is_preloaded() {
            pgrx::warning!(
                "pg_warden is not in shared_preload_libraries, so no worker applies the changes queued for this table; call warden.scd2_flush() yourself or preload it"
            );
        }
    }
    for (rel, what) in [
        (Some(src), "source"),
        (Some(hist), "history"),
        (queue, "queue"),
    ] {
        // SAFETY: a syscache lookup by OID.
        let kind = rel.map(|r| unsafe { pg_sys::get_rel_relkind(r) } as u8);
        if kind.is_some_and(|k| k != pg_sys::RELKIND_RELATION) {
            WardenError::new(
                pgrx::PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("the SCD2 {what} must be a table"),
            )
            .raise();
        }
    }
    let caller = current_role_name();
    as_superuser(|| {
        Spi::run_with_args(
            "INSERT INTO warden.scd2_registry (source, history, business_key, tracked, tracked_by, queue)
             VALUES ($1::pg_catalog.regclass, $2::pg_catalog.regclass, $3::pg_catalog.name[], $4::pg_catalog.name[], $5::pg_catalog.name,
                     $6::pg_catalog.regclass)",
            &[src.into(), hist.into(), business_key.into(), tracked.into(), caller.as_str().into(), queue.into()],
        )
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot register SCD2 tracking: {e}")).raise());
}

/// Forgets `src`; returns its history and queue as they were registered.
pub(super) fn unregister(src: pg_sys::Oid) -> Option<(pg_sys::Oid, Option<pg_sys::Oid>)> {
    require_owner(src, "source");
    let (hist, queue) = as_superuser(|| {
        Spi::get_two_with_args::<pg_sys::Oid, pg_sys::Oid>(
            "DELETE FROM warden.scd2_registry WHERE source OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
             RETURNING history::pg_catalog.oid, queue::pg_catalog.oid",
            &[src.into()],
        )
    })
    .or_else(|e| match e {
        pgrx::spi::Error::InvalidPosition => Ok((None, None)),
        e => Err(e),
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot unregister SCD2 tracking: {e}")).raise());
    hist.map(|h| (h, queue))
}
