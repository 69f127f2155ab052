//! SCD2 history under concurrency and crashes: 8 application sessions
//! insert, update (real and no-op changes, changes undone in the same
//! transaction), delete and roll back over 40 overlapping keys. Every
//! statement is made to a twin tracked with `deferred => true` in the same
//! transaction. Phase 1: REPEATABLE READ, sessions holding advisory locks on
//! their keys (so both twins always see the same rows: transactions still
//! interleave across keys, and the worker applies the queue meanwhile), the
//! postmaster killed (immediate stop) in the middle; phase 2: READ
//! COMMITTED, free-for-all on the same keys. After each phase the history
//! must agree with the table, key by key, with no overlapping or spurious
//! versions; once the worker has applied its queue, so must the deferred
//! twin's, and after phase 1 the two histories must be equal row for row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pg_warden_integration::*;
use postgres::error::SqlState;

const KEYS: i32 = 40;

/// A tiny deterministic generator per thread (no shared RNG state).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One session's workload until `stop`; errors (deadlocks, unique
/// conflicts on concurrent inserts, the crash) end the transaction, and a
/// lost connection ends the session.
fn writer(
    cluster_conn: String,
    seed: u64,
    isolation: &str,
    twins: bool,
    stop: Arc<AtomicBool>,
    counts: Arc<(AtomicU64, AtomicU64)>,
) {
    let (commits, diverged) = (&counts.0, &counts.1);
    let Ok(mut client) = Client::connect(&cluster_conn, NoTls) else {
        return;
    };
    let mut rng = Lcg(seed);
    while !stop.load(Ordering::Relaxed) {
        if client.is_closed() {
            return;
        }
        // statement by statement, so that the twins' row counts can be
        // compared
        let mut statements = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..1 + rng.next(3) {
            let k = 1 + rng.next(KEYS as u64);
            keys.push(k);
            let v = rng.next(5);
            let n = rng.next(3);
            statements.extend(match rng.next(7) {
                0 => vec![format!(
                    "INSERT INTO $t VALUES ({k}, {v}, 'n{v}') ON CONFLICT DO NOTHING"
                )],
                1 => vec![format!("DELETE FROM $t WHERE id = {k}")],
                2 => vec![format!("UPDATE $t SET note = note WHERE id = {k}")],
                3 => vec![
                    format!("UPDATE $t SET balance = balance + 1 WHERE id = {k}"),
                    format!("UPDATE $t SET balance = balance - 1 WHERE id = {k}"),
                ],
                _ => vec![format!(
                    "UPDATE $t SET balance = {v}, note = 'n{n}' WHERE id = {k}"
                )],
            });
        }
        let commit = rng.next(8) != 0;
        keys.sort_unstable();
        keys.dedup();
        let outcome = (|| -> Result<(), postgres::Error> {
            if twins {
                // The keys' previous transactions have committed before this
                // one's snapshot is taken, so both twins see the same rows.
                // (Without it, REPEATABLE READ transactions racing on a key
                // could leave the twins apart: an insert skipped as a
                // conflict in one table went through in the other.)
                for k in &keys {
                    client.execute("SELECT pg_advisory_lock($1)", &[&(*k as i64)])?;
                }
            }
            client.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}"))?;
            for s in &statements {
                let a = client.execute(s.replace("$t", "accounts").as_str(), &[])?;
                let d = client.execute(s.replace("$t", "accounts_deferred").as_str(), &[])?;
                if a != d {
                    diverged.fetch_add(1, Ordering::Relaxed);
                }
            }
            client.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
        })();
        if twins {
            let _ = client.batch_execute("SELECT pg_advisory_unlock_all()");
        }
        match outcome {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let _ = client.batch_execute("ROLLBACK");
            }
        }
    }
}

fn run_writers(
    cluster: &Cluster,
    seconds: u64,
    seed: u64,
    isolation: &'static str,
    twins: bool,
    crash_after: Option<Duration>,
) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let conn = cluster.conn_str("postgres", "app");
            let (stop, counts) = (stop.clone(), counts.clone());
            thread::spawn(move || writer(conn, seed * 100 + i, isolation, twins, stop, counts))
        })
        .collect();
    let start = Instant::now();
    if let Some(after) = crash_after {
        thread::sleep(after);
        // like kill -9 of the postmaster: no shutdown checkpoint, backends
        // killed mid-transaction
        cluster.pg_ctl_stop("immediate");
    }
    thread::sleep(Duration::from_secs(seconds).saturating_sub(start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let diverged = counts.1.load(Ordering::Relaxed);
    assert!(
        !twins || diverged == 0,
        "{diverged} statements changed one twin and not the other"
    );
    counts.0.load(Ordering::Relaxed)
}

/// Every invariant of the history, checked against the table. Versions can
/// be zero-length (a transaction that started earlier but changed the key
/// after a later one committed is given that one's time, never an earlier
/// one), so the order of versions is followed through who closed them: a
/// closed version's closer (its xmin) opened the next version at the same
/// instant, with other values, or wrote the tombstone.
fn check(client: &mut Client, twins: bool) {
    check_deferred(client, twins);
    let one: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT id FROM accounts_history WHERE is_current GROUP BY id HAVING count(*) > 1) d",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(one, 0, "a key with two current versions");
    assert_eq!(
        current_mismatches(client, "accounts"),
        0,
        "history disagrees with the table"
    );
    // versions of a key do not overlap; a closed version ends where the
    // next begins or where a tombstone says it was deleted
    let broken: Vec<String> = client
        .query(
            "WITH v AS (SELECT h.*, h.xmin::text::bigint AS closer FROM accounts_history h WHERE op <> 'D'),
                  spans AS (SELECT id, valid_from, valid_to, lead(valid_from) OVER (PARTITION BY id ORDER BY valid_from) AS next_from
                              FROM v WHERE valid_from < valid_to)
             SELECT format('key %s: [%s, %s) overlaps the next version at %s', id, valid_from, valid_to, next_from)
               FROM spans WHERE next_from < valid_to
             UNION ALL
             SELECT format('key %s: %s [%s, %s) closed by %s: %s', c.id, c.op, c.valid_from, c.valid_to, c.closer,
                           CASE WHEN w.id IS NULL THEN 'no successor and no tombstone' ELSE 'successor has the same values' END)
               FROM v c
               LEFT JOIN v w ON w.id = c.id AND w.txid::text::bigint = c.closer AND w.valid_from = c.valid_to
              WHERE NOT c.is_current
                AND (w.id IS NULL OR w.hash_diff = c.hash_diff)
                AND NOT EXISTS (SELECT FROM accounts_history t
                                 WHERE t.id = c.id AND t.op = 'D' AND t.txid::text::bigint = c.closer AND t.valid_from = c.valid_to)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(first) = broken.first() {
        let key: i32 = first[4..].split(':').next().unwrap().parse().unwrap();
        let rows: Vec<String> = client
            .query(
                "SELECT format('%s %s [%s, %s) txid %s closer %s balance %s note %s', op, is_current, valid_from, valid_to, txid, xmin, balance, note)
                   FROM accounts_history WHERE id = $1 ORDER BY valid_from, valid_to, txid",
                &[&key],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        panic!(
            "overlapping, gapped or spurious versions:\n{}\nkey {key}:\n{}",
            broken.join("\n"),
            rows.join("\n")
        );
    }
}

/// Keys whose current version is not the table's row, value for value
/// and hash for hash.
fn current_mismatches(client: &mut Client, table: &str) -> i64 {
    client
        .query_one(
            &format!(
                "SELECT count(*) FROM {table} a FULL JOIN (SELECT * FROM {table}_history WHERE is_current) h USING (id)
                  WHERE a.id IS NULL OR h.id IS NULL OR (a.balance, a.note) IS DISTINCT FROM (h.balance, h.note)
                     OR h.hash_diff <> warden.hash_diff(a, ARRAY['balance', 'note'])"
            ),
            &[],
        )
        .unwrap()
        .get(0)
}

/// The worker empties the deferred twin's queue (nothing calls
/// scd2_flush); its history then agrees with its table and has no
/// overlapping versions. After the `twins` phase, where every transaction
/// made the same changes to both tables (checked statement by statement),
/// it is the synchronous history row for row.
fn check_deferred(client: &mut Client, twins: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queued: i64 = client
            .query_one("SELECT count(*) FROM accounts_deferred_history_queue", &[])
            .unwrap()
            .get(0);
        if queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker left {queued} changes queued for 60 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        current_mismatches(client, "accounts_deferred"),
        0,
        "the deferred history disagrees with its table"
    );
    let overlapping: i64 = client
        .query_one(
            "SELECT count(*) FROM (
               SELECT valid_to, lead(valid_from) OVER (PARTITION BY id ORDER BY valid_from, valid_to) AS next_from
                 FROM accounts_deferred_history WHERE op <> 'D') v
              WHERE next_from < valid_to",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(overlapping, 0, "overlapping deferred versions");
    if !twins {
        return;
    }
    let tables_differ: i64 = client
        .query_one(
            "SELECT count(*) FROM accounts a FULL JOIN accounts_deferred d USING (id)
              WHERE (a.balance, a.note) IS DISTINCT FROM (d.balance, d.note)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables_differ, 0, "the twin tables differ");
    let differing: Vec<String> = client
        .query(
            "SELECT format('%s: %s', side, h) FROM (
               SELECT 'only synchronous' AS side, d.* FROM (SELECT * FROM accounts_history EXCEPT ALL SELECT * FROM accounts_deferred_history) d
               UNION ALL
               SELECT 'only deferred', d.* FROM (SELECT * FROM accounts_deferred_history EXCEPT ALL SELECT * FROM accounts_history) d) h",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(first) = differing.first() {
        // both histories of the first key that differs, with their writers
        let key: i32 = first.split(',').nth(1).unwrap().parse().unwrap();
        let rows: Vec<String> = client
            .query(
                "SELECT format('%s %s %s %s [%s, %s) txid %s xmin %s', t, op, balance, note, valid_from, valid_to, txid, x)
                   FROM (SELECT 'sync' AS t, h.*, h.xmin AS x FROM accounts_history h WHERE id = $1
                         UNION ALL SELECT 'deferred', d.*, d.xmin FROM accounts_deferred_history d WHERE id = $1) v
                  ORDER BY t, valid_from, valid_to",
                &[&key],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        panic!(
            "deferred and synchronous histories differ:\n{}\nkey {key}:\n{}",
            differing.join("\n"),
            rows.join("\n")
        );
    }
}

#[test]
fn eight_writers_and_a_crash_keep_the_history_consistent() {
    let cluster = Cluster::start("scd2-track", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, note text);
             INSERT INTO accounts SELECT i, 0, 'n0' FROM generate_series(1, 20) i;
             CREATE TABLE accounts_deferred (LIKE accounts INCLUDING ALL);
             INSERT INTO accounts_deferred SELECT * FROM accounts;
             BEGIN;
             SELECT warden.scd2_track('accounts', ARRAY['id']);
             SELECT warden.scd2_track('accounts_deferred', ARRAY['id'], deferred => true);
             COMMIT;
             GRANT SELECT, INSERT, UPDATE, DELETE ON accounts, accounts_deferred TO app;",
        )
        .unwrap();
    // the application role cannot write the history itself
    let mut app = cluster.connect_as("postgres", "app");
    let denied = app
        .batch_execute("DELETE FROM accounts_history")
        .unwrap_err();
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    // nor the deferred twin's queue
    let denied = app
        .batch_execute("DELETE FROM accounts_deferred_history_queue")
        .unwrap_err();
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    drop(app);

    let phase1 = run_writers(
        &cluster,
        10,
        1,
        "REPEATABLE READ",
        true,
        Some(Duration::from_secs(6)),
    );
    cluster.pg_ctl_start();
    let mut admin = cluster.connect("postgres");
    check(&mut admin, true);
    let phase2 = run_writers(&cluster, 10, 2, "READ COMMITTED", false, None);
    check(&mut admin, false);

    let (versions, tombstones): (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE op = 'D') FROM accounts_history",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    eprintln!("commits {phase1} + {phase2}, versions {versions}, tombstones {tombstones}");
    assert!(
        phase1 > 100 && phase2 > 100,
        "too few transactions: {phase1}, {phase2}"
    );
    assert!(
        versions > 200 && tombstones > 10,
        "too little history: {versions}, {tombstones}"
    );
}

/// Under REPEATABLE READ, a key inserted and deleted by transactions that
/// committed after this transaction's snapshot, then inserted here: the
/// new version starts where their tombstone is, in both modes (read from
/// the transaction snapshot alone, the trigger opened it before).
#[test]
fn repeatable_read_insert_after_an_unseen_delete_does_not_overlap() {
    let cluster = Cluster::start("scd2-rr", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE TABLE sync_t (id int PRIMARY KEY, v text);
             CREATE TABLE deferred_t (LIKE sync_t INCLUDING ALL);
             SELECT warden.scd2_track('sync_t', ARRAY['id']);
             SELECT warden.scd2_track('deferred_t', ARRAY['id'], deferred => true);",
        )
        .unwrap();
    let mut late = cluster.connect("postgres");
    late.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    for table in ["sync_t", "deferred_t"] {
        // two transactions (one simple query would be one)
        admin
            .execute(&format!("INSERT INTO {table} VALUES (1, 'first')"), &[])
            .unwrap();
        admin
            .execute(&format!("DELETE FROM {table} WHERE id = 1"), &[])
            .unwrap();
    }
    late.batch_execute(
        "INSERT INTO sync_t VALUES (1, 'second'); INSERT INTO deferred_t VALUES (1, 'second'); COMMIT",
    )
    .unwrap();
    admin
        .batch_execute("SELECT warden.scd2_flush('deferred_t')")
        .unwrap();
    for history in ["sync_t_history", "deferred_t_history"] {
        let versions: Vec<String> = admin
            .query(
                &format!(
                    "SELECT format('%s %s %s', v, op, CASE WHEN is_current THEN 'current' WHEN valid_from = valid_to THEN 'tombstone' ELSE 'closed' END)
                       FROM {history} WHERE id = 1 ORDER BY valid_from, valid_to"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            versions,
            ["first I closed", "first D tombstone", "second I current"],
            "{history}"
        );
        let overlap: i64 = admin
            .query_one(
                &format!(
                    "SELECT count(*) FROM {history} a JOIN {history} b ON a.id = b.id AND a.ctid <> b.ctid
                      WHERE a.op <> 'D' AND b.op <> 'D' AND a.valid_from < b.valid_to AND b.valid_from < a.valid_to"
                ),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(overlap, 0, "{history}: overlapping versions");
    }
}

/// `scd2_untrack` waiting for a transaction that untracked the table and
/// tracked it again, deferred, and queued changes: it must untrack what
/// that transaction left (applying its queue first), not what was
/// registered when it started to wait.
#[test]
fn untrack_waits_for_a_retrack_and_applies_its_queue() {
    let cluster = Cluster::start("scd2-untrack-race", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE TABLE r (id int PRIMARY KEY, v text);
             INSERT INTO r VALUES (1, 'a');
             SELECT warden.scd2_track('r', ARRAY['id']);",
        )
        .unwrap();
    let mut retrack = cluster.connect("postgres");
    retrack
        .batch_execute(
            "BEGIN;
             SELECT warden.scd2_untrack('r', drop_history => true);
             SELECT warden.scd2_track('r', ARRAY['id'], deferred => true);
             INSERT INTO r VALUES (2, 'b');
             UPDATE r SET v = 'a2' WHERE id = 1;",
        )
        .unwrap();
    let untrack = {
        let conn = cluster.conn_str("postgres", "postgres");
        thread::spawn(move || {
            let mut c = Client::connect(&conn, NoTls).unwrap();
            c.batch_execute("SELECT warden.scd2_untrack('r')")
        })
    };
    thread::sleep(Duration::from_millis(500));
    assert!(
        !untrack.is_finished(),
        "untrack did not wait for the retrack"
    );
    retrack.batch_execute("COMMIT").unwrap();
    untrack.join().unwrap().unwrap();
    let versions: Vec<String> = admin
        .query(
            "SELECT format('%s %s', id, v) FROM r_history WHERE is_current ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        ["1 a2", "2 b"],
        "the queued changes were not applied"
    );
    let left: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM warden.scd2_registry)
                  + (SELECT count(*) FROM pg_class WHERE relname = 'r_history_queue')
                  + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'r'::regclass AND NOT tgisinternal)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "registration, queue or triggers left behind");
    // tracking again starts from the kept history's name being taken
    let err = admin
        .batch_execute("SELECT warden.scd2_track('r', ARRAY['id'])")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DUPLICATE_TABLE), "{err:?}");
}

/// A tracked table whose trigger is gone (dropped, or a dump restored by
/// a role that may not create it): `scd2_track` again attaches what is
/// missing, and the history is kept again.
#[test]
fn tracking_again_reattaches_a_missing_trigger() {
    let cluster = Cluster::start("scd2-reattach", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE owner_role LOGIN; GRANT warden_admin TO owner_role;
             CREATE SCHEMA o AUTHORIZATION owner_role;",
        )
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_role");
    owner
        .batch_execute(
            "CREATE TABLE o.c (id int PRIMARY KEY, v text);
             INSERT INTO o.c VALUES (1, 'a');
             SELECT warden.scd2_track('o.c', ARRAY['id']);
             DROP TRIGGER warden_scd2 ON o.c;",
        )
        .unwrap();
    // what pg_dump emits cannot be run by the owner
    let err = owner
        .batch_execute(
            "CREATE TRIGGER warden_scd2 AFTER INSERT OR UPDATE OR DELETE ON o.c
               FOR EACH ROW EXECUTE FUNCTION warden._scd2_trigger()",
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    owner
        .batch_execute(
            "SELECT warden.scd2_track('o.c', ARRAY['id']);
             UPDATE o.c SET v = 'b';",
        )
        .unwrap();
    let (enabled, versions): (bool, i64) = {
        let row = owner
            .query_one(
                "SELECT (SELECT trigger_enabled FROM warden.scd2_tables WHERE source = 'o.c'::regclass),
                        (SELECT count(*) FROM o.c_history)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(enabled, "the trigger was not attached again");
    assert_eq!(
        versions, 2,
        "the update after tracking again made no version"
    );
}

/// Tracked tables behind PgBouncer in transaction mode: two clients of
/// two tenants share one server backend, whose trigger keeps per-backend
/// prepared statements; tracking is dropped and created again midway (a
/// new history table), which the shared backend must notice. Every
/// version lands in the right history with the right tenant.
#[test]
fn tracked_tables_behind_pgbouncer_transaction_pooling() {
    let cluster = Cluster::start("scd2-pgbouncer", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE TABLE orders (id int PRIMARY KEY, tenant text NOT NULL, status text NOT NULL);
             CREATE TABLE orders_d (LIKE orders INCLUDING ALL);
             SELECT warden.enable_tenancy('orders'); SELECT warden.enable_tenancy('orders_d');
             SELECT warden.scd2_track('orders', ARRAY['id']);
             SELECT warden.scd2_track('orders_d', ARRAY['id'], deferred => true);
             GRANT SELECT, INSERT, UPDATE ON orders, orders_d TO app;
             GRANT SELECT ON orders_history, orders_d_history TO app;",
        )
        .unwrap();
    let bouncer = PgBouncer::start(&cluster, &["app"]);
    let mut a = bouncer.connect_as("postgres", "app");
    let mut b = bouncer.connect_as("postgres", "app");
    let pid =
        |c: &mut Client| -> i32 { c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0) };
    assert_eq!(
        pid(&mut a),
        pid(&mut b),
        "both clients must share one backend"
    );
    let write = |c: &mut Client, tenant: &str, id: i32, status: &str| {
        c.batch_execute(&format!(
            "BEGIN; SELECT warden.set_tenant('{tenant}');
             INSERT INTO orders (id, status) VALUES ({id}, '{status}') ON CONFLICT (id) DO UPDATE SET status = excluded.status;
             INSERT INTO orders_d (id, status) VALUES ({id}, '{status}') ON CONFLICT (id) DO UPDATE SET status = excluded.status;
             COMMIT;"
        ))
        .unwrap();
    };
    for round in 0..40 {
        if round == 20 {
            // a new history under the shared backend's cached statements
            admin
                .batch_execute(
                    "SELECT warden.scd2_untrack('orders', drop_history => true);
                     SELECT warden.scd2_track('orders', ARRAY['id']);
                     GRANT SELECT ON orders_history TO app;",
                )
                .unwrap();
        }
        for id in 1..=3 {
            write(&mut a, "tenant_a", id, &format!("a{round}"));
            write(&mut b, "tenant_b", 100 + id, &format!("b{round}"));
        }
    }
    admin
        .batch_execute("SELECT warden.scd2_flush('orders_d')")
        .unwrap();
    // the re-created history: the 6 rows as of round 20 loaded, then a
    // version per id and later round; the deferred one: one per id and round
    for (history, versions) in [("orders_history", 6 * 21), ("orders_d_history", 6 * 40)] {
        let row = admin
            .query_one(
                &format!(
                    "SELECT count(*),
                            count(*) FILTER (WHERE tenant <> CASE WHEN id < 100 THEN 'tenant_a' ELSE 'tenant_b' END),
                            count(*) FILTER (WHERE is_current AND status <> CASE WHEN id < 100 THEN 'a39' ELSE 'b39' END),
                            count(*) FILTER (WHERE is_current)
                       FROM {history}"
                ),
                &[],
            )
            .unwrap();
        let (n, wrong_tenant, stale, current): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!((wrong_tenant, stale, current), (0, 0, 6), "{history}");
        assert_eq!(n, versions as i64, "{history}: versions");
    }
    // through the bouncer, each tenant reads only its own history
    a.batch_execute("BEGIN").unwrap();
    a.execute("SELECT warden.set_tenant('tenant_a')", &[])
        .unwrap();
    let others: i64 = a
        .query_one(
            "SELECT count(*) FROM orders_d_history WHERE tenant <> 'tenant_a'",
            &[],
        )
        .unwrap()
        .get(0);
    let own: i64 = a
        .query_one("SELECT count(*) FROM orders_d_history", &[])
        .unwrap()
        .get(0);
    a.batch_execute("COMMIT").unwrap();
    assert_eq!((others, own), (0, 3 * 40));
}

/// A million-row dimension loaded by scd2_merge, 1% changed, merged again,
/// then the same batch once more: counts are exact, the re-run writes
/// nothing, and the current versions are exactly the staging rows.
#[test]
fn merge_of_a_million_rows_with_one_percent_changed_is_exact_and_idempotent() {
    let cluster = Cluster::start(
        "scd2-merge",
        &["shared_buffers = '256MB'", "max_wal_size = '2GB'"],
    );
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE TABLE dim (id int PRIMARY KEY, name text, amount numeric, seen timestamptz, tags jsonb);
             SELECT warden.scd2_track('dim', ARRAY['id']);
             CREATE TABLE stage AS
               SELECT i AS id, 'n' || i AS name, (i % 1000)::numeric / 8 AS amount,
                      timestamptz '2026-01-01' + i * interval '1 second' AS seen,
                      CASE WHEN i % 3 = 0 THEN jsonb_build_object('k', i % 7) END AS tags
                 FROM generate_series(1, 1000000) i;",
        )
        .unwrap();
    let merge = |client: &mut Client, as_of: &str| -> (i64, i64, i64) {
        let row = client
            .query_one(
                &format!("SELECT * FROM warden.scd2_merge('dim_history', 'stage', '{as_of}', close_missing => true)"),
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(merge(&mut admin, "2026-02-01"), (1_000_000, 0, 0));
    admin
        .batch_execute(
            "UPDATE stage SET amount = amount + 1 WHERE id % 100 = 7;       -- 10 000 changed
             UPDATE stage SET tags = '{\"k\": 99}' WHERE id % 1000 = 3;     -- 1 000 changed (hashed column)
             DELETE FROM stage WHERE id % 10000 = 5;                       -- 100 gone
             INSERT INTO stage VALUES (2000001, 'new', 1, now(), NULL);    -- 1 new",
        )
        .unwrap();
    // 10 000 + 1 000 - overlap (id % 100 = 7 and id % 1000 = 3 never meet) changed
    assert_eq!(merge(&mut admin, "2026-03-01"), (11_001, 11_100, 988_900));
    assert_eq!(merge(&mut admin, "2026-03-01"), (0, 0, 999_901));
    let (mismatched, versions): (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT (SELECT count(*) FROM stage s FULL JOIN (SELECT * FROM dim_history WHERE is_current) h USING (id)
                          WHERE s.id IS NULL OR h.id IS NULL
                             OR (s.name, s.amount, s.seen, s.tags) IS DISTINCT FROM (h.name, h.amount, h.seen, h.tags)
                             OR h.hash_diff <> warden.hash_diff(s, ARRAY['name', 'amount', 'seen', 'tags'])),
                        (SELECT count(*) FROM dim_history)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(mismatched, 0, "current versions differ from the last batch");
    // 1 000 000 loaded + 11 000 new versions of changed keys + 1 new key + 100 tombstones
    assert_eq!(versions, 1_011_101);
}
