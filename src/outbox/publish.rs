//! `warden.publish` and `warden.publish_batch`: a message joins
//! `warden.outbox_messages` inside the caller's transaction (nothing is
//! delivered unless it commits) with one heap insert, and the worker is
//! woken at commit (no NOTIFY: its commit takes a cluster-wide lock).
//! Fan-out to the matching subscriptions is the worker's job, so a
//! publish costs one row whatever the number of subscribers.

use pgrx::datum::Interval;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;

use warden_core::outbox::validate_published_topic;

use crate::error::{not_null, WardenError};
use crate::heap_append::{next_id, text_datum, warden_relation, HeapAppender};
use crate::privileged::as_superuser;

/// Longest message key or dedupe key, in bytes.
const MAX_KEY_BYTES: usize = 255;
/// Deepest nesting of a payload or headers (as for audit events: the
/// worker builds dead letters and handler arguments from them).
const MAX_DEPTH: usize = 64;
/// Longest `deliver_after`: ten years (an infinite or absurd delay would
/// hold a message, and an ordered key behind it, for ever).
const MAX_DELAY_US: i128 = 3_650 * 86_400 * 1_000_000;

/// Columns of `warden.outbox_messages`, in table order: id, topic, key,
/// payload, headers, tenant, published_at, deliver_after, txid.
const MESSAGE_COLUMNS: [pg_sys::Oid; 9] = [
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::XID8OID,
];

/// What every message of one publish call shares.
struct Envelope<'a> {
    topic: &'a str,
    headers: Datum,
    /// Copied: the setting's string may change under SQL that runs later.
    tenant: Option<String>,
    published_at: i64,
    deliver_after: Option<i64>,
    txid: u64,
}

/// The outbox opened for appending, with its id sequence.
struct MessageWriter {
    table: HeapAppender,
    sequence: pg_sys::Oid,
}

impl MessageWriter {
    fn open() -> MessageWriter {
        let sequence = warden_relation(c"outbox_messages_id_seq");
        if sequence == pg_sys::InvalidOid {
            WardenError::prerequisite("warden.outbox_messages_id_seq is missing").raise();
        }
        MessageWriter {
            table: HeapAppender::open(c"outbox_messages", &MESSAGE_COLUMNS),
            sequence,
        }
    }

    /// Publishes one message, or with a dedupe key seen within the window
    /// returns the id of the message first published with it.
    fn publish(
        &mut self,
        e: &Envelope,
        payload: Datum,
        key: Option<&str>,
        dedupe_key: Option<&str>,
    ) -> i64 {
        let id = next_id(self.sequence);
        if let Some(dedupe_key) = dedupe_key {
            if let Some(original) = already_published(e, dedupe_key, id) {
                return original;
            }
        }
        let cells = [
            (Datum::from(id), false),
            text_datum(Some(e.topic)),
            text_datum(key),
            (payload, false),
            (e.headers, false),
            text_datum(e.tenant.as_deref()),
            (Datum::from(e.published_at), false),
            (
                Datum::from(e.deliver_after.unwrap_or(0)),
                e.deliver_after.is_none(),
            ),
            (Datum::from(e.txid), false),
        ];
        let mut values: Vec<Datum> = cells.iter().map(|c| c.0).collect();
        let mut nulls: Vec<bool> = cells.iter().map(|c| c.1).collect();
        self.table.append(&mut values, &mut nulls);
        id
    }

    fn close(self) {
        self.table.close();
    }
}

/// Records `dedupe_key` for message `id`, unless the tenant published a
/// message with it within `warden.outbox_dedupe_window`: then that
/// message's id. A concurrent publish with the same key waits for the
/// first one's transaction (the primary key's insert), and so sees it.
fn already_published(e: &Envelope, dedupe_key: &str, id: i64) -> Option<i64> {
    let scope = dedupe_scope(e.tenant.as_deref());
    let window = crate::guc::outbox_dedupe_window().as_micros() as i64;
    let expired_before = e.published_at.saturating_sub(window);
    let at = timestamptz(e.published_at);
    let before = timestamptz(expired_before);
    let outcome = as_superuser(|| -> Result<Option<i64>, pgrx::spi::Error> {
        let recorded = super::write_one::<i64>(
            "INSERT INTO warden.outbox_dedupe AS d (scope, dedupe_key, message_id, published_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, dedupe_key) DO UPDATE
                SET message_id = EXCLUDED.message_id, published_at = EXCLUDED.published_at
              WHERE d.published_at OPERATOR(pg_catalog.<) $5
             RETURNING d.message_id",
            &[
                scope.as_str().into(),
                dedupe_key.into(),
                id.into(),
                at.into(),
                before.into(),
            ],
        )?;
        if recorded.is_some() {
            return Ok(None);
        }
        crate::spi_read::read_one::<i64>(
            "SELECT d.message_id FROM warden.outbox_dedupe d
              WHERE d.scope OPERATOR(pg_catalog.=) $1 AND d.dedupe_key OPERATOR(pg_catalog.=) $2",
            &[scope.as_str().into(), dedupe_key.into()],
        )
    });
    outcome.unwrap_or_else(|e| WardenError::prerequisite(format!("outbox dedupe: {e}")).raise())
}

/// Whose dedupe keys a publish shares: the tenant's, or without a tenant
/// the current role's (`#` cannot start a tenant id), so sessions of
/// other roles without a tenant can neither pre-empt nor probe its keys.
fn dedupe_scope(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => t.to_string(),
        None => {
            // SAFETY: the current user exists; the name is palloc'd.
            let role = unsafe {
                std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
            };
            format!("#{}", role.to_string_lossy())
        }
    }
}

fn timestamptz(micros: i64) -> pgrx::datum::TimestampWithTimeZone {
    // SAFETY: any i64 is a timestamptz datum (infinities included).
    unsafe { pgrx::datum::TimestampWithTimeZone::from_datum(Datum::from(micros), false) }
        .expect("a timestamptz")
}

/// The checks every publish makes, and what its messages share.
fn envelope<'a>(
    topic: Option<&'a str>,
    headers: Option<pgrx::AnyElement>,
    deliver_after: Option<Interval>,
) -> Envelope<'a> {
    crate::preload::require("warden.publish (messages are delivered by a pg_warden worker)");
    // SAFETY: reads two flags.
    if unsafe { pg_sys::RecoveryInProgress() || pg_sys::XactReadOnly } {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "warden.publish cannot run in a read-only transaction",
        )
        .hint("Publish on the primary, in a read-write transaction.")
        .raise();
    }
    let topic = not_null(topic, "topic");
    if let Err(e) = validate_published_topic(topic) {
        WardenError::invalid_parameter(e.message())
            .hint("Topics are dot-separated segments such as 'orders.created'.")
            .raise();
    }
    let headers = not_null(headers, "headers");
    let headers = jsonb_datum(&headers, "headers");
    if !crate::jsonb_shape::shape(headers, MAX_DEPTH).object {
        WardenError::invalid_parameter("headers must be a JSON object")
            .hint("Pass '{}' or an object such as '{\"trace_id\": \"...\"}'.")
            .raise();
    }
    // SAFETY: reads the clock; assigns the transaction an id before any
    // message id is drawn, so the worker can tell which transaction may
    // still hold an id it has not seen (see the fan-out).
    let (published_at, txid) = unsafe {
        (
            pg_sys::GetCurrentTimestamp(),
            pg_sys::GetTopFullTransactionId().value,
        )
    };
    let deliver_after = deliver_after.map(|d| {
        let us = d.as_micros();
        if us < 0 {
            WardenError::invalid_parameter("deliver_after must not be negative")
                .hint("Pass an interval such as '5 minutes', or NULL to deliver at once.")
                .raise();
        }
        if us > MAX_DELAY_US {
            WardenError::invalid_parameter("deliver_after is at most 10 years").raise();
        }
        let at: pgrx::datum::TimestampWithTimeZone = unsafe {
            pgrx::direct_function_call(
                pg_sys::timestamptz_pl_interval,
                &[timestamptz(published_at).into_datum(), d.into_datum()],
            )
        }
        .expect("a timestamptz");
        at.into_datum().expect("a datum").value() as i64
    });
    Envelope {
        topic,
        headers,
        tenant: crate::guc::tenant().map(str::to_owned),
        published_at,
        deliver_after,
        txid,
    }
}

/// A jsonb argument's datum, detoasted, no deeper than MAX_DEPTH.
fn jsonb_datum(value: &pgrx::AnyElement, what: &str) -> Datum {
    if value.oid() != pg_sys::JSONBOID {
        WardenError::invalid_parameter(format!("{what} must be jsonb")).raise();
    }
    let jsonb = crate::jsonb_shape::detoasted(value.datum());
    check_depth(jsonb, what);
    jsonb
}

fn check_depth(jsonb: Datum, what: &str) {
    if crate::jsonb_shape::shape(jsonb, MAX_DEPTH).depth > MAX_DEPTH {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{what} nests deeper than {MAX_DEPTH} levels"),
        )
        .raise();
    }
}

fn check_key(key: Option<&str>, what: &str) {
    if key.is_some_and(|k| k.len() > MAX_KEY_BYTES) {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
            format!("{what} is longer than {MAX_KEY_BYTES} bytes"),
        )
        .hint("Use an id, or a hash of a longer value.")
        .raise();
    }
}

fn wake_worker() {
    if crate::preload::is_preloaded() {
        super::fanout_task::wake_at_commit();
    }
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn publish(
    topic: Option<&str>,
    payload: Option<pgrx::AnyElement>,
    key: Option<&str>,
    headers: Option<pgrx::AnyElement>,
    dedupe_key: Option<&str>,
    deliver_after: Option<Interval>,
) -> i64 {
    let e = envelope(topic, headers, deliver_after);
    let payload = jsonb_datum(&not_null(payload, "payload"), "payload");
    check_key(key, "key");
    check_key(dedupe_key, "dedupe_key");
    let mut writer = MessageWriter::open();
    let id = writer.publish(&e, payload, key, dedupe_key);
    writer.close();
    wake_worker();
    id
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn publish_batch(
    topic: Option<&str>,
    payloads: Option<pgrx::AnyArray>,
    keys: Option<Vec<Option<String>>>,
) -> Vec<i64> {
    // SAFETY: '{}' as jsonb, built by the server's own input function.
    let empty = unsafe {
        pgrx::AnyElement::from_polymorphic_datum(
            pgrx::direct_function_call_as_datum(
                pg_sys::jsonb_in,
                &[Some(Datum::from(c"{}".as_ptr()))],
            )
            .expect("a jsonb"),
            false,
            pg_sys::JSONBOID,
        )
    };
    let e = envelope(topic, empty, None);
    let payloads = not_null(payloads, "payloads");
    if payloads.oid() != pg_sys::JSONBARRAYOID {
        WardenError::invalid_parameter("payloads must be jsonb[]").raise();
    }
    let elements = jsonb_elements(payloads.datum());
    elements
        .iter()
        .flatten()
        .for_each(|p| check_depth(*p, "a payload"));
    if let Some(keys) = &keys {
        if keys.len() != elements.len() {
            WardenError::invalid_parameter("keys must have as many elements as payloads")
                .detail(format!("{} payloads, {} keys.", elements.len(), keys.len()))
                .hint("Pass one key per payload (NULL for none), or no keys.")
                .raise();
        }
        keys.iter().for_each(|k| check_key(k.as_deref(), "key"));
    }
    if elements.iter().any(Option::is_none) {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "payloads must not hold NULL",
        )
        .hint("Pass 'null'::jsonb for a JSON null payload.")
        .raise();
    }
    let mut writer = MessageWriter::open();
    let ids = elements
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let key = keys.as_ref().and_then(|k| k[i].as_deref());
            writer.publish(&e, payload.expect("checked above"), key, None)
        })
        .collect();
    writer.close();
    wake_worker();
    ids
}

/// The elements of a jsonb[] (None for a NULL element), detoasted.
fn jsonb_elements(array: Datum) -> Vec<Option<Datum>> {
    // SAFETY: a jsonb[] datum; deconstruct_array fills the out-parameters
    // with palloc'd arrays of `n` entries.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(array.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        if (*arr).ndim > 1 {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
                "payloads must be a one-dimensional array",
            )
            .raise();
        }
        let mut elems: *mut Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        pg_sys::deconstruct_array(
            arr,
            pg_sys::JSONBOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        (0..n as usize)
            .map(|i| {
                (!*nulls.add(i))
                    .then(|| Datum::from(pg_sys::pg_detoast_datum((*elems.add(i)).cast_mut_ptr())))
            })
            .collect()
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden.publish(topic text, payload jsonb, key text DEFAULT NULL, headers jsonb DEFAULT '{}', dedupe_key text DEFAULT NULL, deliver_after interval DEFAULT NULL) RETURNS bigint
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'publish_wrapper';
CREATE FUNCTION warden.publish_batch(topic text, payloads jsonb[], keys text[] DEFAULT NULL) RETURNS bigint[]
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'publish_batch_wrapper';
COMMENT ON FUNCTION warden.publish(text, jsonb, text, jsonb, text, interval) IS
  'Publishes a message on a topic in the current transaction (delivered only if it commits) and returns its id; a dedupe_key seen within warden.outbox_dedupe_window publishes nothing and returns the first id.';
COMMENT ON FUNCTION warden.publish_batch(text, jsonb[], text[]) IS
  'Publishes one message per payload on a topic in the current transaction (keys: one per payload, or NULL) and returns their ids in order.';
"#,
    name = "outbox_publish",
    requires = ["outbox_tables"],
);
