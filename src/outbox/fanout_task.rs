//! The fan-out: a worker task that turns each committed message into one
//! delivery row per matching subscription, in the order messages become
//! visible, and records how far it got (`warden_core::outbox::
//! FanoutProgress`) in the same transaction: a crash neither skips nor
//! repeats a message. Publishers write one row whatever the number of
//! subscribers; this task pays for the fan-out, on the worker.
//!
//! It reads and writes only pg_warden's own tables, with constant SQL and
//! bound parameters, as pg_warden: no user-defined object is evaluated
//! (topic matching is pg_warden's own function, filters are jsonb `@>`).

use std::sync::OnceLock;
use std::time::Duration;

use warden_core::outbox::{FanoutProgress, PendingRange};

use crate::error::WardenError;
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
    /// The progress as last committed (None: read it from the table).
    committed: Option<FanoutProgress>,
    /// This run's, kept once its transaction commits.
    this_run: Option<FanoutProgress>,
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
        let mut progress = match &self.committed {
            Some(p) => p.clone(),
            None => as_superuser(load_progress)?,
        };
        let before = progress.clone();
        loop {
            let (xmin, xmax, pending_visible, new_ids) = as_superuser(|| read_visible(&progress))?;
            let read_all_new = (new_ids.len() as i64) < BATCH;
            let mut visible = pending_visible;
            visible.extend(new_ids);
            visible.sort_unstable();
            visible.dedup();
            let fresh = progress.advance(&visible, xmin as u64, xmax as u64);
            if !fresh.is_empty() {
                as_superuser(|| fan_out(&fresh))?;
            }
            if read_all_new {
                break;
            }
        }
        if progress != before {
            as_superuser(|| save_progress(&progress))?;
        }
        let backlog = progress
            .pending
            .iter()
            .map(|r| r.hi - r.lo + 1)
            .sum::<i64>();
        self.this_run = Some(progress);
        Ok(TaskReport { backlog })
    }

    fn committed(&mut self, _ctx: &TaskContext) {
        if let Some(p) = self.this_run.take() {
            self.committed = Some(p);
        }
    }
}

/// The last progress recorded, or none yet.
fn load_progress() -> Result<FanoutProgress, WardenError> {
    let row = pgrx::Spi::connect(|client| {
        let rows = client.select(
            "SELECT f.upto, f.pending_lo, f.pending_hi, f.settled_at
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
        )))
    })
    .map_err(spi_error)?;
    let Some((upto, lo, hi, settled)) = row else {
        return Ok(FanoutProgress::default());
    };
    if lo.len() != hi.len() || lo.len() != settled.len() {
        return Err(WardenError::prerequisite(
            "outbox fan-out: warden.outbox_fanout holds ranges of unequal lengths",
        ));
    }
    Ok(FanoutProgress {
        upto,
        pending: lo
            .into_iter()
            .zip(hi)
            .zip(settled)
            .map(|((lo, hi), settled_at)| PendingRange {
                lo,
                hi,
                settled_at: settled_at as u64,
            })
            .collect(),
    })
}

/// In one statement (so under one snapshot): the snapshot's xmin and
/// xmax, the pending ids now visible, and up to BATCH new ids.
#[allow(clippy::type_complexity)]
fn read_visible(p: &FanoutProgress) -> Result<(i64, i64, Vec<i64>, Vec<i64>), WardenError> {
    let lo: Vec<i64> = p.pending.iter().map(|r| r.lo).collect();
    let hi: Vec<i64> = p.pending.iter().map(|r| r.hi).collect();
    let (xmin, xmax, pending, new) = pgrx::Spi::connect(|client| {
        let rows = client.select(
            "SELECT (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text)::bigint,
                    (pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text)::bigint,
                    ARRAY(SELECT m.id FROM warden.outbox_messages m,
                                 ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::bigint[])) r(lo, hi)
                           WHERE m.id OPERATOR(pg_catalog.>=) r.lo AND m.id OPERATOR(pg_catalog.<=) r.hi),
                    ARRAY(SELECT m.id FROM warden.outbox_messages m
                           WHERE m.id OPERATOR(pg_catalog.>) $3 ORDER BY m.id LIMIT $4)",
            Some(1),
            &[lo.into(), hi.into(), p.upto.into(), BATCH.into()],
        )?;
        let row = rows.first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<i64>(1)?,
            row.get::<i64>(2)?,
            row.get::<Vec<i64>>(3)?,
            row.get::<Vec<i64>>(4)?,
        ))
    })
    .map_err(spi_error)?;
    Ok((
        xmin.unwrap_or(0),
        xmax.unwrap_or(0),
        pending.unwrap_or_default(),
        new.unwrap_or_default(),
    ))
}

/// One delivery row per matching subscription for each of `ids`, in
/// commit order when `track_commit_timestamp` is on, else in id order
/// (the delivery ids, drawn in that order, are the order in which a
/// subscription's messages are handled; across runs the order is the
/// order in which messages became visible, which is commit order). The subscriptions are
/// locked (KEY SHARE) until the run commits: an `unsubscribe` waits for
/// it and then removes what it wrote, or ran first and is skipped.
fn fan_out(ids: &[i64]) -> Result<(), WardenError> {
    let (made, later) = pgrx::Spi::connect_mut(|client| {
        let rows = client.update(
            "WITH ins AS (
               INSERT INTO warden.outbox_deliveries (subscription_id, id, message_id, ordered_key, tenant, next_at)
               SELECT q.sid, pg_catalog.nextval('warden.outbox_deliveries_id_seq'::pg_catalog.regclass),
                      q.mid, q.okey, q.tenant, q.next_at
                 FROM (SELECT s.id AS sid, m.id AS mid,
                              CASE WHEN s.ordered THEN m.key END AS okey, m.tenant,
                              COALESCE(m.deliver_after, m.published_at) AS next_at
                         FROM warden.outbox_messages m
                         JOIN warden.outbox_subscriptions s
                           ON m.id OPERATOR(pg_catalog.>) s.start_after
                          AND (s.filter IS NULL OR m.payload OPERATOR(pg_catalog.@>) s.filter)
                          AND warden._outbox_topic_matches(s.topic_pattern, m.topic)
                        WHERE m.id OPERATOR(pg_catalog.=) ANY ($1)
                        ORDER BY CASE WHEN pg_catalog.current_setting('track_commit_timestamp')::pg_catalog.bool
                                      THEN pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid(m.txid)) END,
                                 m.id, s.id
                          FOR KEY SHARE OF s) q
               RETURNING next_at)
             SELECT pg_catalog.count(*),
                    pg_catalog.min(ins.next_at)
                      FILTER (WHERE ins.next_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp())
               FROM ins",
            Some(1),
            &[ids.to_vec().into()],
        )?;
        let row = rows.first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<pgrx::datum::TimestampWithTimeZone>(2)?
                .map(pgrx::pg_sys::TimestampTz::from),
        ))
    })
    .map_err(spi_error)?;
    if made > 0 {
        super::dispatch_task::wake_at_commit();
    }
    if let Some(at) = later {
        super::dispatch_task::due_later(at);
    }
    Ok(())
}

/// Records the progress (and forgets older records: only the last is
/// ever read).
fn save_progress(p: &FanoutProgress) -> Result<(), WardenError> {
    let lo: Vec<i64> = p.pending.iter().map(|r| r.lo).collect();
    let hi: Vec<i64> = p.pending.iter().map(|r| r.hi).collect();
    let settled: Vec<i64> = p.pending.iter().map(|r| r.settled_at as i64).collect();
    pgrx::Spi::connect_mut(|client| {
        client.update(
            "WITH n AS (INSERT INTO warden.outbox_fanout (upto, pending_lo, pending_hi, settled_at)
                        VALUES ($1, $2, $3, $4) RETURNING id)
             DELETE FROM warden.outbox_fanout f WHERE f.id OPERATOR(pg_catalog.<) (SELECT n.id FROM n)",
            None,
            &[p.upto.into(), lo.into(), hi.into(), settled.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(spi_error)
}
