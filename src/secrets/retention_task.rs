//! The worker task that destroys what the store must not keep: expired
//! versions, and versions of a secret beyond the newest
//! `warden.secret_max_versions` (deleted ones count; destroyed ones do
//! not). Each destroyed version is recorded (`secret.destroy`, reason
//! `expired` or `max_versions`) in its tenant's chain, in the same
//! transaction as the destroy.

use std::time::Duration;

use pgrx::prelude::*;

use warden_core::secrets::{access_fields, Access, Outcome};

use crate::error::WardenError;
use crate::privileged::as_superuser;
use crate::workers::{register_task, Task, TaskContext, TaskReport, TaskSpec};

/// Versions destroyed per run (more: the next run comes at once).
const BATCH: i64 = 1_000;
/// How soon an expired version is destroyed, at most.
const INTERVAL: Duration = Duration::from_secs(10);

pub fn register() {
    register_task(TaskSpec {
        name: "secret_retention",
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
            Duration::ZERO
        } else {
            INTERVAL
        }
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        self.more = false;
        if crate::heap_append::warden_relation(c"secrets") == pg_sys::InvalidOid {
            // the database's pg_warden predates the store
            return Ok(TaskReport::default());
        }
        let keep = crate::guc::secret_max_versions();
        let destroyed = as_superuser(|| destroy_batch(keep))?;
        for (tenant, name, version, reason) in &destroyed {
            let fields = access_fields(
                Outcome::Ok,
                &Access {
                    name: Some(name),
                    version: Some(*version),
                    ..Default::default()
                },
            );
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&fields).unwrap_or_default();
            map.insert("reason".into(), reason.as_str().into());
            // in the run's transaction: the worker must not wait on the
            // ring it drains itself, and an event exists exactly when the
            // destroy committed
            crate::audit::record_transactional("secret.destroy", Some(tenant), map);
        }
        self.more = destroyed.len() as i64 >= BATCH;
        Ok(TaskReport {
            backlog: destroyed.len() as i64,
        })
    }
}

/// Destroys up to BATCH versions; returns (tenant, name, version, reason).
fn destroy_batch(keep: i32) -> Result<Vec<(String, String, i32, String)>, WardenError> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "WITH doomed AS (
               SELECT s.tenant, s.name, s.version,
                      CASE WHEN s.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                           THEN 'expired' ELSE 'max_versions' END AS reason
                 FROM (SELECT s.tenant, s.name, s.version, s.expires_at, pg_catalog.row_number() OVER (PARTITION BY s.tenant, s.name ORDER BY s.version DESC) AS newest
                         FROM warden.secrets s WHERE s.destroyed_at IS NULL) s
                WHERE s.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                   OR s.newest OPERATOR(pg_catalog.>) $1
                ORDER BY s.tenant, s.name, s.version
                LIMIT $2)
             UPDATE warden.secrets s
                SET ciphertext = NULL, destroyed_at = pg_catalog.clock_timestamp()
               FROM doomed d
              WHERE s.tenant OPERATOR(pg_catalog.=) d.tenant AND s.name OPERATOR(pg_catalog.=) d.name
                AND s.version OPERATOR(pg_catalog.=) d.version
             RETURNING s.tenant, s.name, s.version, d.reason",
            None,
            &[keep.into(), BATCH.into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<i32>(3)?.unwrap_or(0),
                row.get::<String>(4)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| WardenError::prerequisite(format!("secret retention: {e}")))
}
