//! The durable path: an event that must exist whether or not the caller's
//! transaction commits (a secret was read, break-glass was used). It goes
//! into this database's ring in shared memory, outside the transaction,
//! and the sequencer commits it in its own. This is the Rust API other
//! subsystems call (`record_durable`); `warden.audit_emit(...,
//! durable => true)` is its SQL face.
//!
//! Like `synchronous_commit = off`, an event still in the ring when the
//! server crashes is lost. In strict mode (`warden.audit_strict`, or
//! `strict` per call) the call returns only once the worker committed the
//! event, and raises when that does not happen within
//! `warden.audit_strict_timeout`: nothing a strict call returned for is
//! ever lost. A full ring makes any durable call wait up to that timeout,
//! then raise; an event is never dropped silently.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use warden_core::audit::{encode_pending, EventHeader};

use super::ring;
use crate::error::WardenError;
use crate::guc;

/// Microseconds from the Unix epoch to Postgres' (2000-01-01).
pub(super) const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Microseconds since the Unix epoch, now.
pub(super) fn now_micros() -> i64 {
    // SAFETY: reads the clock.
    (unsafe { pg_sys::GetCurrentTimestamp() }) + POSTGRES_EPOCH_MICROS
}

/// Microseconds since the Unix epoch as a timestamptz (to bind as a
/// parameter).
pub(super) fn timestamptz(unix_micros: i64) -> pgrx::datum::TimestampWithTimeZone {
    pgrx::datum::TimestampWithTimeZone::try_from(unix_micros - POSTGRES_EPOCH_MICROS)
        .unwrap_or_else(|_| WardenError::invalid_parameter("timestamp out of range").raise())
}

/// Microseconds since the Unix epoch of a finite timestamptz.
pub(super) fn unix_micros(ts: pgrx::datum::TimestampWithTimeZone) -> Option<i64> {
    ts.is_finite()
        .then(|| pg_sys::TimestampTz::from(ts) + POSTGRES_EPOCH_MICROS)
}

/// The header of a durable event emitted now, in this transaction: its
/// tenant, actor and correlation id, and the top-level transaction id
/// when it has one (0 otherwise: a durable event does not make a
/// read-only transaction take a transaction id).
fn current_header(event_type: &str, tenant: Option<&str>) -> EventHeader {
    let (actor, actor_kind, correlation_id) = guc::audit_context();
    // SAFETY: reads transaction state.
    let xid = unsafe { pg_sys::GetTopFullTransactionIdIfAny() }.value;
    EventHeader {
        chain: String::new(),
        seq: 0,
        ts_micros: now_micros(),
        event_type: event_type.to_string(),
        tenant: tenant.map(str::to_string),
        actor,
        actor_kind,
        correlation_id,
        txid: xid,
    }
}

/// Records a durable event of `event_type` with `fields_json` (a JSON
/// object's text) for the current tenant, actor and transaction. Returns
/// once the event is in the ring, or (strict: `warden.audit_strict`, or
/// `strict`) once it is committed. Raises 55000 without preload, 25006 on
/// a standby, 57014 when the ring stays full or a strict event is not
/// committed within `warden.audit_strict_timeout`.
pub fn record_durable(event_type: &str, fields_json: &str, strict: bool) {
    let tenant = guc::tenant().map(str::to_string);
    record(event_type, tenant.as_deref(), fields_json, strict);
}

/// A durable event pg_warden writes about its own sensitive operations
/// (`audit.*`, `tenancy.*`, `keys.*`, `admin.*`), in `tenant`'s chain
/// (`global` for None), with the role that acted added to `fields` (a JSON
/// object). Without the preload (no ring) it is written in the caller's
/// transaction instead, so it exists exactly when the operation
/// committed, and waits in the inbox for a worker. Not written by
/// pg_warden's own install and upgrade scripts.
pub(crate) fn record_admin_event(
    event_type: &str,
    tenant: Option<&str>,
    fields: serde_json::Map<String, serde_json::Value>,
) {
    admin_event(event_type, tenant, fields, false);
}

/// As `record_admin_event`, returning only once the event is committed
/// (whatever `warden.audit_strict` says); needs the preload.
pub(super) fn record_admin_event_strict(
    event_type: &str,
    tenant: Option<&str>,
    fields: serde_json::Map<String, serde_json::Value>,
) {
    crate::preload::require(event_type);
    admin_event(event_type, tenant, fields, true);
}

fn admin_event(
    event_type: &str,
    tenant: Option<&str>,
    mut fields: serde_json::Map<String, serde_json::Value>,
    strict: bool,
) {
    // SAFETY: plain reads of backend state; the name is copied.
    let (installing, role) = unsafe {
        let role = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        (
            pg_sys::creating_extension,
            (!role.is_null()).then(|| {
                std::ffi::CStr::from_ptr(role)
                    .to_string_lossy()
                    .into_owned()
            }),
        )
    };
    if installing {
        return;
    }
    fields.insert("role".into(), role.into());
    let in_worker = crate::workers::in_background_worker();
    // a worker's own operations (the sequencer making its signing key)
    // are recorded in its transaction: it must never wait on the ring it
    // drains itself, strict or full
    if !crate::preload::is_preloaded() || in_worker {
        let fields = pgrx::IntoDatum::into_datum(pgrx::JsonB(fields.into()));
        super::emit::insert_into_inbox(event_type, tenant, fields.expect("jsonb is a datum"));
        return;
    }
    record(
        event_type,
        tenant,
        &serde_json::Value::Object(fields).to_string(),
        strict,
    );
}

fn record(event_type: &str, tenant: Option<&str>, fields_json: &str, strict: bool) {
    crate::preload::require("a durable audit event (the ring is pg_warden shared memory)");
    // SAFETY: plain read.
    if unsafe { pg_sys::RecoveryInProgress() } {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot record a durable audit event during recovery",
        )
        .hint("Emit audit events on the primary.")
        .raise();
    }
    let strict = strict || guc::audit_strict();
    let Some(slot) = crate::workers::my_database_slot() else {
        WardenError::prerequisite("no pg_warden worker slot is free for this database")
            .detail("Every database slot of the worker runtime is taken, so this database has no audit ring.")
            .hint("Drop the extension from databases that do not use it, or restrict warden.databases.")
            .raise()
    };
    // SAFETY: plain read.
    let dboid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let record = encode_pending(&current_header(event_type, tenant), fields_json);
    let timeout = guc::audit_strict_timeout();
    let (id, filling) = ring::push(
        slot,
        dboid,
        &record,
        timeout,
        super::sequencer_task::wake_now,
    )
    .unwrap_or_else(|e| e.raise());
    // an event nobody waits for is chained with those of the next wake
    // gap, unless the ring is filling faster than that
    if strict || filling {
        super::sequencer_task::wake_now();
    } else {
        super::sequencer_task::wake_soon();
    }
    if strict && ring::wait_committed(slot, id, timeout).is_err() {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
            "the strict audit event was not committed within warden.audit_strict_timeout",
        )
        .detail("warden.audit_strict is on, so the call fails closed. The event stays queued and may still be recorded.")
        .hint("Check warden.worker_status and warden.audit_status: the pg_warden worker of this database must be running.")
        .raise();
    }
}
