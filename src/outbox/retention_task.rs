//! Retention: a worker task that deletes, in batches, what the outbox no
//! longer needs: messages older than `warden.outbox_retention` that every
//! subscription has handled (and no dead letter refers to), failed
//! dead-letter deliveries as old, and dedupe keys past
//! `warden.outbox_dedupe_window`. Batched deletes leave dead tuples in
//! bulk for VACUUM, once, instead of one per step of a delivery.

use std::time::Duration;

use crate::error::WardenError;
use crate::privileged::as_superuser;
use crate::workers::{register_task, Task, TaskContext, TaskReport, TaskSpec};

use super::delivery_state::spi_error;

/// Rows deleted per statement (a run deletes up to a few batches and
/// comes back sooner when there is more).
const BATCH: i64 = 10_000;
const RUNS_PER_PASS: usize = 5;

pub fn register() {
    register_task(TaskSpec {
        name: "outbox_retention",
        runs_on_any_wakeup: false,
        make: || Box::<Retention>::default(),
        holds_slot: None,
    });
}

#[derive(Default)]
struct Retention {
    more: bool,
}

impl Task for Retention {
    fn interval(&self) -> Duration {
        if self.more {
            return Duration::from_secs(1);
        }
        // a hundredth of the retention, between a second and a minute
        (crate::guc::outbox_retention() / 100)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        self.more = false;
        if crate::heap_append::warden_relation(c"dead_letters") == pgrx::pg_sys::InvalidOid {
            return Ok(TaskReport::default());
        }
        let retention = crate::guc::outbox_retention().as_secs() as i64;
        let window = crate::guc::outbox_dedupe_window().as_secs() as i64;
        let mut deleted = 0;
        for _ in 0..RUNS_PER_PASS {
            let n = as_superuser(|| delete_batch(retention, window))?;
            deleted += n;
            if n < BATCH {
                return Ok(TaskReport { backlog: 0 });
            }
        }
        self.more = true;
        Ok(TaskReport { backlog: deleted })
    }
}

/// Handled messages older than `$1` seconds, up to `$2`, in id order up
/// to the first message that is not (a message a long transaction
/// published is kept until those before it are old too): below every
/// message a delivery or a pull lease still needs and below what the
/// fan-out has not settled (the oldest pending range, or upto), and not
/// referred to by a dead letter. Each statement returns how many rows it
/// deleted.
///
/// Unless the oldest message is old (the usual case: nothing to do), the
/// bounds from the deliveries and leases are not computed: they read both
/// tables whole. The batch is taken in id order and cut at its first young
/// message: filtering on age in the scan read every message under the
/// bound when none was old (16 million, four seconds, once a minute on
/// the benchmark's cluster, while claims waited for the worker's marks).
const OLD_MESSAGES: &str = "WITH cutoff AS MATERIALIZED (
       SELECT pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $1) AS at),
     bound AS MATERIALIZED (
       SELECT CASE WHEN NOT EXISTS (SELECT FROM (SELECT o.published_at FROM warden.outbox_messages o
                                                  ORDER BY o.id LIMIT 1) o, cutoff
                                     WHERE o.published_at OPERATOR(pg_catalog.<) cutoff.at)
              THEN 0
              ELSE LEAST(
                (SELECT pg_catalog.min(d.message_id) FROM warden.outbox_deliveries d),
                (SELECT pg_catalog.min(l.id) FROM warden.outbox_leases h, pg_catalog.unnest(h.message_ids) l(id)),
                (SELECT LEAST(f.upto OPERATOR(pg_catalog.+) 1, (SELECT pg_catalog.min(lo) FROM pg_catalog.unnest(f.pending_lo) lo))
                   FROM warden.outbox_fanout f ORDER BY f.id DESC LIMIT 1)) END AS below),
     batch AS MATERIALIZED (
       SELECT m.id, m.published_at FROM warden.outbox_messages m
        WHERE m.id OPERATOR(pg_catalog.<) (SELECT b.below FROM bound b)
          AND NOT EXISTS (SELECT FROM warden.dead_letters l WHERE l.message_id OPERATOR(pg_catalog.=) m.id)
        ORDER BY m.id LIMIT $2),
     old AS (
       SELECT b.id FROM batch b
        WHERE b.id OPERATOR(pg_catalog.<) COALESCE(
                (SELECT pg_catalog.min(y.id) FROM batch y, cutoff
                  WHERE y.published_at OPERATOR(pg_catalog.>=) cutoff.at),
                9223372036854775807)),
     gone AS (DELETE FROM warden.outbox_messages m USING old WHERE m.id OPERATOR(pg_catalog.=) old.id RETURNING 1)
     SELECT pg_catalog.count(*) FROM gone";

/// Dead-letter deliveries given up more than `$1` seconds ago.
const OLD_FAILED: &str = "WITH gone AS (
       DELETE FROM warden.outbox_deliveries d
        WHERE (d.subscription_id, d.id) IN (
              SELECT f.subscription_id, f.id FROM warden.outbox_deliveries f
               WHERE f.failed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $1))
               LIMIT $2)
       RETURNING 1)
     SELECT pg_catalog.count(*) FROM gone";

/// Dedupe keys past their window (`$1` seconds).
const OLD_DEDUPE_KEYS: &str = "WITH gone AS (
       DELETE FROM warden.outbox_dedupe k
        WHERE (k.scope, k.dedupe_key) IN (
              SELECT o.scope, o.dedupe_key FROM warden.outbox_dedupe o
               WHERE o.published_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $1))
               LIMIT $2)
       RETURNING 1)
     SELECT pg_catalog.count(*) FROM gone";

/// One batch of each kind; returns the most rows one statement deleted.
fn delete_batch(retention_s: i64, window_s: i64) -> Result<i64, WardenError> {
    let statements = [
        (OLD_MESSAGES, retention_s),
        (OLD_FAILED, retention_s),
        (OLD_DEDUPE_KEYS, window_s),
    ];
    pgrx::Spi::connect_mut(|client| {
        let mut most = 0;
        for (sql, age_s) in statements {
            let deleted = client
                .update(sql, Some(1), &[(age_s as f64).into(), BATCH.into()])?
                .first()
                .get_one::<i64>()?
                .unwrap_or(0);
            most = most.max(deleted);
        }
        Ok::<_, pgrx::spi::Error>(most)
    })
    .map_err(spi_error)
}
