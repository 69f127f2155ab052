//! Shared state between the launcher, the database workers and the
//! backends that read status or request wake-ups: one slot per database,
//! under one lock, and per slot the state of each registered task (a
//! segment sized from the task registry) and a lock-free wake-up state.
//!
//! Everything is valid when zeroed, so it is initialised with zeroes in
//! the postmaster. Text is stored in fixed byte arrays.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use pgrx::pg_sys;

use crate::shared_memory::Locked;

use warden_core::text::truncate_utf8;

/// Databases the runtime can track at once (slots are reused when a
/// database is dropped or filtered out).
pub const MAX_DATABASES: usize = 64;
const NAME_BYTES: usize = 32;
const ERROR_BYTES: usize = 256;

/// Lifecycle of a database slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    Free = 0,
    /// Seen in pg_database; a worker must start to check for the extension.
    Probe = 1,
    /// The extension is installed: keep a worker running.
    Wanted = 2,
    /// The worker found no extension; nothing runs until CREATE EXTENSION.
    Absent = 3,
    /// `warden.databases` leaves the database out: no worker runs, but it
    /// keeps its slot (and so the index of everything kept per slot, like
    /// its audit ring) until it is allowed again or dropped.
    Excluded = 4,
}

impl SlotState {
    fn from_u8(v: u8) -> SlotState {
        match v {
            1 => SlotState::Probe,
            2 => SlotState::Wanted,
            3 => SlotState::Absent,
            4 => SlotState::Excluded,
            _ => SlotState::Free,
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct TaskSlot {
    name: [u8; NAME_BYTES],
    pub runs: u64,
    pub failures: u64,
    /// Timestamps are Postgres TimestampTz microseconds; 0 means never.
    pub last_run_at: i64,
    pub last_success_at: i64,
    pub last_error_at: i64,
    last_error: [u8; ERROR_BYTES],
    pub backlog: i64,
    pub next_run_at: i64,
}

impl TaskSlot {
    pub fn name(&self) -> &str {
        read_text(&self.name)
    }
    pub fn set_name(&mut self, name: &str) {
        write_text(&mut self.name, name);
    }
    pub fn last_error(&self) -> Option<&str> {
        let s = read_text(&self.last_error);
        (!s.is_empty()).then_some(s)
    }
    pub fn set_last_error(&mut self, message: &str) {
        write_text(&mut self.last_error, message);
    }
}

/// What a committing backend needs to wake a worker, without the lock
/// (which would serialise every commit of the cluster behind it): the
/// database the slot's worker serves, its latch, and what to run.
#[repr(C)]
pub struct WakeState {
    /// The database of the running worker (0: none); mirrors `dboid`
    /// while a worker runs.
    pub dboid: AtomicU32,
    /// The worker's `MyLatch` (it lives in its PGPROC, in shared memory).
    pub latch: AtomicUsize,
    /// Commit-time wake-ups requested by committed transactions.
    pub requests: AtomicU64,
    /// Tasks to run, one bit per registered task: at once, or at the end
    /// of the task's wake gap.
    pub tasks: AtomicU64,
    /// Tasks to run at once even within their wake gap (someone waits).
    pub urgent: AtomicU64,
}

impl WakeState {
    pub fn latch(&self) -> usize {
        self.latch.load(Ordering::Acquire)
    }
    /// Publishes a running worker: the latch first, then the database a
    /// committing backend matches on.
    pub fn publish(&self, dboid: u32, latch: usize) {
        self.latch.store(latch, Ordering::Release);
        self.dboid.store(dboid, Ordering::Release);
    }
    pub fn clear(&self) {
        self.dboid.store(0, Ordering::Release);
        self.latch.store(0, Ordering::Release);
        self.requests.store(0, Ordering::Relaxed);
        self.tasks.store(0, Ordering::Relaxed);
        self.urgent.store(0, Ordering::Relaxed);
    }
}

#[repr(C)]
pub struct DatabaseSlot {
    pub dboid: u32,
    state: u8,
    /// Pending injected fault (see `fault`); 0 = none.
    pub fault: u8,
    /// Set by DDL that needs the database to itself: the worker exits 0.
    pub stop_requested: bool,
    pub pid: i32,
    pub started_at: i64,
    /// Worker processes started for this database since the server started.
    pub starts: u32,
    pub consecutive_failures: u32,
    /// Earliest restart after a failure (launcher back-off).
    pub next_start_at: i64,
    pub last_exit_at: i64,
    /// Tasks the running worker reports (0 while none runs).
    pub task_count: u32,
}

impl DatabaseSlot {
    pub fn state(&self) -> SlotState {
        SlotState::from_u8(self.state)
    }
    pub fn set_state(&mut self, state: SlotState) {
        self.state = state as u8;
    }
    /// Resets the slot for a (new) database, keeping nothing of the old one
    /// (its wake-up state is reset by `WardenShared::claim`).
    fn reset(&mut self, dboid: u32, state: SlotState) {
        self.dboid = dboid;
        self.state = state as u8;
        self.fault = 0;
        self.stop_requested = false;
        self.pid = 0;
        self.started_at = 0;
        self.starts = 0;
        self.consecutive_failures = 0;
        self.next_start_at = 0;
        self.last_exit_at = 0;
        self.task_count = 0;
    }
}

#[repr(C)]
pub struct WardenShared {
    pub launcher_pid: i32,
    pub launcher_latch: usize,
    pub slots: [DatabaseSlot; MAX_DATABASES],
}

impl WardenShared {
    pub fn slot(&self, dboid: u32) -> Option<&DatabaseSlot> {
        self.slots
            .iter()
            .find(|s| s.dboid == dboid && s.state() != SlotState::Free)
    }
    pub fn slot_mut(&mut self, dboid: u32) -> Option<&mut DatabaseSlot> {
        self.slots
            .iter_mut()
            .find(|s| s.dboid == dboid && s.state() != SlotState::Free)
    }
    /// Gives slot `index` to `dboid` (0 and Free: releases it), with fresh
    /// task and wake-up state.
    pub fn claim(&mut self, index: usize, dboid: u32, state: SlotState) {
        self.slots[index].reset(dboid, state);
        // SAFETY: a TaskSlot is valid zeroed.
        self.tasks_mut(index).fill(unsafe { std::mem::zeroed() });
        // the lock held here keeps workers from publishing into it meanwhile
        wake_state(index).clear();
    }
    pub fn index_of(&self, dboid: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.dboid == dboid && s.state() != SlotState::Free)
    }
    /// The registered tasks' state in database slot `index`.
    pub fn tasks(&self, index: usize) -> &[TaskSlot] {
        let n = super::registry::tasks().len();
        // SAFETY: the segment holds MAX_DATABASES * n slots; shared access
        // under the lock `self` proves is held.
        unsafe { std::slice::from_raw_parts(task_segment().add(index * n), n) }
    }
    pub fn tasks_mut(&mut self, index: usize) -> &mut [TaskSlot] {
        let n = super::registry::tasks().len();
        // SAFETY: as above, exclusively.
        unsafe { std::slice::from_raw_parts_mut(task_segment().add(index * n), n) }
    }
    /// The slot for `dboid`, claiming a free one (in `state`) if it has none.
    pub fn slot_or_claim(&mut self, dboid: u32, state: SlotState) -> Option<&mut DatabaseSlot> {
        let index = self
            .slots
            .iter()
            .position(|s| s.dboid == dboid && s.state() != SlotState::Free)
            .or_else(|| {
                let free = self
                    .slots
                    .iter()
                    .position(|s| s.state() == SlotState::Free)?;
                self.claim(free, dboid, state);
                Some(free)
            })?;
        Some(&mut self.slots[index])
    }
}

pub static SHARED: Locked<WardenShared> = Locked::new(c"pg_warden_shared");

const TASK_SEGMENT: &std::ffi::CStr = c"pg_warden task slots";
const WAKE_SEGMENT: &std::ffi::CStr = c"pg_warden wake-ups";

fn task_segment() -> *mut TaskSlot {
    crate::shared_memory::address(TASK_SEGMENT).cast()
}

/// Registers the slots and, sized from the task registry (complete by
/// now), the task state. Only while preloading.
pub fn init() {
    // every field of WardenShared is valid when zeroed
    SHARED.register();
    crate::shared_memory::register(
        TASK_SEGMENT,
        MAX_DATABASES * super::registry::close() * std::mem::size_of::<TaskSlot>(),
    );
    crate::shared_memory::register(
        WAKE_SEGMENT,
        MAX_DATABASES * std::mem::size_of::<WakeState>(),
    );
}

/// The wake-up state of database slot `index`: its own segment, only ever
/// reached through shared references (atomics), with or without the lock.
pub fn wake_state(index: usize) -> &'static WakeState {
    assert!(index < MAX_DATABASES);
    // SAFETY: the segment holds MAX_DATABASES zero-initialised WakeStates
    // (valid zeroed) for the server's life, mapped at the same address in
    // every process.
    unsafe {
        &*crate::shared_memory::address(WAKE_SEGMENT)
            .cast::<WakeState>()
            .add(index)
    }
}

/// Every slot's wake-up state, for the lock-free scan of a committing
/// backend.
pub fn wake_states() -> impl Iterator<Item = &'static WakeState> {
    (0..MAX_DATABASES).map(wake_state)
}

/// Sets a latch by its stored address; 0 means nobody to wake.
pub fn set_latch(latch: usize) {
    if latch != 0 {
        // SAFETY: the address came from a live process's MyLatch, which is
        // its PGPROC latch in shared memory; a stale address only causes a
        // spurious wake-up of whichever process owns that PGPROC now.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

pub fn my_latch() -> usize {
    // SAFETY: MyLatch is set for every process that can call this.
    unsafe { pg_sys::MyLatch as usize }
}

fn read_text(buf: &[u8]) -> &str {
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

fn write_text(buf: &mut [u8], text: &str) {
    // keep one byte for the terminating zero
    let text = truncate_utf8(text, buf.len() - 1);
    buf.fill(0);
    buf[..text.len()].copy_from_slice(text.as_bytes());
}
