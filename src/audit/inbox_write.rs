//! The transactional path's write: one heap insert into
//! `warden.audit_inbox` (`heap_append`); a captured statement's rows go in
//! batches, one inbox row per batch of events. The inbox is pg_warden's
//! own table: the caller needs no rights on it and nothing runs with more
//! rights than the caller's.

use pgrx::pg_sys::{self, Datum};

use crate::error::WardenError;
use crate::heap_append::{text_datum, warden_relation, HeapAppender};

/// One event, or a batch of events that share their header, on its way
/// into the inbox.
pub(super) struct InboxEvent<'a> {
    pub event_type: &'a str,
    pub tenant: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub actor_kind: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    /// A jsonb object, or with `events` a jsonb array of that many
    /// objects (one per event).
    pub fields: Datum,
    /// None: one event; Some(n): `fields` holds n events' fields.
    pub events: Option<i32>,
}

/// The inbox opened for appending (see `HeapAppender`), with its id
/// sequence.
pub(super) struct InboxWriter {
    table: HeapAppender,
    sequence: pg_sys::Oid,
}

/// Columns of the inbox, in table order: id, ts, event_type, tenant,
/// actor, actor_kind, correlation_id, txid, fields, events.
const INBOX_COLUMNS: [pg_sys::Oid; 10] = [
    pg_sys::INT8OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::XID8OID,
    pg_sys::JSONBOID,
    pg_sys::INT4OID,
];

impl InboxWriter {
    pub(super) fn open() -> InboxWriter {
        let sequence = warden_relation(c"audit_inbox_id_seq");
        if sequence == pg_sys::InvalidOid {
            WardenError::prerequisite("warden.audit_inbox_id_seq is missing").raise();
        }
        InboxWriter {
            table: HeapAppender::open(c"audit_inbox", &INBOX_COLUMNS),
            sequence,
        }
    }

    /// Appends one row, emitted now in the current transaction (which
    /// gets an id if it has none).
    pub(super) fn append(&mut self, e: &InboxEvent) {
        // SAFETY: reads the clock and the transaction id; draws an id.
        let (id, ts, txid) = unsafe {
            (
                crate::heap_append::next_id(self.sequence),
                pg_sys::GetCurrentTimestamp(),
                pg_sys::GetTopFullTransactionId().value,
            )
        };
        let cells = [
            (Datum::from(id), false),
            (Datum::from(ts), false),
            text_datum(Some(e.event_type)),
            text_datum(e.tenant),
            text_datum(e.actor),
            text_datum(e.actor_kind),
            text_datum(e.correlation_id),
            (Datum::from(txid), false),
            (e.fields, false),
            (Datum::from(e.events.unwrap_or(0)), e.events.is_none()),
        ];
        let mut values: Vec<Datum> = cells.iter().map(|c| c.0).collect();
        let mut nulls: Vec<bool> = cells.iter().map(|c| c.1).collect();
        self.table.append(&mut values, &mut nulls);
    }

    pub(super) fn close(self) {
        self.table.close();
    }
}

/// Appends one row to the inbox.
pub(super) fn append(e: &InboxEvent) {
    let mut writer = InboxWriter::open();
    writer.append(e);
    writer.close();
}
