//! The fan-out: a worker task that turns each committed message into one
//! delivery row per matching subscription, in the order messages become
//! visible, and records how far it got (`warden_core::outbox::
//! FanoutProgress`) in the same transaction: a crash neither skips nor
//! repeats a message. Publishers write one row whatever the number of
//! subscribers; this task pays for the fan-out, on the worker.
//!
//! It reads and writes only pg_warden's own tables, with constant SQL and
//! bound parameters or by heap insert, as pg_warden: no user-defined
//! object is evaluated (topics are matched here, filters are jsonb `@>`).

use std::sync::OnceLock;
use std::time::Duration;

use pgrx::pg_sys::{self, Datum};
use warden_core::outbox::{FanoutProgress, Pattern, PendingRange};

use crate::error::WardenError;
use crate::heap_append::{next_id, text_datum, HeapAppender};
use crate::privileged::as_superuser;
use crate::workers::{
    register_task, wake_task_on_commit, Task, TaskContext, TaskId, TaskReport, TaskSpec,
};

/// New message ids read per statement; a run reads on until it has seen
/// every committed one.
const BATCH: i64 = 10_000;

static TASK: OnceLock<TaskId> = OnceLock::new();

pub fn register() {
    let id = register_task(TaskSpec {
        name: "outbox_fanout",
        runs_on_any_wakeup: false,
        make: || Box::<Fanout>::default(),
        holds_slot: None,
    });
    let _ = TASK.set(id);
}

/// Runs the fan-out when the current transaction commits.
pub fn wake_at_commit() {
    if let Some(id) = TASK.get() {
        wake_task_on_commit(*id);
    }
}

#[derive(Default)]
struct Fanout {
    /// The progress as last committed, with the id of its record (None:
    /// read it from the table).
    committed: Option<(FanoutProgress, Option<i64>)>,
    /// This run's, kept once its transaction commits.
    this_run: Option<(FanoutProgress, Option<i64>)>,
}

fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("outbox fan-out: {e}"))
}

impl Task for Fanout {
    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn wake_gap(&self) -> Duration {
        // commits within it share one run
        Duration::from_millis(2)
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        self.this_run = None;
        if crate::heap_append::warden_relation(c"outbox_fanout") == pgrx::pg_sys::InvalidOid {
            // the database's pg_warden predates the outbox
            return Ok(TaskReport::default());
        }
        let (mut progress, mut record) = match &self.committed {
            Some(p) => p.clone(),
            None => as_superuser(load_progress)?,
        };
        let before = progress.clone();
        let subscriptions = as_superuser(read_subscriptions)?;
        let filtered: Vec<i32> = subscriptions
            .iter()
            .filter(|s| s.filtered)
            .map(|s| s.id)
            .collect();
        loop {
            let read = as_superuser(|| read_visible(&progress, &filtered))?;
            let read_all_new = read.new_ids < BATCH;
            let mut visible: Vec<i64> = read.messages.iter().map(|m| m.id).collect();
            visible.sort_unstable();
            visible.dedup();
            let fresh = progress.advance(&visible, read.xmin, read.next_xid);
            if !fresh.is_empty() && !subscriptions.is_empty() {
                let messages: Vec<Message> = read
                    .messages
                    .into_iter()
                    .filter(|m| fresh.binary_search(&m.id).is_ok())
                    .collect();
                as_superuser(|| fan_out(&subscriptions, &messages))?;
            }
            if read_all_new {
                break;
            }
        }
        if progress != before {
            record = Some(as_superuser(|| save_progress(&progress, record))?);
        }
        let backlog = progress
            .pending
            .iter()
            .map(|r| r.hi - r.lo + 1)
            .sum::<i64>();
        self.this_run = Some((progress, record));
        Ok(TaskReport { backlog })
    }

    fn committed(&mut self, _ctx: &TaskContext) {
        if let Some(p) = self.this_run.take() {
            self.committed = Some(p);
        }
    }
}

/// The last progress recorded, with its record's id, or none yet.
fn load_progress() -> Result<(FanoutProgress, Option<i64>), WardenError> {
    let row = pgrx::Spi::connect(|client| {
        let rows = client.select(
            "SELECT f.upto, f.pending_lo, f.pending_hi, f.settled_at, f.id
               FROM warden.outbox_fanout f ORDER BY f.id DESC LIMIT 1",
            Some(1),
            &[],
        )?;
        if rows.is_empty() {
            return Ok::<_, pgrx::spi::Error>(None);
        }
        let row = rows.first();
        Ok(Some((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<Vec<i64>>(2)?.unwrap_or_default(),
            row.get::<Vec<i64>>(3)?.unwrap_or_default(),
            row.get::<Vec<i64>>(4)?.unwrap_or_default(),
            row.get::<i64>(5)?,
        )))
    })
    .map_err(spi_error)?;
    let Some((upto, lo, hi, settled, record)) = row else {
        return Ok((FanoutProgress::default(), None));
    };
    if lo.len() != hi.len() || lo.len() != settled.len() {
        return Err(WardenError::prerequisite(
            "outbox fan-out: warden.outbox_fanout holds ranges of unequal lengths",
        ));
    }
    // a restore into another cluster brings xids of that cluster's
    // counter: none of its transactions can still commit here, and ranges
    // beyond this one's next xid would wait for xids not drawn yet
    // SAFETY: reads a shared counter under its lock.
    let next_xid = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
    let progress = FanoutProgress {
        upto,
        pending: lo
            .into_iter()
            .zip(hi)
            .zip(settled)
            .map(|((lo, hi), settled_at)| PendingRange {
                lo,
                hi,
                settled_at: (settled_at as u64).min(next_xid),
            })
            .collect(),
    };
    Ok((progress, record))
}

/// What one read of the messages saw, under one snapshot.
struct Read {
    /// The snapshot's xmin.
    xmin: u64,
    /// The next xid to be assigned, read after that snapshot was taken
    /// (`FanoutProgress`: the snapshot's xmax is not a bound on the xids
    /// that drew ids before it).
    next_xid: u64,
    /// The pending messages now visible and up to BATCH new ones, in
    /// commit order when `track_commit_timestamp` is on, else in id order.
    messages: Vec<Message>,
    /// How many of them are new (above the mark).
    new_ids: i64,
}

/// The columns of a message the fan-out needs (`$5`: the filtered
/// subscriptions), then whether it is new; `m` the message.
macro_rules! message_columns {
    () => {
        "m.id, m.topic, m.key, m.tenant, COALESCE(m.deliver_after, m.published_at),
         CASE WHEN pg_catalog.cardinality($5) OPERATOR(pg_catalog.>) 0 THEN
           ARRAY(SELECT s.id FROM warden.outbox_subscriptions s
                  WHERE s.id OPERATOR(pg_catalog.=) ANY ($5)
                    AND m.payload OPERATOR(pg_catalog.@>) s.filter)
         END, m.txid"
    };
}

/// In one statement (one snapshot): the snapshot's xmin, and the pending
/// messages now visible ($1, $2: the pending ranges) with up to BATCH ($4)
/// above the mark ($3); the snapshot's xmin comes with every row, and
/// alone (the other columns NULL) when there is none.
macro_rules! read_visible_statement {
    ($order:literal) => {
        concat!(
            "SELECT x.xmin, v.* FROM
               (SELECT (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text)::bigint) x(xmin)
             LEFT JOIN (
               SELECT ", message_columns!(), ", false
                 FROM warden.outbox_messages m,
                      ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[])) r(lo, hi)
                WHERE m.id OPERATOR(pg_catalog.>=) r.lo AND m.id OPERATOR(pg_catalog.<=) r.hi
               UNION ALL
               (SELECT ", message_columns!(), ", true
                  FROM warden.outbox_messages m
                 WHERE m.id OPERATOR(pg_catalog.>) $3 ORDER BY m.id LIMIT $4)
             ) v(id, topic, key, tenant, next_at, filters, txid, new) ON true",
            $order
        )
    };
}

/// The read in id order (sorted here: nothing else needs a sort).
const READ_VISIBLE: &str = read_visible_statement!("");
/// The read in commit order, for `track_commit_timestamp = on`.
const READ_VISIBLE_BY_COMMIT: &str = read_visible_statement!(
    " ORDER BY pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid(v.txid)), v.id"
);

/// The pending messages now visible and up to BATCH new ones, in commit
/// order when `track_commit_timestamp` is on (else in id order), each
/// with which of the `filtered` subscriptions' filters its payload
/// contains (jsonb `@>`), read with the snapshot's xmin in one statement;
/// then the next xid to be assigned. One statement for what took two (the
/// ids, then the messages by id): the worker's fixed cost per run is most
/// of what a publish costs it under load.
fn read_visible(p: &FanoutProgress, filtered: &[i32]) -> Result<Read, WardenError> {
    crate::guc::plan_for_index_order();
    let lo: Vec<i64> = p.pending.iter().map(|r| r.lo).collect();
    let hi: Vec<i64> = p.pending.iter().map(|r| r.hi).collect();
    let by_commit = super::subscribe::track_commit_timestamp();
    let statement = if by_commit {
        READ_VISIBLE_BY_COMMIT
    } else {
        READ_VISIBLE
    };
    let (xmin, mut messages, new_ids) = pgrx::Spi::connect(|client| {
        let rows = crate::kept_plans::select(
            client,
            statement,
            None,
            &[
                lo.into(),
                hi.into(),
                p.upto.into(),
                BATCH.into(),
                filtered.to_vec().into(),
            ],
        )?;
        let mut xmin = 0;
        let mut new_ids = 0;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            xmin = row.get::<i64>(1)?.unwrap_or(0);
            let Some(id) = row.get::<i64>(2)? else {
                continue;
            };
            if row.get::<bool>(9)?.unwrap_or(false) {
                new_ids += 1;
            }
            messages.push(Message {
                id,
                topic: row.get::<String>(3)?.unwrap_or_default(),
                key: row.get::<String>(4)?,
                tenant: row.get::<String>(5)?,
                next_at: row
                    .get::<pgrx::datum::TimestampWithTimeZone>(6)?
                    .map(pg_sys::TimestampTz::from)
                    .unwrap_or(0),
                passes_filters_of: row.get::<Vec<i32>>(7)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>((xmin, messages, new_ids))
    })
    .map_err(spi_error)?;
    if !by_commit {
        messages.sort_unstable_by_key(|m| m.id);
    }
    // SAFETY: reads a shared counter under its lock; after the statement,
    // so at least what it was when the statement's snapshot was taken.
    let next_xid = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
    Ok(Read {
        xmin: xmin as u64,
        next_xid,
        messages,
        new_ids,
    })
}

/// Columns of `warden.outbox_deliveries`, in table order: subscription_id,
/// id, message_id, ordered_key, tenant, attempts, next_at, lease,
/// lease_until, first_attempt_at, last_attempt_at, last_error, failed_at,
/// message_ids.
const DELIVERY_COLUMNS: [pg_sys::Oid; 14] = [
    pg_sys::INT4OID,
    pg_sys::INT8OID,
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT8ARRAYOID,
];

/// Messages a group row holds at most: a claim of one rewrites the rest
/// of its group, which stays small enough to be stored in the row.
const GROUP_MAX: usize = 100;

/// The messages of one run for an unordered pull subscription and one
/// tenant, due now: written as one delivery row.
struct Group {
    subscription: i32,
    tenant: Option<String>,
    /// Drawn when its first message was matched, so that the group sits
    /// where that message's own row would have.
    id: i64,
    message_ids: Vec<i64>,
    next_at: i64,
}

/// A subscription as the fan-out matches it.
struct Subscription {
    id: i32,
    pattern: Pattern,
    ordered: bool,
    start_after: i64,
    filtered: bool,
    /// Has a handler: the dispatcher delivers it (pull consumers claim
    /// their own).
    pushed: bool,
}

/// A message as the fan-out reads it.
struct Message {
    id: i64,
    topic: String,
    key: Option<String>,
    tenant: Option<String>,
    next_at: i64,
    /// The filtered subscriptions whose filter its payload contains.
    passes_filters_of: Vec<i32>,
}

/// One delivery row per matching subscription for each of `messages`,
/// in their order: commit order when `track_commit_timestamp` is on, else
/// id order (the delivery ids, drawn in that order, are the order in which a
/// subscription's messages are handled; across runs the order is the
/// order in which messages became visible, which is commit order). The
/// subscriptions matched are locked (KEY SHARE) until the run commits: an
/// `unsubscribe` waits for it and then removes what it wrote, or ran
/// first and is skipped. Topics are matched here and the rows appended by
/// heap insert: a statement joining messages to subscriptions cost the
/// worker more than the publishers' own inserts.
fn fan_out(subscriptions: &[Subscription], messages: &[Message]) -> Result<(), WardenError> {
    crate::guc::plan_for_index_order();
    // each message's matching subscriptions (by position), matched once
    let pairs: Vec<(usize, usize)> = messages
        .iter()
        .enumerate()
        .flat_map(|(mi, m)| {
            subscriptions
                .iter()
                .enumerate()
                .filter(move |(_, s)| {
                    m.id > s.start_after
                        && (!s.filtered || m.passes_filters_of.contains(&s.id))
                        && s.pattern.matches(&m.topic)
                })
                .map(move |(si, _)| (mi, si))
        })
        .collect();
    let mut matched: Vec<i32> = pairs.iter().map(|&(_, si)| subscriptions[si].id).collect();
    matched.sort_unstable();
    matched.dedup();
    if matched.is_empty() {
        return Ok(());
    }
    let locked: std::collections::HashSet<i32> =
        lock_subscriptions(&matched)?.into_iter().collect();
    let sequence = crate::heap_append::warden_relation(c"outbox_deliveries_id_seq");
    if sequence == pg_sys::InvalidOid {
        return Err(WardenError::prerequisite(
            "warden.outbox_deliveries_id_seq is missing",
        ));
    }
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut later: Option<i64> = None;
    let mut pushed = false;
    let mut deliveries = HeapAppender::open(c"outbox_deliveries", &DELIVERY_COLUMNS);
    // groups being filled, by subscription position and tenant
    let mut groups: std::collections::HashMap<(usize, Option<&str>), Group> =
        std::collections::HashMap::new();
    for &(mi, si) in &pairs {
        let (m, s) = (&messages[mi], &subscriptions[si]);
        if !locked.contains(&s.id) {
            continue;
        }
        if !s.pushed && !s.ordered && m.next_at <= now {
            let group = groups
                .entry((si, m.tenant.as_deref()))
                .or_insert_with(|| Group {
                    subscription: s.id,
                    tenant: m.tenant.clone(),
                    id: next_id(sequence),
                    message_ids: Vec::with_capacity(GROUP_MAX),
                    next_at: m.next_at,
                });
            group.message_ids.push(m.id);
            group.next_at = group.next_at.max(m.next_at);
            if group.message_ids.len() == GROUP_MAX {
                let full = groups
                    .remove(&(si, m.tenant.as_deref()))
                    .expect("the group just filled");
                append_group(&mut deliveries, &full);
            }
            continue;
        }
        let ordered_key = if s.ordered { m.key.as_deref() } else { None };
        append_delivery(
            &mut deliveries,
            s.id,
            next_id(sequence),
            m.id,
            ordered_key,
            m.tenant.as_deref(),
            m.next_at,
            None,
        );
        if s.pushed {
            pushed = true;
            if m.next_at > now {
                later = Some(later.map_or(m.next_at, |l| l.min(m.next_at)));
            }
        }
    }
    // in id order, so that each subscription's rows are appended in the
    // order of their ids, as single rows are
    let mut rest: Vec<Group> = groups.into_values().collect();
    rest.sort_unstable_by_key(|g| g.id);
    for group in &rest {
        append_group(&mut deliveries, group);
    }
    deliveries.close();
    if pushed {
        super::dispatch_task::wake_at_commit();
    }
    if let Some(at) = later {
        super::dispatch_task::due_later(at);
    }
    Ok(())
}

/// Appends one delivery row: of `message_id` alone, or with
/// `message_ids` a group of them (`message_id` then the lowest).
#[allow(clippy::too_many_arguments)]
fn append_delivery(
    deliveries: &mut HeapAppender,
    subscription: i32,
    id: i64,
    message_id: i64,
    ordered_key: Option<&str>,
    tenant: Option<&str>,
    next_at: i64,
    message_ids: Option<&[i64]>,
) {
    let group = message_ids.map(int8_array);
    let cells = [
        (Datum::from(subscription), false),
        (Datum::from(id), false),
        (Datum::from(message_id), false),
        text_datum(ordered_key),
        text_datum(tenant),
        (Datum::from(0i32), false),
        (Datum::from(next_at), false),
        (Datum::from(0usize), true),
        (Datum::from(0usize), true),
        (Datum::from(0usize), true),
        (Datum::from(0usize), true),
        (Datum::from(0usize), true),
        (Datum::from(0usize), true),
        (group.unwrap_or(Datum::from(0usize)), group.is_none()),
    ];
    let mut values: Vec<Datum> = cells.iter().map(|c| c.0).collect();
    let mut nulls: Vec<bool> = cells.iter().map(|c| c.1).collect();
    deliveries.append(&mut values, &mut nulls);
    // the tuple copied them: a run may write many rows
    for (datum, null) in cells[3..5].iter().chain(&cells[13..]) {
        if !null {
            // SAFETY: palloc'd by text_datum or int8_array, no longer
            // referenced.
            unsafe { pg_sys::pfree(datum.cast_mut_ptr()) };
        }
    }
}

/// `ids` as an int8[] in one allocation (freed with `pfree`): pgrx's
/// conversion of a Vec leaves its array builder's state behind per row,
/// until the run's transaction ends.
fn int8_array(ids: &[i64]) -> Datum {
    let mut elems: Vec<Datum> = ids.iter().map(|&i| Datum::from(i)).collect();
    // SAFETY: int8 is 8 bytes, passed by value, double-aligned; the
    // array copies the elements.
    let array = unsafe {
        pg_sys::construct_array(
            elems.as_mut_ptr(),
            elems.len() as i32,
            pg_sys::INT8OID,
            8,
            true,
            pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
        )
    };
    Datum::from(array)
}

/// Appends a group's row; a group of one is a single row.
fn append_group(deliveries: &mut HeapAppender, g: &Group) {
    let lowest = g.message_ids.iter().copied().min().unwrap_or(0);
    append_delivery(
        deliveries,
        g.subscription,
        g.id,
        lowest,
        None,
        g.tenant.as_deref(),
        g.next_at,
        (g.message_ids.len() > 1).then_some(&g.message_ids[..]),
    );
}

/// Every subscription, by id (a pattern that no longer parses matches
/// nothing).
fn read_subscriptions() -> Result<Vec<Subscription>, WardenError> {
    pgrx::Spi::connect(|client| {
        let rows = crate::kept_plans::select(
            client,
            "SELECT s.id, s.topic_pattern, s.ordered, s.start_after, s.filter IS NOT NULL,
                    s.handler IS NOT NULL
               FROM warden.outbox_subscriptions s ORDER BY s.id",
            None,
            &[],
        )?;
        let mut subscriptions = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(pattern) = Pattern::parse(&row.get::<String>(2)?.unwrap_or_default()) else {
                continue;
            };
            subscriptions.push(Subscription {
                id: row.get::<i32>(1)?.unwrap_or(0),
                pattern,
                ordered: row.get::<bool>(3)?.unwrap_or(false),
                start_after: row.get::<i64>(4)?.unwrap_or(0),
                filtered: row.get::<bool>(5)?.unwrap_or(false),
                pushed: row.get::<bool>(6)?.unwrap_or(false),
            });
        }
        Ok::<_, pgrx::spi::Error>(subscriptions)
    })
    .map_err(spi_error)
}

/// Locks subscriptions `ids` (KEY SHARE) until the run commits, and
/// returns those that still exist (one unsubscribed meanwhile is gone).
fn lock_subscriptions(ids: &[i32]) -> Result<Vec<i32>, WardenError> {
    // an unsubscribe left open in a transaction fails this run (retried
    // within a second) rather than holding the worker's other tasks
    crate::guc::with_settings(&[(c"lock_timeout", c"200ms")], || {
        lock_subscriptions_now(ids)
    })
}

fn lock_subscriptions_now(ids: &[i32]) -> Result<Vec<i32>, WardenError> {
    pgrx::Spi::connect_mut(|client| {
        let rows = crate::kept_plans::update(
            client,
            "SELECT s.id FROM warden.outbox_subscriptions s
              WHERE s.id OPERATOR(pg_catalog.=) ANY ($1)
              ORDER BY s.id
                FOR KEY SHARE",
            None,
            &[ids.to_vec().into()],
        )?;
        rows.map(|row| row.get::<i32>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<i32>, _>>()
    })
    .map_err(spi_error)
}

/// Records the progress and forgets the record before it (`previous`;
/// none: every older one), returning the new record's id. Only the
/// range from the previous record up is deleted: under a held xmin
/// horizon the index entries of the records before it stay, and a delete
/// from the start would read all of them on every run.
fn save_progress(p: &FanoutProgress, previous: Option<i64>) -> Result<i64, WardenError> {
    let lo: Vec<i64> = p.pending.iter().map(|r| r.lo).collect();
    let hi: Vec<i64> = p.pending.iter().map(|r| r.hi).collect();
    let settled: Vec<i64> = p.pending.iter().map(|r| r.settled_at as i64).collect();
    pgrx::Spi::connect_mut(|client| {
        let rows = crate::kept_plans::update(
            client,
            "WITH n AS (INSERT INTO warden.outbox_fanout (upto, pending_lo, pending_hi, settled_at)
                        VALUES ($1, $2, $3, $4) RETURNING id),
                  d AS (DELETE FROM warden.outbox_fanout f
                         WHERE f.id OPERATOR(pg_catalog.>=) $5
                           AND f.id OPERATOR(pg_catalog.<) (SELECT n.id FROM n))
             SELECT n.id FROM n",
            None,
            &[
                p.upto.into(),
                lo.into(),
                hi.into(),
                settled.into(),
                previous.unwrap_or(i64::MIN).into(),
            ],
        )?;
        let id = rows.first().get::<i64>(1)?.unwrap_or(0);
        Ok::<_, pgrx::spi::Error>(id)
    })
    .map_err(spi_error)
}
