//! The per-database worker: connects, checks that the extension is
//! installed (exits 0 if not, telling the launcher not to restart it),
//! runs each registered task's start-up recovery, then loops on its latch
//! running due and woken tasks, each in its own transaction. SIGTERM is
//! Postgres' own `die`: it interrupts a running task at its next
//! interrupt check (a long apply does not hold up a fast shutdown) and
//! ends the process; SIGHUP reloads settings; DROP EXTENSION is noticed
//! within `warden.worker_naptime`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use warden_core::workers::{latch_wait_ms, next_wait, restart_delay, TaskClock};

use crate::guc;

use super::catalog::extension_installed;
use super::fault;
use super::registry;
use super::shmem::{my_latch, set_latch, wake_state, SlotState, WakeState, SHARED};
use super::task::{now, run_task, start_task, Task, TaskContext};

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn warden_worker_main(arg: pg_sys::Datum) {
    let dboid = arg.value() as u32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    die_on_sigterm();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(dboid)), None);
    // SAFETY: registers a callback that runs once at process exit.
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(dboid)) };

    if !in_transaction(extension_installed) {
        mark_absent(dboid);
        return; // exit 0: nothing to restart
    }

    let specs = registry::tasks();
    let mut tasks: Vec<Box<dyn Task>> = specs.iter().map(|spec| (spec.make)()).collect();
    let mut clocks: Vec<TaskClock> = tasks
        .iter()
        .map(|t| {
            TaskClock::new(t.interval().as_micros() as i64)
                .with_wake_gap(t.wake_gap().as_micros() as i64)
        })
        .collect();
    let slot_index = {
        let mut shared = SHARED.exclusive();
        if shared.slot_or_claim(dboid, SlotState::Wanted).is_none() {
            pgrx::warning!("pg_warden worker: no free slot for database {dboid}; raise the number of tracked databases");
            return;
        }
        let index = shared.index_of(dboid).expect("claimed above");
        let slot = &mut shared.slots[index];
        if slot.state() == SlotState::Excluded {
            return; // warden.databases changed while we started
        }
        slot.set_state(SlotState::Wanted);
        slot.stop_requested = false;
        // SAFETY: reads our pid.
        slot.pid = unsafe { pg_sys::MyProcPid };
        slot.started_at = now();
        slot.task_count = tasks.len() as u32;
        wake_state(index).publish(dboid, my_latch());
        for (t, spec) in shared.tasks_mut(index).iter_mut().zip(specs) {
            if t.name() != spec.name {
                // SAFETY: a TaskSlot is valid zeroed.
                *t = unsafe { std::mem::zeroed() };
                t.set_name(spec.name);
            }
        }
        index
    };
    let context = |i: usize| TaskContext {
        dboid,
        slot_index,
        task_index: i,
        name: specs[i].name,
    };
    pgrx::log!("pg_warden worker started for database {dboid}");
    for (i, task) in tasks.iter_mut().enumerate() {
        start_task(task.as_mut(), &context(i));
    }

    let mut last_extension_check = now();
    let wake = wake_state(slot_index);
    loop {
        fault::worker_fault_point(dboid);
        // a stop request first: the DDL that asked for it signals us next
        if take_stop_request(dboid) {
            pgrx::log!("pg_warden worker for database {dboid}: stepping aside for a database-level command");
            return;
        }
        pg_sys::check_for_interrupts!();
        // the launcher gave our slot away (the database went out of reach
        // while it could not stop us): this worker has no business left
        if wake.dboid.load(Ordering::Acquire) != dboid {
            pgrx::log!("pg_warden worker for database {dboid}: its slot was given away, stopping");
            return;
        }

        let now_us = now();
        // what committed transactions asked for, taken without the lock
        take_wake_ups(wake, &mut clocks, now_us);
        for (i, task) in tasks.iter_mut().enumerate() {
            if clocks[i].is_due(now_us) {
                let started = now();
                run_task(task.as_mut(), &context(i));
                let finished = now();
                clocks[i].interval_us = task.interval().as_micros() as i64;
                clocks[i].ran(started, finished);
                let mut shared = SHARED.exclusive();
                if shared.slots[slot_index].dboid == dboid {
                    shared.tasks_mut(slot_index)[i].next_run_at =
                        clocks[i].next_due_us.unwrap_or(0);
                }
            }
            pg_sys::check_for_interrupts!();
        }

        let naptime = guc::worker_naptime();
        if now() - last_extension_check >= naptime.as_micros() as i64 {
            last_extension_check = now();
            if !in_transaction(extension_installed) {
                pgrx::log!("pg_warden worker for database {dboid}: extension dropped, stopping");
                mark_absent(dboid);
                return;
            }
        }

        // a wake-up that came while a task waited on a lock may have had
        // its latch reset by that wait: its bits say so
        let now_us = now();
        take_wake_ups(wake, &mut clocks, now_us);
        let wait_us = next_wait(now_us, &clocks, naptime.as_micros() as i64);
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(latch_wait_ms(wait_us)))) {
            break; // postmaster death
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: standard reload in a background worker.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    pgrx::log!("pg_warden worker for database {dboid} shutting down");
}

/// Takes the wake-ups asked for since the last look into the tasks'
/// clocks. A task woken within its wake gap keeps its bit set until it
/// runs, so the commits that would wake it again leave our latch alone.
fn take_wake_ups(wake: &WakeState, clocks: &mut [TaskClock], now_us: i64) {
    let urgent = wake.urgent.swap(0, Ordering::AcqRel);
    let woken = wake.tasks.swap(0, Ordering::AcqRel) | urgent;
    let mut deferred = 0u64;
    for (i, clock) in clocks.iter_mut().enumerate() {
        if urgent & (1 << i) != 0 {
            clock.woken_now(now_us);
        } else if woken & (1 << i) != 0 {
            clock.woken(now_us);
        }
        if clock.wake_pending {
            deferred |= 1 << i;
        }
    }
    if deferred != 0 {
        wake.tasks.fetch_or(deferred, Ordering::AcqRel);
    }
}

/// Postgres' backend SIGTERM handler (as worker_spi installs it): sets
/// ProcDiePending, which the next CHECK_FOR_INTERRUPTS acts on, also
/// inside a running statement.
fn die_on_sigterm() {
    // SAFETY: replaces a signal handler with one that calls Postgres' own.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(libc::SIGTERM, Some(on_sigterm));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(libc::SIGTERM, Some(on_sigterm));
    }
}

// pgrx wraps `die` in a Rust function; a signal handler must call the C
// symbol itself
unsafe extern "C-unwind" {
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// Set by SIGTERM: the exit that follows (FATAL, status 1) is a stop,
/// not a failure. (ProcDiePending is cleared before the FATAL is raised.)
static TERMINATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

unsafe extern "C-unwind" fn on_sigterm(signal: std::ffi::c_int) {
    // an atomic store is async-signal-safe
    TERMINATED.store(true, Ordering::Relaxed);
    // SAFETY: Postgres' handler, as it would have been installed.
    unsafe { postgres_die(signal) };
}

fn in_transaction<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: standard transaction bracket; an ERROR inside propagates
    // and ends the worker with exit status 1 (the launcher restarts it).
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = f();
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    r
}

fn take_stop_request(dboid: u32) -> bool {
    let mut shared = SHARED.exclusive();
    shared
        .slot_mut(dboid)
        .is_some_and(|slot| std::mem::replace(&mut slot.stop_requested, false))
}

fn mark_absent(dboid: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(dboid) {
        slot.set_state(SlotState::Absent);
        slot.task_count = 0;
    }
}

/// A worker that ran at least this long before failing starts its restart
/// back-off from scratch.
const HEALTHY_RUN_US: i64 = 60_000_000;

/// Exit bookkeeping: clear our pid and latch, count a failure (non-zero
/// exit while the database still wants a worker) with its back-off, and
/// wake the launcher so it restarts us or forgets us.
#[pg_guard]
unsafe extern "C-unwind" fn on_exit(code: i32, arg: pg_sys::Datum) {
    let dboid = arg.value() as u32;
    // An error may have left our lock held; never self-deadlock on exit.
    unsafe { pg_sys::LWLockReleaseAll() };
    // SIGTERM ends the process through FATAL (exit 1): that is a stop
    // (shutdown, pg_terminate_backend, DROP DATABASE ... WITH (FORCE)),
    // not a failure to back off from
    let failed = code != 0 && !TERMINATED.load(Ordering::Relaxed);
    let launcher_latch = {
        let mut shared = SHARED.exclusive();
        let now_us = now();
        if let Some(index) = shared.index_of(dboid) {
            let slot = &mut shared.slots[index];
            // SAFETY: reads our pid.
            if slot.pid == unsafe { pg_sys::MyProcPid } {
                slot.pid = 0;
                let wake = wake_state(index);
                if wake.dboid.load(Ordering::Acquire) == dboid {
                    wake.dboid.store(0, Ordering::Release);
                    wake.latch.store(0, Ordering::Release);
                }
            }
            slot.last_exit_at = now_us;
            if failed && slot.state() == SlotState::Wanted {
                let healthy = slot.started_at != 0 && now_us - slot.started_at >= HEALTHY_RUN_US;
                slot.consecutive_failures = if healthy {
                    1
                } else {
                    slot.consecutive_failures + 1
                };
                // never shorten a hold a database-level command asked for
                slot.next_start_at = slot
                    .next_start_at
                    .max(now_us + restart_delay(slot.consecutive_failures).as_micros() as i64);
            } else if !failed {
                slot.consecutive_failures = 0;
            }
        }
        shared.launcher_latch
    };
    set_latch(launcher_latch);
}
