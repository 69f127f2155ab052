//! Decrypted secrets, kept per backend: `warden.webhook_verify`'s
//! candidates (a receiver verifies many deliveries signed with one
//! secret) and `warden.secret_get`'s latest version. Looking the versions
//! up and decrypting them was most of a call. Each call still records its
//! own audit event.
//!
//! What is cached is exactly what `read::versions` and decryption would
//! give now, and is dropped when that could change:
//! - any write to `warden.secrets` (a statement trigger: set, delete,
//!   undelete, destroy, retention, and a superuser's own statements)
//!   queues a relcache invalidation of the table, which every backend
//!   applies at its next transaction, and each cached call also applies
//!   the invalidations already queued (so a delete committed during a long
//!   transaction is seen at the next call, as an uncached READ COMMITTED
//!   lookup would);
//! - a change of `warden.keys` (rotation, shredding) invalidates it too;
//! - a transaction that wrote secrets bypasses the cache until it ends,
//!   and so does one under REPEATABLE READ or SERIALIZABLE (it reads its
//!   own snapshot);
//! - an entry is loaded under a snapshot taken after the invalidations
//!   were applied, never under the calling statement's older one;
//! - time: an entry ends at the earliest expiry of its versions and at
//!   the end of each older version's rotation overlap (and after a minute
//!   regardless).
//!
//! The key cache already holds the tenants' data keys for the life of the
//! backend; the plaintexts' pages are kept out of core dumps as the keys'
//! are, and the plaintexts are zeroized when dropped.

use std::cell::RefCell;

use pgrx::pg_sys;
use zeroize::Zeroizing;

use super::read::Stored;

/// Secrets cached per backend, at most (then the cache starts over).
const MAX_ENTRIES: usize = 64;
/// How long an entry lives at most.
const MAX_AGE_US: i64 = 60_000_000;

/// The live versions of one secret of one tenant that a webhook would be
/// verified with (the latest, and older ones during their overlap).
pub(super) struct Candidates {
    /// The newest version (without its ciphertext): what `secret_get`
    /// returns, and what events name.
    pub newest: Stored,
    /// Its plaintext (None: it does not decrypt).
    pub newest_plain: Option<Zeroizing<Vec<u8>>>,
    /// The root key version its data key is wrapped under.
    pub newest_root_version: Option<i32>,
    /// The decrypted key bytes of each candidate, newest first (those
    /// that decrypt).
    pub secrets: Vec<Zeroizing<Vec<u8>>>,
    /// The version of each of `secrets` (without its ciphertext).
    pub secret_versions: Vec<Stored>,
}

struct Entry {
    tenant: String,
    name: String,
    overlap_us: i64,
    until_us: i64,
    candidates: std::rc::Rc<Candidates>,
}

#[derive(Default)]
struct Cache {
    entries: Vec<Entry>,
    /// This transaction wrote `warden.secrets`: no cache until it ends.
    wrote: bool,
    registered: bool,
    /// `warden.secrets` (InvalidOid: not looked up; every invalidation
    /// then counts). Writes to `warden.keys` reach the cache through the
    /// key cache's generation.
    relid: pg_sys::Oid,
    /// Counts the drops: an entry loaded while one happened is not kept.
    generation: u64,
    /// The key cache's generation the entries were decrypted under.
    key_generation: u64,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

/// The cached candidates of `name` (of `tenant`, with this overlap; with
/// `any_overlap`, those of any overlap: the newest version does not depend
/// on it), or those `load` gives, cached until when it says they hold.
pub(super) fn candidates(
    tenant: &str,
    name: &str,
    overlap_us: i64,
    any_overlap: bool,
    load: impl FnOnce() -> Option<(Candidates, i64)>,
) -> Option<std::rc::Rc<Candidates>> {
    // invalidations queued since this transaction began (a write another
    // session committed meanwhile), then the relations they are matched
    // against (looked up again after a reset)
    // SAFETY: applies pending invalidation messages, as any lock does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    register();
    // keys rotated or shredded in this backend (the key cache is dropped
    // at once, before the invalidation comes back)
    let key_generation = crate::crypto::key_cache_generation();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.key_generation != key_generation {
            c.key_generation = key_generation;
            drop_entries(&mut c);
        }
    });
    let now = crate::workers::now_us();
    // not under REPEATABLE READ or SERIALIZABLE: what such a transaction
    // reads is its snapshot's, which may be older than the invalidations
    // it has already taken
    // SAFETY: plain read.
    let snapshot_isolation = unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32;
    if snapshot_isolation || CACHE.with(|c| c.borrow().wrote) {
        return load().map(|(loaded, _)| std::rc::Rc::new(loaded));
    }
    let hit = CACHE.with(|c| {
        c.borrow()
            .entries
            .iter()
            .find(|e| {
                e.tenant == tenant
                    && e.name == name
                    && (any_overlap || e.overlap_us == overlap_us)
                    && now < e.until_us
            })
            .map(|e| e.candidates.clone())
    });
    if hit.is_some() {
        return hit;
    }
    // loaded under a snapshot taken after the invalidations were applied:
    // a write committed before then is in it, one committed after sends
    // an invalidation still to come (the statement's own snapshot may be
    // older than both)
    let generation = CACHE.with(|c| c.borrow().generation);
    // SAFETY: a fresh snapshot (READ COMMITTED) made active for the
    // look-up and popped after; an error pops it with the (sub)transaction.
    let loaded = unsafe {
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let loaded = load();
        pg_sys::PopActiveSnapshot();
        loaded
    };
    let (loaded, until_us) = loaded?;
    for secret in &loaded.secrets {
        crate::crypto::protect_secret_memory(secret.as_ptr(), secret.len());
    }
    if let Some(plain) = &loaded.newest_plain {
        crate::crypto::protect_secret_memory(plain.as_ptr(), plain.len());
    }
    let loaded = std::rc::Rc::new(loaded);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        // an invalidation taken during the look-up (its locks apply them):
        // what it loaded may be what the invalidation is about
        if c.generation != generation || c.key_generation != crate::crypto::key_cache_generation() {
            return;
        }
        c.entries
            .retain(|e| !(e.tenant == tenant && e.name == name) && now < e.until_us);
        if c.entries.len() >= MAX_ENTRIES {
            c.entries.clear();
        }
        c.entries.push(Entry {
            tenant: tenant.to_string(),
            name: name.to_string(),
            overlap_us,
            until_us: until_us.min(now.saturating_add(MAX_AGE_US)),
            candidates: loaded.clone(),
        });
    });
    Some(loaded)
}

/// Until when `versions` stay the candidates (Postgres microseconds):
/// the first expiry, and the end of each older version's overlap.
pub(super) fn valid_until(versions: &[Stored], overlap_us: i64) -> i64 {
    versions
        .iter()
        .flat_map(|s| {
            [
                s.expires_at_us,
                s.replaced_at_us.map(|r| r.saturating_add(overlap_us)),
            ]
        })
        .flatten()
        .min()
        .unwrap_or(i64::MAX)
}

/// A statement wrote `warden.secrets` (relation `relid`) in this
/// transaction: every backend drops its cache when it commits, this one
/// now and until it ends.
fn secrets_written(relid: pg_sys::Oid) {
    register();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.wrote = true;
        drop_entries(&mut c);
    });
    // SAFETY: queues a relcache invalidation, sent at commit.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

crate::fmgr::function_info_v1!(pg_finfo_secrets_changed);

/// The statement trigger on `warden.secrets`: any write, through
/// pg_warden's functions or not (a superuser's UPDATE, a restore), drops
/// the cached plaintexts.
///
/// # Safety
/// Called by the trigger manager.
#[unsafe(no_mangle)]
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn secrets_changed(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the trigger manager passes TriggerData as the context.
    let relid = unsafe {
        (*crate::fmgr::trigger_data(fcinfo, "warden._secrets_changed()", None).tg_relation).rd_id
    };
    secrets_written(relid);
    pg_sys::Datum::from(0usize)
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION warden._secrets_changed() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'secrets_changed';
COMMENT ON FUNCTION warden._secrets_changed() IS
  'Internal: the statement trigger on warden.secrets; tells every backend to drop the secrets it cached decrypted.';
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON warden.secrets
  FOR EACH STATEMENT EXECUTE FUNCTION warden._secrets_changed();
-- also under session_replication_role = replica (logical replication
-- apply, a restore that disables triggers)
ALTER TABLE warden.secrets ENABLE ALWAYS TRIGGER secrets_changed;
COMMENT ON TRIGGER secrets_changed ON warden.secrets IS
  'Drops every backend''s cached decrypted secrets at commit (warden.secret_get, warden.webhook_verify).';
"#,
    name = "secrets_changed_trigger",
    requires = ["secrets_tables"],
);

fn register() {
    let registered = CACHE.with(|c| std::mem::replace(&mut c.borrow_mut().registered, true));
    if !registered {
        crate::dispatch::invalidation::on_relcache("secret plaintexts", on_relcache);
        crate::dispatch::xact::subscribe(crate::dispatch::xact::Handler {
            name: "secret plaintexts",
            xact: on_xact,
            subxact: |_, _| {},
        });
    }
    if CACHE.with(|c| c.borrow().relid == pg_sys::InvalidOid) {
        let relid = crate::heap_append::warden_relation(c"secrets");
        CACHE.with(|c| c.borrow_mut().relid = relid);
    }
}

fn drop_entries(c: &mut Cache) {
    c.entries.clear();
    c.generation = c.generation.wrapping_add(1);
}

fn on_relcache(relid: pg_sys::Oid) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let unknown = c.relid == pg_sys::InvalidOid;
        if relid == pg_sys::InvalidOid || unknown || c.relid == relid {
            drop_entries(&mut c);
            if relid == pg_sys::InvalidOid || c.relid == relid {
                // looked up again at the next call (after it applied the
                // invalidations): the tables may have been dropped and
                // made anew
                c.relid = pg_sys::InvalidOid;
            }
        }
    });
}

fn on_xact(event: crate::dispatch::xact::XactEvent) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_ABORT
            | XACT_EVENT_PREPARE
    ) {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.wrote {
                c.wrote = false;
                drop_entries(&mut c);
            }
        });
    }
}
