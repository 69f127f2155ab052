//! An event's header columns as the inbox and the log both store them,
//! read into the `EventHeader` the chain hashes: one select list and one
//! reader, so the sequencer that hashes an event and `audit_verify` that
//! checks it can never read it differently.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::spi::{SpiHeapTupleData, SpiResult};
use warden_core::audit::EventHeader;

/// The header columns of table alias `x`, in the order `read_header`
/// takes them: `txid` as text (an xid8 is a u64).
macro_rules! header_columns {
    () => {
        "x.ts, x.event_type, x.tenant, x.actor, x.actor_kind, x.correlation_id, x.txid::text"
    };
}
pub(super) use header_columns;

/// The header whose columns start at `first` (1-based); `chain` and
/// `seq` are the caller's to fill in.
pub(super) fn read_header(row: &SpiHeapTupleData, first: usize) -> SpiResult<EventHeader> {
    Ok(EventHeader {
        chain: String::new(),
        seq: 0,
        // microseconds since the Unix epoch; an infinite timestamp (only
        // ever written by hand) saturates, and cannot match its hash
        ts_micros: row.get::<TimestampWithTimeZone>(first)?.map_or(0, |ts| {
            pg_sys::TimestampTz::from(ts).saturating_add(super::durable::POSTGRES_EPOCH_MICROS)
        }),
        event_type: row.get(first + 1)?.unwrap_or_default(),
        tenant: row.get(first + 2)?,
        actor: row.get(first + 3)?,
        actor_kind: row.get(first + 4)?,
        correlation_id: row.get(first + 5)?,
        txid: row
            .get::<String>(first + 6)?
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    })
}

/// Columns `read_header` takes.
pub(super) const HEADER_COLUMN_COUNT: usize = 7;
