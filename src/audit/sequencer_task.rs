//! The sequencer: a worker task that takes inbox rows in arrival order,
//! gives each the next seq of its chain, computes its digest and hash
//! (format v1, `warden_core::audit`) and writes it to the log, and deletes
//! what it chained, all in its run's transaction: a crash at any point
//! loses no committed event and chains none twice.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use pgrx::prelude::*;
use warden_core::audit::{
    canonical_fields_text, event_hash, payload_digest, EventHeader, GENESIS, SALT_BYTES,
};
use warden_core::crypto::fill_random;

use super::header_row::{header_columns, read_header, HEADER_COLUMN_COUNT};
use crate::error::WardenError;
use crate::privileged::as_superuser;
use crate::workers::{
    register_task, wake_task_on_commit, Task, TaskContext, TaskId, TaskReport, TaskSpec,
};

/// Inbox rows chained per statement batch.
const BATCH: i64 = 1000;

static TASK: OnceLock<TaskId> = OnceLock::new();

pub fn register() {
    let id = register_task(TaskSpec {
        name: "audit_sequencer",
        runs_on_any_wakeup: false,
        make: || Box::new(Sequencer),
    });
    let _ = TASK.set(id);
}

/// Runs the sequencer when the current transaction commits.
pub fn wake_at_commit() {
    if let Some(id) = TASK.get() {
        wake_task_on_commit(*id);
    }
}

struct Sequencer;

impl Task for Sequencer {
    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        let mut chained = BATCH;
        while chained == BATCH {
            chained = as_superuser(chain_batch)?;
        }
        let backlog = crate::spi_read::read_one::<i64>(
            "SELECT pg_catalog.count(*) FROM warden.audit_inbox",
            &[],
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        Ok(TaskReport { backlog })
    }
}

struct InboxRow {
    id: i64,
    /// chain and seq not yet given
    header: EventHeader,
    fields: String,
}

fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("audit sequencer: {e}"))
}

/// Chains up to BATCH inbox rows; returns how many.
fn chain_batch() -> Result<i64, WardenError> {
    let rows: Vec<InboxRow> = Spi::connect(|client| {
        client
            .select(
                concat!(
                    "SELECT x.id, ",
                    header_columns!(),
                    ", x.fields::text FROM warden.audit_inbox x ORDER BY x.id LIMIT $1"
                ),
                None,
                &[BATCH.into()],
            )?
            .map(|r| {
                Ok(InboxRow {
                    id: r.get(1)?.unwrap_or(0),
                    header: read_header(&r, 2)?,
                    fields: r
                        .get(2 + HEADER_COLUMN_COUNT)?
                        .unwrap_or_else(|| "{}".into()),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    if rows.is_empty() {
        return Ok(0);
    }
    // where each chain stands: its last seq and hash
    let mut heads: HashMap<String, (i64, [u8; 32])> = HashMap::new();
    for row in &rows {
        let chain = row.header.tenant.clone().unwrap_or_else(|| "global".into());
        if !heads.contains_key(&chain) {
            let last = Spi::get_two_with_args::<i64, Vec<u8>>(
                "SELECT l.seq, l.hash FROM warden.audit_log l WHERE l.chain OPERATOR(pg_catalog.=) $1
                  ORDER BY l.seq DESC LIMIT 1",
                &[chain.as_str().into()],
            );
            let head = match last {
                Ok((Some(seq), Some(hash))) => (seq, hash.try_into().unwrap_or(GENESIS)),
                Ok(_) | Err(pgrx::spi::Error::InvalidPosition) => (0, GENESIS),
                Err(e) => return Err(spi_error(e)),
            };
            heads.insert(chain.clone(), head);
        }
        let (seq, prev) = heads[&chain];
        let seq = seq + 1;
        let canonical = canonical_fields_text(&row.fields).ok_or_else(|| {
            WardenError::prerequisite(format!(
                "audit sequencer: fields of inbox row {} are not JSON",
                row.id
            ))
        })?;
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt).map_err(|_| WardenError::random_source_failed())?;
        let digest = payload_digest(&salt, &canonical);
        let header = EventHeader {
            chain: chain.clone(),
            seq,
            ..row.header.clone()
        };
        let hash = event_hash(&prev, &header, &digest);
        Spi::run_with_args(
            "INSERT INTO warden.audit_log (chain, seq, ts, event_type, tenant, actor, actor_kind, correlation_id,
                                           txid, fields, fields_salt, payload_digest, prev_hash, hash)
             SELECT $2, $3, i.ts, i.event_type, i.tenant, i.actor, i.actor_kind, i.correlation_id,
                    i.txid, i.fields, $4, $5, $6, $7
               FROM warden.audit_inbox i WHERE i.id OPERATOR(pg_catalog.=) $1",
            &[
                row.id.into(),
                chain.as_str().into(),
                seq.into(),
                salt.to_vec().into(),
                digest.to_vec().into(),
                prev.to_vec().into(),
                hash.to_vec().into(),
            ],
        )
        .map_err(spi_error)?;
        heads.insert(chain, (seq, hash));
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    Spi::run_with_args(
        "DELETE FROM warden.audit_inbox WHERE id OPERATOR(pg_catalog.=) ANY ($1)",
        &[ids.into()],
    )
    .map_err(spi_error)?;
    Ok(rows.len() as i64)
}
