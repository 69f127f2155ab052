//! Every pg_warden setting, in one place, with typed accessors.
//!
//! Security settings are `SUSET` (only superusers and pg_warden's own
//! functions change them); worker timing is `SIGHUP`; anything that sizes
//! shared memory or changes what the postmaster starts is `POSTMASTER` and
//! is registered only while preloading (registering it later raises FATAL).
//! The `warden.` prefix is reserved, so a typo such as `warden.tennant`
//! is refused instead of silently creating a placeholder.

use std::ffi::{c_char, c_void, CStr, CString};
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

use warden_core::tenancy::validate_tenant_id;
use warden_core::workers::DatabaseFilter;

/// Name of the tenant setting, for `set_config_option`.
pub const TENANT_GUC: &CStr = c"warden.tenant";

static TENANT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static WORKER_NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
static LAUNCHER_NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static HEARTBEAT_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static SCD2_APPLY_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
static SCD2_APPLY_BATCH: GucSetting<i32> = GucSetting::<i32>::new(1_000_000);
static ENABLE_FAULT_INJECTION: GucSetting<bool> = GucSetting::<bool>::new(false);
static KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static KEY_COMMAND: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static REQUIRE_TENANT_TOKEN: GucSetting<bool> = GucSetting::<bool>::new(false);
static LINT_TENANT_COLUMNS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(
    c"tenant,tenant_id,org_id,organization_id,account_id,workspace_id,customer_id",
));
static MAX_PLAINTEXT_BYTES: GucSetting<i32> = GucSetting::<i32>::new(65_536);
/// Tokens are bearer credentials that show up in logs and
/// `pg_stat_activity` when passed as literals: keep them short-lived.
static TENANT_TOKEN_MAX_TTL_S: GucSetting<i32> = GucSetting::<i32>::new(900);
static AUDIT_STRICT: GucSetting<bool> = GucSetting::<bool>::new(false);
static AUDIT_STRICT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
/// Per database: 64 databases take 8 MB at the default.
static AUDIT_RING_KB: GucSetting<i32> = GucSetting::<i32>::new(128);
/// 30 days.
static AUDIT_MIN_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
static AUDIT_CHECKPOINT_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// One day, as idempotency keys of payment APIs.
static OUTBOX_DEDUPE_WINDOW_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// A week: handled messages stay that long for inspection and replay.
static OUTBOX_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
static MAX_SECRET_BYTES: GucSetting<i32> = GucSetting::<i32>::new(65_536);
static SECRET_MAX_VERSIONS: GucSetting<i32> = GucSetting::<i32>::new(10);
/// A day: long enough for every sender to pick up a rotated secret.
static WEBHOOK_SECRET_OVERLAP_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// Transaction-local context of audit events, written only through
/// warden.set_actor() and warden.set_correlation_id().
pub const ACTOR_GUC: &CStr = c"warden.actor";
pub const ACTOR_KIND_GUC: &CStr = c"warden.actor_kind";
pub const CORRELATION_ID_GUC: &CStr = c"warden.correlation_id";
static ACTOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ACTOR_KIND: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CORRELATION_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// The longest `warden.tenant_token_max_ttl` may be set to.
pub const TENANT_TOKEN_TTL_LIMIT_S: i32 = 30 * 24 * 3600;

/// Largest plaintext `warden.max_plaintext_bytes` may allow: a bytea must
/// still hold the envelope.
const MAX_PLAINTEXT_LIMIT: i32 = 1_073_741_823 - 64;

pub fn init(preloading: bool) {
    // SAFETY: called once from _PG_init on the main thread; the settings
    // are 'static and the hooks are #[pg_guard]ed extern fns.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            TENANT_GUC.as_ptr(),
            c"Tenant of the current transaction; set it with warden.set_tenant().".as_ptr(),
            c"Read by warden.current_tenant() and the RLS policies of warden.enable_tenancy(). Only superusers and pg_warden's functions may change it.".as_ptr(),
            TENANT.as_ptr(),
            std::ptr::null(),
            pg_sys::GucContext::PGC_SUSET,
            0,
            Some(check_tenant),
            None,
            None,
        );
        pg_sys::DefineCustomStringVariable(
            c"warden.databases".as_ptr(),
            c"Databases that may run a pg_warden worker (comma-separated; empty means all).".as_ptr(),
            c"A database also needs the extension installed, to allow connections and not to be a template. Names are matched exactly.".as_ptr(),
            DATABASES.as_ptr(),
            std::ptr::null(),
            pg_sys::GucContext::PGC_SIGHUP,
            0,
            Some(check_databases),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"warden.worker_naptime",
        c"Longest sleep of a database worker between checks.",
        c"Commit-time wake-ups cut the sleep short; this bounds how late a worker notices DROP EXTENSION or a reloaded setting.",
        &WORKER_NAPTIME_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"warden.launcher_naptime",
        c"How often the launcher rescans pg_database for new or dropped databases.",
        c"CREATE EXTENSION wakes the launcher at once; the rescan finds databases created from a template that already has pg_warden.",
        &LAUNCHER_NAPTIME_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"warden.heartbeat_interval",
        c"Interval of the heartbeat task that proves each database worker is alive.",
        c"",
        &HEARTBEAT_INTERVAL_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"warden.scd2_apply_interval",
        c"How often a database worker applies the queued changes of sources tracked with deferred => true.",
        c"Their histories lag commits by up to this much (plus the apply itself); warden.scd2_flush() applies at once.",
        &SCD2_APPLY_INTERVAL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"warden.scd2_apply_batch",
        c"Most source transactions one SCD2 apply statement takes from a queue.",
        c"A queue holding more changes than this is applied in statements of this many source transactions each (those that ended first), so no single statement grows without bound; a smaller queue is applied in one.",
        &SCD2_APPLY_BATCH,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"warden.require_tenant_token",
        c"Refuse warden.set_tenant() for roles that are not warden_admin.",
        c"Applications must then prove their tenant with warden.set_tenant_token(), so SQL injection in an application cannot switch tenants.",
        &REQUIRE_TENANT_TOKEN,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"warden.tenant_token_max_ttl",
        c"Longest lifetime of a tenant token, at minting and at verification.",
        c"warden.tenant_token() refuses a longer ttl, and warden.set_tenant_token() refuses a token minted for longer (say, before this was lowered).",
        &TENANT_TOKEN_MAX_TTL_S,
        1,
        TENANT_TOKEN_TTL_LIMIT_S,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"warden.lint_tenant_columns",
        c"Column names warden.lint() treats as tenant columns (comma-separated).",
        c"",
        &LINT_TENANT_COLUMNS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"warden.max_plaintext_bytes",
        c"Largest plaintext warden.encrypt() accepts.",
        c"Larger inputs are refused with SQLSTATE 22001 before anything is encrypted.",
        &MAX_PLAINTEXT_BYTES,
        0,
        MAX_PLAINTEXT_LIMIT,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_bool_guc(
        c"warden.audit_strict",
        c"Durable audit events return only once the worker has committed them.",
        c"Fail closed: a durable event (and the secret access it records) that cannot be committed within warden.audit_strict_timeout raises instead of returning.",
        &AUDIT_STRICT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"warden.audit_strict_timeout",
        c"How long a durable audit event waits for room in the ring, and in strict mode for its commit.",
        c"Past it the call raises (SQLSTATE 57014) and returns nothing; an event is never dropped silently.",
        &AUDIT_STRICT_TIMEOUT_MS,
        1,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"warden.audit_checkpoint_interval",
        c"Shortest time between two signed checkpoints of a chain (0: after every batch).",
        c"Events chained after a chain's last checkpoint are protected by the hash chain alone until the next one.",
        &AUDIT_CHECKPOINT_INTERVAL_MS,
        0,
        86_400_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"warden.outbox_dedupe_window",
        c"How long a publish's dedupe_key keeps a repeated publish from publishing again.",
        c"A publish with the dedupe_key of one published within this time publishes nothing and returns the first message's id.",
        &OUTBOX_DEDUPE_WINDOW_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"warden.outbox_retention",
        c"How long the worker keeps outbox messages every subscription has handled, and failed dead-letter deliveries.",
        c"Older ones are deleted in batches; dead letters stay until warden.purge_dead_letters.",
        &OUTBOX_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"warden.max_secret_bytes",
        c"Largest secret value warden.secret_set() accepts.",
        c"Larger values are refused with SQLSTATE 22001 before anything is encrypted or written.",
        &MAX_SECRET_BYTES,
        1,
        MAX_PLAINTEXT_LIMIT,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"warden.secret_max_versions",
        c"Versions of one secret kept; the worker destroys older ones.",
        c"Counts every version not yet destroyed (deleted ones too), newest first.",
        &SECRET_MAX_VERSIONS,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"warden.webhook_secret_overlap",
        c"While a webhook secret is rotated, live versions created within this of now are tried too.",
        c"warden.webhook_verify tries the latest live version and every live version younger than this.",
        &WEBHOOK_SECRET_OVERLAP_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"warden.audit_min_retention",
        c"DROP EXTENSION pg_warden is refused while the audit log holds events younger than this.",
        c"Set it in postgresql.conf (reloaded); 0 allows the drop once every event is chained.",
        &AUDIT_MIN_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    for (name, short, setting) in [
        (
            ACTOR_GUC,
            c"Actor recorded with audit events; set it with warden.set_actor().",
            &ACTOR,
        ),
        (
            ACTOR_KIND_GUC,
            c"Kind of the actor (user, admin, service, system); set with warden.set_actor().",
            &ACTOR_KIND,
        ),
        (
            CORRELATION_ID_GUC,
            c"Correlation id recorded with audit events; set it with warden.set_correlation_id().",
            &CORRELATION_ID,
        ),
    ] {
        GucRegistry::define_string_guc(
            name,
            short,
            c"Transaction-local; only superusers and pg_warden's functions change it.",
            setting,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
    if preloading {
        GucRegistry::define_int_guc(
            c"warden.audit_ring_size",
            c"Size of each database's ring of durable audit events not yet committed by the worker.",
            c"Events in the ring when the server crashes are lost unless they were strict; a full ring makes durable events wait (warden.audit_strict_timeout).",
            &AUDIT_RING_KB,
            16,
            1_048_576,
            GucContext::Postmaster,
            GucFlags::UNIT_KB,
        );
        GucRegistry::define_string_guc(
            c"warden.key_file",
            c"File holding the root key (lines v<N>:<64 hex digits>; mode 0600).",
            c"Read once by the postmaster at start-up. The highest version wraps new data keys; older versions only unwrap.",
            &KEY_FILE,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
        GucRegistry::define_string_guc(
            c"warden.key_command",
            c"Command whose standard output is the root key file (for a KMS or Vault).",
            c"Run once by the postmaster at start-up with /bin/sh -c; used when warden.key_file is empty.",
            &KEY_COMMAND,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
        GucRegistry::define_bool_guc(
            c"warden.enable_fault_injection",
            c"Allows warden._inject_worker_fault() (testing only).",
            c"Lets a superuser make a worker task panic or a worker exit, to test recovery. Leave off in production.",
            &ENABLE_FAULT_INJECTION,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    // SAFETY: plain call on the main thread during _PG_init.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"warden".as_ptr()) };
}

/// The tenant of this transaction, `None` when unset or empty.
pub fn tenant() -> Option<&'static str> {
    // SAFETY: the GUC machinery owns the string; it stays valid until the
    // setting changes, and callers copy it before running any SQL.
    let raw = unsafe { *TENANT.as_ptr() };
    if raw.is_null() {
        return None;
    }
    let s = unsafe { CStr::from_ptr(raw) }.to_str().ok()?;
    (!s.is_empty()).then_some(s)
}

pub fn database_filter() -> DatabaseFilter {
    DATABASES
        .get()
        .and_then(|s| s.to_str().ok().map(DatabaseFilter::parse))
        .and_then(Result::ok)
        .unwrap_or(DatabaseFilter::All)
}

pub fn worker_naptime() -> Duration {
    Duration::from_millis(WORKER_NAPTIME_MS.get() as u64)
}

pub fn launcher_naptime() -> Duration {
    Duration::from_millis(LAUNCHER_NAPTIME_MS.get() as u64)
}

pub fn heartbeat_interval() -> Duration {
    Duration::from_millis(HEARTBEAT_INTERVAL_MS.get() as u64)
}

pub fn scd2_apply_batch() -> i64 {
    i64::from(SCD2_APPLY_BATCH.get())
}

pub fn scd2_apply_interval() -> Duration {
    Duration::from_millis(SCD2_APPLY_INTERVAL_MS.get() as u64)
}

pub fn key_file() -> Option<String> {
    KEY_FILE
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty())
}

pub fn key_command() -> Option<String> {
    KEY_COMMAND
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty())
}

pub fn tenant_token_max_ttl_seconds() -> i64 {
    i64::from(TENANT_TOKEN_MAX_TTL_S.get())
}

pub fn require_tenant_token() -> bool {
    REQUIRE_TENANT_TOKEN.get()
}

pub fn max_plaintext_bytes() -> usize {
    MAX_PLAINTEXT_BYTES.get().max(0) as usize
}

pub fn audit_strict() -> bool {
    AUDIT_STRICT.get()
}

pub fn audit_strict_timeout() -> Duration {
    Duration::from_millis(AUDIT_STRICT_TIMEOUT_MS.get().max(1) as u64)
}

/// Bytes of each database's durable audit ring.
pub fn audit_ring_bytes() -> usize {
    AUDIT_RING_KB.get().max(16) as usize * 1024
}

pub fn audit_min_retention() -> Duration {
    Duration::from_secs(AUDIT_MIN_RETENTION_S.get().max(0) as u64)
}

pub fn outbox_dedupe_window() -> Duration {
    Duration::from_secs(OUTBOX_DEDUPE_WINDOW_S.get().max(0) as u64)
}

pub fn max_secret_bytes() -> usize {
    MAX_SECRET_BYTES.get().max(0) as usize
}

pub fn secret_max_versions() -> i32 {
    SECRET_MAX_VERSIONS.get().max(1)
}

pub fn webhook_secret_overlap() -> Duration {
    Duration::from_secs(WEBHOOK_SECRET_OVERLAP_S.get().max(0) as u64)
}

pub fn outbox_retention() -> Duration {
    Duration::from_secs(OUTBOX_RETENTION_S.get().max(0) as u64)
}

pub fn audit_checkpoint_interval() -> Duration {
    Duration::from_millis(AUDIT_CHECKPOINT_INTERVAL_MS.get().max(0) as u64)
}

fn text_setting(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty())
}

/// The actor, its kind and the correlation id of this transaction.
pub fn audit_context() -> (Option<String>, Option<String>, Option<String>) {
    (
        text_setting(&ACTOR),
        text_setting(&ACTOR_KIND),
        text_setting(&CORRELATION_ID),
    )
}

pub fn fault_injection_enabled() -> bool {
    ENABLE_FAULT_INJECTION.get()
}

/// Writes one of pg_warden's `SUSET` settings for the rest of the
/// transaction (or of the GUC nest level the caller opened), with
/// superuser context: the one path by which non-superusers change them.
pub fn set_local(name: &CStr, value: &str) {
    let value = CString::new(value).expect("validated values have no NUL");
    // SAFETY: both strings are valid C strings; elevel ERROR makes a
    // refusal raise instead of returning silently.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
    }
}

/// Runs `f` with each `(name, value)` of `settings` set in a GUC nest
/// level of its own, which restores every setting made since (also plain
/// session SETs, which a commit-style exit would keep); on error the
/// abort of the (sub)transaction undoes it.
pub fn with_settings<R>(settings: &[(&CStr, &CStr)], f: impl FnOnce() -> R) -> R {
    // SAFETY: a nest level of our own, closed below; the strings are
    // valid C strings.
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    for (name, value) in settings {
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
    }
    let result = f();
    // SAFETY: restores what the nest level saved.
    unsafe { pg_sys::AtEOXact_GUC(false, nest) };
    result
}

/// Plans the next statements to read an index in its order rather than
/// sort what it finds (a stale estimate of a table that grew fast leads
/// to a sort of the whole backlog) or scan the whole table (the outbox's
/// statements read one subscription's range of deliveries, which the
/// statistics cannot tell from the whole backlog), and without JIT: the
/// cost the planner adds to the sort it cannot avoid crosses
/// `jit_above_cost`, and compiling each execution took 0.2 s. Only inside
/// a GUC nest level of our own (`as_superuser`), which undoes it on
/// return.
pub fn plan_for_index_order() {
    set_local(c"enable_sort", "off");
    set_local(c"enable_seqscan", "off");
    set_local(c"enable_bitmapscan", "off");
    set_local(c"jit", "off");
}

/// Sets the GUC check-hook detail; Postgres prints it under the standard
/// "invalid value for parameter" message.
unsafe fn check_detail(detail: &str) {
    let detail = CString::new(detail).unwrap_or_default();
    // SAFETY: pstrdup copies into the current memory context, which the
    // GUC machinery reads before it is reset.
    unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn check_tenant(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: Postgres passes a valid pointer to a (possibly null) string.
    let value = unsafe { *newval };
    if value.is_null() {
        return true;
    }
    let Ok(text) = (unsafe { CStr::from_ptr(value) }).to_str() else {
        unsafe { check_detail("The tenant id is not valid UTF-8.") };
        return false;
    };
    // Empty is how the setting reads when reset: it means "no tenant".
    if text.is_empty() {
        return true;
    }
    match validate_tenant_id(text) {
        Ok(()) => true,
        Err(e) => {
            unsafe {
                check_detail(&format!(
                    "{e}; allowed are 1 to 128 ASCII letters, digits and _ . : @ + -."
                ))
            };
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_databases(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: as in check_tenant.
    let value = unsafe { *newval };
    if value.is_null() {
        return true;
    }
    let text = unsafe { CStr::from_ptr(value) }.to_string_lossy();
    match DatabaseFilter::parse(&text) {
        Ok(_) => true,
        Err(e) => {
            unsafe { check_detail(&format!("{e}.")) };
            false
        }
    }
}
