//! The dispatcher: a worker task that hands each due delivery of a
//! handler subscription to its handler, in fan-out order, up to BATCH
//! calls per transaction. Each call runs in a subtransaction of its own
//! (`handler_call`), and the delivery's row is deleted (or its failure
//! recorded) in the same transaction as the handler's effects: they
//! commit together or not at all, so a handler's effects happen exactly
//! once even when the worker is killed mid-batch. Attempts count
//! failures, not calls a crash interrupted.
//!
//! An ordered subscription's deliveries with one key are handled one at
//! a time, in fan-out order (the order their messages became visible):
//! only the oldest delivery of a key is ever due.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys;

use crate::error::WardenError;
use crate::privileged::as_superuser;
use crate::workers::{
    register_task, wake_task_on_commit, Task, TaskContext, TaskId, TaskReport, TaskSpec,
};

use super::delivery_state::{announce_waiting, record_failure, spi_error, Failure, Recorded};
use super::handler_call::{call_handler, HandlerCall};

/// Handler calls per transaction. Each is a subtransaction; staying well
/// under 64 (PGPROC_MAX_CACHED_SUBXIDS) keeps every snapshot taken while
/// the batch runs from overflowing to pg_subtrans lookups.
const BATCH: i64 = 32;
/// Longest sleep with nothing due (a fan-out wakes the task anyway): the
/// sweep of lapsed leases and unannounced dead letters runs this often.
const IDLE: Duration = Duration::from_secs(5);
/// How often lapsed pull leases that ran out of attempts are dead-lettered
/// and unpublished dead-letter notices retried.
const SWEEP_EVERY_US: i64 = 5_000_000;

static TASK: OnceLock<TaskId> = OnceLock::new();

/// The earliest `next_at` the fan-out wrote into the future (a message's
/// deliver_after), for the dispatcher's next wake-up; i64::MAX: none.
/// Both tasks run in the same worker process.
static FANNED_OUT_DUE: AtomicI64 = AtomicI64::new(i64::MAX);

pub fn register() {
    let id = register_task(TaskSpec {
        name: "outbox_dispatch",
        runs_on_any_wakeup: false,
        make: || Box::<Dispatch>::default(),
        holds_slot: None,
    });
    let _ = TASK.set(id);
}

/// Runs the dispatcher when the current transaction commits.
pub fn wake_at_commit() {
    if let Some(id) = TASK.get() {
        wake_task_on_commit(*id);
    }
}

/// The fan-out wrote deliveries not due before `at` (Postgres clock).
pub fn due_later(at: i64) {
    FANNED_OUT_DUE.fetch_min(at, Ordering::Relaxed);
}

#[derive(Default)]
struct Dispatch {
    /// Each subscription's low-water mark (`low_water`), as last set.
    marks: Vec<(i32, i64)>,
    last_marks: i64,
    last_full_marks: i64,
    /// The marks of the recent full recomputes, each with when it was
    /// published (oldest first), and when the oldest transaction with an
    /// id then running began at the last one (None: unknown): where the
    /// next full recompute starts (`full_marks_start`).
    full_marks_history: VecDeque<(i64, Vec<(i32, i64)>)>,
    full_marks_from: Option<i64>,
    /// When the earliest delivery not yet due becomes due; None: unknown
    /// (look it up).
    next_due: Option<i64>,
    /// The last run found a full batch: run again at once.
    more: bool,
    last_sweep: i64,
    /// Where the next lapsed-lease sweep starts, per pull subscription,
    /// when not at its mark.
    sweep_from: Vec<(i32, i64)>,
    /// Where the next look at each pull subscription's lease rows starts
    /// (`pull::look_after_leases`).
    leases_from: Vec<(i32, i64)>,
    last_lease_look: i64,
    last_full_lease_look: i64,
    /// Where the next look "from the start" starts: when the oldest
    /// transaction with an id began at the last one (None: at the first
    /// entry; `pull::look_after_leases`).
    full_lease_look_from: Option<i64>,
    /// The last look left lapsed leases to give back.
    lapsed_left: bool,
}

/// A due delivery, with its message as the handler gets it.
struct Due {
    subscription_id: i32,
    id: i64,
    attempts: i32,
    handler: Option<pg_sys::Oid>,
    owner: pg_sys::Oid,
    max_attempts: i32,
    backoff_us: i64,
    max_backoff_us: i64,
    timeout_ms: i32,
    tenant: Option<String>,
    is_dead_letter: bool,
    /// An ordered subscription's delivery with a key: handling it makes
    /// the next one of its key due.
    keyed: bool,
    message_id: i64,
    msg: pgrx::composite_type!('static, "warden.message"),
    /// The row's ctid: locked by this run, so its own until commit.
    tid: pg_sys::ItemPointerData,
}

impl Task for Dispatch {
    fn interval(&self) -> Duration {
        if self.more {
            return Duration::ZERO;
        }
        let now = crate::workers::now_us();
        let mut until = match self.next_due {
            Some(at) => at.saturating_sub(now).clamp(0, IDLE.as_micros() as i64),
            None => 0,
        };
        if self.lapsed_left || super::low_water::leases_may_be_live(now, LEASE_GRACE_US) {
            // look at the leases again before claims rely on the last look
            until = until.min(
                (self.last_lease_look + LEASE_LOOK_EVERY_US)
                    .saturating_sub(now)
                    .max(0),
            );
        }
        if super::low_water::claimed() {
            // pull consumers are busy: keep their marks close behind them
            until = until.min(
                (self.last_marks + MARKS_EVERY_US)
                    .saturating_sub(now)
                    .max(0),
            );
        }
        Duration::from_micros(until as u64)
    }

    fn start(&mut self, _ctx: &TaskContext) -> Result<(), WardenError> {
        match super::hard_deadline::take_ended() {
            Some((subscription_id, id)) => as_superuser(|| record_ended_call(subscription_id, id)),
            None => Ok(()),
        }
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        if crate::heap_append::warden_relation(c"dead_letters") == pg_sys::InvalidOid {
            // the database's pg_warden predates the dispatcher
            self.next_due = Some(crate::workers::now_us() + IDLE.as_micros() as i64);
            return Ok(TaskReport::default());
        }
        // a run that failed after its handlers ran (its transaction
        // aborted) did not get to forget what they left in the session
        forget_session_state();
        let started = crate::workers::now_us();
        let fanned = FANNED_OUT_DUE.swap(i64::MAX, Ordering::Relaxed);
        if fanned != i64::MAX {
            self.next_due = Some(self.next_due.map_or(fanned, |d| d.min(fanned)));
        }
        let look_up_next_due = self.next_due.is_none_or(|at| at <= started);
        // should this run fail: try again in a second, not at once
        self.more = false;
        if look_up_next_due {
            self.next_due = Some(started + 1_000_000);
        }
        if started.saturating_sub(self.last_marks) >= MARKS_EVERY_US {
            let full = started.saturating_sub(self.last_full_marks) >= FULL_MARKS_EVERY_US;
            let current = self.current_marks();
            let oldest = if full {
                as_superuser(oldest_writing_transaction_start)?
            } else {
                None
            };
            let from = if full {
                self.full_marks_start()
            } else {
                current
            };
            self.marks = as_superuser(|| low_water_marks(&from))?;
            super::low_water::publish(&self.marks);
            if full {
                // after the read: a transaction that begins later draws
                // ids above these marks
                self.full_marks_history
                    .push_back((crate::workers::now_us(), self.marks.clone()));
                if self.full_marks_history.len() > FULL_MARKS_KEPT {
                    self.full_marks_history.pop_front();
                }
                self.full_marks_from = oldest;
            }

            self.last_marks = started;
            if full {
                self.last_full_marks = started;
                as_superuser(super::persist_delivered_at)?;
            }
        }
        let full_look =
            started.saturating_sub(self.last_full_lease_look) >= FULL_LEASE_LOOK_EVERY_US;
        if full_look
            || (started.saturating_sub(self.last_lease_look) >= LEASE_LOOK_EVERY_US
                && (self.lapsed_left
                    || super::low_water::leases_may_be_live(started, LEASE_GRACE_US)))
        {
            let from: &[(i32, i64)] = if full_look { &[] } else { &self.leases_from };
            // before the look: what runs now is what the next full look
            // must reach back to
            let oldest = if full_look {
                as_superuser(oldest_writing_transaction_start)?
            } else {
                None
            };
            (self.leases_from, self.lapsed_left) =
                as_superuser(|| super::pull::look_after_leases(from, self.full_lease_look_from))?;
            self.last_lease_look = started;
            if full_look {
                self.last_full_lease_look = started;
                self.full_lease_look_from = oldest;
            }
        }
        let marks = &self.marks;
        let due = as_superuser(|| read_due(marks))?;
        let taken = due.len() as i64;
        self.more = taken >= BATCH;
        // one owner per transaction: what a handler leaves in the session
        // until commit (an open cursor, a deferred constraint mode) is
        // then only ever seen by code running with the same rights
        let owner = due.first().map(|d| d.owner);
        let pinned = match owner {
            Some(o) => as_superuser(|| pinned_tenant(o))?,
            None => None,
        };
        let mut handled_rows = Handled::default();
        // each handler checked once per run (one transaction of at most a
        // second, one owner): catalog changes committed meanwhile are seen
        // by the next run
        let mut verdicts: Vec<(pg_sys::Oid, Option<String>)> = Vec::new();
        // the earliest retry this run scheduled (full jitter may make it
        // due at once, before the look-up below could see it as future)
        let mut retry_at = i64::MAX;
        for d in due {
            if Some(d.owner) != owner
                || crate::workers::now_us().saturating_sub(started) > RUN_BUDGET_US
            {
                // another owner's, or this run has had its share of time
                // (the worker's other tasks wait for it): the next run
                self.more = true;
                continue;
            }
            let outcome = match d.handler {
                None => Err("the handler function no longer exists".to_string()),
                Some(handler) => {
                    let verdict = match verdicts.iter().find(|v| v.0 == handler) {
                        Some(v) => v.1.clone(),
                        None => {
                            let v = as_superuser(|| {
                                super::subscribe::handler_verdict(handler, d.owner)
                            })
                            .map_err(spi_error)?;
                            verdicts.push((handler, v.clone()));
                            v
                        }
                    };
                    match verdict.as_deref() {
                        Some("ok") if pinned.is_some() && pinned != d.tenant => Err(format!(
                            "the subscription's owner is pinned to tenant {}; this message is another tenant's",
                            pinned.as_deref().unwrap_or_default()
                        )),
                        Some("ok") => call_handler(
                            &HandlerCall {
                                handler,
                                owner: d.owner,
                                timeout_ms: d.timeout_ms,
                                tenant: d.tenant.as_deref(),
                                pinned: pinned.as_deref(),
                                message_id: d.message_id,
                                subscription_id: d.subscription_id,
                                delivery_id: d.id,
                            },
                            d.msg,
                        )
                        .map_err(|f| format!("{} (SQLSTATE {})", f.message, f.sqlstate)),
                        Some(rule) => Err(refusal(rule).to_string()),
                        None => Err("the handler function no longer exists".to_string()),
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    handled_rows.tids.push(d.tid);
                    handled_rows.subscriptions.push(d.subscription_id);
                    handled_rows.ids.push(d.id);
                    // the key's next delivery is due now
                    self.more |= d.keyed;
                }
                Err(error) => {
                    let recorded = as_superuser(|| {
                        record_failure(&Failure {
                            subscription_id: d.subscription_id,
                            id: d.id,
                            failures: d.attempts + 1,
                            max_attempts: d.max_attempts,
                            topic_is_dead_letter: d.is_dead_letter,
                            backoff_us: d.backoff_us,
                            max_backoff_us: d.max_backoff_us,
                            error: &error,
                            retry_after_us: None,
                        })
                    })?;
                    if let Recorded::Retry(at) = recorded {
                        self.next_due = Some(self.next_due.map_or(at, |n| n.min(at)));
                        retry_at = retry_at.min(at);
                    }
                }
            }
        }
        if !handled_rows.ids.is_empty() {
            let mut subscriptions = handled_rows.subscriptions.clone();
            subscriptions.sort_unstable();
            subscriptions.dedup();
            // in the transaction of the handlers' effects
            as_superuser(|| handled(handled_rows))?;
            as_superuser(|| super::mark_delivered(&subscriptions))?;
        }
        if owner.is_some() {
            // what outlives a transaction: cursors WITH HOLD, prepared
            // statements, LISTEN, session advisory locks
            forget_session_state();
        }
        let now = crate::workers::now_us();
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY_US {
            self.last_sweep = now;
            let from: Vec<(i32, i64)> = marks
                .iter()
                .map(|&(sid, mark)| {
                    let cursor = self.sweep_from.iter().find(|c| c.0 == sid).map(|c| c.1);
                    (sid, cursor.map_or(mark, |c| c.max(mark)))
                })
                .collect();
            self.sweep_from = as_superuser(|| -> Result<Vec<(i32, i64)>, WardenError> {
                let next = super::pull::dead_letter_lapsed_leases(&from)?;
                announce_waiting(100)?;
                Ok(next)
            })?;
        }
        if look_up_next_due {
            // retries this run scheduled are in the table too
            let from = self.current_marks();
            let later = as_superuser(|| next_due(&from))?.unwrap_or(now + IDLE.as_micros() as i64);
            self.next_due = Some(later.min(retry_at));
        }
        Ok(TaskReport { backlog: taken })
    }
}

/// How often the low-water marks move up (while claims come, the worker
/// wakes for it: at 30 000 messages/s a claim then steps over some 600
/// deleted entries, two index pages, not a second's worth), and are
/// recomputed from the start of each subscription (for a replayed
/// delivery whose id was drawn before its mark moved past it).
const MARKS_EVERY_US: i64 = 20_000;

/// How often the worker looks at the pull leases while one may be live
/// (well within `pull::LEASE_LOOK_AHEAD_US`), and how long after the
/// last lease's end it keeps looking; and how often it looks from the
/// start (for a claim that committed long after its lease had ended).
const LEASE_LOOK_EVERY_US: i64 = 250_000;
const LEASE_GRACE_US: i64 = 2_000_000;
const FULL_LEASE_LOOK_EVERY_US: i64 = 60_000_000;
const FULL_MARKS_EVERY_US: i64 = 10_000_000;
/// Full recomputes remembered (ten minutes of them): a transaction with
/// an id older than that makes the next full recompute start at the
/// first delivery.
const FULL_MARKS_KEPT: usize = 60;

/// Each subscription's first live delivery id at or above its old mark
/// (`from`; none: from the start), or when it has none, the next id the
/// sequence gives.
fn low_water_marks(from: &[(i32, i64)]) -> Result<Vec<(i32, i64)>, WardenError> {
    let sids: Vec<i32> = from.iter().map(|m| m.0).collect();
    let marks: Vec<i64> = from.iter().map(|m| m.1).collect();
    pgrx::Spi::connect(|client| {
        client
            .select(
                "SELECT s.id,
                        COALESCE((SELECT d.id FROM warden.outbox_deliveries d
                                   WHERE d.subscription_id OPERATOR(pg_catalog.=) s.id
                                     AND d.id OPERATOR(pg_catalog.>=) COALESCE(w.mark, 0)
                                   ORDER BY d.id LIMIT 1),
                                 (SELECT CASE WHEN q.is_called THEN q.last_value OPERATOR(pg_catalog.+) 1 ELSE q.last_value END
                                    FROM warden.outbox_deliveries_id_seq q))
                   FROM warden.outbox_subscriptions s
                   LEFT JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.int8[])) w(sid, mark)
                     ON w.sid OPERATOR(pg_catalog.=) s.id",
                None,
                &[sids.into(), marks.into()],
            )?
            .map(|row| Ok((row.get::<i32>(1)?.unwrap_or(0), row.get::<i64>(2)?.unwrap_or(0))))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)
}

impl Dispatch {
    /// Where each mark is now: a nack or a lapsed lease may have lowered
    /// it in shared memory since the worker last moved it.
    fn current_marks(&self) -> Vec<(i32, i64)> {
        self.marks
            .iter()
            .map(|&(sid, m)| (sid, m.min(super::low_water::mark(sid))))
            .collect()
    }

    /// Where a full recompute of the marks starts, per subscription (one
    /// missing: at its first delivery). A delivery whose id was drawn
    /// before its mark moved past it and that committed after (a
    /// delivery given back or replayed) belongs to a transaction that ran
    /// at the last full recompute or began after it; such a transaction
    /// drew its ids after it began, above the marks published before
    /// that. So the marks of the latest full recompute published before
    /// the oldest transaction with an id then running began are a safe
    /// start (those before the last full recompute were found by it, by
    /// the same argument). From the first delivery, under a held horizon,
    /// each full recompute read every delivery handled since the horizon
    /// was taken.
    fn full_marks_start(&self) -> Vec<(i32, i64)> {
        let Some(oldest) = self.full_marks_from else {
            return Vec::new();
        };
        self.full_marks_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= oldest)
            .map(|(_, marks)| marks.clone())
            .unwrap_or_default()
    }
}

/// When the oldest transaction with an id in this database began
/// (Postgres microseconds; now when there is none), or None while a
/// prepared transaction of this database waits (it may be older than
/// anything running) or a start is not known (`track_activities`
/// off).
fn oldest_writing_transaction_start() -> Result<Option<i64>, WardenError> {
    let oldest = pgrx::Spi::connect(|client| {
        client
            .select(
                "SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_prepared_xacts p
                                           WHERE p.database OPERATOR(pg_catalog.=) pg_catalog.current_database())
                             THEN NULL
                             ELSE (SELECT CASE WHEN pg_catalog.bool_or(a.xact_start IS NULL) THEN NULL
                                               ELSE COALESCE(pg_catalog.min(a.xact_start), pg_catalog.clock_timestamp()) END
                                     FROM pg_catalog.pg_stat_activity a
                                    WHERE a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
                                      AND a.backend_xid IS NOT NULL) END",
                None,
                &[],
            )?
            .first()
            .get_one::<TimestampWithTimeZone>()
    })
    .map_err(spi_error)?;
    Ok(oldest.map(pg_sys::TimestampTz::from))
}

/// The previous worker was ended at the hard deadline of this
/// delivery's handler call: a failed attempt, like a timeout.
fn record_ended_call(subscription_id: i32, id: i64) -> Result<(), WardenError> {
    let row = pgrx::Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT d.attempts, s.max_attempts, s.backoff, s.max_backoff,
                    m.topic OPERATOR(pg_catalog.=) 'warden.dead_letter'
               FROM warden.outbox_deliveries d
               JOIN warden.outbox_subscriptions s ON s.id OPERATOR(pg_catalog.=) d.subscription_id
               JOIN warden.outbox_messages m ON m.id OPERATOR(pg_catalog.=) d.message_id
              WHERE d.subscription_id OPERATOR(pg_catalog.=) $1 AND d.id OPERATOR(pg_catalog.=) $2
                FOR UPDATE OF d",
            Some(1),
            &[subscription_id.into(), id.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok::<_, pgrx::spi::Error>(Some((
            row.get::<i32>(1)?.unwrap_or(0),
            row.get::<i32>(2)?.unwrap_or(1),
            super::micros(row.get::<Interval>(3)?),
            super::micros(row.get::<Interval>(4)?),
            row.get::<bool>(5)?.unwrap_or(false),
        )))
    })
    .map_err(spi_error)?;
    // handled or unsubscribed meanwhile: nothing to record
    let Some((attempts, max_attempts, backoff_us, max_backoff_us, is_dead_letter)) = row else {
        return Ok(());
    };
    let error = format!(
        "the handler went on {} s past its timeout (it caught the cancel); the worker was stopped",
        super::hard_deadline::GRACE_MS / 1000
    );
    record_failure(&Failure {
        subscription_id,
        id,
        failures: attempts + 1,
        max_attempts,
        topic_is_dead_letter: is_dead_letter,
        backoff_us,
        max_backoff_us,
        error: &error,
        retry_after_us: None,
    })?;
    Ok(())
}

/// Handler time one run may take before it commits and lets the worker's
/// other tasks run (a run may still overrun it by one handler's timeout).
const RUN_BUDGET_US: i64 = 1_000_000;

/// The tenant `role`'s sessions are pinned to (`ALTER ROLE ... SET
/// warden.tenant`, for this database or all), if any.
fn pinned_tenant(role: pg_sys::Oid) -> Result<Option<String>, WardenError> {
    crate::kept_plans::read_one::<String>(
        "SELECT (SELECT pg_catalog.substr(c, 15)
                   FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
                  WHERE s.setrole OPERATOR(pg_catalog.=) $1
                    AND s.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[0, (SELECT d.oid FROM pg_catalog.pg_database d
                                                  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())])
                    AND pg_catalog.starts_with(c, 'warden.tenant=')
                  ORDER BY s.setdatabase DESC LIMIT 1)",
        &[role.into()],
    )
    .map(|t| t.filter(|t| !t.is_empty()))
    .map_err(spi_error)
}

/// Drops what handlers may have left in the worker's session beyond
/// their transaction, so no later handler (of another role) finds it:
/// what `CLOSE ALL; DEALLOCATE ALL; UNLISTEN *;
/// SELECT pg_advisory_unlock_all()` does, without parsing that at every
/// run (it was a twentieth of the push path's time).
fn forget_session_state() {
    // SAFETY: the functions those commands call, in a transaction, outside
    // any portal a handler could still be running.
    unsafe {
        pg_sys::PortalHashTableDeleteAll();
        pg_sys::DropAllPreparedStatements();
        // guarded as pg_sys's own: an ERROR it raises becomes a Rust panic
        pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| Async_UnlistenAll());
        pg_sys::LockReleaseSession(pg_sys::USER_LOCKMETHOD as pg_sys::LOCKMETHODID);
    }
}

// UNLISTEN *'s function, exported by the server but not in pgrx's
// bindings
unsafe extern "C-unwind" {
    fn Async_UnlistenAll();
}

/// What the worker says when a handler may no longer be called as its
/// subscription's owner (handler_verdict's rules).
fn refusal(rule: &str) -> &'static str {
    match rule {
        "shape" => "the handler is no longer a function (msg warden.message) RETURNS void",
        "temporary" => "the handler is a temporary function",
        "owner" => {
            "the handler now belongs to a role whose rights the subscription's owner does not have"
        }
        "execute" => "the subscription's owner may no longer execute the handler",
        "superuser" => "the subscription's owner is a superuser; a handler never runs as one",
        "definer" => "the handler is now SECURITY DEFINER and belongs to another role",
        "admin" => "the subscription's owner is no longer a member of warden_admin",
        _ => "the handler may not be called",
    }
}

/// Up to BATCH due deliveries of handler subscriptions that are not
/// paused, oldest first, locked (a concurrent unsubscribe or replay waits
/// for this run), with their messages. An ordered key's look for an
/// earlier delivery starts at the mark as well (see the claim's).
fn read_due(marks: &[(i32, i64)]) -> Result<Vec<Due>, WardenError> {
    let sids: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let lows: Vec<i64> = marks.iter().map(|m| m.1).collect();
    // each subscription's deliveries in id order from its mark, whatever
    // the statistics say (as claim does): a plan that sorts them reads
    // the whole backlog on every run
    crate::guc::plan_for_index_order();
    // a locking read: SPI runs it as a volatile statement
    pgrx::Spi::connect_mut(|client| {
        let rows = crate::kept_plans::update(
            client,
            "SELECT d.subscription_id, d.id, d.attempts,
                    s.handler_oid, s.owner::pg_catalog.oid,
                    s.max_attempts,
                    s.backoff, s.max_backoff, s.handler_timeout,
                    m.tenant, m.topic OPERATOR(pg_catalog.=) 'warden.dead_letter', m.id,
                    d.ordered_key IS NOT NULL,
                    ROW(m.id, m.topic, m.key, m.payload, m.headers, m.tenant, m.published_at,
                        d.attempts OPERATOR(pg_catalog.+) 1, s.name)::warden.message,
                    d.ctid
               FROM (SELECT s.id, s.name, s.owner, s.max_attempts, s.backoff, s.max_backoff,
                            s.handler_timeout,
                            pg_catalog.to_regprocedure(s.handler)::pg_catalog.oid AS handler_oid
                       FROM warden.outbox_subscriptions s
                      WHERE s.handler IS NOT NULL AND NOT s.paused
                     OFFSET 0) s
              CROSS JOIN LATERAL (
                    SELECT COALESCE(
                             (SELECT w.mark FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int4[]),
                                                            pg_catalog.unnest($3::pg_catalog.int8[])) w(sid, mark)
                               WHERE w.sid OPERATOR(pg_catalog.=) s.id), 0) AS mark) k
              CROSS JOIN LATERAL (
                    SELECT d.ctid, d.subscription_id, d.id, d.message_id, d.attempts, d.ordered_key
                      FROM warden.outbox_deliveries d
                     WHERE d.subscription_id OPERATOR(pg_catalog.=) s.id
                       AND d.id OPERATOR(pg_catalog.>=) k.mark
                       AND d.next_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                       AND d.failed_at IS NULL
                       AND (d.ordered_key IS NULL OR NOT EXISTS (
                             SELECT FROM warden.outbox_deliveries e
                              WHERE e.subscription_id OPERATOR(pg_catalog.=) d.subscription_id
                                AND e.ordered_key OPERATOR(pg_catalog.=) d.ordered_key
                                AND e.id OPERATOR(pg_catalog.>=) k.mark
                                AND e.id OPERATOR(pg_catalog.<) d.id
                                AND e.failed_at IS NULL))
                     ORDER BY d.id
                     LIMIT $1
                       FOR UPDATE SKIP LOCKED) d
               JOIN warden.outbox_messages m ON m.id OPERATOR(pg_catalog.=) d.message_id
              ORDER BY d.id
              LIMIT $1",
            None,
            &[BATCH.into(), sids.into(), lows.into()],
        )?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(msg) = row.get::<pgrx::composite_type!('static, "warden.message")>(14)? else {
                continue;
            };
            due.push(Due {
                subscription_id: row.get::<i32>(1)?.unwrap_or(0),
                id: row.get::<i64>(2)?.unwrap_or(0),
                attempts: row.get::<i32>(3)?.unwrap_or(0),
                handler: row.get::<pg_sys::Oid>(4)?.filter(|o| *o != pg_sys::InvalidOid),
                owner: row.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
                max_attempts: row.get::<i32>(6)?.unwrap_or(1),
                backoff_us: super::micros(row.get::<Interval>(7)?),
                max_backoff_us: super::micros(row.get::<Interval>(8)?),
                // statement_timeout's unit, rounded up (subscribe bounds it to a day)
                timeout_ms: i32::try_from((super::micros(row.get::<Interval>(9)?) + 999) / 1000)
                    .unwrap_or(i32::MAX),
                tenant: row.get::<String>(10)?,
                is_dead_letter: row.get::<bool>(11)?.unwrap_or(false),
                message_id: row.get::<i64>(12)?.unwrap_or(0),
                keyed: row.get::<bool>(13)?.unwrap_or(false),
                msg,
                tid: row.get::<pg_sys::ItemPointerData>(15)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(due)
    })
    .map_err(spi_error)
}

/// The deliveries a run handled.
#[derive(Default)]
struct Handled {
    tids: Vec<pg_sys::ItemPointerData>,
    subscriptions: Vec<i32>,
    ids: Vec<i64>,
}

/// The deliveries were handled: they go, in the transaction of the
/// handlers' effects. By ctid (no index descent per row): the rows are
/// locked by this run, so no other transaction can have moved them. A
/// ctid is a place in the table's current file, though: a handler whose
/// owner may write `warden.outbox_deliveries` could have rewritten its
/// own row (the version read is then hidden), and one whose owner may
/// CLUSTER it (MAINTAIN, from PostgreSQL 17) could have moved every row
/// (the ctids then point at others'). So a row goes only if its id and
/// subscription are handled ones too (delivery ids come from one
/// sequence), and whatever the ctids missed goes by key.
fn handled(rows: Handled) -> Result<(), WardenError> {
    pgrx::Spi::connect_mut(|client| {
        let deleted = crate::kept_plans::update(
            client,
            "DELETE FROM warden.outbox_deliveries d
              WHERE d.ctid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.tid[])
                AND d.subscription_id OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.int4[])
                AND d.id OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.int8[])",
            None,
            &[
                rows.tids.into(),
                rows.subscriptions.clone().into(),
                rows.ids.clone().into(),
            ],
        )?
        .len();
        if deleted < rows.ids.len() {
            crate::kept_plans::update(
                client,
                "DELETE FROM warden.outbox_deliveries d
                  USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.int8[])) h(sid, id)
                  WHERE d.subscription_id OPERATOR(pg_catalog.=) h.sid AND d.id OPERATOR(pg_catalog.=) h.id",
                None,
                &[rows.subscriptions.into(), rows.ids.into()],
            )?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(spi_error)
}

/// When the earliest delivery of a handler subscription that is not due
/// yet becomes due (Postgres clock), if any.
/// Per subscription (the primary key's range): a join could scan every
/// delivery, pull subscriptions' backlogs included, once a second. From
/// each subscription's mark (`marks`), as the read of due deliveries: from
/// the first entry, under a held xmin horizon, every look read every
/// delivery handled since the horizon was taken.
fn next_due(marks: &[(i32, i64)]) -> Result<Option<i64>, WardenError> {
    crate::guc::plan_for_index_order();
    let sids: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let lows: Vec<i64> = marks.iter().map(|m| m.1).collect();
    crate::spi_read::read_one::<pgrx::datum::TimestampWithTimeZone>(
        "SELECT pg_catalog.min(x.next_at)
           FROM warden.outbox_subscriptions s
          CROSS JOIN LATERAL (
                SELECT pg_catalog.min(d.next_at) AS next_at FROM warden.outbox_deliveries d
                 WHERE d.subscription_id OPERATOR(pg_catalog.=) s.id
                   AND d.id OPERATOR(pg_catalog.>=) COALESCE(
                         (SELECT w.mark FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]),
                                                        pg_catalog.unnest($2::pg_catalog.int8[])) w(sid, mark)
                           WHERE w.sid OPERATOR(pg_catalog.=) s.id), 0)
                   AND d.failed_at IS NULL
                   AND d.next_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()) x
          WHERE s.handler IS NOT NULL AND NOT s.paused",
        &[sids.into(), lows.into()],
    )
    .map(|at| at.map(pg_sys::TimestampTz::from))
    .map_err(spi_error)
}
