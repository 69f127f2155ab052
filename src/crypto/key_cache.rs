//! Data keys as a backend sees them: looked up (and created on first use)
//! in `warden.keys` with superuser rights, unwrapped under the root key,
//! and cached unwrapped for the life of the backend. The cache is dropped
//! when `warden.keys` changes (rotation and shredding broadcast a relcache
//! invalidation, applied by every backend at its next transaction) and
//! when a transaction or subtransaction that wrote `warden.keys` rolls
//! back or is prepared (its outcome is then decided elsewhere): a key
//! cached from a write that did not last would encrypt data nobody else
//! can ever decrypt.
//!
//! Before the first key is used, the root key is compared with the key
//! check values stored in `warden.keyring_check`, so a wrong or missing
//! root key is reported as such rather than as a decryption failure.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::prelude::*;
use zeroize::Zeroizing;

use warden_core::crypto::{
    check_value, fill_random, unwrap_data_key, wrap_data_key, DataKey, Purpose, WrapContext,
    KEY_BYTES,
};

use crate::error::WardenError;
use crate::privileged::as_superuser;

use super::root_key::root;

/// An unwrapped data key.
pub struct CachedKey {
    pub key_id: u32,
    /// The root key version it is wrapped under (as cached: a master key
    /// rotation in another session is seen after the cache's invalidation).
    pub root_version: u32,
    pub tenant: String,
    pub purpose: Purpose,
    pub raw: Zeroizing<[u8; KEY_BYTES]>,
    pub aead: DataKey,
}

#[derive(Default)]
struct Cache {
    /// purpose -> tenant -> active key id
    active: HashMap<Purpose, HashMap<String, u32>>,
    keys: HashMap<u32, Rc<CachedKey>>,
    key_check_passed: bool,
    keys_relid: Option<pg_sys::Oid>,
    callback_registered: bool,
    /// This transaction wrote `warden.keys` (created, rotated or shredded
    /// a key): the cache may hold what a rollback undoes.
    wrote_keys: bool,
    /// This transaction queued the invalidation of `warden.keys` (and no
    /// subtransaction rolled back since).
    invalidation_queued: bool,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    /// Counts the clears: caches derived from keys (the secrets store's
    /// plaintexts) drop what they hold when it moves.
    static GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times this backend's key cache was dropped.
pub fn generation() -> u64 {
    GENERATION.get()
}

fn clear() {
    GENERATION.set(GENERATION.get().wrapping_add(1));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.active.clear();
        c.keys.clear();
        c.key_check_passed = false;
        c.keys_relid = None;
    });
}

fn on_relcache(relid: pg_sys::Oid) {
    let ours = CACHE.with(|c| c.borrow().keys_relid);
    if relid == pg_sys::InvalidOid || ours.is_none() || ours == Some(relid) {
        clear();
    }
}

fn on_xact(event: crate::dispatch::xact::XactEvent) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => {
            if CACHE.with(|c| c.borrow().wrote_keys) {
                clear();
            }
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                c.wrote_keys = false;
                c.invalidation_queued = false;
            });
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                c.wrote_keys = false;
                c.invalidation_queued = false;
            });
        }
        _ => {}
    }
}

fn on_subxact(event: crate::dispatch::xact::SubXactEvent, _level: i32) {
    // Which subtransaction wrote is not tracked: after any rollback of a
    // subtransaction of a transaction that wrote keys, reload (the keys
    // that survived are found again in the same transaction).
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // the invalidation it may have queued is gone with it
        CACHE.with(|c| c.borrow_mut().invalidation_queued = false);
        if CACHE.with(|c| c.borrow().wrote_keys) {
            clear();
        }
    }
}

/// Records that this transaction wrote `warden.keys`, so that the cache
/// is dropped if the write is rolled back (rule 5 of docs/security.md).
pub fn note_keys_written() {
    ensure_callback();
    CACHE.with(|c| c.borrow_mut().wrote_keys = true);
}

fn ensure_callback() {
    let registered =
        CACHE.with(|c| std::mem::replace(&mut c.borrow_mut().callback_registered, true));
    if !registered {
        crate::dispatch::invalidation::on_relcache("key cache", on_relcache);
        crate::dispatch::xact::subscribe(crate::dispatch::xact::Handler {
            name: "key cache",
            xact: on_xact,
            subxact: on_subxact,
        });
    }
    if CACHE.with(|c| c.borrow().keys_relid.is_none()) {
        // SAFETY: catalog lookups in the current transaction.
        let relid = unsafe {
            let ns = pg_sys::get_namespace_oid(c"warden".as_ptr(), true);
            if ns == pg_sys::InvalidOid {
                pg_sys::InvalidOid
            } else {
                pg_sys::get_relname_relid(c"keys".as_ptr(), ns)
            }
        };
        if relid != pg_sys::InvalidOid {
            CACHE.with(|c| c.borrow_mut().keys_relid = Some(relid));
        }
    }
}

/// Tells every backend (at its next transaction) that `warden.keys` changed.
pub fn broadcast_invalidation() {
    note_keys_written();
    if let Some(relid) = CACHE.with(|c| c.borrow().keys_relid) {
        queue_invalidation(relid);
    }
    clear();
}

crate::fmgr::function_info_v1!(pg_finfo_keys_changed);

/// The triggers on `warden.keys`, for each updated or deleted row and
/// each truncate: a change that did not come through pg_warden's
/// functions (a superuser's UPDATE, logical replication's apply, which
/// fires row triggers only) drops every backend's cached keys at commit,
/// as rotation and shredding do. Inserts cannot change a cached key (key
/// ids are unique, one active key per tenant and purpose), so key
/// creation broadcasts nothing.
///
/// # Safety
/// Called by the trigger manager.
#[unsafe(no_mangle)]
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn keys_changed(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the trigger manager passes TriggerData as the context.
    let relid = unsafe {
        (*crate::fmgr::trigger_data(fcinfo, "warden._keys_changed()", None).tg_relation).rd_id
    };
    note_keys_written();
    queue_invalidation(relid);
    clear();
    pg_sys::Datum::from(0usize)
}

/// Queues the relcache invalidation of `warden.keys` that makes every
/// backend drop its cached keys when this transaction commits: once per
/// transaction (a master key rotation updates every key row, and each
/// message would go into the commit record and the shared queue), again
/// after a subtransaction rolled back (its messages went with it).
fn queue_invalidation(relid: pg_sys::Oid) {
    if !CACHE.with(|c| std::mem::replace(&mut c.borrow_mut().invalidation_queued, true)) {
        // SAFETY: queues a relcache invalidation, sent at commit.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION warden._keys_changed() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'keys_changed';
REVOKE ALL ON FUNCTION warden._keys_changed() FROM PUBLIC;
COMMENT ON FUNCTION warden._keys_changed() IS
  'Internal: the triggers on warden.keys; tell every backend to drop the data keys it cached unwrapped.';
CREATE TRIGGER keys_changed AFTER UPDATE OR DELETE ON warden.keys
  FOR EACH ROW EXECUTE FUNCTION warden._keys_changed();
CREATE TRIGGER keys_truncated AFTER TRUNCATE ON warden.keys
  FOR EACH STATEMENT EXECUTE FUNCTION warden._keys_changed();
-- also under session_replication_role = replica (logical replication's
-- apply, which fires row triggers only)
ALTER TABLE warden.keys ENABLE ALWAYS TRIGGER keys_changed;
ALTER TABLE warden.keys ENABLE ALWAYS TRIGGER keys_truncated;
COMMENT ON TRIGGER keys_changed ON warden.keys IS
  'Drops every backend''s cached data keys at commit after a key row is updated or deleted, through pg_warden''s functions or not.';
COMMENT ON TRIGGER keys_truncated ON warden.keys IS
  'Drops every backend''s cached data keys at commit after warden.keys is truncated.';
"#,
    name = "keys_changed_trigger",
    requires = ["keys_table"],
);

/// Compares the loaded root key with the stored key check values.
pub fn key_check() -> Result<(), WardenError> {
    let ring = root();
    let rows: Vec<(i32, Vec<u8>)> = as_superuser(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT root_version, check_value FROM warden.keyring_check ORDER BY 1",
                    None,
                    &[],
                )?
                .map(|row| {
                    Ok((
                        row.get::<i32>(1)?.unwrap_or(0),
                        row.get::<Vec<u8>>(2)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot read warden.keyring_check: {e}")).raise()
    });
    for (version, stored) in rows {
        let Some(key) = ring.get(version as u32) else {
            return Err(WardenError::prerequisite(format!(
                "root key version {version}, which wraps data keys in this database, is missing"
            ))
            .detail(format!("The loaded root key has versions {:?}.", ring.versions()))
            .hint(format!(
                "Add v{version} back to the key file and restart; drop an old version only after warden.rotate_master_key()."
            )));
        };
        if !constant_time_eq(&check_value(key), &stored) {
            return Err(WardenError::prerequisite("the root key does not match this database's keyring")
                .detail(format!("The key check value of root key version {version} differs from the one stored when it was first used."))
                .hint("Start the server with the key file (warden.key_file) this database's keys were wrapped with."));
        }
    }
    Ok(())
}

/// Stores the key check value of a root key version on its first use.
/// A worker never waits for it: when a session is inserting the same row
/// (its first key, in a transaction that may itself wait for the worker,
/// a strict audit event), that row is the worker's too.
fn record_check_value(root_version: i32, value: Vec<u8>) -> Result<(), pgrx::spi::Error> {
    const INSERT: &str = "INSERT INTO warden.keyring_check (root_version, check_value) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    if !crate::workers::in_background_worker() {
        return Spi::run_with_args(INSERT, &[root_version.into(), value.into()]);
    }
    let _ = as_superuser(|| {
        crate::subtransaction::in_subtransaction(|| {
            crate::guc::set_local(c"lock_timeout", "10");
            Spi::run_with_args(INSERT, &[root_version.into(), value.into()])
                .unwrap_or_else(|e| WardenError::prerequisite(e.to_string()).raise());
        })
    });
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ensure_key_check() {
    ensure_callback();
    if CACHE.with(|c| c.borrow().key_check_passed) {
        return;
    }
    if let Err(e) = key_check() {
        e.raise();
    }
    CACHE.with(|c| c.borrow_mut().key_check_passed = true);
}

fn keyring_damaged(key_id: u32) -> WardenError {
    WardenError::new(pgrx::PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("data key {key_id} cannot be unwrapped"))
        .detail("Its row in warden.keys does not authenticate under the root key although the key check passed.")
        .hint("Restore warden.keys from a backup.")
}

/// Unwraps a stored data key under its root key version. A missing
/// version or a row that does not authenticate is an operator problem
/// (55000 / XX001), not a decryption failure.
pub(super) fn unwrap_raw(
    key_id: u32,
    tenant: &str,
    purpose: Purpose,
    root_version: i32,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; KEY_BYTES]>, WardenError> {
    let root_key = root().get(root_version as u32).ok_or_else(|| {
        WardenError::prerequisite(format!("root key version {root_version} is missing"))
            .hint(format!(
                "Add v{root_version} back to the key file and restart; drop a version only after warden.rotate_master_key() has rewrapped its keys."
            ))
    })?;
    let ctx = WrapContext {
        tenant,
        purpose,
        key_id,
        root_version: root_version as u32,
    };
    unwrap_data_key(root_key, &ctx, wrapped).map_err(|_| keyring_damaged(key_id))
}

fn unwrap(
    key_id: u32,
    tenant: String,
    purpose: Purpose,
    root_version: i32,
    wrapped: &[u8],
) -> Result<CachedKey, WardenError> {
    let raw = unwrap_raw(key_id, &tenant, purpose, root_version, wrapped)?;
    let aead = DataKey::new(&raw);
    Ok(CachedKey {
        key_id,
        root_version: root_version as u32,
        tenant,
        purpose,
        raw,
        aead,
    })
}

fn remember(key: CachedKey, active: bool) -> Rc<CachedKey> {
    let key = Rc::new(key);
    super::key_memory::protect(key.raw.as_ptr(), key.raw.len());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if active {
            c.active
                .entry(key.purpose)
                .or_default()
                .insert(key.tenant.clone(), key.key_id);
        }
        c.keys.insert(key.key_id, key.clone());
    });
    key
}

fn cached_active(tenant: &str, purpose: Purpose) -> Option<Rc<CachedKey>> {
    CACHE.with(|c| {
        let c = c.borrow();
        let id = c.active.get(&purpose)?.get(tenant)?;
        c.keys.get(id).cloned()
    })
}

/// The active key of (tenant, purpose), created if the tenant has none.
pub fn active_key(tenant: &str, purpose: Purpose) -> Rc<CachedKey> {
    let hit = cached_active(tenant, purpose);
    if let Some(key) = hit {
        return key;
    }
    ensure_key_check();
    let key = match load_active(tenant, purpose) {
        Some(key) => key,
        None => create_active(tenant, purpose),
    };
    remember(key, true)
}

/// The active key of (tenant, purpose) if the tenant has one; never
/// creates a key (for verification, where a missing key means "invalid").
pub fn existing_active_key(tenant: &str, purpose: Purpose) -> Option<Rc<CachedKey>> {
    let hit = cached_active(tenant, purpose);
    if hit.is_some() {
        return hit;
    }
    ensure_key_check();
    load_active(tenant, purpose).map(|key| remember(key, true))
}

fn load_active(tenant: &str, purpose: Purpose) -> Option<CachedKey> {
    let row = as_superuser(|| {
        crate::spi_read::read_three::<i32, i32, Vec<u8>>(
            "SELECT key_id, root_version, wrapped FROM warden.keys
              WHERE tenant OPERATOR(pg_catalog.=) $1 AND purpose OPERATOR(pg_catalog.=) $2
                AND state OPERATOR(pg_catalog.=) 'active'",
            &[tenant.into(), purpose.as_str().into()],
        )
    });
    match row {
        Ok((Some(id), Some(version), Some(wrapped))) => Some(
            unwrap(id as u32, tenant.to_string(), purpose, version, &wrapped)
                .unwrap_or_else(|e| e.raise()),
        ),
        Ok(_) | Err(pgrx::spi::Error::InvalidPosition) => None,
        Err(e) => WardenError::prerequisite(format!("cannot read warden.keys: {e}")).raise(),
    }
}

fn create_active(tenant: &str, purpose: Purpose) -> CachedKey {
    // SAFETY: reads backend globals.
    let (read_only, standby) = unsafe { (pg_sys::XactReadOnly, pg_sys::RecoveryInProgress()) };
    if read_only {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("tenant has no {} key yet, and a read-only transaction cannot create one", purpose.as_str()),
        )
        .hint(if standby {
            "This server is a standby: encrypt for this tenant on the primary once; the key then reaches the standby."
        } else {
            "Run it in a read-write transaction once; the key is then there for read-only ones."
        })
        .raise();
    }
    let ring = root();
    let (root_version, root_key) = ring.active();
    let mut raw = Zeroizing::new([0u8; KEY_BYTES]);
    if fill_random(&mut raw[..]).is_err() {
        WardenError::random_source_failed().raise();
    }
    let inserted: Option<i32> = as_superuser(|| {
        let key_id =
            Spi::get_one::<i32>("SELECT pg_catalog.nextval('warden.keys_key_id_seq')::integer")?
                .expect("nextval returns a value");
        let ctx = WrapContext {
            tenant,
            purpose,
            key_id: key_id as u32,
            root_version,
        };
        let wrapped = wrap_data_key(root_key, &ctx, &raw).expect("random source already checked");
        record_check_value(root_version as i32, check_value(root_key).to_vec())?;
        Spi::get_one_with_args::<i32>(
            "INSERT INTO warden.keys (key_id, tenant, purpose, root_version, wrapped)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, purpose) WHERE state = 'active' DO NOTHING
             RETURNING key_id",
            &[
                key_id.into(),
                tenant.into(),
                purpose.as_str().into(),
                (root_version as i32).into(),
                wrapped.into(),
            ],
        )
        .or_else(|e| match e {
            pgrx::spi::Error::InvalidPosition => Ok(None),
            e => Err(e),
        })
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot create a data key: {e}")).raise()
    });
    match inserted {
        Some(key_id) => {
            // a key made in a (sub)transaction that rolls back must not
            // outlive it
            note_keys_written();
            let aead = DataKey::new(&raw);
            CachedKey {
                key_id: key_id as u32,
                root_version,
                tenant: tenant.to_string(),
                purpose,
                raw,
                aead,
            }
        }
        // another session created it first
        None => load_active(tenant, purpose).unwrap_or_else(|| {
            WardenError::prerequisite("a concurrent session is creating this tenant's data key")
                .hint("Retry the statement.")
                .raise()
        }),
    }
}

/// A key by id, for decryption: `None` when unknown, shredded, or not
/// (tenant, purpose)'s. Never raises for those cases: the caller turns
/// `None` into the one generic decryption error.
pub fn key_by_id(key_id: u32, tenant: &str, purpose: Purpose) -> Option<Rc<CachedKey>> {
    let hit = CACHE.with(|c| c.borrow().keys.get(&key_id).cloned());
    let key = match hit {
        Some(key) => key,
        None => {
            if key_id == 0 || key_id > i32::MAX as u32 {
                return None;
            }
            ensure_key_check();
            let row = as_superuser(|| {
                Spi::connect(|client| {
                    let table = client.select(
                        "SELECT tenant, purpose, root_version, wrapped FROM warden.keys
                          WHERE key_id OPERATOR(pg_catalog.=) $1",
                        Some(1),
                        &[(key_id as i32).into()],
                    )?;
                    if table.is_empty() {
                        return Ok(None);
                    }
                    let row = table.first();
                    Ok::<_, pgrx::spi::Error>(Some((
                        row.get::<String>(1)?,
                        row.get::<String>(2)?,
                        row.get::<i32>(3)?,
                        row.get::<Vec<u8>>(4)?,
                    )))
                })
            })
            .unwrap_or_else(|e| {
                WardenError::prerequisite(format!("cannot read warden.keys: {e}")).raise()
            });
            let (Some(t), Some(p), Some(v), Some(wrapped)) = row? else {
                return None; // shredded: no key material left
            };
            let p = Purpose::parse(&p)?;
            // another tenant's or purpose's key is never unwrapped here: the
            // caller answers with the one generic decryption error
            if t != tenant || p != purpose {
                return None;
            }
            remember(
                unwrap(key_id, t, p, v, &wrapped).unwrap_or_else(|e| e.raise()),
                false,
            )
        }
    };
    (key.tenant == tenant && key.purpose == purpose).then_some(key)
}
