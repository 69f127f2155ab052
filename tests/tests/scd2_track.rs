//! SCD2 history under concurrency and crashes: 8 application sessions
//! insert, update (real and no-op changes, changes undone in the same
//! transaction), delete and roll back over 40 overlapping keys; the
//! postmaster is killed (immediate stop) in the middle. After each phase
//! the history must agree with the table, key by key, with no overlapping
//! or spurious versions.

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
fn writer(cluster_conn: String, seed: u64, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) {
    let Ok(mut client) = Client::connect(&cluster_conn, NoTls) else {
        return;
    };
    let mut rng = Lcg(seed);
    while !stop.load(Ordering::Relaxed) {
        if client.is_closed() {
            return;
        }
        let mut sql = String::from("BEGIN;");
        for _ in 0..1 + rng.next(3) {
            let k = 1 + rng.next(KEYS as u64);
            let v = rng.next(5);
            sql.push_str(&match rng.next(7) {
                0 => format!("INSERT INTO accounts VALUES ({k}, {v}, 'n{v}') ON CONFLICT DO NOTHING;"),
                1 => format!("DELETE FROM accounts WHERE id = {k};"),
                2 => format!("UPDATE accounts SET note = note WHERE id = {k};"),
                3 => format!(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = {k}; UPDATE accounts SET balance = balance - 1 WHERE id = {k};"
                ),
                _ => format!("UPDATE accounts SET balance = {v}, note = 'n{}' WHERE id = {k};", rng.next(3)),
            });
        }
        sql.push_str(if rng.next(8) == 0 {
            "ROLLBACK;"
        } else {
            "COMMIT;"
        });
        match client.batch_execute(&sql) {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let _ = client.batch_execute("ROLLBACK");
            }
        }
    }
}

fn run_writers(cluster: &Cluster, seconds: u64, seed: u64, crash_after: Option<Duration>) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let conn = cluster.conn_str("postgres", "app");
            let (stop, commits) = (stop.clone(), commits.clone());
            thread::spawn(move || writer(conn, seed * 100 + i, stop, commits))
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
    commits.load(Ordering::Relaxed)
}

/// Every invariant of the history, checked against the table. Versions can
/// be zero-length (a transaction that started earlier but changed the key
/// after a later one committed is given that one's time, never an earlier
/// one), so the order of versions is followed through who closed them: a
/// closed version's closer (its xmin) opened the next version at the same
/// instant, with other values, or wrote the tombstone.
fn check(client: &mut Client) {
    let one: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT id FROM accounts_history WHERE is_current GROUP BY id HAVING count(*) > 1) d",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(one, 0, "a key with two current versions");
    // the current versions are exactly the table's rows, value for value
    let mismatched: i64 = client
        .query_one(
            "SELECT count(*) FROM accounts a FULL JOIN (SELECT * FROM accounts_history WHERE is_current) h USING (id)
              WHERE a.id IS NULL OR h.id IS NULL OR (a.balance, a.note) IS DISTINCT FROM (h.balance, h.note)
                 OR h.hash_diff <> warden.hash_diff(a, ARRAY['balance', 'note'])",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(mismatched, 0, "history disagrees with the table");
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
             SELECT warden.scd2_track('accounts', ARRAY['id']);
             GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO app;",
        )
        .unwrap();
    // the application role cannot write the history itself
    let mut app = cluster.connect_as("postgres", "app");
    let denied = app
        .batch_execute("DELETE FROM accounts_history")
        .unwrap_err();
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    drop(app);

    let phase1 = run_writers(&cluster, 10, 1, Some(Duration::from_secs(6)));
    cluster.pg_ctl_start();
    let mut admin = cluster.connect("postgres");
    check(&mut admin);
    let phase2 = run_writers(&cluster, 10, 2, None);
    check(&mut admin);

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
