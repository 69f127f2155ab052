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

use pgrx::pg_sys;
use pgrx::prelude::*;
use warden_core::audit::ring::Taken;
use warden_core::audit::{
    canonical_fields, canonical_fields_text, decode_pending, event_hash, payload_digest,
    EventHeader, GENESIS, SALT_BYTES,
};
use warden_core::crypto::fill_random;

use super::header_row::{header_columns, read_header, HEADER_COLUMN_COUNT};
use crate::error::WardenError;
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

/// Runs the sequencer now (a durable event is in the ring).
pub fn wake_now() {
    if let Some(id) = TASK.get() {
        crate::workers::wake_task_now(*id);
    }
}

type Heads = HashMap<String, (i64, [u8; 32])>;

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
}

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

    fn run(&mut self, ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        self.taken.clear();
        discard_dropped_databases_events(ctx.slot_index, ctx.dboid)?;
        let (records, taken) = super::ring::take(ctx.dboid, RING_BATCH);
        if !records.is_empty() {
            as_superuser(|| move_to_inbox(&records))?;
            self.taken = taken;
        }
        self.signed_this_run.clear();
        self.unsigned_this_run.clear();
        let mut advanced = Heads::new();
        // within a run, each batch starts after the last one (the index
        // scan does not walk the entries of rows this run deleted); a row
        // with a lower id that commits later is taken by the next run
        let mut after = 0i64;
        while as_superuser(|| chain_batch(&mut advanced, &mut after))? {}
        self.checkpoint(advanced)?;
        let backlog = crate::spi_read::read_one::<i64>(
            "SELECT coalesce(pg_catalog.sum(coalesce(x.events, 1)), 0)::pg_catalog.int8
               FROM warden.audit_inbox x",
            &[],
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        Ok(TaskReport { backlog })
    }

    fn committed(&mut self, _ctx: &TaskContext) {
        super::ring::release(std::mem::take(&mut self.taken));
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

/// Inserts ring records into the inbox, in ring order, with the heap
/// insert every other path uses, then makes them visible to this run's
/// next queries.
fn move_to_inbox(records: &[Vec<u8>]) -> Result<(), WardenError> {
    let mut writer = super::inbox_write::InboxWriter::open();
    for r in records {
        let (h, fields) = decode_pending(r).ok_or_else(|| {
            WardenError::prerequisite("audit sequencer: a ring record does not decode")
        })?;
        // JSON text written by serde_json never holds a NUL
        let fields = std::ffi::CString::new(fields).map_err(|_| {
            WardenError::prerequisite("audit sequencer: a ring record's fields hold a NUL")
        })?;
        // SAFETY: jsonb_in of a C string of this call.
        let fields = unsafe {
            pgrx::direct_function_call_as_datum(
                pg_sys::jsonb_in,
                &[Some(pg_sys::Datum::from(fields.as_ptr()))],
            )
        }
        .expect("jsonb_in returns a value or raises");
        writer.append(&super::inbox_write::InboxEvent {
            event_type: &h.event_type,
            tenant: h.tenant.as_deref(),
            actor: h.actor.as_deref(),
            actor_kind: h.actor_kind.as_deref(),
            correlation_id: h.correlation_id.as_deref(),
            emitted: Some((h.ts_micros - super::durable::POSTGRES_EPOCH_MICROS, h.txid)),
            fields,
            events: None,
        });
    }
    writer.close();
    // SAFETY: the run's transaction and the snapshot the runner pushed.
    unsafe {
        pg_sys::CommandCounterIncrement();
        pg_sys::UpdateActiveSnapshotCommandId();
    }
    Ok(())
}

struct InboxRow {
    id: i64,
    /// chain and seq not yet given
    header: EventHeader,
    fields: String,
    /// Some(n): `fields` is an array of n events' fields.
    events: Option<i32>,
}

fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("audit sequencer: {e}"))
}

/// The columns of the events of one batch, for one INSERT.
#[derive(Default)]
struct Chained {
    id: Vec<i64>,
    /// An event of a batch row: its fields as JSON text (None: the
    /// row's own fields).
    fields: Vec<Option<String>>,
    chain: Vec<String>,
    seq: Vec<i64>,
    salt: Vec<Vec<u8>>,
    digest: Vec<Vec<u8>>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

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

/// Chains the next inbox rows after id `after` (at most BATCH, and at
/// most BATCH_BYTES of fields but at least one); returns whether there may
/// be more. `heads` holds where each chain stands (read once per run) and
/// gets the new head of every chain it advanced.
fn chain_batch(heads: &mut Heads, after: &mut i64) -> Result<bool, WardenError> {
    let sizes: Vec<(i64, i64, i64)> = Spi::connect(|client| {
        client
            .select(
                "SELECT x.id, pg_catalog.pg_column_size(x.fields)::pg_catalog.int8,
                        coalesce(x.events, 1)::pg_catalog.int8
                   FROM warden.audit_inbox x
                  WHERE x.id OPERATOR(pg_catalog.>) $1 ORDER BY x.id LIMIT $2",
                None,
                &[(*after).into(), BATCH.into()],
            )?
            .map(|r| {
                Ok((
                    r.get(1)?.unwrap_or(0),
                    r.get(2)?.unwrap_or(0),
                    r.get(3)?.unwrap_or(1),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    let Some(&(first, _, _)) = sizes.first() else {
        return Ok(false);
    };
    let (mut bytes, mut events) = (0, 0);
    let mut last = first;
    for &(id, size, n) in &sizes {
        bytes += size;
        events += n;
        if (bytes > BATCH_BYTES || events > BATCH_EVENTS) && id != first {
            break;
        }
        last = id;
    }
    let more = sizes.len() as i64 == BATCH || last != sizes[sizes.len() - 1].0;
    let rows: Vec<InboxRow> = Spi::connect(|client| {
        client
            .select(
                concat!(
                    "SELECT x.id, ",
                    header_columns!(),
                    ", x.fields::text, x.events FROM warden.audit_inbox x
                      WHERE x.id OPERATOR(pg_catalog.>) $1 AND x.id OPERATOR(pg_catalog.<=) $2 ORDER BY x.id"
                ),
                None,
                &[(*after).into(), last.into()],
            )?
            .map(|r| {
                Ok(InboxRow {
                    id: r.get(1)?.unwrap_or(0),
                    header: read_header(&r, 2)?,
                    fields: r
                        .get(2 + HEADER_COLUMN_COUNT)?
                        .unwrap_or_else(|| "{}".into()),
                    events: r.get(3 + HEADER_COLUMN_COUNT)?,
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    *after = last;
    let mut chained = Chained::default();
    for row in &rows {
        let chain = row.header.tenant.clone().unwrap_or_else(|| "global".into());
        if !heads.contains_key(&chain) {
            heads.insert(chain.clone(), chain_head(&chain)?);
        }
        let not_json = || {
            WardenError::prerequisite(format!(
                "audit sequencer: fields of inbox row {} are not JSON",
                row.id
            ))
        };
        // (canonical encoding, fields text for the log when not the row's)
        let events: Vec<(Vec<u8>, Option<String>)> = match row.events {
            None => vec![(
                canonical_fields_text(&row.fields).ok_or_else(not_json)?,
                None,
            )],
            Some(n) => {
                let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&row.fields) else {
                    return Err(not_json());
                };
                if items.len() != n as usize {
                    return Err(WardenError::prerequisite(format!(
                        "audit sequencer: inbox row {} says {n} events and holds {}",
                        row.id,
                        items.len()
                    )));
                }
                items
                    .iter()
                    .map(|v| (canonical_fields(v), Some(v.to_string())))
                    .collect()
            }
        };
        for (canonical, fields) in events {
            let (seq, prev) = heads[&chain];
            let seq = seq + 1;
            let mut salt = [0u8; SALT_BYTES];
            fill_random(&mut salt).map_err(|_| WardenError::random_source_failed())?;
            let digest = payload_digest(&salt, &canonical);
            let header = EventHeader {
                chain: chain.clone(),
                seq,
                ..row.header.clone()
            };
            let hash = event_hash(&prev, &header, &digest);
            chained.id.push(row.id);
            chained.fields.push(fields);
            chained.chain.push(chain.clone());
            chained.seq.push(seq);
            chained.salt.push(salt.to_vec());
            chained.digest.push(digest.to_vec());
            chained.prev.push(prev.to_vec());
            chained.hash.push(hash.to_vec());
            heads.insert(chain.clone(), (seq, hash));
        }
    }
    // one statement for the batch: the header columns come from the
    // inbox row as stored, the chain columns from the arrays, the fields
    // from the row (one event) or from the array (an event of a batch
    // row: its text as read, so the log holds the value that was hashed)
    Spi::run_with_args(
        "INSERT INTO warden.audit_log (chain, seq, ts, event_type, tenant, actor, actor_kind, correlation_id,
                                       txid, fields, fields_salt, payload_digest, prev_hash, hash)
         SELECT b.chain, b.seq, i.ts, i.event_type, i.tenant, i.actor, i.actor_kind, i.correlation_id,
                i.txid, coalesce(b.fields::pg_catalog.jsonb, i.fields),
                b.salt, b.digest, b.prev, b.hash
           -- multi-argument unnest is FROM-clause syntax only when
           -- unqualified (search_path is pg_catalog here)
           FROM unnest($1::pg_catalog.int8[], $2::pg_catalog.text[], $3::pg_catalog.int8[],
                                  $4::pg_catalog.bytea[], $5::pg_catalog.bytea[], $6::pg_catalog.bytea[],
                                  $7::pg_catalog.bytea[], $8::pg_catalog.text[])
                AS b(id, chain, seq, salt, digest, prev, hash, fields)
           JOIN warden.audit_inbox i ON i.id OPERATOR(pg_catalog.=) b.id",
        &[
            chained.id.clone().into(),
            chained.chain.into(),
            chained.seq.into(),
            chained.salt.into(),
            chained.digest.into(),
            chained.prev.into(),
            chained.hash.into(),
            chained.fields.into(),
        ],
    )
    .map_err(spi_error)?;
    Spi::run_with_args(
        "DELETE FROM warden.audit_inbox WHERE id OPERATOR(pg_catalog.=) ANY ($1)",
        &[chained.id.into()],
    )
    .map_err(spi_error)?;
    Ok(more)
}
