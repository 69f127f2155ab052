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
//! - a transaction that wrote secrets bypasses the cache until it ends;
//! - time: an entry ends at the earliest expiry of its versions and at
//!   the end of each older version's rotation overlap (and after a minute
//!   regardless).
//!
//! The key cache already holds the tenants' data keys in the same memory
//! for the life of the backend; plaintexts are zeroized when dropped.

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
    /// `warden.secrets` and `warden.keys` (InvalidOid: not looked up).
    relids: [pg_sys::Oid; 2],
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
    register();
    // invalidations queued since this transaction began (a write another
    // session committed meanwhile)
    // SAFETY: applies pending invalidation messages, as any lock does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let now = crate::workers::now_us();
    let usable = CACHE.with(|c| !c.borrow().wrote);
    if usable {
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
    }
    let (loaded, until_us) = load()?;
    let loaded = std::rc::Rc::new(loaded);
    if usable {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
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
    }
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
        c.entries.clear();
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
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            crate::error::WardenError::prerequisite(
                "warden._secrets_changed() must be called as a trigger",
            )
            .raise();
        }
        (*(*context.cast::<pg_sys::TriggerData>()).tg_relation).rd_id
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
    if CACHE.with(|c| c.borrow().relids[0] == pg_sys::InvalidOid) {
        let relids = [
            crate::heap_append::warden_relation(c"secrets"),
            crate::heap_append::warden_relation(c"keys"),
        ];
        CACHE.with(|c| c.borrow_mut().relids = relids);
    }
}

fn on_relcache(relid: pg_sys::Oid) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if relid == pg_sys::InvalidOid || c.relids.contains(&relid) {
            c.entries.clear();
            // looked up again: the tables may have been dropped and made
            // anew
            c.relids = [pg_sys::InvalidOid; 2];
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
                c.entries.clear();
            }
        });
    }
}
