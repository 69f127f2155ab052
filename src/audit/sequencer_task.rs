//! The sequencer: a worker task that moves the durable ring's events into
//! the inbox, takes inbox rows in arrival order, gives each the next seq
//! of its chain, computes its digest and hash (format v1,
//! `warden_core::audit`), writes them to the log and deletes what it
//! chained, all in its run's transaction: a crash at any point loses no
//! committed event and chains none twice. The ring's space is freed (and
//! strict callers released) only after that transaction committed.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgrx::pg_sys::{self, Datum};
use pgrx::PgMemoryContexts;
use warden_core::audit::ring::Taken;
use warden_core::audit::{
    decode_pending, event_hash, payload_digest, EventHeader, GENESIS, SALT_BYTES,
};
use warden_core::crypto::fill_random;

use super::datum_read::canonical_jsonb;
use super::inbox_read::InboxRow;
use crate::error::WardenError;
use crate::heap_append::{bytea_datum, text_datum, HeapAppender};
use crate::privileged::as_superuser;
use crate::workers::{
    register_task, wake_task_on_commit, Task, TaskContext, TaskId, TaskReport, TaskSpec,
};

/// Inbox rows chained per statement batch, the most events they may hold
/// (a captured statement's row holds up to a thousand) and the most bytes
/// of fields one batch reads (so a run of huge events cannot exhaust
/// memory); a batch takes at least one row.
const BATCH: i64 = 1000;
const BATCH_EVENTS: i64 = 10_000;
const BATCH_BYTES: i64 = 64 << 20;
/// Ring records moved to the inbox per run.
const RING_BATCH: usize = 20_000;

static TASK: OnceLock<TaskId> = OnceLock::new();

pub fn register() {
    let id = register_task(TaskSpec {
        name: "audit_sequencer",
        runs_on_any_wakeup: false,
        make: || Box::new(Sequencer::default()),
        holds_slot: Some(super::ring::holds_records),
    });
    let _ = TASK.set(id);
    super::ring::register();
}

/// Runs the sequencer when the current transaction commits.
pub fn wake_at_commit() {
    if let Some(id) = TASK.get() {
        wake_task_on_commit(*id);
    }
}

/// Runs the sequencer at the end of its wake gap (an event nobody waits
/// for is in the ring).
pub fn wake_soon() {
    if let Some(id) = TASK.get() {
        crate::workers::wake_task_soon(*id);
    }
}

/// Runs the sequencer now (a strict event is in the ring, or the ring is
/// full).
pub fn wake_now() {
    if let Some(id) = TASK.get() {
        crate::workers::wake_task_now(*id);
    }
}

type Heads = HashMap<String, (i64, [u8; 32])>;

thread_local! {
    /// Where each chain stood after this worker's last committed run: only
    /// the sequencer appends to a chain, and pruning never removes its
    /// head, so the next run need not read the head back (a query per
    /// chain per run). Lost with the worker; bounded.
    static COMMITTED_HEADS: std::cell::RefCell<Heads> = std::cell::RefCell::new(Heads::new());
}
/// Chains whose heads are remembered at most.
const REMEMBERED_HEADS: usize = 100_000;

#[derive(Default)]
struct Sequencer {
    /// Ring records this run moved to the inbox, freed once it committed.
    taken: Vec<(usize, Taken)>,
    /// Committed chain heads not checkpointed yet (the checkpoint
    /// interval had not passed).
    unsigned: Heads,
    /// This run's heads left unsigned, kept once it commits.
    unsigned_this_run: Heads,
    /// When each chain was last checkpointed.
    signed_at: HashMap<String, Instant>,
    /// Chains this run checkpointed, noted once it commits.
    signed_this_run: Vec<String>,
    /// The heads this run advanced, remembered once it commits.
    advanced_this_run: Heads,
    /// The highest inbox id a committed run chained, and this run's.
    high_water: i64,
    high_water_this_run: i64,
    /// When a run last scanned the inbox from its start.
    full_scan_at: Option<Instant>,
}

/// A run scans the inbox from LOOKBACK ids below the highest id chained
/// so far: rows chained and deleted stay in the index until vacuum (and
/// longer while an old transaction holds the xmin horizon), and walking
/// all of them on every run (every commit wakes one) cost more than the
/// chaining. A row whose transaction held its id while more than
/// LOOKBACK others were drawn is chained by the next full scan, at most
/// FULL_SCAN_EVERY later.
const LOOKBACK: i64 = 10_000;
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// Commits that wake the sequencer within this time of the start of its
/// last run are chained together at the end of it (a run that took longer
/// is followed at once: under load the sequencer runs back to back). Without it, a run per commit under
/// load (2 400 runs/s for 7 000 events/s at 8 clients) spent a
/// transaction, a snapshot, an index descent and a checkpoint on a
/// handful of events, on the cores the writers needed. It bounds what
/// it adds to a strict caller's wait.
const WAKE_GAP: Duration = Duration::from_millis(10);

impl Sequencer {
    /// Writes the checkpoints that are due, in the run's transaction.
    fn checkpoint(&mut self, advanced: Heads) -> Result<(), WardenError> {
        let interval = crate::guc::audit_checkpoint_interval();
        let mut due = Heads::new();
        let mut later = Heads::new();
        for (chain, head) in self.unsigned.clone().into_iter().chain(advanced) {
            let is_due = self
                .signed_at
                .get(&chain)
                .is_none_or(|at| at.elapsed() >= interval);
            if is_due {
                due.insert(chain, head);
            } else {
                later.insert(chain, head);
            }
        }
        if !due.is_empty() && as_superuser(|| super::checkpoints::write_checkpoints(&due))? {
            self.signed_this_run = due.into_keys().collect();
        } else {
            // no signing key: nothing to sign with, nothing to remember
            self.signed_this_run.clear();
        }
        self.unsigned_this_run = later;
        Ok(())
    }
}

impl Task for Sequencer {
    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn wake_gap(&self) -> Duration {
        WAKE_GAP
    }

    fn run(&mut self, ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        self.taken.clear();
        self.advanced_this_run.clear();
        discard_dropped_databases_events(ctx.slot_index, ctx.dboid)?;
        self.signed_this_run.clear();
        self.unsigned_this_run.clear();
        let mut advanced = Heads::new();
        // durable events are chained straight from the ring, in its order,
        // in this run's transaction; their room is freed once it commits
        let (records, taken) = super::ring::take(ctx.dboid, RING_BATCH);
        if !records.is_empty() {
            as_superuser(|| chain_ring_records(&mut advanced, &records))?;
            self.taken = taken;
        }
        // within a run, each batch starts after the last one (the index
        // scan does not walk the entries of rows this run deleted); a row
        // with a lower id that commits later is taken by a later run
        let full = self
            .full_scan_at
            .is_none_or(|at| at.elapsed() >= FULL_SCAN_EVERY);
        if full {
            self.full_scan_at = Some(Instant::now());
        }
        let mut after = if full {
            0
        } else {
            (self.high_water - LOOKBACK).max(0)
        };
        while as_superuser(|| chain_batch(&mut advanced, &mut after))? {}
        self.high_water_this_run = after;
        self.advanced_this_run = advanced.clone();
        self.checkpoint(advanced)?;
        // the inbox is drained up to what this run's snapshot saw; what is
        // left is what the ring still holds beyond this run's share (not a
        // count of the inbox, whose scan would walk every row deleted since
        // the last vacuum, on every run)
        let backlog = super::ring::stats(ctx.slot_index, ctx.dboid).records as i64
            - self
                .taken
                .iter()
                .map(|(_, t)| t.records as i64)
                .sum::<i64>();
        Ok(TaskReport {
            backlog: backlog.max(0),
        })
    }

    fn committed(&mut self, _ctx: &TaskContext) {
        super::ring::release(std::mem::take(&mut self.taken));
        self.high_water = self.high_water.max(self.high_water_this_run);
        let advanced = std::mem::take(&mut self.advanced_this_run);
        COMMITTED_HEADS.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() + advanced.len() > REMEMBERED_HEADS {
                c.clear();
            }
            c.extend(advanced);
        });
        let now = Instant::now();
        for chain in self.signed_this_run.drain(..) {
            self.unsigned.remove(&chain);
            self.signed_at.insert(chain, now);
        }
        self.unsigned.extend(self.unsigned_this_run.drain());
    }
}

/// Our slot's ring may hold events of a database that held the slot
/// before; once that database is gone, nobody else will take them.
fn discard_dropped_databases_events(slot: usize, dboid: u32) -> Result<(), WardenError> {
    let Some(owner) = super::ring::foreign_owner(slot, dboid) else {
        return Ok(());
    };
    let exists = crate::spi_read::read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_database d WHERE d.oid OPERATOR(pg_catalog.=) $1)",
        &[pg_sys::Oid::from(owner).into()],
    )
    .map_err(spi_error)?
    .unwrap_or(true);
    if !exists {
        let n = super::ring::discard(slot, owner);
        pgrx::warning!(
            "pg_warden audit: discarded {n} durable events of dropped database {owner} from the ring"
        );
    }
    Ok(())
}

/// Chains ring records (durable events) in ring order, a thousand at a
/// time, each batch in a memory context of its own.
fn chain_ring_records(heads: &mut Heads, records: &[Vec<u8>]) -> Result<(), WardenError> {
    for chunk in records.chunks(BATCH as usize) {
        let mut scratch = PgMemoryContexts::new("pg_warden audit sequencer ring batch");
        // SAFETY: the batch's work in a memory context of its own.
        unsafe {
            scratch.switch_to(|_| {
                let rows = chunk
                    .iter()
                    .map(|r| ring_record_row(r))
                    .collect::<Result<Vec<_>, _>>()?;
                chain_rows(heads, &rows)
            })
        }?;
    }
    Ok(())
}

/// A ring record as a row to chain (nothing to delete afterwards).
fn ring_record_row(record: &[u8]) -> Result<InboxRow, WardenError> {
    let (header, fields) = decode_pending(record).ok_or_else(|| {
        WardenError::prerequisite("audit sequencer: a ring record does not decode")
    })?;
    // JSON text written by serde_json never holds a NUL
    let fields = std::ffi::CString::new(fields).map_err(|_| {
        WardenError::prerequisite("audit sequencer: a ring record's fields hold a NUL")
    })?;
    // SAFETY: jsonb_in of a C string of this call.
    let fields = unsafe {
        pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(Datum::from(fields.as_ptr()))])
    }
    .expect("jsonb_in returns a value or raises");
    Ok(InboxRow {
        id: 0,
        tid: None,
        ts: header.ts_micros - super::durable::POSTGRES_EPOCH_MICROS,
        header,
        fields,
        events: None,
    })
}

fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("audit sequencer: {e}"))
}

/// Columns of the log, in table order: chain, seq, ts, event_type,
/// tenant, actor, actor_kind, correlation_id, txid, fields, fields_salt,
/// payload_digest, prev_hash, hash, redacted_at.
const LOG_COLUMNS: [pg_sys::Oid; 15] = [
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::XID8OID,
    pg_sys::JSONBOID,
    pg_sys::BYTEAOID,
    pg_sys::BYTEAOID,
    pg_sys::BYTEAOID,
    pg_sys::BYTEAOID,
    pg_sys::TIMESTAMPTZOID,
];

/// Where `chain` stands: its last seq and hash; when it has no event
/// (all pruned), its last signed checkpoint; else 0 and GENESIS.
fn chain_head(chain: &str) -> Result<(i64, [u8; 32]), WardenError> {
    let last = crate::spi_read::read_two::<i64, Vec<u8>>(
        "SELECT l.seq, l.hash FROM warden.audit_log l WHERE l.chain OPERATOR(pg_catalog.=) $1
          ORDER BY l.seq DESC LIMIT 1",
        &[chain.into()],
    );
    let head = |last: Result<(Option<i64>, Option<Vec<u8>>), pgrx::spi::Error>| match last {
        Ok((Some(seq), Some(hash))) => Ok(Some((seq, hash.try_into().unwrap_or(GENESIS)))),
        Ok(_) | Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
        Err(e) => Err(spi_error(e)),
    };
    if let Some(h) = head(last)? {
        return Ok(h);
    }
    let anchor = crate::spi_read::read_two::<i64, Vec<u8>>(
        "SELECT c.seq, c.hash FROM warden.audit_checkpoints c WHERE c.chain OPERATOR(pg_catalog.=) $1
          ORDER BY c.seq DESC LIMIT 1",
        &[chain.into()],
    );
    Ok(head(anchor)?.unwrap_or((0, GENESIS)))
}

/// Chains the next inbox rows after id `after` (at most BATCH rows,
/// BATCH_EVENTS events and BATCH_BYTES of fields, but at least one row);
/// returns whether there may be more. `heads` holds where each chain
/// stands (read once per run) and gets the new head of every chain it
/// advanced. Everything it allocates goes with the batch.
fn chain_batch(heads: &mut Heads, after: &mut i64) -> Result<bool, WardenError> {
    let mut scratch = PgMemoryContexts::new("pg_warden audit sequencer batch");
    // SAFETY: the batch's work in a memory context of its own.
    unsafe { scratch.switch_to(|_| chain_batch_in(heads, after)) }
}

fn chain_batch_in(heads: &mut Heads, after: &mut i64) -> Result<bool, WardenError> {
    let rows = super::inbox_read::read_after(
        *after,
        &super::inbox_read::Limits {
            rows: BATCH as usize,
            events: BATCH_EVENTS,
            bytes: BATCH_BYTES as usize,
        },
    );
    let Some(last) = rows.last() else {
        return Ok(false);
    };
    *after = last.id;
    chain_rows(heads, &rows)?;
    Ok(true)
}

/// Gives each event of `rows` the next seq of its chain, its salt, digest
/// and hash, appends it to the log and deletes the inbox rows it came
/// from, then makes all of it visible to the run's next reads.
fn chain_rows(heads: &mut Heads, rows: &[InboxRow]) -> Result<(), WardenError> {
    let events: usize = rows.iter().map(|r| r.events.unwrap_or(1) as usize).sum();
    let mut salts = vec![0u8; events * SALT_BYTES];
    fill_random(&mut salts).map_err(|_| WardenError::random_source_failed())?;
    let mut salts = salts.chunks_exact(SALT_BYTES);
    let inbox = crate::heap_append::warden_relation(c"audit_inbox");
    let mut log = HeapAppender::open(c"audit_log", &LOG_COLUMNS);
    // SAFETY: the inbox is opened here and closed below (or by the abort
    // of an ERROR); the rows deleted are the ones this run's snapshot read.
    let inbox_rel = unsafe { pg_sys::table_open(inbox, pg_sys::RowExclusiveLock as i32) };
    for row in rows {
        let chain = row.header.tenant.clone().unwrap_or_else(|| "global".into());
        if !heads.contains_key(&chain) {
            let known = COMMITTED_HEADS.with(|c| c.borrow().get(&chain).copied());
            heads.insert(chain.clone(), known.map_or_else(|| chain_head(&chain), Ok)?);
        }
        let fields = match row.events {
            None => vec![row.fields],
            Some(n) => {
                // SAFETY: a detoasted jsonb of this batch.
                let items = unsafe { array_elements(row.fields) };
                if items.len() != n as usize {
                    return Err(WardenError::prerequisite(format!(
                        "audit sequencer: inbox row {} says {n} events and holds {}",
                        row.id,
                        items.len()
                    )));
                }
                items
            }
        };
        let (chain_text, _) = text_datum(Some(&chain));
        let fixed = [
            text_datum(Some(&row.header.event_type)),
            text_datum(row.header.tenant.as_deref()),
            text_datum(row.header.actor.as_deref()),
            text_datum(row.header.actor_kind.as_deref()),
            text_datum(row.header.correlation_id.as_deref()),
        ];
        for fields in fields {
            // SAFETY: a jsonb of this batch.
            let canonical = unsafe { canonical_jsonb(fields) };
            let salt = salts.next().expect("a salt per event");
            let (seq, prev) = heads[&chain];
            // (a head at i64::MAX can only have been forged by hand)
            let seq = seq.checked_add(1).ok_or_else(|| {
                WardenError::prerequisite(format!(
                    "audit sequencer: chain {chain} is at the last seq"
                ))
                .hint("Verify the chain: its head was written by hand.")
            })?;
            let digest = payload_digest(salt, &canonical);
            let header = EventHeader {
                chain: chain.clone(),
                seq,
                ..row.header.clone()
            };
            let hash = event_hash(&prev, &header, &digest);
            let cells = [
                (chain_text, false),
                (Datum::from(seq), false),
                (Datum::from(row.ts), false),
                fixed[0],
                fixed[1],
                fixed[2],
                fixed[3],
                fixed[4],
                (Datum::from(row.header.txid), false),
                (fields, false),
                bytea_datum(salt),
                bytea_datum(&digest),
                bytea_datum(&prev),
                bytea_datum(&hash),
                (Datum::from(0usize), true),
            ];
            let mut values: Vec<Datum> = cells.iter().map(|c| c.0).collect();
            let mut nulls: Vec<bool> = cells.iter().map(|c| c.1).collect();
            log.append(&mut values, &mut nulls);
            heads.insert(chain.clone(), (seq, hash));
        }
        if let Some(tid) = row.tid {
            // SAFETY: a row of the inbox this run read and nobody else
            // deletes (one sequencer per database).
            unsafe { pg_sys::simple_heap_delete(inbox_rel, &tid as *const _ as *mut _) };
        }
    }
    log.close();
    // SAFETY: closes the inbox keeping its lock; then this run's next
    // reads see what the batch wrote.
    unsafe {
        pg_sys::table_close(inbox_rel, pg_sys::NoLock as i32);
        pg_sys::CommandCounterIncrement();
        pg_sys::UpdateActiveSnapshotCommandId();
    }
    Ok(())
}

/// The elements of a jsonb array, each as a jsonb of its own.
///
/// # Safety
/// A detoasted jsonb.
unsafe fn array_elements(array: Datum) -> Vec<Datum> {
    let mut out = Vec::new();
    // SAFETY: iterates the array's top level; each element is copied into
    // a new jsonb.
    unsafe {
        let jb = array.cast_mut_ptr::<pg_sys::Jsonb>();
        let header = (*jb).root.header;
        if header & pg_sys::JB_FARRAY == 0 || header & pg_sys::JB_FSCALAR != 0 {
            return out;
        }
        let mut it = pg_sys::JsonbIteratorInit(&raw mut (*jb).root);
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut v, true) {
                pg_sys::JsonbIteratorToken::WJB_DONE => break,
                pg_sys::JsonbIteratorToken::WJB_ELEM => {
                    out.push(Datum::from(pg_sys::JsonbValueToJsonb(&mut v)))
                }
                _ => {}
            }
        }
    }
    out
}
