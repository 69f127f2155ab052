//! The outbox's delivery from outside: handlers called by the worker
//! (each fires once, with the message's tenant, as the subscribing role),
//! exactly-once effects across `kill -9`, retries with backoff, dead
//! letters announced to dead-letter handlers (a failing one never
//! dead-lettered again, the dead letter kept when announcing it fails),
//! replay, prepared transactions, pull consumers with leases, an
//! immediate stop mid-stream, and what a handler may not do.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use pg_warden_integration::*;

fn outbox_cluster(name: &str, extra: &[&str]) -> (Cluster, Client) {
    let cluster = Cluster::start(name, extra);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE ROLE ops LOGIN; GRANT warden_admin TO ops;
             CREATE TABLE public.seen (sub text, id bigint, tenant text, who text, attempt int,
                                       at timestamptz DEFAULT clock_timestamp(), seq bigserial);
             GRANT INSERT ON public.seen TO ops; GRANT USAGE ON SEQUENCE public.seen_seq_seq TO ops;
             CREATE FUNCTION public.record(msg warden.message) RETURNS void LANGUAGE sql AS
               $$ INSERT INTO public.seen (sub, id, tenant, who, attempt)
                  VALUES (msg.subscription, msg.id, warden.current_tenant(), current_user, msg.attempt) $$;
             ALTER FUNCTION public.record(warden.message) OWNER TO ops;",
        )
        .unwrap();
    (cluster, admin)
}

/// Messages the deliveries still hold: a row each, or a group's many
/// (an unordered pull subscription's messages of one fan-out run).
const MESSAGES_LEFT: &str =
    "SELECT coalesce(sum(coalesce(cardinality(message_ids), 1)), 0)::bigint FROM warden.outbox_deliveries";

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn wait_count(c: &mut Client, sql: &str, want: i64, what: &str) {
    wait_for(Duration::from_secs(120), what, || {
        (count(c, sql) >= want).then_some(())
    });
}

/// Publishes messages {"m": 1} to {"m": n} on `topic`, `per_batch` to a
/// `publish_batch` call, in one transaction.
fn publish_numbered(c: &mut Client, topic: &str, n: i32, per_batch: i32) {
    c.execute(
        "SELECT warden.publish_batch($1, array_agg(jsonb_build_object('m', g)))
           FROM generate_series(1, $2) g GROUP BY g / $3",
        &[&topic, &n, &per_batch],
    )
    .unwrap();
}

fn publish_in(c: &mut Client, tenant: &str, topic: &str, payload: &str) -> i64 {
    let mut tx = c.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    let id: i64 = tx
        .query_one(
            "SELECT warden.publish($1, $2::text::jsonb)",
            &[&topic, &payload],
        )
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    id
}

#[test]
fn one_publish_fires_each_of_three_handlers_once_as_the_subscriber_with_the_tenant() {
    let (cluster, mut admin) = outbox_cluster("delivery_fanout", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('one', 'orders.*', 'public.record(warden.message)');
         SELECT warden.subscribe('two', 'orders.#', 'public.record(warden.message)');
         SELECT warden.subscribe('three', '*.created', 'public.record(warden.message)');
         SELECT warden.subscribe('other', 'invoices.#', 'public.record(warden.message)');",
    )
    .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    let acme = publish_in(&mut app, "acme", "orders.created", "{}");
    let beta = publish_in(&mut app, "beta", "orders.created", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        6,
        "six handler calls",
    );
    thread::sleep(Duration::from_millis(500));
    let rows: Vec<(String, i64, Option<String>, String, i32)> = admin
        .query(
            "SELECT sub, id, tenant, who, attempt FROM public.seen ORDER BY sub, id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let mut want = Vec::new();
    for sub in ["one", "three", "two"] {
        for (id, tenant) in [(acme, "acme"), (beta, "beta")] {
            want.push((
                sub.to_string(),
                id,
                Some(tenant.to_string()),
                "ops".to_string(),
                1,
            ));
        }
    }
    assert_eq!(
        rows, want,
        "each handler once per message, as ops, in the message's tenant"
    );
    assert_eq!(count(&mut admin, MESSAGES_LEFT), 0);
}

#[test]
fn handler_effects_happen_exactly_once_across_kill_9_of_the_worker() {
    let (cluster, mut admin) = outbox_cluster("delivery_exactly_once", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute("SELECT warden.subscribe('once', 'load.#', 'public.record(warden.message)')")
        .unwrap();
    publish_numbered(&mut admin, "load.x", 10000, 1000);
    let mut restarts = 0;
    for round in 0..3 {
        // kill the worker while it is calling handlers
        wait_for(Duration::from_secs(60), "some handler calls", || {
            (count(&mut admin, "SELECT count(*) FROM public.seen") > 500 * (round + 1))
                .then_some(())
        });
        let pid = wait_task_running(&mut admin, "outbox_dispatch");
        kill9(pid);
        restarts += 1;
        drop(admin);
        admin = reconnect(&cluster, restarts);
        wait_running(&mut admin, "postgres");
    }
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        10_000,
        "every message handled",
    );
    thread::sleep(Duration::from_millis(500));
    let (rows, distinct, left): (i64, i64, i64) = {
        let r = admin
            .query_one(
                &format!("SELECT count(*), count(DISTINCT id), ({MESSAGES_LEFT}) FROM public.seen"),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(distinct, 10_000, "a message was never handled");
    assert_eq!(rows, 10_000, "a handler's effects happened twice");
    assert_eq!(left, 0);
    // attempts count failures, not calls a crash cut short
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.seen WHERE attempt <> 1"
        ),
        0
    );
}

/// The attempts of one delivery as the worker recorded them: polls the
/// delivery row and returns (attempts, last_attempt_at, next_at) each
/// time they change, until the delivery is gone.
fn watch_attempts(admin: &mut Client, sub: &str) -> Vec<(i32, f64, f64)> {
    let mut seen: Vec<(i32, f64, f64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = admin
            .query_opt(
                "SELECT d.attempts, extract(epoch FROM d.last_attempt_at)::float8, extract(epoch FROM d.next_at)::float8
                   FROM warden.outbox_deliveries d JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
                  WHERE s.name = $1",
                &[&sub],
            )
            .unwrap();
        match row {
            None if !seen.is_empty() => return seen,
            None => {}
            Some(r) => {
                let a: i32 = r.get(0);
                if a > 0 && seen.last().map(|s| s.0) != Some(a) {
                    seen.push((a, r.get(1), r.get(2)));
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the delivery of {sub} never ended"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn retries_back_off_then_dead_letter_and_dead_letter_handlers_fire() {
    let (cluster, mut admin) = outbox_cluster("delivery_dead_letters", &[]);
    admin
        .batch_execute(
            "CREATE TABLE public.dl_seen (sub text, payload jsonb, tenant text);
             GRANT INSERT ON public.dl_seen TO ops;
             CREATE FUNCTION public.fail(msg warden.message) RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO public.seen (sub, id) VALUES ('must roll back', msg.id);
                        RAISE EXCEPTION 'provider down (attempt %)', msg.attempt; END $$;
             CREATE FUNCTION public.on_dead(msg warden.message) RETURNS void LANGUAGE sql AS
               $$ INSERT INTO public.dl_seen VALUES (msg.subscription, msg.payload, warden.current_tenant()) $$;
             CREATE FUNCTION public.dead_fails(msg warden.message) RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'dead-letter handler down'; END $$;
             ALTER FUNCTION public.fail(warden.message) OWNER TO ops;
             ALTER FUNCTION public.on_dead(warden.message) OWNER TO ops;
             ALTER FUNCTION public.dead_fails(warden.message) OWNER TO ops;",
        )
        .unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('flaky', 'pay.#', 'public.fail(warden.message)',
                                 max_attempts => 4, backoff => '200 ms', max_backoff => '400 ms');
         SELECT warden.subscribe('dead_watch', 'warden.dead_letter', 'public.on_dead(warden.message)',
                                 filter => '{\"subscription\": \"flaky\"}');
         SELECT warden.subscribe('dead_broken', 'warden.#', 'public.dead_fails(warden.message)',
                                 max_attempts => 2, backoff => '10 ms');",
    )
    .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    let id = publish_in(&mut app, "acme", "pay.due", "{\"invoice\": 7}");
    let attempts = watch_attempts(&mut admin, "flaky");
    // attempts 1..3 were retried: each waited at most the capped
    // exponential backoff (full jitter: anywhere from 0, so a poll every
    // 10 ms may miss a short one), and the next attempt came when due
    // (the worker's clock, within 300 ms)
    assert!(
        !attempts.is_empty() && attempts.iter().all(|a| (1..=3).contains(&a.0)),
        "{attempts:?}"
    );
    for (i, (n, last, next)) in attempts.iter().enumerate() {
        let cap = (0.2 * 2f64.powi(n - 1)).min(0.4);
        let wait = next - last;
        assert!(
            (-0.001..=cap + 0.001).contains(&wait),
            "attempt {n} waited {wait}s, cap {cap}s"
        );
        if let Some((m, following, _)) = attempts.get(i + 1) {
            if *m == n + 1 {
                let late = following - next;
                assert!(
                    (-0.001..0.3).contains(&late),
                    "attempt {m} came {late}s after it was due"
                );
            }
        }
    }
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.dl_seen",
        1,
        "the dead-letter handler",
    );
    let row = admin
        .query_one(
            "SELECT sub, tenant, payload->>'subscription', (payload->>'attempts')::int,
                    (payload->'message'->>'id')::bigint, payload->'message'->>'topic',
                    (payload->'message'->'payload'->>'invoice')::int, payload->'message'->>'tenant',
                    payload->>'last_error', (payload->>'dead_letter_id')::bigint,
                    jsonb_typeof(payload->'first_attempt_at'), jsonb_typeof(payload->'last_attempt_at'),
                    (SELECT dead_letter_id FROM warden.dead_letters)
               FROM public.dl_seen",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "dead_watch");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("acme"));
    assert_eq!(row.get::<_, String>(2), "flaky");
    assert_eq!(row.get::<_, i32>(3), 4);
    assert_eq!(row.get::<_, i64>(4), id);
    assert_eq!(row.get::<_, String>(5), "pay.due");
    assert_eq!(row.get::<_, i32>(6), 7);
    assert_eq!(row.get::<_, String>(7), "acme");
    let last_error: String = row.get(8);
    assert!(
        last_error.contains("provider down (attempt 4)"),
        "{last_error}"
    );
    assert_eq!(
        row.get::<_, i64>(9),
        row.get::<_, i64>(12),
        "the dead letter's id"
    );
    assert_eq!(row.get::<_, String>(10), "string");
    assert_eq!(row.get::<_, String>(11), "string");
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.seen WHERE sub = 'must roll back'"
        ),
        0,
        "a failed handler's effects were kept"
    );
    // the failing dead-letter handler is retried, then failed for good,
    // never dead-lettered again
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.outbox_deliveries WHERE failed_at IS NOT NULL",
        1,
        "the failing dead-letter handler to give up",
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM warden.dead_letters"),
        1
    );
    let (failed, dead): (i64, i64) = {
        let r = admin
            .query_one(
                "SELECT (SELECT failed FROM warden.outbox_stats WHERE subscription = 'dead_broken'),
                        (SELECT dead FROM warden.outbox_stats WHERE subscription = 'flaky')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((failed, dead), (1, 1));

    // announcing a dead letter fails: the dead letter is kept, shown, and
    // announced once publishing works again
    // (a trigger on the outbox makes publishing refuse it too: publish
    // while the subscription is paused, then install the trigger)
    ops.batch_execute("SELECT warden.pause('flaky')").unwrap();
    publish_in(&mut app, "acme", "pay.due", "{\"invoice\": 8}");
    admin
        .batch_execute(
            "CREATE FUNCTION public.no_notices() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN IF NEW.topic = 'warden.dead_letter' THEN RAISE EXCEPTION 'no notices today'; END IF;
                        RETURN NEW; END $$;
             CREATE TRIGGER no_notices BEFORE INSERT ON warden.outbox_messages
               FOR EACH ROW EXECUTE FUNCTION public.no_notices();",
        )
        .unwrap();
    ops.batch_execute("SELECT warden.resume('flaky')").unwrap();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters",
        2,
        "the second dead letter",
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT dead_unannounced FROM warden.outbox_stats WHERE subscription = 'flaky'"
        ),
        1
    );
    admin
        .batch_execute("DROP TRIGGER no_notices ON warden.outbox_messages")
        .unwrap();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.dl_seen",
        2,
        "the late announcement",
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM warden.dead_letters WHERE notice_id IS NULL"
        ),
        0
    );

    // replay: the handler works again, and each dead letter is handled
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.fail(msg warden.message) RETURNS void LANGUAGE sql AS
               $$ INSERT INTO public.seen (sub, id, attempt) VALUES ('replayed', msg.id, msg.attempt) $$;",
        )
        .unwrap();
    let replayed: i32 = ops
        .query_one(
            "SELECT warden.replay_dead_letters(ARRAY(SELECT dead_letter_id FROM warden.dead_letters))",
            &[],
        )
        .unwrap()
        .get(0);
    // ops has no tenant set: row-level security hides every tenant's dead letters
    assert_eq!(replayed, 0, "ops saw no dead letters, replayed none");
    let replayed: i32 = admin
        .query_one(
            "SELECT warden.replay_dead_letters(ARRAY(SELECT dead_letter_id FROM warden.dead_letters))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(replayed, 2);
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen WHERE sub = 'replayed'",
        2,
        "the replays",
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.seen WHERE sub = 'replayed' AND attempt = 1"
        ),
        2,
        "attempts reset"
    );
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM warden.dead_letters"),
        0
    );
}

#[test]
fn a_prepared_publish_is_delivered_after_commit_prepared_and_a_rolled_back_one_never() {
    let (cluster, mut admin) =
        outbox_cluster("delivery_prepared", &["max_prepared_transactions = 4"]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute("SELECT warden.subscribe('p', 'orders.#', 'public.record(warden.message)')")
        .unwrap();
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "BEGIN; SELECT warden.publish('orders.kept', '{}'); PREPARE TRANSACTION 'kept';
         BEGIN; SELECT warden.publish('orders.dropped', '{}'); PREPARE TRANSACTION 'dropped';
         BEGIN; SELECT warden.publish('orders.rolled_back', '{}'); ROLLBACK;
         SELECT warden.publish('orders.after', '{}');",
    )
    .unwrap();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        1,
        "the message published after",
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM public.seen"),
        1,
        "a prepared message was delivered"
    );
    c.batch_execute("COMMIT PREPARED 'kept'").unwrap();
    c.batch_execute("ROLLBACK PREPARED 'dropped'").unwrap();
    // no commit wake-up comes from COMMIT PREPARED: the fan-out's
    // periodic run finds it
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        2,
        "the prepared message",
    );
    thread::sleep(Duration::from_secs(2));
    let ids: Vec<i64> = admin
        .query("SELECT id FROM public.seen ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let kept: i64 = count(
        &mut admin,
        "SELECT id FROM warden.outbox_messages WHERE topic = 'orders.kept'",
    );
    let after: i64 = count(
        &mut admin,
        "SELECT id FROM warden.outbox_messages WHERE topic = 'orders.after'",
    );
    assert_eq!(ids, vec![kept, after]);
}

/// A publisher whose transaction took its xid after another's but drew
/// the lower message id, still running when the other commits: its xid
/// is then at the xmax of the fan-out's snapshots (one past the latest
/// completed xid) and their xmin. Its message is delivered once it
/// commits (the fan-out once settled the missing id at that xmax and
/// forgot it while the transaction ran: the message was never
/// delivered).
#[test]
fn a_message_from_a_transaction_at_the_snapshots_xmax_is_delivered_when_it_commits() {
    let (cluster, mut admin) = outbox_cluster("delivery_late_xid", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute("SELECT warden.subscribe('late', 'late.#', 'public.record(warden.message)')")
        .unwrap();
    let mut first_xid = cluster.connect_as("postgres", "app");
    let mut lower_id = cluster.connect_as("postgres", "app");
    first_xid
        .batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .unwrap();
    lower_id
        .batch_execute("BEGIN; SELECT warden.publish('late.lower_id', '{}')")
        .unwrap();
    first_xid
        .batch_execute("SELECT warden.publish('late.higher_id', '{}'); COMMIT")
        .unwrap();
    // two fan-out runs while the lower id's transaction still runs
    let mut app = cluster.connect_as("postgres", "app");
    for (n, what) in [(1, "the higher id"), (2, "a message after it")] {
        if n == 2 {
            app.batch_execute("SELECT warden.publish('late.after', '{}')")
                .unwrap();
        }
        wait_count(&mut admin, "SELECT count(*) FROM public.seen", n, what);
    }
    thread::sleep(Duration::from_millis(1500));
    lower_id.batch_execute("COMMIT").unwrap();
    let lower: i64 = count(
        &mut admin,
        "SELECT id FROM warden.outbox_messages WHERE topic = 'late.lower_id'",
    );
    wait_for(
        Duration::from_secs(30),
        "the message of the transaction at the snapshots' xmax",
        || {
            let seen: i64 = admin
                .query_one("SELECT count(*) FROM public.seen WHERE id = $1", &[&lower])
                .unwrap()
                .get(0);
            (seen == 1).then_some(())
        },
    );
    let higher: i64 = count(
        &mut admin,
        "SELECT id FROM warden.outbox_messages WHERE topic = 'late.higher_id'",
    );
    assert!(lower < higher, "the ids were not drawn as the test means");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM public.seen"), 3);
}

/// claim + ack until nothing is left, returning the message ids claimed.
/// Claims and acknowledges `sub`'s messages (of tenant acme) until none
/// come for a second; the ids it got. `in_one` acknowledges each batch
/// with the next claim (`claim(..., ack => leases)`), else with `ack`.
fn drain(conn: &str, sub: &str, in_one: bool) -> Vec<i64> {
    let mut c = postgres::Client::connect(conn, postgres::NoTls).unwrap();
    // an acknowledgement never waits on the subscription's row
    c.batch_execute("SET lock_timeout = '5s'").unwrap();
    let mut got = Vec::new();
    let mut held: Vec<String> = Vec::new();
    let mut idle = 0;
    while idle < 20 {
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        let rows = if in_one {
            tx.query(
                "SELECT lease::text, (msg).id FROM warden.claim($1, 10, '1 minute', ack => $2::text[]::uuid[])",
                &[&sub, &std::mem::take(&mut held)],
            )
            .unwrap()
        } else {
            tx.query(
                "SELECT lease::text, (msg).id FROM warden.claim($1, 10, '1 minute')",
                &[&sub],
            )
            .unwrap()
        };
        tx.commit().unwrap();
        if rows.is_empty() {
            idle += 1;
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        idle = 0;
        let leases: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        got.extend(rows.iter().map(|r| r.get::<_, i64>(1)));
        if in_one {
            held = leases;
            continue;
        }
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        let acked: i32 = tx
            .query_one("SELECT warden.ack($1::text[]::uuid[])", &[&leases])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        assert_eq!(acked as usize, leases.len(), "a fresh lease was refused");
    }
    got
}

#[test]
fn pull_leases_lapse_to_the_next_claimer_and_concurrent_claims_never_share() {
    let (cluster, mut admin) = outbox_cluster("delivery_pull", &[]);
    admin
        .batch_execute(
            "SELECT warden.subscribe('jobs', 'jobs.#');
             SELECT warden.subscribe('slow', 'slow.#', max_attempts => 3);",
        )
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    {
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        tx.batch_execute(
            "SELECT warden.publish('jobs.run', jsonb_build_object('n', g)) FROM generate_series(1, 2000) g;
             SELECT warden.publish('slow.run', '{}');",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    wait_count(&mut admin, MESSAGES_LEFT, 2001, "the fan-out");
    // two consumers drain concurrently, one with claim then ack, one
    // acknowledging each batch with its next claim: no message goes to both;
    // and neither writes the subscription's row (held locked meanwhile)
    let mut locker = cluster.connect("postgres");
    locker
        .batch_execute(
            "BEGIN; SELECT FROM warden.outbox_subscriptions WHERE name = 'jobs' FOR NO KEY UPDATE;",
        )
        .unwrap();
    let conn = cluster.conn_str("postgres", "app");
    let a = {
        let conn = conn.clone();
        thread::spawn(move || drain(&conn, "jobs", false))
    };
    let b = drain(&conn, "jobs", true);
    let a = a.join().unwrap();
    let set_a: BTreeSet<i64> = a.iter().copied().collect();
    let set_b: BTreeSet<i64> = b.iter().copied().collect();
    assert_eq!(set_a.len(), a.len());
    assert_eq!(set_b.len(), b.len());
    assert!(set_a.is_disjoint(&set_b), "two consumers got one message");
    assert_eq!(set_a.len() + set_b.len(), 2000);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one consumer got everything"
    );
    locker.batch_execute("ROLLBACK").unwrap();
    let shown: bool = admin
        .query_one(
            "SELECT last_delivered_at > now() - interval '1 minute' FROM warden.outbox_stats WHERE subscription = 'jobs'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(shown, "the stats do not show the acknowledgements");
    // the worker keeps the time in the subscription's row too (every 10 s),
    // for after a restart; its run failed every time once on an operator
    // precedence slip, unnoticed but by this
    wait_for(
        Duration::from_secs(60),
        "last_delivered_at in the subscription's row",
        || {
            (count(
                &mut admin,
                "SELECT count(*) FROM warden.outbox_subscriptions WHERE name = 'jobs' AND last_delivered_at IS NOT NULL",
            ) == 1)
                .then_some(())
        },
    );
    let failed: Vec<String> = admin
        .query(
            "SELECT task || ': ' || coalesce(last_error, '') FROM warden.worker_status
              WHERE datname = current_database() AND task LIKE 'outbox%' AND failures > 0",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(failed.is_empty(), "outbox tasks failed: {failed:?}");

    // a lease lapses: the old token changes nothing, the next claimer gets it
    let claim = |c: &mut Client, visibility: &str| -> Option<(String, i32)> {
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        let r = tx
            .query_opt(
                "SELECT lease::text, (msg).attempt FROM warden.claim('slow', 10, $1::text::interval)",
                &[&visibility],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1)));
        tx.commit().unwrap();
        r
    };
    let in_acme = |c: &mut Client, sql: &str, lease: &str| -> String {
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        let v: String = tx.query_one(sql, &[&lease]).unwrap().get(0);
        tx.commit().unwrap();
        v
    };
    let mut other = cluster.connect_as("postgres", "app");
    let (old, attempt) = claim(&mut app, "300 ms").expect("the slow message");
    assert_eq!(attempt, 1);
    assert!(
        claim(&mut other, "1 minute").is_none(),
        "a leased message was claimed again"
    );
    thread::sleep(Duration::from_millis(400));
    let (new, attempt) = claim(&mut other, "1 minute").expect("the lapsed message");
    assert_eq!(attempt, 2, "a lapsed lease counts as a failed attempt");
    assert_ne!(old, new);
    assert_eq!(
        in_acme(
            &mut app,
            "SELECT warden.ack(ARRAY[$1::text::uuid])::text",
            &old
        ),
        "0"
    );
    assert_eq!(
        in_acme(
            &mut app,
            "SELECT warden.extend($1::text::uuid, '1 minute')::text",
            &old
        ),
        "false"
    );
    assert_eq!(
        in_acme(
            &mut app,
            "SELECT warden.nack($1::text::uuid, 'late')::text",
            &old
        ),
        "false"
    );
    // another tenant cannot touch it, even with the token
    {
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('beta')", &[]).unwrap();
        let acked: i32 = tx
            .query_one("SELECT warden.ack(ARRAY[$1::text::uuid])", &[&new])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        assert_eq!(acked, 0, "another tenant acked a lease");
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('beta')", &[]).unwrap();
        let claimed = tx
            .query(
                "SELECT 1 FROM warden.claim('slow', ack => ARRAY[$1::text::uuid])",
                &[&new],
            )
            .unwrap();
        tx.commit().unwrap();
        assert!(claimed.is_empty());
    }
    assert_eq!(
        in_acme(
            &mut other,
            "SELECT warden.ack(ARRAY[$1::text::uuid])::text",
            &new
        ),
        "1"
    );
    assert_eq!(count(&mut admin, MESSAGES_LEFT), 0);

    // lapsing on the last attempt makes a dead letter
    app.batch_execute("BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.publish('slow.run', '{\"poison\": true}'); COMMIT;")
        .unwrap();
    let mut lapses = 0;
    wait_for(
        Duration::from_secs(60),
        "the poison message to run out of attempts",
        || {
            if let Some((_, attempt)) = claim(&mut app, "100 ms") {
                lapses += 1;
                assert_eq!(attempt, lapses);
            }
            thread::sleep(Duration::from_millis(150));
            (count(&mut admin, "SELECT count(*) FROM warden.dead_letters") == 1).then_some(())
        },
    );
    assert_eq!(lapses, 3);
    let last_error: String = admin
        .query_one("SELECT last_error FROM warden.dead_letters", &[])
        .unwrap()
        .get(0);
    assert_eq!(last_error, "lease lapsed");
}

/// A claim keeps its leases together (one lease row), yet each lease is
/// the consumer's to acknowledge, extend or nack alone, and only within
/// its tenant: an extended lease outlives its lapsed siblings with the
/// same token, a nacked one comes back at once, a part acknowledged is not
/// acknowledged twice, and the stats count what is in flight.
#[test]
fn a_claims_leases_are_acknowledged_extended_and_nacked_one_by_one() {
    let (cluster, mut admin) = outbox_cluster("delivery_lease_parts", &[]);
    admin
        .batch_execute("SELECT warden.subscribe('parts', 'parts.#')")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    for n in 1..=6 {
        publish_in(&mut app, "acme", "parts.made", &format!("{{\"n\": {n}}}"));
    }
    wait_count(&mut admin, MESSAGES_LEFT, 6, "the fan-out");
    let as_tenant =
        |c: &mut Client, tenant: &str, sql: &str, args: &[&(dyn postgres::types::ToSql + Sync)]| {
            let mut tx = c.transaction().unwrap();
            tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
                .unwrap();
            let rows = tx.query(sql, args).unwrap();
            tx.commit().unwrap();
            rows
        };
    let claim = |c: &mut Client, visibility: &str| -> Vec<(String, i32, i32)> {
        as_tenant(
            c,
            "acme",
            "SELECT lease::text, ((msg).payload->>'n')::int, (msg).attempt
               FROM warden.claim('parts', 10, $1::text::interval) ORDER BY (msg).id",
            &[&visibility],
        )
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let one = |c: &mut Client, tenant: &str, sql: &str, lease: &str| -> String {
        as_tenant(c, tenant, sql, &[&lease])[0].get(0)
    };
    const ACK: &str = "SELECT warden.ack(ARRAY[$1::text::uuid])::text";
    const EXTEND: &str = "SELECT warden.extend($1::text::uuid, '1 minute')::text";
    const NACK: &str = "SELECT warden.nack($1::text::uuid, 'busy', retry_after => '0')::text";
    let stats = |admin: &mut Client| -> (i64, i64) {
        let r = admin
            .query_one(
                "SELECT pending, in_flight FROM warden.outbox_stats WHERE subscription = 'parts'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };

    let first = claim(&mut app, "1 second");
    assert_eq!(
        first.iter().map(|l| l.1).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        stats(&mut admin),
        (0, 6),
        "(pending, in flight) after the claim"
    );
    let lease = |n: i32| first[n as usize - 1].0.clone();
    // another tenant can do nothing with one of them
    for sql in [ACK, EXTEND, NACK] {
        let got = one(&mut app, "beta", sql, &lease(1));
        assert!(
            got == "0" || got == "false",
            "{sql} by another tenant: {got}"
        );
    }
    assert_eq!(one(&mut app, "acme", EXTEND, &lease(1)), "true");
    assert_eq!(one(&mut app, "acme", NACK, &lease(2)), "true");
    assert_eq!(
        one(&mut app, "acme", NACK, &lease(2)),
        "false",
        "a spent lease nacked twice"
    );
    let acked: i32 = as_tenant(
        &mut app,
        "acme",
        "SELECT warden.ack(ARRAY[$1::text::uuid, $2::text::uuid])",
        &[&lease(3), &lease(4)],
    )[0]
    .get(0);
    assert_eq!(acked, 2);
    assert_eq!(
        one(&mut app, "acme", ACK, &lease(3)),
        "0",
        "acknowledged twice"
    );
    // the nacked one is due again at once, as its second attempt
    let again = claim(&mut app, "1 minute");
    assert_eq!(
        again.iter().map(|l| (l.1, l.2)).collect::<Vec<_>>(),
        [(2, 2)]
    );
    assert_eq!(stats(&mut admin), (0, 4));
    // the two left lapse; the extended one does not
    thread::sleep(Duration::from_millis(1_300));
    let lapsed = claim(&mut app, "1 minute");
    assert_eq!(
        lapsed.iter().map(|l| (l.1, l.2)).collect::<Vec<_>>(),
        [(5, 2), (6, 2)],
        "the lapsed leases' messages, as second attempts"
    );
    assert_eq!(
        one(&mut app, "acme", ACK, &lease(5)),
        "0",
        "a lapsed lease acknowledged"
    );
    assert_eq!(
        one(&mut app, "acme", ACK, &lease(1)),
        "1",
        "the extended lease"
    );
    assert_eq!(stats(&mut admin), (0, 3));
    let rest: Vec<String> = again.iter().chain(&lapsed).map(|l| l.0.clone()).collect();
    let acked: i32 = as_tenant(
        &mut app,
        "acme",
        "SELECT warden.ack($1::text[]::uuid[])",
        &[&rest],
    )[0]
    .get(0);
    assert_eq!(acked, 3);
    assert_eq!(stats(&mut admin), (0, 0));
    assert_eq!(
        count(
            &mut admin,
            &format!("SELECT ({MESSAGES_LEFT}) + (SELECT count(*) FROM warden.outbox_leases)")
        ),
        0
    );
}

/// A nack puts its delivery back into the table in the consumer's
/// transaction: an `unsubscribe` that comes meanwhile waits for it, and
/// removes it, rather than leaving a delivery without a subscription
/// behind (which would also hold the retention of every message back).
#[test]
fn an_unsubscribe_waits_for_a_nack_in_flight_and_leaves_nothing_behind() {
    let (cluster, mut admin) = outbox_cluster("delivery_unsubscribe_nack", &[]);
    admin
        .batch_execute("SELECT warden.subscribe('gone', 'gone.#')")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    publish_in(&mut app, "acme", "gone.one", "{}");
    publish_in(&mut app, "acme", "gone.two", "{}");
    wait_count(&mut admin, MESSAGES_LEFT, 2, "the fan-out");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let leases: Vec<String> = tx
        .query("SELECT lease::text FROM warden.claim('gone', 10)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(leases.len(), 2);
    let nacked: bool = tx
        .query_one(
            "SELECT warden.nack($1::text::uuid, 'later', retry_after => '0')",
            &[&leases[0]],
        )
        .unwrap()
        .get(0);
    assert!(nacked);
    let conn = cluster.conn_str("postgres", "postgres");
    let unsubscriber = thread::spawn(move || {
        let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        c.batch_execute("SELECT warden.unsubscribe('gone')")
            .unwrap();
    });
    thread::sleep(Duration::from_millis(500));
    tx.commit().unwrap();
    unsubscriber.join().unwrap();
    assert_eq!(
        count(
            &mut admin,
            &format!("SELECT ({MESSAGES_LEFT}) + (SELECT count(*) FROM warden.outbox_leases)")
        ),
        0,
        "rows of a subscription that is gone were left behind"
    );
}

/// The sweep that dead-letters a lease lapsed on its last attempt reads
/// a window of each pull subscription at a time: a delivery behind more
/// than a window of others no consumer takes (here scheduled ten years
/// out) is still reached.
#[test]
fn a_lease_lapsed_on_its_last_attempt_is_dead_lettered_behind_a_long_backlog() {
    let (cluster, mut admin) = outbox_cluster("delivery_sweep_window", &[]);
    admin
        .batch_execute(
            "SELECT warden.subscribe('later', 'later.#', max_attempts => 1);
             SELECT warden.publish('later.run', jsonb_build_object('n', g), deliver_after => '10 years')
               FROM generate_series(1, 60000) g;
             SELECT warden.publish('later.now', '{\"stuck\": true}');",
        )
        .unwrap();
    wait_count(&mut admin, MESSAGES_LEFT, 60_001, "the fan-out");
    let mut app = cluster.connect_as("postgres", "app");
    let claimed = app
        .query(
            "SELECT (msg).payload::text FROM warden.claim('later', 10, '100 ms')",
            &[],
        )
        .unwrap();
    assert_eq!(claimed.len(), 1, "only the message not scheduled is due");
    // its one attempt lapses: no claim takes it again, the sweep makes it
    // a dead letter (two windows on)
    thread::sleep(Duration::from_millis(200));
    assert!(app
        .query("SELECT 1 FROM warden.claim('later', 10)", &[])
        .unwrap()
        .is_empty());
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters WHERE payload @> '{\"stuck\": true}' AND last_error = 'lease lapsed'",
        1,
        "the sweep to reach the lapsed lease",
    );
}

#[test]
fn an_immediate_stop_mid_stream_loses_no_committed_message() {
    let (cluster, mut admin) = outbox_cluster("delivery_immediate_stop", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('push', 'stream.#', 'public.record(warden.message)');
         SELECT warden.subscribe('pull', 'stream.#');",
    )
    .unwrap();
    drop(ops);
    // a publisher that records what committed
    let conn = cluster.conn_str("postgres", "app");
    let publisher = {
        let conn = conn.clone();
        thread::spawn(move || {
            let mut committed = Vec::new();
            let Ok(mut c) = postgres::Client::connect(&conn, postgres::NoTls) else {
                return committed;
            };
            for n in 0.. {
                let Ok(mut tx) = c.transaction() else { break };
                let Ok(row) = tx.query_one(
                    "SELECT warden.publish('stream.tick', jsonb_build_object('n', $1::int))",
                    &[&n],
                ) else {
                    break;
                };
                if tx.commit().is_err() {
                    break;
                }
                committed.push(row.get::<_, i64>(0));
            }
            committed
        })
    };
    // a pull consumer that records what it acked, and the batch whose ack
    // the stop cut off (that ack may or may not have committed)
    let consumer = {
        let conn = conn.clone();
        thread::spawn(move || {
            let mut acked = Vec::new();
            let Ok(mut c) = postgres::Client::connect(&conn, postgres::NoTls) else {
                return (acked, Vec::new());
            };
            loop {
                let Ok(rows) = c.query(
                    "SELECT lease::text, (msg).id FROM warden.claim('pull', 50, '1 second')",
                    &[],
                ) else {
                    break;
                };
                let leases: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                let ids: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
                if c.execute("SELECT warden.ack($1::text[]::uuid[])", &[&leases])
                    .is_err()
                {
                    return (acked, ids);
                }
                acked.extend(ids);
            }
            (acked, Vec::new())
        })
    };
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        300,
        "a stream of deliveries",
    );
    drop(admin);
    cluster.pg_ctl_stop("immediate");
    let committed = publisher.join().unwrap();
    let (acked_before, cut_off) = consumer.join().unwrap();
    cluster.pg_ctl_start();
    let mut admin = cluster.connect("postgres");
    wait_running(&mut admin, "postgres");
    let last = *committed.last().expect("published before the stop");
    wait_count(
        &mut admin,
        &format!("SELECT count(*) FROM public.seen WHERE id <= {last}"),
        committed.len() as i64,
        "every committed message handled",
    );
    thread::sleep(Duration::from_millis(500));
    let handled: BTreeMap<i64, i64> = admin
        .query("SELECT id, count(*) FROM public.seen GROUP BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for id in &committed {
        assert_eq!(
            handled.get(id),
            Some(&1),
            "message {id}: handled {:?} times",
            handled.get(id)
        );
    }
    // the pull side: what was not acked before the stop comes again
    let acked_after = drain_untenanted(&cluster, "pull");
    assert_eq!(
        deliveries_of(&mut admin, "pull"),
        0,
        "pull deliveries left after the drain"
    );
    let all: BTreeSet<i64> = acked_before.iter().chain(&acked_after).copied().collect();
    for id in &committed {
        // acknowledged before the stop, or after it; or in the batch whose
        // ack the stop cut off and which committed all the same (its
        // deliveries are gone, checked above)
        assert!(
            all.contains(id) || cut_off.contains(id),
            "pull message {id} lost"
        );
    }
    let twice: Vec<i64> = acked_before
        .iter()
        .filter(|id| acked_after.contains(id))
        .copied()
        .collect();
    // an acknowledged message never comes again (what comes again was
    // claimed, not acknowledged, and its lease lapsed)
    assert!(
        twice.is_empty(),
        "acknowledged messages came again: {twice:?}"
    );
}

/// As drain, without a tenant (the stream's messages have none).
fn drain_untenanted(cluster: &Cluster, sub: &str) -> Vec<i64> {
    let mut c = cluster.connect_as("postgres", "app");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let rows = c
            .query(
                "SELECT lease::text, (msg).id FROM warden.claim($1, 100, '1 minute')",
                &[&sub],
            )
            .unwrap();
        if rows.is_empty() {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        let leases: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        c.execute("SELECT warden.ack($1::text[]::uuid[])", &[&leases])
            .unwrap();
        got.extend(rows.iter().map(|r| r.get::<_, i64>(1)));
    }
    got
}

#[test]
fn a_handler_cannot_escalate_nor_leave_settings_behind() {
    let (cluster, mut admin) = outbox_cluster("delivery_handler_attacks", &[]);
    admin
        .batch_execute(
            "CREATE TABLE public.probe (what text, value text);
             GRANT INSERT ON public.probe TO ops;
             CREATE FUNCTION public.escalate(msg warden.message) RETURNS void LANGUAGE plpgsql AS $f$
             DECLARE attempt text;
             BEGIN
               INSERT INTO public.probe VALUES ('current_user', current_user), ('session_user', session_user),
                 ('search_path', current_setting('search_path')), ('tenant', warden.current_tenant()),
                 ('actor', current_setting('warden.actor', true)),
                 ('statement_timeout', current_setting('statement_timeout'));
               FOREACH attempt IN ARRAY ARRAY['SET ROLE postgres', 'SET SESSION AUTHORIZATION postgres',
                   'ALTER ROLE ops SUPERUSER', 'COPY (SELECT 1) TO PROGRAM ''true''',
                   'CREATE TEMP TABLE t (x int)', 'SELECT set_config(''role'', ''postgres'', false)',
                   'GRANT pg_execute_server_program TO ops'] LOOP
                 BEGIN
                   EXECUTE attempt;
                   INSERT INTO public.probe VALUES ('escaped', attempt);
                 EXCEPTION WHEN OTHERS THEN
                   INSERT INTO public.probe VALUES ('refused', attempt);
                 END;
               END LOOP;
               -- a session-level setting must not outlive the call
               PERFORM set_config('search_path', 'public', false);
               PERFORM set_config('work_mem', '77MB', false);
             END $f$;
             CREATE FUNCTION public.after(msg warden.message) RETURNS void LANGUAGE sql AS
               $$ INSERT INTO public.probe VALUES ('after search_path', current_setting('search_path')),
                                                  ('after work_mem', current_setting('work_mem')) $$;
             CREATE FUNCTION public.sleepy(msg warden.message) RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN PERFORM set_config('statement_timeout', '0', false); PERFORM pg_sleep(5);
                        INSERT INTO public.probe VALUES ('slept', 'through'); END $$;
             ALTER FUNCTION public.escalate(warden.message) OWNER TO ops;
             ALTER FUNCTION public.after(warden.message) OWNER TO ops;
             ALTER FUNCTION public.sleepy(warden.message) OWNER TO ops;",
        )
        .unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('escalate', 'attack.one', 'public.escalate(warden.message)');
         SELECT warden.subscribe('sleepy', 'attack.sleep', 'public.sleepy(warden.message)',
                                 handler_timeout => '300 ms', max_attempts => 1);",
    )
    .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    publish_in(&mut app, "acme", "attack.one", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.probe WHERE what = 'refused'",
        7,
        "the escalation attempts",
    );
    ops.batch_execute(
        "SELECT warden.subscribe('after', 'attack.two', 'public.after(warden.message)')",
    )
    .unwrap();
    publish_in(&mut app, "acme", "attack.two", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.probe WHERE what LIKE 'after%'",
        2,
        "the next handler",
    );
    let probe: BTreeMap<String, String> = admin
        .query(
            "SELECT what, string_agg(value, ', ' ORDER BY value) FROM public.probe GROUP BY what",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(probe["current_user"], "ops");
    assert_eq!(probe["search_path"], "pg_catalog, pg_temp");
    assert_eq!(probe["tenant"], "acme");
    assert_eq!(probe["actor"], "system");
    assert!(!probe.contains_key("escaped"), "{probe:?}");
    assert_eq!(probe["after search_path"], "pg_catalog, pg_temp");
    assert_ne!(
        probe["after work_mem"], "77MB",
        "a handler's setting outlived it"
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM pg_roles WHERE rolname = 'ops' AND rolsuper"
        ),
        0
    );
    // a handler that switches its own timeout off is still stopped
    publish_in(&mut app, "acme", "attack.sleep", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters",
        1,
        "the sleepy handler's dead letter",
    );
    let last_error: String = admin
        .query_one("SELECT last_error FROM warden.dead_letters", &[])
        .unwrap()
        .get(0);
    assert!(last_error.contains("statement timeout"), "{last_error}");
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.probe WHERE what = 'slept'"
        ),
        0
    );

    // rights checked at every call: the subscriber made superuser, or
    // losing EXECUTE, stops the calls
    admin
        .batch_execute(
            "ALTER ROLE ops SUPERUSER;
             CREATE TABLE public.calls (n int); GRANT INSERT ON public.calls TO ops;",
        )
        .unwrap();
    publish_in(&mut app, "acme", "attack.two", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.outbox_deliveries WHERE last_error LIKE '%superuser%'",
        1,
        "the refusal to run as a superuser",
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.probe WHERE what = 'after work_mem'"
        ),
        1
    );
    admin
        .batch_execute(
            "ALTER ROLE ops NOSUPERUSER;
             REVOKE EXECUTE ON FUNCTION public.after(warden.message) FROM PUBLIC, ops;",
        )
        .unwrap();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.outbox_deliveries WHERE last_error LIKE '%may no longer execute%'",
        1,
        "the refusal without EXECUTE",
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.probe WHERE what = 'after work_mem'"
        ),
        1
    );
}

/// Four publishers, each transaction publishing for one of five keys and
/// only then taking the key's turn (a row lock), so transactions commit
/// out of id order. Each key's messages reach the handler in the order
/// their transactions committed (with track_commit_timestamp on, as the
/// README asks for ordered subscriptions).
fn publish_ordered(conn: &str, seed: u64, rounds: usize) -> Vec<(String, String, i32, i64)> {
    let mut c = postgres::Client::connect(conn, postgres::NoTls).unwrap();
    let mut state = seed;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut out = Vec::new();
    for i in 0..rounds {
        let key = format!("k{}", next(5));
        let token = format!("{seed}-{i}");
        let mut tx = c.transaction().unwrap();
        let id: i64 = tx
            .query_one(
                "SELECT warden.publish('ord.x', jsonb_build_object('token', $1::text), key => $2)",
                &[&token, &key],
            )
            .unwrap()
            .get(0);
        thread::sleep(Duration::from_micros(next(3000)));
        let turn: i32 = tx
            .query_one(
                "UPDATE public.turns SET n = n + 1 WHERE k = $1 RETURNING n",
                &[&key],
            )
            .unwrap()
            .get(0);
        thread::sleep(Duration::from_micros(next(3000)));
        tx.commit().unwrap();
        out.push((key, token, turn, id));
    }
    out
}

#[test]
fn an_ordered_subscription_keeps_each_keys_commit_order_under_four_publishers() {
    let (cluster, mut admin) = outbox_cluster("delivery_ordered", &["track_commit_timestamp = on"]);
    admin
        .batch_execute(
            "CREATE TABLE public.turns (k text PRIMARY KEY, n int NOT NULL DEFAULT 0);
             INSERT INTO public.turns (k) SELECT 'k' || g FROM generate_series(0, 4) g;
             GRANT SELECT, UPDATE ON public.turns TO app;
             CREATE TABLE public.order_seen (k text, token text, seq bigserial);
             GRANT INSERT ON public.order_seen TO ops; GRANT USAGE ON SEQUENCE public.order_seen_seq_seq TO ops;
             CREATE FUNCTION public.in_order(msg warden.message) RETURNS void LANGUAGE sql AS
               $$ INSERT INTO public.order_seen (k, token) VALUES (msg.key, msg.payload->>'token') $$;
             ALTER FUNCTION public.in_order(warden.message) OWNER TO ops;",
        )
        .unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('ordered', 'ord.#', 'public.in_order(warden.message)', ordered => true)",
    )
    .unwrap();
    let conn = cluster.conn_str("postgres", "app");
    let publishers: Vec<_> = (0..4u64)
        .map(|seed| {
            let conn = conn.clone();
            thread::spawn(move || publish_ordered(&conn, seed + 1, 100))
        })
        .collect();
    let published: Vec<(String, String, i32, i64)> = publishers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.order_seen",
        400,
        "every ordered message",
    );
    let turn_of: BTreeMap<String, (i32, i64)> = published
        .iter()
        .map(|(_, token, turn, id)| (token.clone(), (*turn, *id)))
        .collect();
    // the test means something only if commits did overtake ids
    let mut overtaken = 0;
    for key in (0..5).map(|k| format!("k{k}")) {
        let mut by_turn: Vec<&(String, String, i32, i64)> =
            published.iter().filter(|p| p.0 == key).collect();
        by_turn.sort_by_key(|p| p.2);
        overtaken += by_turn.windows(2).filter(|w| w[0].3 > w[1].3).count();
        let seen: Vec<i32> = admin
            .query(
                "SELECT token FROM public.order_seen WHERE k = $1 ORDER BY seq",
                &[&key],
            )
            .unwrap()
            .iter()
            .map(|r| turn_of[&r.get::<_, String>(0)].0)
            .collect();
        let want: Vec<i32> = (1..=seen.len() as i32).collect();
        assert_eq!(seen, want, "key {key}: handled out of commit order");
    }
    assert!(overtaken > 0, "no transaction committed out of id order");
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM public.order_seen"),
        400
    );
}

/// A REPEATABLE READ transaction holds the xmin horizon while messages
/// stream through a handler: every one is delivered, outbox_health names
/// the holder, and throughput and dead tuples are reported. Then
/// retention deletes the handled messages in batches, keeping the one a
/// dead letter refers to.
#[test]
fn a_held_xmin_horizon_slows_nothing_it_names_and_retention_reclaims_in_bulk() {
    let (cluster, mut admin) =
        outbox_cluster("delivery_held_xmin", &["warden.outbox_retention = 0"]);
    admin
        .batch_execute(
            "CREATE FUNCTION public.poison(msg warden.message) RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN IF msg.payload ? 'poison' THEN RAISE EXCEPTION 'poison'; END IF; END $$;
             ALTER FUNCTION public.poison(warden.message) OWNER TO ops;",
        )
        .unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('load', 'load.#', 'public.record(warden.message)');
         SELECT warden.subscribe('poisoned', 'poison.#', 'public.poison(warden.message)', max_attempts => 1);",
    )
    .unwrap();
    let mut holder = cluster.connect("postgres");
    holder
        .batch_execute(
            "SET application_name = 'report_job';
             BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class;",
        )
        .unwrap();
    let started = Instant::now();
    publish_numbered(&mut admin, "load.x", 5000, 500);
    admin
        .batch_execute("SELECT warden.publish('poison.x', '{\"poison\": true}')")
        .unwrap();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        5000,
        "every message under the held horizon",
    );
    let rate = 5000.0 / started.elapsed().as_secs_f64();
    // the worker's statistics reach the cumulative stats within a second or so
    let health = wait_for(
        Duration::from_secs(30),
        "dead tuples in the statistics",
        || {
            let health: BTreeMap<String, (i64, String)> = admin
            .query(
                "SELECT CASE WHEN item = 'dead_tuples' THEN item || ':' || split_part(detail, ':', 1) ELSE item END,
                        value, detail
                   FROM warden.outbox_health()",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
            (health["dead_tuples:outbox_deliveries"].0 > 0).then_some(health)
        },
    );
    let held = &health["xmin_held_by_backend"];
    assert!(held.1.contains("report_job"), "{health:?}");
    let dead = health["dead_tuples:outbox_deliveries"].0;
    println!(
        "held xmin: 5000 messages handled at {rate:.0}/s; dead tuples in outbox_deliveries: {dead}; {}",
        held.1
    );
    holder.batch_execute("COMMIT").unwrap();
    // retention (0 here): the handled messages go, the dead letter's stays
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters",
        1,
        "the poison's dead letter",
    );
    wait_for(
        Duration::from_secs(60),
        "retention to delete the handled messages",
        || (count(&mut admin, "SELECT count(*) FROM warden.outbox_messages") == 1).then_some(()),
    );
    let kept: String = admin
        .query_one("SELECT topic FROM warden.outbox_messages", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        kept, "poison.x",
        "retention deleted a message a dead letter refers to"
    );
    let replayed: i32 = admin
        .query_one("SELECT warden.replay_dead_letters(ARRAY(SELECT dead_letter_id FROM warden.dead_letters))", &[])
        .unwrap()
        .get(0);
    assert_eq!(replayed, 1);
}

/// Shared buffers a statement touched (hit or read), from its
/// `EXPLAIN (ANALYZE, BUFFERS)`: the top node counts what the functions
/// it calls read through SPI.
fn buffers_touched(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> i64 {
    let plan: Vec<String> = c
        .query(
            &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"),
            params,
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let line = plan
        .iter()
        .find(|l| l.trim_start().starts_with("Buffers: shared"))
        .unwrap_or_else(|| panic!("no buffer counts in {plan:#?}"));
    let number = |key: &str| {
        line.split(key).nth(1).map_or(0, |rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
    };
    number("hit=") + number("read=")
}

/// Begins a transaction that holds the xmin horizon until its client
/// commits.
const HOLD_HORIZON: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class;";

/// A client holding the xmin horizon (`HOLD_HORIZON`).
fn hold_horizon(cluster: &Cluster) -> Client {
    let mut holder = cluster.connect("postgres");
    holder.batch_execute(HOLD_HORIZON).unwrap();
    holder
}

/// Autovacuum off on the deliveries, so that what a held horizon keeps
/// stays for the counts.
fn keep_dead_deliveries(admin: &mut Client) {
    admin
        .batch_execute("ALTER TABLE warden.outbox_deliveries SET (autovacuum_enabled = off)")
        .unwrap();
}

/// `sql`'s count with the statistics views read afresh.
fn fresh_count(admin: &mut Client, sql: &str) -> i64 {
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .unwrap();
    count(admin, sql)
}

/// A pull subscription `sub` (topics `sub.#`) with `n` messages fanned
/// out, autovacuum off on the deliveries and leases (so that what a
/// held horizon keeps stays for the buffer counts).
fn pull_backlog(cluster: &Cluster, admin: &mut Client, sub: &str, n: i32) {
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.execute("SELECT warden.subscribe($1, $1 || '.#')", &[&sub])
        .unwrap();
    admin
        .batch_execute(
            "ALTER TABLE warden.outbox_leases SET (autovacuum_enabled = off);
             ALTER TABLE warden.outbox_deliveries SET (autovacuum_enabled = off);",
        )
        .unwrap();
    publish_numbered(admin, &format!("{sub}.x"), n, 1000);
    wait_count(admin, MESSAGES_LEFT, n.into(), "the fan-out of the backlog");
}

/// `n` times: claims one message of `sub` and acknowledges it at once.
fn claim_and_ack_one_by_one(app: &mut Client, sub: &str, n: usize) {
    for _ in 0..n {
        let leases: String = app
            .query_one(
                "SELECT coalesce(array_agg(lease)::text, '{}') FROM warden.claim($1, 1)",
                &[&sub],
            )
            .unwrap()
            .get(0);
        let acked: i32 = app
            .query_one("SELECT warden.ack($1::text::uuid[])", &[&leases])
            .unwrap()
            .get(0);
        assert_eq!(acked, 1, "a claim of one, acknowledged at once");
    }
}

/// Under a held xmin horizon the index entries of acknowledged leases and
/// claimed deliveries cannot be reclaimed: a claim or an ack that reads
/// them all slows to a crawl as they pile up (an ack planned to read
/// every lease row of its subscription did: 17 000 buffers an ack after
/// a minute of load). The statistics are those a queue table has under
/// load: pages of acknowledged lease rows and no live one when it was
/// last analysed, so the planner thinks it empty (the benchmark's
/// cluster had this, and the ack's plan then scanned every lease row).
/// After 2 000 claims and acks under the horizon, one more of each reads
/// a few dozen buffers.
#[test]
fn claims_and_acks_read_a_bounded_number_of_buffers_under_a_held_horizon() {
    let (cluster, mut admin) = outbox_cluster("delivery_held_buffers", &[]);
    pull_backlog(&cluster, &mut admin, "pulled", 3000);
    let mut app = cluster.connect_as("postgres", "app");
    let claim = "SELECT coalesce(array_agg(lease)::text, '{}') FROM warden.claim('pulled', 1)";
    let claim_and_ack =
        |app: &mut postgres::Client, n: usize| claim_and_ack_one_by_one(app, "pulled", n);
    claim_and_ack(&mut app, 300);
    admin
        .batch_execute("ANALYZE warden.outbox_leases, warden.outbox_deliveries")
        .unwrap();
    let stats: (i32, f32) = {
        let row = admin
            .query_one(
                "SELECT relpages, reltuples FROM pg_class WHERE oid = 'warden.outbox_leases'::regclass",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        stats.0 > 0 && stats.1 == 0.0,
        "the lease table analysed with pages and no live row: {stats:?}"
    );
    let mut holder = hold_horizon(&cluster);
    claim_and_ack(&mut app, 2000);
    let left: i64 = count(&mut admin, MESSAGES_LEFT);
    assert_eq!(left, 700, "2 300 of 3 000 taken");
    let claim_buffers = buffers_touched(&mut app, "SELECT * FROM warden.claim('pulled', 1)", &[]);
    let leases: String = app.query_one(claim, &[]).unwrap().get(0);
    let ack_buffers = buffers_touched(&mut app, "SELECT warden.ack($1::text::uuid[])", &[&leases]);
    println!("under the held horizon after 2 000 claims and acks: a claim read {claim_buffers} buffers, an ack {ack_buffers}");
    assert!(claim_buffers < 200, "a claim read {claim_buffers} buffers");
    assert!(ack_buffers < 200, "an ack read {ack_buffers} buffers");
    holder.batch_execute("COMMIT").unwrap();
}

/// An ack, an extend and a nack find a claim's lease row by its primary
/// key (subscription, nonce), whatever the sizes of the lease table's
/// two indexes. The benchmark's cluster had a primary key seven times the
/// size of the lapse index (subscription, lease_until) and a few live
/// leases: the planner then read a claim's row through the lapse index,
/// every entry of the subscription, which under a held horizon are all
/// the leases acknowledged since (acks went from 0.2 to 10 ms within
/// 90 s). The test makes such sizes: claims and acks under a held horizon
/// (random nonces split the primary key's pages everywhere), a vacuum,
/// the lapse index rebuilt, four live leases; then it holds the horizon
/// and counts the buffers of each call before and after 3 000 claims and
/// acks.
#[test]
fn acks_extends_and_nacks_read_the_lease_by_its_key_whatever_the_index_sizes() {
    let (cluster, mut admin) = outbox_cluster("delivery_lease_key", &[]);
    pull_backlog(&cluster, &mut admin, "keyed", 8000);
    let mut app = cluster.connect_as("postgres", "app");
    let claim = "SELECT coalesce(array_agg(lease)::text, '{}') FROM warden.claim('keyed', 1)";
    let claim_and_ack =
        |app: &mut postgres::Client, n: usize| claim_and_ack_one_by_one(app, "keyed", n);
    let mut holder = hold_horizon(&cluster);
    claim_and_ack(&mut app, 4000);
    holder.batch_execute("COMMIT").unwrap();
    // four live leases, held by a consumer that is slow to acknowledge
    let mut slow = cluster.connect_as("postgres", "app");
    let live: i64 = slow
        .query_one(
            "SELECT count(*) FROM warden.claim('keyed', 4, '1 hour')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(live, 4);
    admin
        .batch_execute("VACUUM ANALYZE warden.outbox_leases")
        .unwrap();
    admin
        .batch_execute("REINDEX INDEX warden.outbox_leases_until_idx")
        .unwrap();
    let sizes: (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT pg_relation_size('warden.outbox_leases_pkey'),
                        pg_relation_size('warden.outbox_leases_until_idx')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    // with four live rows the planner takes the lapse index once the
    // primary key is over four times its size
    assert!(
        sizes.0 > 4 * sizes.1,
        "the primary key many times the lapse index: {sizes:?}"
    );
    // buffers of an ack of a claim of one, and of an extend and a nack
    // of a claim of two
    let costs = |app: &mut postgres::Client| -> [i64; 3] {
        let leases: String = app.query_one(claim, &[]).unwrap().get(0);
        let ack = buffers_touched(app, "SELECT warden.ack($1::text::uuid[])", &[&leases]);
        let two: Vec<String> = app
            .query("SELECT lease::text FROM warden.claim('keyed', 2)", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(two.len(), 2);
        let extend = buffers_touched(
            app,
            "SELECT warden.extend($1::text::uuid, '1 minute')",
            &[&two[0]],
        );
        let nack = buffers_touched(
            app,
            "SELECT warden.nack($1::text::uuid, 'not now')",
            &[&two[1]],
        );
        app.execute("SELECT warden.ack(ARRAY[$1::text::uuid])", &[&two[0]])
            .unwrap();
        [ack, extend, nack]
    };
    holder.batch_execute(HOLD_HORIZON).unwrap();
    let before = costs(&mut app);
    claim_and_ack(&mut app, 3000);
    let after = costs(&mut app);
    println!(
        "lease key sizes {sizes:?}; buffers of an ack, an extend, a nack: {before:?}, after 3 000 claims and acks under the held horizon {after:?}"
    );
    for (i, what) in ["an ack", "an extend", "a nack"].iter().enumerate() {
        assert!(
            after[i] < before[i] + 25,
            "{what} read {} buffers before 3 000 claims and acks under the held horizon, {} after",
            before[i],
            after[i]
        );
    }
    holder.batch_execute("COMMIT").unwrap();
}

/// The dispatcher's look for the next delivery due later starts at each
/// handler subscription's mark, as its read of due deliveries does: from
/// the subscription's first index entry, under a held xmin horizon, every
/// look (at least every 5 s, also when idle) read every delivery handled
/// since the horizon was taken. 20 000 messages handled under a held
/// horizon, then, once the full recomputes of the marks that reach back
/// past them have run, 12 s of an idle worker: the entries of the
/// deliveries' primary key its reads return (`idx_tup_read`) stay few.
#[test]
fn the_dispatchers_look_for_later_deliveries_starts_at_the_mark() {
    let (cluster, mut admin) = outbox_cluster("delivery_next_due_mark", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('pushed', 'pushed.#', 'public.record(warden.message)')",
    )
    .unwrap();
    keep_dead_deliveries(&mut admin);
    let mut holder = hold_horizon(&cluster);
    publish_numbered(&mut admin, "pushed.x", 20000, 10000);
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        20000,
        "20 000 messages handled",
    );
    let read = "SELECT idx_tup_read FROM pg_stat_all_indexes
                 WHERE indexrelid = 'warden.outbox_deliveries_pkey'::regclass";
    // the worker's full recomputes of the marks (every 10 s) reach back
    // to before the publishing transaction began (a delivery id drawn
    // then may commit later) until one has run after it ended, that is
    // twice; the next ones start from later marks. Then the worker's
    // statistics of its last runs reach the view.
    thread::sleep(Duration::from_secs(24));
    let before = fresh_count(&mut admin, read);
    thread::sleep(Duration::from_secs(12));
    let after = fresh_count(&mut admin, read);
    println!("an idle worker's reads returned {} primary-key entries of the deliveries in 12 s under the held horizon", after - before);
    assert!(
        after - before < 5000,
        "an idle worker's reads returned {} entries of 20 000 handled deliveries in 12 s",
        after - before
    );
    holder.batch_execute("COMMIT").unwrap();
}

/// Publishes messages {"m": 1} to {"m": n} on `topic` in one
/// transaction, message g with key 'k' || g % keys.
fn publish_keyed(c: &mut Client, topic: &str, n: i32, keys: i32) {
    c.execute(
        "SELECT warden.publish_batch($1, array_agg(jsonb_build_object('m', g) ORDER BY g),
                                     array_agg('k' || g % $3 ORDER BY g))
           FROM generate_series(1, $2) g",
        &[&topic, &n, &keys],
    )
    .unwrap();
}

/// An unordered pull subscription's messages of one fan-out run share
/// a delivery row (a group of up to a hundred): a claim takes the first
/// messages of a group and leaves the rest in it, the next claim goes on
/// where it stopped and across into the next group, in fan-out order;
/// `outbox_stats` counts messages, not rows; and a group's `message_id`
/// stays the lowest message it holds (retention keeps every message from
/// there on).
#[test]
fn a_claim_takes_part_of_a_group_and_the_next_claims_the_rest() {
    let (cluster, mut admin) = outbox_cluster("delivery_groups", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute("SELECT warden.subscribe('grouped', 'grouped.#')")
        .unwrap();
    publish_keyed(&mut admin, "grouped.x", 250, 1);
    let pending = "SELECT pending FROM warden.outbox_stats WHERE subscription = 'grouped'";
    wait_count(&mut admin, pending, 250, "the fan-out");
    let rows = "SELECT count(*) FROM warden.outbox_deliveries";
    assert_eq!(
        count(&mut admin, rows),
        3,
        "250 messages of one run in groups of 100"
    );
    let lowest_kept = "SELECT count(*) FROM warden.outbox_deliveries d
                        WHERE d.message_id <> (SELECT min(x) FROM unnest(d.message_ids) x)";
    let mut app = cluster.connect_as("postgres", "app");
    // (lease, "m") of a claim of `n`, in the order claim returns them
    let claim = |app: &mut Client, n: i32| -> Vec<(String, i32)> {
        app.query(
            "SELECT lease::text, ((msg).payload->>'m')::int FROM warden.claim('grouped', $1)",
            &[&n],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let ack = |app: &mut Client, taken: &[(String, i32)]| -> i32 {
        let leases: Vec<String> = taken.iter().map(|t| t.0.clone()).collect();
        app.query_one("SELECT warden.ack($1::text[]::uuid[])", &[&leases])
            .unwrap()
            .get(0)
    };
    let first = claim(&mut app, 30);
    assert_eq!(
        first.iter().map(|t| t.1).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(ack(&mut app, &first), 30);
    let second = claim(&mut app, 100);
    assert_eq!(
        second.iter().map(|t| t.1).collect::<Vec<_>>(),
        (31..=130).collect::<Vec<_>>(),
        "the rest of the first group, then the start of the second"
    );
    assert_eq!(count(&mut admin, pending), 120);
    assert_eq!(
        count(
            &mut admin,
            "SELECT in_flight FROM warden.outbox_stats WHERE subscription = 'grouped'"
        ),
        100
    );
    assert_eq!(count(&mut admin, rows), 2);
    assert_eq!(
        count(&mut admin, lowest_kept),
        0,
        "a group's message_id is its lowest"
    );
    assert_eq!(ack(&mut app, &second), 100);
    let rest = claim(&mut app, 200);
    assert_eq!(
        rest.iter().map(|t| t.1).collect::<Vec<_>>(),
        (131..=250).collect::<Vec<_>>()
    );
    assert_eq!(ack(&mut app, &rest), 120);
    assert_eq!(count(&mut admin, rows), 0);
    assert_eq!(count(&mut admin, pending), 0);
}

/// An ordered subscription's claim looks for an earlier delivery of each
/// candidate's key from the subscription's mark, as it looks for the
/// candidates: from the key's first index entry, under a held xmin
/// horizon, that look read every delivery of the key acknowledged since
/// the horizon was taken. One key, 3 000 messages; a claim of one reads
/// as many buffers after 2 000 claims and acks under the horizon as
/// before them.
#[test]
fn an_ordered_claims_look_for_an_earlier_delivery_of_the_key_starts_at_the_mark() {
    let (cluster, mut admin) = outbox_cluster("delivery_ordered_head_mark", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute("SELECT warden.subscribe('in_turn', 'in_turn.#', ordered => true)")
        .unwrap();
    keep_dead_deliveries(&mut admin);
    publish_keyed(&mut admin, "in_turn.x", 3000, 1);
    wait_count(
        &mut admin,
        MESSAGES_LEFT,
        3000,
        "the fan-out of the backlog",
    );
    let mut app = cluster.connect_as("postgres", "app");
    // the worker's full recomputes of the marks reach back to before the
    // publishing transaction began until one has run after it ended
    // (every 10 s, so twice): measured after them, and once the worker
    // has moved the mark past the claims acknowledged (it does every
    // 20 ms after claims, later on a loaded machine), a claim reads what
    // its looks read from the mark, not what a stale mark adds
    thread::sleep(Duration::from_secs(22));
    let mut holder = hold_horizon(&cluster);
    // a claim of one, measured and rolled back (its lease would hold the
    // key for the claims after it)
    let claim_buffers = |app: &mut Client| -> i64 {
        thread::sleep(Duration::from_secs(2));
        app.batch_execute("BEGIN").unwrap();
        let buffers = buffers_touched(app, "SELECT * FROM warden.claim('in_turn', 1)", &[]);
        app.batch_execute("ROLLBACK").unwrap();
        buffers
    };
    claim_and_ack_one_by_one(&mut app, "in_turn", 100);
    let before = claim_buffers(&mut app);
    claim_and_ack_one_by_one(&mut app, "in_turn", 2000);
    let after = claim_buffers(&mut app);
    println!("an ordered claim of one read {before} buffers, {after} after 2 000 claims and acks of its key under a held horizon");
    assert!(
        after < before + 200,
        "an ordered claim read {before} buffers, {after} after 2 000 claims and acks of its key under a held horizon"
    );
    holder.batch_execute("COMMIT").unwrap();
}

/// The dispatcher's look for an earlier delivery of an ordered key starts
/// at the subscription's mark too. 4 000 messages of 20 keys handled
/// under a held horizon, then 200 more: the index entries of the
/// deliveries the dispatcher's reads return (`idx_tup_read` of both
/// indexes) stay far below the 200 × 200 of a look from each key's first
/// entry.
#[test]
fn the_dispatchers_look_for_an_earlier_delivery_of_the_key_starts_at_the_mark() {
    let (cluster, mut admin) = outbox_cluster("delivery_ordered_push_mark", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('in_turn', 'in_turn.#', 'public.record(warden.message)', ordered => true)",
    )
    .unwrap();
    keep_dead_deliveries(&mut admin);
    let mut holder = hold_horizon(&cluster);
    publish_keyed(&mut admin, "in_turn.x", 4000, 20);
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        4000,
        "4 000 messages handled",
    );
    let read = "SELECT sum(idx_tup_read)::bigint FROM pg_stat_all_indexes
                 WHERE relid = 'warden.outbox_deliveries'::regclass";
    // as in the look for later deliveries: the full recomputes of the
    // marks that reach back past the first messages have run
    thread::sleep(Duration::from_secs(24));
    let before = fresh_count(&mut admin, read);
    publish_keyed(&mut admin, "in_turn.y", 200, 20);
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen",
        4200,
        "200 more handled",
    );
    // the worker's statistics reach the view at its next idle moment
    thread::sleep(Duration::from_secs(2));
    let after = fresh_count(&mut admin, read);
    println!("handling 200 ordered messages under the held horizon returned {} index entries of the deliveries", after - before);
    assert!(
        after - before < 15000,
        "handling 200 ordered messages after 4 000 under the held horizon returned {} index entries",
        after - before
    );
    holder.batch_execute("COMMIT").unwrap();
}

/// A claim whose transaction commits after the worker's looks passed
/// the time its lease ends at: the lease row was invisible to them. The
/// worker's look "from the start" (once a minute) finds it, reaching back
/// to the oldest transaction with an id that ran at the previous such
/// look (not to the first index entry, which under a held horizon is
/// every acknowledged lease), and the message goes to the next claimer.
#[test]
fn a_claim_committed_after_its_lease_ended_is_given_back() {
    let (cluster, mut admin) = outbox_cluster("delivery_late_claim", &[]);
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute("SELECT warden.subscribe('late', 'late.#')")
        .unwrap();
    admin
        .batch_execute("SELECT warden.publish('late.x', '{\"n\": 1}')")
        .unwrap();
    wait_count(&mut admin, MESSAGES_LEFT, 1, "the fan-out");
    let mut slow = cluster.connect_as("postgres", "app");
    slow.batch_execute("BEGIN").unwrap();
    let lease: String = slow
        .query_one(
            "SELECT lease::text FROM warden.claim('late', 1, '1 second')",
            &[],
        )
        .unwrap()
        .get(0);
    // the worker's looks and those of busy claims pass its end while the
    // claim is not yet committed
    let mut app = cluster.connect_as("postgres", "app");
    // publishes one message, claims one and acknowledges it unless it is
    // the late claim's (returned, lease kept)
    let busy = |app: &mut Client| -> Option<String> {
        app.batch_execute("SELECT warden.publish('late.busy', '{\"n\": 2}')")
            .unwrap();
        let row = app
            .query_opt(
                "SELECT lease::text, (msg).payload->>'n' FROM warden.claim('late', 1, '30 seconds')",
                &[],
            )
            .unwrap()?;
        let (got, n): (String, String) = (row.get(0), row.get(1));
        if n == "1" {
            return Some(got);
        }
        app.execute("SELECT warden.ack(ARRAY[$1::text::uuid])", &[&got])
            .unwrap();
        None
    };
    let started = Instant::now();
    // the worker sleeps up to 5 s when idle: twice that
    while started.elapsed() < Duration::from_secs(12) {
        assert!(
            busy(&mut app).is_none(),
            "the late claim's message is leased"
        );
        thread::sleep(Duration::from_millis(50));
    }
    slow.batch_execute("COMMIT").unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let again = loop {
        if let Some(got) = busy(&mut app) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "the late claim's lapsed lease was never given back"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(again, lease, "a fresh lease");
    let stale: i32 = slow
        .query_one("SELECT warden.ack(ARRAY[$1::text::uuid])", &[&lease])
        .unwrap()
        .get(0);
    assert_eq!(stale, 0, "the lapsed lease acknowledges nothing");
    let acked: i32 = app
        .query_one("SELECT warden.ack(ARRAY[$1::text::uuid])", &[&again])
        .unwrap()
        .get(0);
    assert_eq!(acked, 1);
}

/// What the sixth review's follow-up found: a pull subscription with a
/// consumer role is closed to other application roles; dead letters are
/// replayed and purged only with the rights of their subscription's
/// owner; a subscriber pinned to a tenant handles only that tenant's
/// messages and cannot switch tenants inside its handler; a session
/// advisory lock a handler takes is released after its run; a
/// subscriber that left warden_admin is no longer called.
#[test]
fn consumers_owners_pins_and_leftovers_are_checked() {
    let (cluster, mut admin) = outbox_cluster("delivery_owner_checks", &[]);
    admin
        .batch_execute(
            "CREATE ROLE billing LOGIN; GRANT warden_app TO billing;
             CREATE ROLE ops2 LOGIN; GRANT warden_admin TO ops2;
             CREATE ROLE pinned LOGIN; GRANT warden_admin TO pinned;
             ALTER ROLE pinned SET warden.tenant = 'acme';
             CREATE TABLE public.pin_probe (tenant text, switched text);
             GRANT INSERT ON public.pin_probe TO pinned, ops2;
             CREATE FUNCTION public.hold_lock(msg warden.message) RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_advisory_lock(42); END $$;
             ALTER FUNCTION public.hold_lock(warden.message) OWNER TO ops;
             CREATE FUNCTION public.pinned_h(msg warden.message) RETURNS void LANGUAGE plpgsql AS $$
             BEGIN
               BEGIN
                 PERFORM warden.set_tenant('beta');
                 INSERT INTO public.pin_probe VALUES (warden.current_tenant(), 'switched');
               EXCEPTION WHEN OTHERS THEN
                 INSERT INTO public.pin_probe VALUES (warden.current_tenant(), 'refused');
               END;
             END $$;
             ALTER FUNCTION public.pinned_h(warden.message) OWNER TO pinned;",
        )
        .unwrap();
    // pull with a consumer role
    admin
        .batch_execute("SELECT warden.subscribe('invoices', 'invoice.#', consumer => 'billing')")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    let mut billing = cluster.connect_as("postgres", "billing");
    app.batch_execute("SELECT warden.publish('invoice.due', '{}')")
        .unwrap();
    wait_count(&mut admin, MESSAGES_LEFT, 1, "the fan-out");
    let err = app
        .batch_execute("SELECT * FROM warden.claim('invoices')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    let lease: String = billing
        .query_one("SELECT lease::text FROM warden.claim('invoices')", &[])
        .unwrap()
        .get(0);
    for (sql, want) in [
        ("SELECT warden.ack(ARRAY[$1::text::uuid])::text", "0"),
        (
            "SELECT warden.extend($1::text::uuid, '1 minute')::text",
            "false",
        ),
        ("SELECT warden.nack($1::text::uuid, 'x')::text", "false"),
    ] {
        let got: String = app.query_one(sql, &[&lease]).unwrap().get(0);
        assert_eq!(got, want, "{sql} by a role that is not a consumer");
    }
    let acked: i32 = billing
        .query_one("SELECT warden.ack(ARRAY[$1::text::uuid])", &[&lease])
        .unwrap()
        .get(0);
    assert_eq!(acked, 1);

    // a session-level advisory lock a handler takes does not outlive its
    // run (Postgres itself refuses handlers PREPARE, LISTEN and cursors
    // WITH HOLD under the security restriction)
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('holder', 'leak.one', 'public.hold_lock(warden.message)')",
    )
    .unwrap();
    app.batch_execute("SELECT warden.publish('leak.one', '{}')")
        .unwrap();
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.outbox_stats WHERE subscription = 'holder' AND last_delivered_at IS NOT NULL",
        1,
        "the lock holder",
    );
    let free: bool = admin
        .query_one("SELECT pg_try_advisory_lock(42)", &[])
        .unwrap()
        .get(0);
    assert!(free, "a handler's session advisory lock outlived its run");
    admin
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .unwrap();
    let mut ops2 = cluster.connect_as("postgres", "ops2");

    // a pinned subscriber: its own tenant's messages only, and no switching
    let mut pinned = cluster.connect_as("postgres", "pinned");
    pinned
        .batch_execute("SELECT warden.subscribe('pinned_sub', 'pin.#', 'public.pinned_h(warden.message)', max_attempts => 1)")
        .unwrap();
    publish_in(&mut app, "acme", "pin.x", "{}");
    publish_in(&mut app, "beta", "pin.x", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters",
        1,
        "the other tenant's message refused",
    );
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.pin_probe",
        1,
        "the pinned handler",
    );
    let probe: Vec<(String, String)> = admin
        .query("SELECT tenant, switched FROM public.pin_probe", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(probe, vec![("acme".to_string(), "refused".to_string())]);
    let (tenant, error): (String, String) = {
        let r = admin
            .query_one("SELECT tenant, last_error FROM warden.dead_letters", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(tenant, "beta");
    assert!(error.contains("pinned"), "{error}");

    // dead letters: only with the subscription owner's rights
    let ids = "ARRAY(SELECT dead_letter_id FROM warden.dead_letters)";
    let mut tx = ops2.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('beta')", &[]).unwrap();
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM warden.dead_letters", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "ops2 sees beta's dead letter (row-level security)");
    let replayed: i32 = tx
        .query_one(&format!("SELECT warden.replay_dead_letters({ids})"), &[])
        .unwrap()
        .get(0);
    let purged: i64 = tx
        .query_one(
            "SELECT warden.purge_dead_letters(now() + interval '1 day')",
            &[],
        )
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    assert_eq!(
        (replayed, purged),
        (0, 0),
        "another owner's dead letters were replayed or purged"
    );
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM warden.dead_letters"),
        1
    );

    // a subscriber that left warden_admin is no longer called
    admin
        .batch_execute("REVOKE warden_admin FROM pinned")
        .unwrap();
    publish_in(&mut app, "acme", "pin.x", "{}");
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters",
        2,
        "the refusal",
    );
    let error: String = admin
        .query_one(
            "SELECT last_error FROM warden.dead_letters ORDER BY dead_letter_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(error.contains("warden_admin"), "{error}");
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM public.pin_probe"),
        1
    );
}

#[test]
fn a_handler_that_catches_its_timeout_is_stopped_at_the_hard_deadline_and_dead_lettered() {
    let (cluster, mut admin) = outbox_cluster("delivery_hard_deadline", &[]);
    admin
        .batch_execute(
            "CREATE FUNCTION public.stubborn(msg warden.message) RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN
                    INSERT INTO public.seen (sub, id, attempt) VALUES ('must roll back', msg.id, msg.attempt);
                    LOOP
                      BEGIN PERFORM pg_catalog.pg_sleep(60);
                      EXCEPTION WHEN query_canceled THEN NULL; END;
                    END LOOP;
                  END $$;
             ALTER FUNCTION public.stubborn(warden.message) OWNER TO ops;",
        )
        .unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.batch_execute(
        "SELECT warden.subscribe('stubborn', 'job.#', 'public.stubborn(warden.message)',
                                 max_attempts => 2, backoff => '10 ms', handler_timeout => '200 ms');
         SELECT warden.subscribe('steady', 'job.#', 'public.record(warden.message)');",
    )
    .unwrap();
    let starts_before = wait_running(&mut admin, "postgres").starts;
    let mut app = cluster.connect_as("postgres", "app");
    let id = publish_in(&mut app, "acme", "job.run", "{}");
    let started = Instant::now();
    // two calls, each ended 5 s after its 200 ms timeout, then a dead
    // letter; without the deadline the first call never ends
    wait_count(
        &mut admin,
        "SELECT count(*) FROM warden.dead_letters WHERE subscription = 'stubborn'",
        1,
        "the stubborn handler's dead letter",
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(10), "{took:?}");
    let (attempts, error, message_id): (i32, String, i64) = {
        let r = admin
            .query_one(
                "SELECT attempts, last_error, message_id FROM warden.dead_letters
                  WHERE subscription = 'stubborn'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((attempts, message_id), (2, id));
    assert!(error.contains("past its timeout"), "{error}");
    // the worker was ended twice and started again; the handler's effects
    // were rolled back each time, and the other subscription's handler
    // ran once
    let row = wait_running(&mut admin, "postgres");
    assert!(
        row.starts >= starts_before + 2,
        "{row:?} after {starts_before}"
    );
    wait_count(
        &mut admin,
        "SELECT count(*) FROM public.seen WHERE sub = 'steady'",
        1,
        "the steady handler",
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.seen WHERE sub <> 'steady'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM public.seen WHERE sub = 'steady'"
        ),
        1
    );
    assert_eq!(deliveries_of(&mut admin, "stubborn"), 0);
    assert_eq!(
        cluster.log().matches("went on past its timeout").count(),
        2,
        "the server log says why the worker stopped"
    );
}

/// The worker removes a handled delivery by the ctid it read it at; a
/// handler whose owner was let write `warden.outbox_deliveries` and
/// rewrote its own delivery row (so that ctid is an old version) is
/// still handled once: the worker falls back to the row's key.
#[test]
fn a_handler_that_rewrites_its_own_delivery_row_is_handled_once() {
    let (cluster, mut admin) = outbox_cluster("delivery_rewritten_row", &[]);
    subscribe_as_ops(
        &cluster,
        &mut admin,
        "GRANT SELECT, UPDATE ON warden.outbox_deliveries TO ops;
         CREATE FUNCTION public.touch(msg warden.message) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           UPDATE warden.outbox_deliveries SET last_error = 'touched' WHERE message_id = msg.id;
           PERFORM public.record(msg);
         END $$;
         ALTER FUNCTION public.touch(warden.message) OWNER TO ops;",
        ("toucher", "touch.#", "public.touch(warden.message)"),
    );
    three_handled_once_each(&cluster, &mut admin, "toucher", "touch.one");
}

/// Attack: from PostgreSQL 17 a role with MAINTAIN on a table may CLUSTER
/// it, which rewrites every row to a new place. A handler whose owner has
/// MAINTAIN on `warden.outbox_deliveries` clusters it under the worker's
/// run, so the ctids the worker read its deliveries at now point at
/// another subscription's rows: the worker must delete none of those, and
/// still remove its own (a delete by ctid alone took three of the
/// victim's deliveries per run and left the handled ones to run again).
/// Below 17 CLUSTER needs ownership and the test has nothing to attack.
#[test]
fn a_handler_that_clusters_the_deliveries_deletes_no_one_elses() {
    let (cluster, mut admin) = outbox_cluster("delivery_clustered", &[]);
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .unwrap()
        .get(0);
    if version < 170000 {
        eprintln!("PostgreSQL {version}: CLUSTER needs ownership, nothing to attack");
        return;
    }
    // the attacker's subscription first: its rows sort first after CLUSTER
    subscribe_as_ops(
        &cluster,
        &mut admin,
        "GRANT MAINTAIN ON warden.outbox_deliveries TO ops;
         CREATE FUNCTION public.reclusters(msg warden.message) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           CLUSTER warden.outbox_deliveries USING outbox_deliveries_pkey;
           PERFORM public.record(msg);
         END $$;
         ALTER FUNCTION public.reclusters(warden.message) OWNER TO ops;",
        ("clusterer", "clu.#", "public.reclusters(warden.message)"),
    );
    // ordered: one row per message (an unordered pull subscription's
    // messages of a fan-out run share one row, and there would be few
    // rows for the ctids to land on)
    admin
        .batch_execute("SELECT warden.subscribe('victim', 'vic.#', ordered => true)")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    app.batch_execute(
        "SELECT warden.set_tenant('acme');
         SELECT warden.publish_batch('vic.x', array_fill('{}'::jsonb, ARRAY[300]));",
    )
    .unwrap();
    wait_for(Duration::from_secs(120), "the victim's deliveries", || {
        (deliveries_of(&mut admin, "victim") >= 300).then_some(())
    });
    three_handled_once_each(&cluster, &mut admin, "clusterer", "clu.one");
    assert_eq!(
        deliveries_of(&mut admin, "victim"),
        300,
        "another subscription's deliveries deleted"
    );
}

/// Publishes three messages on `topic` (tenant acme) and checks that the
/// handler of subscription `sub` (which records into public.seen) ran
/// once for each and left none of its deliveries behind.
fn three_handled_once_each(cluster: &Cluster, admin: &mut Client, sub: &str, topic: &str) {
    let mut app = cluster.connect_as("postgres", "app");
    for _ in 0..3 {
        publish_in(&mut app, "acme", topic, "{}");
    }
    wait_count(
        admin,
        "SELECT count(*) FROM public.seen",
        3,
        "three handler calls",
    );
    // a delivery left behind would be due again at once
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(admin, "SELECT count(*) FROM public.seen"),
        3,
        "each message handled once"
    );
    assert_eq!(deliveries_of(admin, sub), 0, "the handled deliveries left");
}

/// How many deliveries subscription `sub` has in the table.
fn deliveries_of(admin: &mut Client, sub: &str) -> i64 {
    admin
        .query_one(
            "SELECT coalesce(sum(coalesce(cardinality(message_ids), 1)), 0)::bigint FROM warden.outbox_deliveries d
               JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
              WHERE s.name = $1",
            &[&sub],
        )
        .unwrap()
        .get(0)
}

/// Runs `setup` as the superuser, then subscribes as ops: (name,
/// pattern, handler).
fn subscribe_as_ops(cluster: &Cluster, admin: &mut Client, setup: &str, sub: (&str, &str, &str)) {
    admin.batch_execute(setup).unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    ops.execute(
        "SELECT warden.subscribe($1, $2, $3::text::regprocedure)",
        &[&sub.0, &sub.1, &sub.2],
    )
    .unwrap();
}
