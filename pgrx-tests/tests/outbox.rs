//! The outbox from outside (publishing and subscriptions): application
//! roles of two tenants publish and keep to their own dedupe keys and
//! cannot read the outbox or subscribe; two sessions publishing one
//! dedupe key concurrently publish once (or twice when the first rolls
//! back); a handler subscription never runs as a superuser nor as a role
//! that may not execute it; subscriptions and messages survive a dump.

use std::time::Duration;

use pg_warden_integration::*;
use postgres::error::SqlState;

fn outbox_cluster(name: &str) -> (Cluster, Client) {
    let cluster = Cluster::start(name, &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE ROLE ops LOGIN; GRANT warden_admin TO ops;",
        )
        .unwrap();
    (cluster, admin)
}

fn publish_as(app: &mut Client, tenant: &str, dedupe_key: &str) -> i64 {
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    let id: i64 = tx
        .query_one(
            "SELECT warden.publish('orders.created', jsonb_build_object('tenant', $1::text), dedupe_key => $2)",
            &[&tenant, &dedupe_key],
        )
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    id
}

#[test]
fn two_tenants_publish_through_an_app_role_and_keep_to_their_own_dedupe_keys() {
    let (cluster, mut admin) = outbox_cluster("outbox_tenants");
    let mut app = cluster.connect_as("postgres", "app");
    let acme = publish_as(&mut app, "acme", "k1");
    let beta = publish_as(&mut app, "beta", "k1");
    assert_ne!(
        acme, beta,
        "one tenant's dedupe key answered another's publish"
    );
    assert_eq!(publish_as(&mut app, "acme", "k1"), acme);
    assert_eq!(publish_as(&mut app, "beta", "k1"), beta);
    // no tenant: a scope of its own
    let none: i64 = app
        .query_one(
            "SELECT warden.publish('orders.created', '{}', dedupe_key => 'k1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(none != acme && none != beta);
    // without a tenant, a role's keys are its own: another role can
    // neither pre-empt nor probe them
    let other_role: i64 = admin
        .query_one(
            "SELECT warden.publish('orders.created', '{}', dedupe_key => 'k1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_ne!(
        other_role, none,
        "roles without a tenant shared a dedupe key"
    );
    let rows: Vec<(i64, Option<String>, String)> = admin
        .query(
            "SELECT id, tenant, payload::text FROM warden.outbox_messages ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0].1.as_deref(), Some("acme"));
    assert!(rows[0].2.contains("acme"));
    assert_eq!(rows[1].1.as_deref(), Some("beta"));
    assert_eq!(rows[2].1, None);

    // what an application may not do
    for (sql, code) in [
        ("SELECT count(*) FROM warden.outbox_messages", SqlState::INSUFFICIENT_PRIVILEGE),
        ("SELECT count(*) FROM warden.outbox_dedupe", SqlState::INSUFFICIENT_PRIVILEGE),
        ("SELECT count(*) FROM warden.outbox_subscriptions", SqlState::INSUFFICIENT_PRIVILEGE),
        ("SELECT warden.subscribe('spy', '#')", SqlState::INSUFFICIENT_PRIVILEGE),
        ("SELECT warden.pause('x')", SqlState::INSUFFICIENT_PRIVILEGE),
        ("INSERT INTO warden.outbox_messages (topic, payload, headers, published_at, txid) VALUES ('a', '{}', '{}', now(), pg_current_xact_id())", SqlState::INSUFFICIENT_PRIVILEGE),
        ("SELECT warden.publish('warden.dead_letter', '{}')", SqlState::INVALID_PARAMETER_VALUE),
    ] {
        let err = app.batch_execute(sql).unwrap_err();
        assert_eq!(err.code(), Some(&code), "{sql}: {err:?}");
    }
    // a failed publish wrote nothing
    let n: i64 = admin
        .query_one("SELECT count(*) FROM warden.outbox_messages", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
}

#[test]
fn concurrent_publishes_with_one_dedupe_key_publish_once() {
    let (cluster, mut admin) = outbox_cluster("outbox_dedupe_race");
    for first_commits in [true, false] {
        let key = format!("race-{first_commits}");
        let mut first = cluster.connect_as("postgres", "app");
        first
            .batch_execute("BEGIN; SELECT warden.set_tenant('acme')")
            .unwrap();
        let first_id: i64 = first
            .query_one(
                "SELECT warden.publish('orders.created', '{\"n\": 1}', dedupe_key => $1)",
                &[&key],
            )
            .unwrap()
            .get(0);
        let conn = cluster.conn_str("postgres", "app");
        let second_key = key.clone();
        let second = std::thread::spawn(move || {
            let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
            let mut tx = c.transaction().unwrap();
            tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
            let id: i64 = tx
                .query_one(
                    "SELECT warden.publish('orders.created', '{\"n\": 2}', dedupe_key => $1)",
                    &[&second_key],
                )
                .unwrap()
                .get(0);
            tx.commit().unwrap();
            id
        });
        // the second publish waits for the first one's transaction
        wait_for(
            Duration::from_secs(10),
            "the second publish to wait",
            || {
                let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%warden.publish%'",
                    &[],
                )
                .unwrap()
                .get(0);
                (waiting == 1).then_some(())
            },
        );
        first
            .batch_execute(if first_commits { "COMMIT" } else { "ROLLBACK" })
            .unwrap();
        let second_id = second.join().unwrap();
        let published: i64 = admin
            .query_one(
                "SELECT count(*) FROM warden.outbox_messages WHERE id IN ($1, $2)",
                &[&first_id, &second_id],
            )
            .unwrap()
            .get(0);
        if first_commits {
            assert_eq!(
                second_id, first_id,
                "the repeated publish did not return the first id"
            );
            assert_eq!(published, 1);
        } else {
            assert_ne!(second_id, first_id, "a rolled-back message's id came back");
            assert_eq!(published, 1, "the second publish must stand alone");
        }
    }
}

#[test]
fn a_handler_subscription_never_runs_as_a_superuser_nor_anyone_elses_code() {
    let (cluster, mut admin) = outbox_cluster("outbox_handler_roles");
    admin
        .batch_execute(
            "CREATE FUNCTION public.h(msg warden.message) RETURNS void LANGUAGE sql AS 'SELECT';
             REVOKE EXECUTE ON FUNCTION public.h(warden.message) FROM PUBLIC;",
        )
        .unwrap();
    let err = admin
        .batch_execute("SELECT warden.subscribe('s', 'orders.*', 'public.h(warden.message)')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("superuser"), "{message}");
    // a handler someone else owns: its owner could rewrite it later and
    // have it run with the subscriber's rights
    let mut ops = cluster.connect_as("postgres", "ops");
    admin
        .batch_execute(
            "CREATE FUNCTION public.lure(msg warden.message) RETURNS void LANGUAGE sql AS 'SELECT';
             ALTER FUNCTION public.lure(warden.message) OWNER TO app;",
        )
        .unwrap();
    {
        let handler = "public.lure(warden.message)";
        let err = ops
            .batch_execute(&format!(
                "SELECT warden.subscribe('s', 'orders.*', '{handler}')"
            ))
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{handler}: {err:?}"
        );
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(
            message.contains("belongs to a role"),
            "{handler}: {message}"
        );
    }
    // a role the subscriber is a member of still lacks the subscriber's
    // rights: its members could rewrite the handler to run as ops
    admin
        .batch_execute(
            "CREATE ROLE crew; GRANT crew TO ops;
             CREATE FUNCTION public.crew_h(msg warden.message) RETURNS void LANGUAGE sql AS 'SELECT';
             ALTER FUNCTION public.crew_h(warden.message) OWNER TO crew;",
        )
        .unwrap();
    let err = ops
        .batch_execute("SELECT warden.subscribe('s', 'orders.*', 'public.crew_h(warden.message)')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    // owned by a role that has the subscriber's rights, but not executable
    admin
        .batch_execute(
            "CREATE ROLE team; GRANT ops TO team;
             ALTER FUNCTION public.h(warden.message) OWNER TO team;
             REVOKE EXECUTE ON FUNCTION public.h(warden.message) FROM team;",
        )
        .unwrap();
    let err = ops
        .batch_execute("SELECT warden.subscribe('s', 'orders.*', 'public.h(warden.message)')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("may not execute"), "{message}");
    // a superuser in disguise: SET ROLE to a superuser role is still one
    admin
        .batch_execute("CREATE ROLE root_too SUPERUSER; GRANT root_too TO ops")
        .unwrap();
    let err = ops
        .batch_execute(
            "SET ROLE root_too; SELECT warden.subscribe('s', 'orders.*', 'public.h(warden.message)')",
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    ops.batch_execute("RESET ROLE").unwrap();
    // SECURITY DEFINER would run as team, not ops
    admin
        .batch_execute(
            "GRANT EXECUTE ON FUNCTION public.h(warden.message) TO ops;
             ALTER FUNCTION public.h(warden.message) SECURITY DEFINER;",
        )
        .unwrap();
    let err = ops
        .batch_execute("SELECT warden.subscribe('s', 'orders.*', 'public.h(warden.message)')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("SECURITY DEFINER"),
        "{err:?}"
    );
    admin
        .batch_execute("ALTER FUNCTION public.h(warden.message) SECURITY INVOKER")
        .unwrap();
    ops.batch_execute("SELECT warden.subscribe('s', 'orders.*', 'public.h(warden.message)')")
        .unwrap();
    let owner: String = admin
        .query_one(
            "SELECT owner::text FROM warden.outbox_subscriptions WHERE name = 's'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "ops");
    // the name is taken
    let err = ops
        .batch_execute("SELECT warden.subscribe('s', 'orders.#')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DUPLICATE_OBJECT), "{err:?}");
    // another admin may not pause, resume or drop it (and so take its name)
    admin
        .batch_execute("CREATE ROLE ops2 LOGIN; GRANT warden_admin TO ops2")
        .unwrap();
    let mut ops2 = cluster.connect_as("postgres", "ops2");
    for verb in ["pause", "resume", "unsubscribe"] {
        let err = ops2
            .batch_execute(&format!("SELECT warden.{verb}('s')"))
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{verb}: {err:?}"
        );
    }
    ops.batch_execute("SELECT warden.pause('s'); SELECT warden.resume('s')")
        .unwrap();
}

#[test]
fn subscriptions_and_messages_survive_a_dump_and_ids_go_on() {
    let (cluster, mut admin) = outbox_cluster("outbox_dump");
    let mut app = cluster.connect_as("postgres", "app");
    let last = publish_as(&mut app, "acme", "d1");
    admin
        .batch_execute("SELECT warden.subscribe('feed', 'orders.#', ordered => true)")
        .unwrap();
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    let dump = cluster.dump("postgres", "outbox.dump");
    cluster.restore_into(&dump, "restored");
    let mut restored = cluster.connect("restored");
    let (pattern, ordered): (String, bool) = {
        let r = restored
            .query_one(
                "SELECT topic_pattern, ordered FROM warden.outbox_subscriptions WHERE name = 'feed'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((pattern.as_str(), ordered), ("orders.#", true));
    let mut app = cluster.connect_as("restored", "app");
    // the dedupe key is remembered, and a new message's id comes after
    assert_eq!(publish_as(&mut app, "acme", "d1"), last);
    assert!(publish_as(&mut app, "acme", "d2") > last);
}

/// A dump taken while a message id was pending (its transaction still
/// ran), restored into a younger cluster (its xid counter far behind):
/// the pending range, recorded with the old cluster's xids, is settled
/// there at once (none of those transactions can commit there), not
/// held until the new counter catches up (retention keeps every message
/// above a pending id meanwhile).
#[test]
fn a_restore_into_a_younger_cluster_settles_the_ids_pending_at_the_dump() {
    let (cluster, mut admin) = outbox_cluster("outbox_dump_pending");
    admin
        .batch_execute(
            "SELECT warden.subscribe('all', '#');
             CREATE PROCEDURE burn_xids() LANGUAGE plpgsql AS
               $$ BEGIN FOR i IN 1..5000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$;",
        )
        .unwrap();
    // on its own: a multi-statement query is one transaction
    admin.batch_execute("CALL burn_xids()").unwrap();
    let mut running = cluster.connect_as("postgres", "app");
    running
        .batch_execute("BEGIN; SELECT warden.publish('t.x', '{\"m\": 1}')")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    app.batch_execute("SELECT warden.publish('t.x', '{\"m\": 2}')")
        .unwrap();
    let pending =
        "SELECT cardinality(f.pending_lo) FROM warden.outbox_fanout f ORDER BY f.id DESC LIMIT 1";
    wait_for(Duration::from_secs(20), "an id pending", || {
        (admin
            .query(pending, &[])
            .unwrap()
            .first()
            .map(|r| r.get::<_, Option<i32>>(0))
            == Some(Some(1)))
        .then_some(())
    });
    let dump = cluster.dump("postgres", "pending.dump");
    running.batch_execute("ROLLBACK").unwrap();
    let young = Cluster::start("outbox_dump_pending_young", &[]);
    let mut restored = young.connect("postgres");
    restored
        .batch_execute("CREATE ROLE app LOGIN; CREATE ROLE ops LOGIN;")
        .unwrap();
    young.restore_into(&dump, "postgres");
    let xid: i64 = restored
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .unwrap()
        .get(0);
    assert!(xid < 5000, "the restored cluster is not younger: xid {xid}");
    wait_fanned_out(&mut restored);
    let got = deliveries(&mut restored);
    assert_eq!(got.len(), 1, "{got:?}");
}

/// Waits until the fan-out has seen every message id and holds none
/// pending.
fn wait_fanned_out(admin: &mut Client) {
    wait_for(Duration::from_secs(60), "the fan-out to catch up", || {
        let caught_up: bool = admin
            .query_one(
                "SELECT coalesce((SELECT f.upto >= coalesce((SELECT max(id) FROM warden.outbox_messages), 0)
                                         AND cardinality(f.pending_lo) = 0
                                    FROM warden.outbox_fanout f ORDER BY f.id DESC LIMIT 1),
                                 NOT EXISTS (SELECT FROM warden.outbox_messages))",
                &[],
            )
            .unwrap()
            .get(0);
        caught_up.then_some(())
    });
}

/// The deliveries, one row per message: a group row (an unordered pull
/// subscription's messages of one fan-out run) holds many.
const DELIVERY_PER_MESSAGE: &str =
    "(SELECT d.subscription_id, d.id, u.message_id, u.place, d.ordered_key, d.tenant
        FROM warden.outbox_deliveries d,
             unnest(COALESCE(d.message_ids, ARRAY[d.message_id])) WITH ORDINALITY u(message_id, place)) d";

/// (subscription, message payload's "m", ordered_key, tenant) per
/// delivery, in subscription and fan-out order.
fn deliveries(admin: &mut Client) -> Vec<(String, i32, Option<String>, Option<String>)> {
    admin
        .query(
            &format!(
                "SELECT s.name, (m.payload->>'m')::int, d.ordered_key, d.tenant
                   FROM {DELIVERY_PER_MESSAGE}
                   JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
                   JOIN warden.outbox_messages m ON m.id = d.message_id
                  ORDER BY s.name, d.id, d.place"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[test]
fn each_message_fans_out_once_to_each_matching_subscription() {
    let (cluster, mut admin) = outbox_cluster("outbox_fanout");
    admin
        .batch_execute(
            "SELECT warden.subscribe('a', 'orders.*');
             SELECT warden.subscribe('b', 'orders.#', filter => '{\"region\": \"eu\"}');
             SELECT warden.subscribe('c', 'invoices.*');
             SELECT warden.subscribe('d', 'orders.*', ordered => true);
             SELECT warden.pause('d');",
        )
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    app.batch_execute(
        "BEGIN; SELECT warden.set_tenant('acme');
         SELECT warden.publish('orders.created', '{\"m\": 1, \"region\": \"eu\"}', key => 'k1');
         SELECT warden.publish('orders.created', '{\"m\": 2, \"region\": \"us\"}', key => 'k2');
         SELECT warden.publish('orders.eu.created', '{\"m\": 3, \"region\": \"eu\"}');
         SELECT warden.publish('invoices.paid', '{\"m\": 4}');
         SELECT warden.publish('other.thing', '{\"m\": 5}');
         COMMIT;",
    )
    .unwrap();
    wait_fanned_out(&mut admin);
    // a subscription made now gets only what is published from now on
    admin
        .batch_execute("SELECT warden.subscribe('e', '#')")
        .unwrap();
    app.batch_execute(
        "BEGIN; SELECT warden.set_tenant('beta');
         SELECT warden.publish('orders.created', '{\"m\": 6}', deliver_after => '1 hour');
         COMMIT;",
    )
    .unwrap();
    wait_fanned_out(&mut admin);
    let acme = Some("acme".to_string());
    let beta = Some("beta".to_string());
    let k = |s: &str| Some(s.to_string());
    assert_eq!(
        deliveries(&mut admin),
        vec![
            ("a".into(), 1, None, acme.clone()),
            ("a".into(), 2, None, acme.clone()),
            ("a".into(), 6, None, beta.clone()),
            ("b".into(), 1, None, acme.clone()),
            ("b".into(), 3, None, acme.clone()),
            ("c".into(), 4, None, acme.clone()),
            // paused: deliveries still arrive; ordered: the key is kept
            ("d".into(), 1, k("k1"), acme.clone()),
            ("d".into(), 2, k("k2"), acme.clone()),
            ("d".into(), 6, None, beta.clone()),
            ("e".into(), 6, None, beta.clone()),
        ]
    );
    let delayed: bool = admin
        .query_one(
            "SELECT bool_and(d.next_at = m.deliver_after AND d.next_at > now() + interval '59 minutes')
               FROM warden.outbox_deliveries d JOIN warden.outbox_messages m ON m.id = d.message_id
              WHERE m.payload->>'m' = '6'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(delayed, "a delayed message's deliveries wait for it");
    // dropping a subscription drops its deliveries
    admin
        .batch_execute("SELECT warden.unsubscribe('a')")
        .unwrap();
    assert!(deliveries(&mut admin).iter().all(|d| d.0 != "a"));
}

#[test]
fn a_message_committed_after_a_higher_id_is_fanned_out_once_after_it() {
    let (cluster, mut admin) = outbox_cluster("outbox_late_commit");
    admin
        .batch_execute("SELECT warden.subscribe('all', '#')")
        .unwrap();
    let mut early = cluster.connect_as("postgres", "app");
    early
        .batch_execute("BEGIN; SELECT warden.publish('t.x', '{\"m\": 1}')")
        .unwrap();
    let mut rolled_back = cluster.connect_as("postgres", "app");
    rolled_back
        .batch_execute("BEGIN; SELECT warden.publish('t.x', '{\"m\": 2}')")
        .unwrap();
    let mut late = cluster.connect_as("postgres", "app");
    late.batch_execute("SELECT warden.publish('t.x', '{\"m\": 3}')")
        .unwrap();
    wait_for(Duration::from_secs(20), "message 3 fanned out", || {
        (deliveries(&mut admin).len() == 1).then_some(())
    });
    // runs go on while 1 and 2 are pending: nothing is fanned twice
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(deliveries(&mut admin).len(), 1);
    early.batch_execute("COMMIT").unwrap();
    rolled_back.batch_execute("ROLLBACK").unwrap();
    wait_fanned_out(&mut admin);
    let got: Vec<i32> = deliveries(&mut admin).iter().map(|d| d.1).collect();
    // in the order they became visible, each once, the rolled-back never
    assert_eq!(got, vec![3, 1]);
}

#[test]
fn kill_9_of_the_worker_mid_fan_out_neither_loses_nor_repeats_a_delivery() {
    let (cluster, mut admin) = outbox_cluster("outbox_fanout_kill9");
    admin
        .batch_execute(
            "SELECT warden.subscribe('all', '#');
             SELECT warden.subscribe('even', 'load.*', filter => '{\"even\": true}');
             SELECT warden.publish('load.x', jsonb_build_object('m', g, 'even', g % 2 = 0))
               FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    // a first share fanned out and its progress committed before the crash
    wait_fanned_out(&mut admin);
    admin
        .batch_execute(
            "SELECT warden.publish('load.x', jsonb_build_object('m', g, 'even', g % 2 = 0))
               FROM generate_series(5001, 30000) g;",
        )
        .unwrap();
    let pid = wait_task_running(&mut admin, "outbox_fanout");
    kill9(pid);
    drop(admin);
    let mut admin = reconnect(&cluster, 1);
    wait_running(&mut admin, "postgres");
    // more messages after the restart
    admin
        .batch_execute(
            "SELECT warden.publish('load.x', jsonb_build_object('m', g, 'even', g % 2 = 0))
               FROM generate_series(30001, 31000) g",
        )
        .unwrap();
    wait_fanned_out(&mut admin);
    let (all, even, doubled): (i64, i64, i64) = {
        let r = admin
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE s.name = 'all'), count(*) FILTER (WHERE s.name = 'even'),
                            (SELECT count(*) FROM (SELECT 1 FROM {DELIVERY_PER_MESSAGE}
                                                    GROUP BY subscription_id, message_id HAVING count(*) > 1) x)
                       FROM {DELIVERY_PER_MESSAGE} JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id"
                ),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(doubled, 0, "a message fanned out twice to a subscription");
    assert_eq!(all, 31_000, "every message, once");
    assert_eq!(even, 15_500);
}

/// An `unsubscribe` while a fan-out run holds the subscription (KEY
/// SHARE, as the fan-out's statement takes it) waits for that run and
/// then removes what it wrote: no delivery outlives its subscription.
#[test]
fn unsubscribe_waits_for_a_fan_out_run_and_removes_what_it_wrote() {
    let (cluster, mut admin) = outbox_cluster("outbox_unsubscribe_race");
    admin
        .batch_execute("SELECT warden.subscribe('gone', '#')")
        .unwrap();
    // a run of the fan-out, as the worker's statement does it
    let mut run = cluster.connect("postgres");
    run.batch_execute(
        "BEGIN;
         INSERT INTO warden.outbox_deliveries (subscription_id, id, message_id, next_at, tenant)
         SELECT s.id, nextval('warden.outbox_deliveries_id_seq'), 1, now(), NULL
           FROM warden.outbox_subscriptions s WHERE s.name = 'gone' FOR KEY SHARE OF s;",
    )
    .unwrap();
    let conn = cluster.conn_str("postgres", "postgres");
    let unsubscribe = std::thread::spawn(move || {
        let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
        c.batch_execute("SELECT warden.unsubscribe('gone')")
            .unwrap();
    });
    wait_for(
        Duration::from_secs(10),
        "unsubscribe to wait for the run",
        || {
            let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%unsubscribe%'",
                &[],
            )
            .unwrap()
            .get(0);
            (waiting == 1).then_some(())
        },
    );
    run.batch_execute("COMMIT").unwrap();
    unsubscribe.join().unwrap();
    let left: i64 = admin
        .query_one("SELECT coalesce(sum(coalesce(cardinality(message_ids), 1)), 0)::bigint FROM warden.outbox_deliveries", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a delivery outlived its subscription");
}

/// Publish appends by heap insert, which maintains indexes but checks no
/// constraint beyond uniqueness: a table changed behind pg_warden's back
/// (here a superuser's exclusion constraint, whose index is a btree) is
/// refused with a clear error, nothing appended, rather than written
/// without the constraint.
#[test]
fn publish_refuses_a_table_with_an_index_it_cannot_maintain() {
    let (_cluster, mut admin) = outbox_cluster("outbox_foreign_index");
    admin
        .batch_execute(
            "ALTER TABLE warden.outbox_messages
               ADD CONSTRAINT one_per_key EXCLUDE USING btree (key WITH =)",
        )
        .unwrap();
    let before: i64 = admin
        .query_one("SELECT count(*) FROM warden.outbox_messages", &[])
        .unwrap()
        .get(0);
    let err = admin
        .batch_execute("SELECT warden.publish('orders.created', '{}', key => 'k')")
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(
        db.code(),
        &postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    );
    assert!(
        db.message().contains("has an index pg_warden did not make"),
        "{db:?}"
    );
    let after: i64 = admin
        .query_one("SELECT count(*) FROM warden.outbox_messages", &[])
        .unwrap()
        .get(0);
    assert_eq!(after, before, "nothing appended");
}
