//! An event's header columns as the inbox and the log both store them,
//! read into the `EventHeader` the chain hashes: one select list and one
//! reader, so the sequencer that hashes an event and `audit_verify` that
//! checks it can never read it differently.

use pgrx::spi::{SpiHeapTupleData, SpiResult};
use warden_core::audit::EventHeader;

/// The header columns of table alias `x`, in the order `read_header`
/// takes them: `ts` as microseconds since the Unix epoch (exact: EXTRACT
/// gives numeric), `txid` as text (an xid8 is a u64).
macro_rules! header_columns {
    () => {
        "(EXTRACT(epoch FROM x.ts) * 1000000)::bigint, x.event_type, x.tenant, x.actor, x.actor_kind, x.correlation_id, x.txid::text"
    };
}
pub(super) use header_columns;

/// The header whose columns start at `first` (1-based); `chain` and
/// `seq` are the caller's to fill in.
pub(super) fn read_header(row: &SpiHeapTupleData, first: usize) -> SpiResult<EventHeader> {
    Ok(EventHeader {
        chain: String::new(),
        seq: 0,
        ts_micros: row.get(first)?.unwrap_or(0),
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
