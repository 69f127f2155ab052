//! The audit chain's two paths under load and across crashes, from
//! outside: 16 writers with rollbacks and errors (every committed
//! transactional event and every durable event chained exactly once,
//! verified in the database and by the offline verifier's code); strict
//! mode failing closed without a worker; a full ring waiting, then
//! raising, never dropping; `kill -9` of the worker mid-batch and of a
//! backend right after a strict event returned; an immediate stop in the
//! middle of a stream.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pg_warden_integration::*;
use postgres::error::SqlState;
use warden_core::audit::verify_export;

/// (writer, i, path) of every event a test expects in the log.
type Expected = BTreeSet<(i32, i32, String)>;

fn setup(cluster: &Cluster) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden; CREATE ROLE app LOGIN; GRANT warden_app TO app;",
        )
        .unwrap();
    wait_running(&mut admin, "postgres");
    admin
}

/// Waits until the inbox and the ring are empty.
fn wait_drained(client: &mut Client) {
    wait_for(
        Duration::from_secs(60),
        "the sequencer to chain the inbox and the ring",
        || {
            let r = client
                .query_one(
                    "SELECT inbox_events, ring_events FROM warden.audit_status",
                    &[],
                )
                .ok()?;
            (r.get::<_, i64>(0) == 0 && r.get::<_, i64>(1) == 0).then_some(())
        },
    );
}

/// Every (writer, i, path) in the log, and how many events there are.
fn logged(client: &mut Client) -> (Expected, i64) {
    let rows = client
        .query(
            "SELECT (fields->>'w')::int, (fields->>'i')::int, fields->>'p'
               FROM warden.audit_log WHERE event_type = 'test.event'",
            &[],
        )
        .unwrap();
    let set = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    (set, rows.len() as i64)
}

/// Every chain gapless from 1, verified by `audit_verify` and by the
/// offline verifier's code over `audit_export`; returns the events
/// checked.
fn assert_chains_verify(client: &mut Client) -> i64 {
    let gaps: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT chain, count(*) n, min(seq) lo, max(seq) hi
                                     FROM warden.audit_log GROUP BY chain) c
              WHERE lo <> 1 OR hi <> n",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(gaps, 0, "a chain with gaps");
    let verdicts: Vec<(String, bool, i64, Option<String>)> = client
        .query(
            "SELECT chain, ok, checked, reason FROM warden.audit_verify()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(verdicts.iter().all(|v| v.1), "{verdicts:?}");
    let key: Vec<u8> = client
        .query_one("SELECT warden.audit_public_key()", &[])
        .unwrap()
        .get(0);
    let mut offline = 0i64;
    for (chain, _, checked, _) in &verdicts {
        let lines: Vec<String> = client
            .query("SELECT warden.audit_export($1)", &[chain])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let v = verify_export(&lines.join("\n"), &key).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].failure, None, "offline verifier on {chain}");
        // (each export is recorded in the global chain, so that one grows)
        if chain == "global" {
            assert!(v[0].checked as i64 >= *checked, "{chain}");
        } else {
            assert_eq!(v[0].checked as i64, *checked, "{chain}");
        }
        offline += *checked;
    }
    offline
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sixteen_writers_with_rollbacks_and_errors_chain_each_event_once() {
    let secs: u64 = std::env::var("AUDIT_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let cluster = Cluster::start("audit_stress", &[]);
    let mut admin = setup(&cluster);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let conn = cluster.conn_str("postgres", "app");
            thread::spawn(move || {
                let mut c = Client::connect(&conn, NoTls).unwrap();
                let mut rng = Lcg(w as u64 + 1);
                let mut expected = Expected::new();
                let mut i = 0i32;
                while Instant::now() < deadline {
                    i += 1;
                    let tenant = ["acme", "beta", "gamma", "delta", ""][rng.next() as usize % 5];
                    let outcome = rng.next() % 10; // 0-5 commit, 6-7 rollback, 8-9 error
                    let mut tx = c.transaction().unwrap();
                    if !tenant.is_empty() {
                        tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
                            .unwrap();
                    }
                    for path in ["t", "d"] {
                        tx.execute(
                            "SELECT warden.audit_emit('test.event',
                                    jsonb_build_object('w', $1::int, 'i', $2::int, 'p', $3::text),
                                    durable => $3 = 'd')",
                            &[&w, &i, &path],
                        )
                        .unwrap();
                    }
                    // the durable event exists from here on, whatever follows
                    expected.insert((w, i, "d".into()));
                    match outcome {
                        0..=5 => {
                            tx.commit().unwrap();
                            expected.insert((w, i, "t".into()));
                        }
                        6..=7 => tx.rollback().unwrap(),
                        _ => {
                            let err = tx.batch_execute("SELECT 1 / 0").unwrap_err();
                            assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
                            drop(tx);
                        }
                    }
                }
                expected
            })
        })
        .collect();
    let expected: Expected = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let started = Instant::now();
    wait_drained(&mut admin);
    let (chained, count) = logged(&mut admin);
    assert_eq!(count, chained.len() as i64, "an event chained twice");
    assert_eq!(
        chained.len(),
        expected.len(),
        "missing: {:?}; unexpected: {:?}",
        expected.difference(&chained).take(5).collect::<Vec<_>>(),
        chained.difference(&expected).take(5).collect::<Vec<_>>()
    );
    assert_eq!(chained, expected);
    let checked = assert_chains_verify(&mut admin);
    // the test's events, and the verification's own exports
    assert!(checked >= count, "{checked} < {count}");
    let durable = expected.iter().filter(|e| e.2 == "d").count();
    println!(
        "{} events in {secs} s by 16 writers ({durable} durable, {} transactional), drained {:?} after the last",
        expected.len(),
        expected.len() - durable,
        started.elapsed()
    );
}

#[test]
fn strict_fails_closed_without_a_worker_and_a_full_ring_waits_then_raises() {
    let cluster = Cluster::start(
        "audit_strict",
        &[
            "warden.audit_ring_size = '16kB'",
            "warden.audit_strict_timeout = '300ms'",
        ],
    );
    let mut admin = setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app");
    // with the worker running, a strict event returns once committed
    app.execute(
        "SELECT warden.audit_emit('test.event', '{\"w\": 0, \"i\": 0, \"p\": \"s\"}', durable => true, strict => true)",
        &[],
    )
    .unwrap();
    let (chained, _) = logged(&mut admin);
    assert!(
        chained.contains(&(0, 0, "s".into())),
        "returned before it was committed"
    );
    // an application cannot turn strict mode off for itself
    let err = app
        .batch_execute("SET warden.audit_strict = off")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    set_worker(&mut admin, false);
    let t = Instant::now();
    let err = app
        .execute(
            "SELECT warden.audit_emit('test.event', '{\"w\": 0, \"i\": 1, \"p\": \"s\"}', durable => true, strict => true)",
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // the server-wide setting makes every durable event strict
    reload_with(&mut admin, "ALTER SYSTEM SET warden.audit_strict = on");
    let err = app
        .execute(
            "SELECT warden.audit_emit('test.event', '{\"w\": 0, \"i\": 2, \"p\": \"s\"}', durable => true)",
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    reload_with(&mut admin, "ALTER SYSTEM RESET warden.audit_strict");

    // asynchronous durable events fill the ring, then wait and raise
    let mut returned = 0;
    let err = loop {
        match app.execute(
            "SELECT warden.audit_emit('test.event', jsonb_build_object('w', 1, 'i', $1::int, 'p', 'd', 'pad', repeat('x', 1000)), durable => true)",
            &[&returned],
        ) {
            Ok(_) => returned += 1,
            Err(e) => break e,
        }
        assert!(returned < 100, "a 16 kB ring took 100 events of 1 kB");
    };
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert!(
        err.to_string().contains("ring") || format!("{err:?}").contains("ring"),
        "{err:?}"
    );
    assert!((10..=16).contains(&returned), "{returned} events fit");
    let ring: (i64, i64) = admin
        .query_one(
            "SELECT ring_events, ring_waits FROM warden.audit_status",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    // one ring holds all of them (the two strict events that timed out
    // too): the database kept its slot while warden.databases left it out
    assert_eq!(ring.0, returned as i64 + 2, "{ring:?}");
    assert!(ring.1 >= 1, "{ring:?}");
    let state: String = admin
        .query_one(
            "SELECT DISTINCT state FROM warden.worker_status WHERE datname = 'postgres'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "excluded");

    // back: everything that returned is chained, and the strict events
    // that timed out are chained too (they were queued, never dropped)
    set_worker(&mut admin, true);
    wait_drained(&mut admin);
    let (chained, count) = logged(&mut admin);
    assert_eq!(count, chained.len() as i64);
    for i in 0..returned {
        assert!(
            chained.contains(&(1, i, "d".into())),
            "event {i} was dropped"
        );
    }
    assert!(chained.contains(&(0, 1, "s".into())));
    assert!(chained.contains(&(0, 2, "s".into())));
    assert_chains_verify(&mut admin);
}

#[test]
fn kill_9_of_the_worker_or_of_a_strict_caller_loses_no_committed_event() {
    let cluster = Cluster::start("audit_kill9", &[]);
    let mut admin = setup(&cluster);
    // 30 000 committed transactional events, and the worker killed while
    // it chains them
    admin
        .batch_execute(
            "SELECT warden.audit_emit('test.event', jsonb_build_object('w', 1, 'i', g, 'p', 't'))
               FROM generate_series(1, 30000) g",
        )
        .unwrap();
    let pid = wait_task_running(&mut admin, "audit_sequencer");
    kill9(pid);
    drop(admin);
    let mut admin = reconnect(&cluster, 1);
    wait_running(&mut admin, "postgres");
    wait_drained(&mut admin);
    let (chained, count) = logged(&mut admin);
    assert_eq!(count, 30_000, "every committed event, once");
    assert_eq!(chained.len(), 30_000);
    assert_chains_verify(&mut admin);

    // a strict durable event returned, then its backend is killed (the
    // server restarts every process, and the ring is gone)
    let mut app = cluster.connect_as("postgres", "app");
    let backend: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut tx = app.transaction().unwrap();
    tx.execute(
        "SELECT warden.audit_emit('test.event', '{\"w\": 2, \"i\": 1, \"p\": \"s\"}', durable => true, strict => true)",
        &[],
    )
    .unwrap();
    kill9(backend);
    drop(tx);
    drop(app);
    drop(admin);
    let mut admin = reconnect(&cluster, 2);
    wait_running(&mut admin, "postgres");
    let (chained, _) = logged(&mut admin);
    assert!(
        chained.contains(&(2, 1, "s".into())),
        "a strict event that returned was lost"
    );
    assert_chains_verify(&mut admin);
}

#[test]
fn an_immediate_stop_mid_stream_loses_only_asynchronous_events_in_the_ring() {
    let cluster = Cluster::start("audit_immediate", &[]);
    let admin = setup(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    // one writer streams: each transaction a transactional event and an
    // asynchronous durable one, every tenth durable event strict
    let writer = {
        let conn = cluster.conn_str("postgres", "app");
        let stop = stop.clone();
        thread::spawn(move || {
            let mut c = Client::connect(&conn, NoTls).unwrap();
            let mut must = Expected::new();
            let mut returned_async = Expected::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let strict = i % 10 == 0;
                let r = c.batch_execute(&format!(
                    "BEGIN;
                     SELECT warden.audit_emit('test.event', '{{\"w\": 3, \"i\": {i}, \"p\": \"t\"}}');
                     SELECT warden.audit_emit('test.event', '{{\"w\": 3, \"i\": {i}, \"p\": \"d\"}}',
                                              durable => true, strict => {strict});
                     COMMIT;"
                ));
                if r.is_err() {
                    break; // the server went away
                }
                must.insert((3, i, "t".into()));
                if strict {
                    must.insert((3, i, "d".into()));
                } else {
                    returned_async.insert((3, i, "d".into()));
                }
            }
            (must, returned_async)
        })
    };
    thread::sleep(Duration::from_secs(3));
    cluster.pg_ctl_stop("immediate");
    stop.store(true, Ordering::Relaxed);
    let (must, returned_async) = writer.join().unwrap();
    drop(admin);
    cluster.pg_ctl_start();
    let mut admin = cluster.connect("postgres");
    wait_running(&mut admin, "postgres");
    wait_drained(&mut admin);
    let (chained, count) = logged(&mut admin);
    assert_eq!(count, chained.len() as i64, "an event chained twice");
    let missing: Vec<_> = must.difference(&chained).collect();
    assert!(
        missing.is_empty(),
        "committed or strict events lost: {missing:?}"
    );
    let lost = returned_async.difference(&chained).count();
    println!(
        "immediate stop: {} committed transactional and strict events all chained; \
         {lost} of {} asynchronous durable events lost (they were in the ring)",
        must.len(),
        returned_async.len()
    );
    // the ring is first in, first out: what was lost is the stream's end
    let first_lost = returned_async.difference(&chained).map(|e| e.1).min();
    let last_chained = returned_async.intersection(&chained).map(|e| e.1).max();
    if let (Some(lost), Some(kept)) = (first_lost, last_chained) {
        assert!(
            kept < lost,
            "event {kept} chained after event {lost} was lost"
        );
    }
    assert_chains_verify(&mut admin);
}
