//! Shared state between the launcher, the database workers and the
//! backends that read status or request wake-ups: one slot per database.
//!
//! Everything is plain old data, valid when zeroed, so it is initialised
//! with zeroes in the postmaster. Text is stored in fixed byte arrays.

use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_guard, pg_shmem_init};

use warden_core::text::truncate_utf8;

/// Databases the runtime can track at once (slots are reused when a
/// database is dropped or filtered out).
pub const MAX_DATABASES: usize = 64;
/// Tasks one worker can report.
pub const MAX_TASKS: usize = 8;
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
}

impl SlotState {
    fn from_u8(v: u8) -> SlotState {
        match v {
            1 => SlotState::Probe,
            2 => SlotState::Wanted,
            3 => SlotState::Absent,
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

#[derive(Clone, Copy)]
#[repr(C)]
pub struct DatabaseSlot {
    pub dboid: u32,
    state: u8,
    /// Pending injected fault (see `fault`); 0 = none.
    pub fault: u8,
    /// Set by DDL that needs the database to itself: the worker exits 0.
    pub stop_requested: bool,
    pub pid: i32,
    /// The worker's `MyLatch` (it lives in its PGPROC, in shared memory);
    /// 0 while no worker runs.
    pub latch: usize,
    pub started_at: i64,
    /// Worker processes started for this database since the server started.
    pub starts: u32,
    pub consecutive_failures: u32,
    /// Earliest restart after a failure (launcher back-off).
    pub next_start_at: i64,
    pub last_exit_at: i64,
    /// Commit-time wake-ups requested by committed transactions.
    pub wake_requests: u64,
    pub task_count: u32,
    pub tasks: [TaskSlot; MAX_TASKS],
}

impl DatabaseSlot {
    pub fn state(&self) -> SlotState {
        SlotState::from_u8(self.state)
    }
    pub fn set_state(&mut self, state: SlotState) {
        self.state = state as u8;
    }
    pub fn tasks(&self) -> &[TaskSlot] {
        &self.tasks[..(self.task_count as usize).min(MAX_TASKS)]
    }
    /// Resets the slot for a (new) database, keeping nothing of the old one.
    pub fn claim(&mut self, dboid: u32, state: SlotState) {
        // SAFETY: every field is valid when zeroed.
        *self = unsafe { std::mem::zeroed() };
        self.dboid = dboid;
        self.set_state(state);
    }
}

#[repr(C)]
pub struct WardenShared {
    pub launcher_pid: i32,
    pub launcher_latch: usize,
    pub slots: [DatabaseSlot; MAX_DATABASES],
}

// SAFETY: plain data (the latch addresses point into shared memory and are
// only dereferenced while the owning process is alive).
unsafe impl PGRXSharedMemory for WardenShared {}

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
                self.slots[free].claim(dboid, state);
                Some(free)
            })?;
        Some(&mut self.slots[index])
    }
}

pub static SHARED: PgLwLock<WardenShared> = unsafe { PgLwLock::new(c"pg_warden_shared") };

pub fn init() {
    // SAFETY: every field of WardenShared is valid when zeroed.
    pg_shmem_init!(SHARED = unsafe { std::mem::zeroed() });
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
