//! The launcher: one static background worker, started after recovery.
//! It keeps the database slots in step with pg_database (new databases get
//! a probe; dropped or filtered-out ones are released and their workers
//! stopped), starts a worker for every slot that wants one, and restarts
//! workers that died, with back-off. CREATE EXTENSION wakes it at commit;
//! worker start and exit wake it through bgw_notify_pid.

use std::collections::HashMap;
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;

use warden_core::workers::restart_delay;

use crate::guc;

use super::catalog::list_databases;
use super::registry;
use super::shmem::{my_latch, set_latch, wake_state, SlotState, MAX_DATABASES, SHARED};
use super::task::now;

struct Handle {
    worker: DynamicBackgroundWorker,
    launched_at: i64,
}

struct Launcher {
    handles: HashMap<u32, Handle>,
    names: HashMap<u32, String>,
    warned_full: bool,
    warned_no_slots: bool,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn warden_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: the launcher reads only the shared catalog pg_database.
    BackgroundWorker::connect_worker_to_spi(None, None);
    {
        let mut shared = SHARED.exclusive();
        // SAFETY: reads our pid.
        shared.launcher_pid = unsafe { pg_sys::MyProcPid };
        shared.launcher_latch = my_latch();
    }
    pgrx::log!("pg_warden launcher started");

    let mut launcher = Launcher {
        handles: HashMap::new(),
        names: HashMap::new(),
        warned_full: false,
        warned_no_slots: false,
    };
    let mut last_scan = i64::MIN;
    loop {
        let naptime = guc::launcher_naptime();
        if now().saturating_sub(last_scan) >= naptime.as_micros() as i64 {
            launcher.rescan();
            last_scan = now();
        }
        let next_restart = launcher.reconcile();
        let mut wait = naptime.as_micros() as i64 - (now() - last_scan);
        if let Some(at) = next_restart {
            wait = wait.min(at - now());
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_micros(
            wait.clamp(1_000, i64::MAX) as u64
        ))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: standard reload in a background worker.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            last_scan = i64::MIN; // warden.databases may have changed
        }
    }
    // Our workers stop with the postmaster or are told to by their own
    // SIGTERM; exit 1 so an accidental pg_terminate_backend() of the
    // launcher is undone by the postmaster.
    pgrx::log!("pg_warden launcher stopping");
    {
        let mut shared = SHARED.exclusive();
        shared.launcher_pid = 0;
        shared.launcher_latch = 0;
    }
    unsafe { pg_sys::proc_exit(1) };
}

impl Launcher {
    /// Brings the slots in line with pg_database and `warden.databases`.
    fn rescan(&mut self) {
        let filter = guc::database_filter();
        let databases = list_databases();
        let mut to_stop = Vec::new();
        {
            let mut shared = SHARED.exclusive();
            for index in 0..shared.slots.len() {
                let slot = &shared.slots[index];
                if slot.state() == SlotState::Free {
                    continue;
                }
                let Some(db) = databases.iter().find(|d| d.oid == slot.dboid) else {
                    // dropped: forget it (the next owner's worker discards
                    // what it left in shared memory)
                    to_stop.push(slot.dboid);
                    shared.claim(index, 0, SlotState::Free);
                    continue;
                };
                let runs = db.eligible && filter.allows(&db.name);
                let slot = &mut shared.slots[index];
                if runs {
                    if slot.state() == SlotState::Excluded {
                        slot.set_state(SlotState::Probe);
                        slot.consecutive_failures = 0;
                        slot.next_start_at = 0;
                    }
                    continue;
                }
                // no worker may run here (left out by warden.databases, or
                // not taking connections): stop it, also one an earlier
                // launcher started (no handle here), through its latch
                if slot.state() != SlotState::Excluded {
                    to_stop.push(slot.dboid);
                    slot.stop_requested = true;
                    set_latch(wake_state(index).latch());
                }
                if registry::slot_held(index) {
                    // work queued under the slot's index (durable audit
                    // events) waits there for the database's next worker
                    slot.set_state(SlotState::Excluded);
                } else {
                    shared.claim(index, 0, SlotState::Free);
                }
            }
            let mut full = false;
            for db in databases
                .iter()
                .filter(|d| d.eligible && filter.allows(&d.name))
            {
                if shared.slot(db.oid).is_none()
                    && shared.slot_or_claim(db.oid, SlotState::Probe).is_none()
                {
                    full = true;
                }
            }
            if full && !self.warned_full {
                pgrx::warning!(
                    "pg_warden launcher: more than {MAX_DATABASES} databases; some get no worker. Restrict them with warden.databases."
                );
            }
            self.warned_full = full;
        }
        self.names = databases.into_iter().map(|d| (d.oid, d.name)).collect();
        for dboid in to_stop {
            if let Some(handle) = self.handles.remove(&dboid) {
                let _ = handle.worker.terminate();
            }
        }
    }

    /// Notices exited workers and starts the ones that are due. Returns
    /// the earliest pending restart time, if any.
    fn reconcile(&mut self) -> Option<i64> {
        let exited: Vec<u32> = self
            .handles
            .iter()
            .filter(|(_, h)| matches!(h.worker.pid(), Err(BackgroundWorkerStatus::Stopped)))
            .map(|(d, _)| *d)
            .collect();
        let now_us = now();
        let mut to_start = Vec::new();
        let mut next_restart: Option<i64> = None;
        {
            let mut shared = SHARED.exclusive();
            for dboid in &exited {
                let Some(handle) = self.handles.remove(dboid) else {
                    continue;
                };
                if let Some(index) = shared.index_of(*dboid) {
                    let slot = &mut shared.slots[index];
                    // A worker that got as far as its exit callback did its
                    // own accounting; one that died earlier (e.g. could not
                    // connect) is a failure to back off from.
                    if slot.last_exit_at < handle.launched_at {
                        slot.pid = 0;
                        wake_state(index).clear();
                        slot.consecutive_failures += 1;
                        slot.next_start_at =
                            now_us + restart_delay(slot.consecutive_failures).as_micros() as i64;
                    }
                }
            }
            for slot in shared
                .slots
                .iter()
                .filter(|s| matches!(s.state(), SlotState::Probe | SlotState::Wanted))
            {
                // pid set without a handle: a worker started by an earlier
                // launcher process, still running; its exit wakes us.
                if self.handles.contains_key(&slot.dboid) || slot.pid != 0 {
                    continue;
                }
                if slot.next_start_at <= now_us {
                    to_start.push(slot.dboid);
                } else {
                    next_restart = Some(
                        next_restart.map_or(slot.next_start_at, |t: i64| t.min(slot.next_start_at)),
                    );
                }
            }
        }
        if !to_start.is_empty() {
            // a database may have been dropped since the last scan (DROP
            // DATABASE stops its worker first): do not start a worker that
            // could only fail to connect
            self.rescan();
            let shared = SHARED.share();
            to_start.retain(|d| {
                shared
                    .slot(*d)
                    .is_some_and(|s| matches!(s.state(), SlotState::Probe | SlotState::Wanted))
            });
        }
        for dboid in to_start {
            let name = self
                .names
                .get(&dboid)
                .cloned()
                .unwrap_or_else(|| dboid.to_string());
            match start_worker(dboid, &name) {
                Some(worker) => {
                    self.handles.insert(
                        dboid,
                        Handle {
                            worker,
                            launched_at: now_us,
                        },
                    );
                    self.warned_no_slots = false;
                    let mut shared = SHARED.exclusive();
                    if let Some(slot) = shared.slot_mut(dboid) {
                        slot.starts += 1;
                    }
                }
                None => {
                    if !self.warned_no_slots {
                        pgrx::warning!(
                            "pg_warden launcher: could not start a worker for database \"{name}\"; raise max_worker_processes"
                        );
                        self.warned_no_slots = true;
                    }
                    let retry = now_us + Duration::from_secs(5).as_micros() as i64;
                    let mut shared = SHARED.exclusive();
                    if let Some(slot) = shared.slot_mut(dboid) {
                        slot.next_start_at = retry;
                    }
                    next_restart = Some(next_restart.map_or(retry, |t| t.min(retry)));
                }
            }
        }
        next_restart
    }
}

fn start_worker(dboid: u32, datname: &str) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("pg_warden worker for {datname}"))
        .set_type("pg_warden worker")
        .set_library("pg_warden")
        .set_function("warden_worker_main")
        .set_argument(Some(pg_sys::Datum::from(dboid)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // the launcher decides about restarts, with back-off
        .set_restart_time(None)
        // SAFETY: reads our pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}
