//! The audit chain from outside: concurrent writers across tenants with
//! rollbacks, every committed event chained exactly once with gapless seqs
//! and verified; nothing of a rolled-back transaction; the log refuses
//! changes for every role; tampering a superuser forces through is found.

use std::thread;
use std::time::Duration;

use pg_warden_integration::*;
use postgres::error::SqlState;

fn chained(client: &mut Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM warden.audit_log", &[])
        .unwrap()
        .get(0)
}

fn wait_inbox_empty(client: &mut Client) {
    wait_for(
        Duration::from_secs(30),
        "the sequencer to chain the inbox",
        || {
            let n: i64 = client
                .query_one("SELECT count(*) FROM warden.audit_inbox", &[])
                .unwrap()
                .get(0);
            (n == 0).then_some(())
        },
    );
}

#[test]
fn concurrent_writers_chain_every_committed_event_once() {
    let cluster = Cluster::start("audit_concurrent", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden; CREATE ROLE app LOGIN; GRANT warden_app TO app;",
        )
        .unwrap();
    wait_running(&mut admin, "postgres");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let conn = cluster.conn_str("postgres", "app");
            thread::spawn(move || {
                let mut c = Client::connect(&conn, NoTls).unwrap();
                let mut committed = 0i64;
                for i in 0..60 {
                    let tenant = ["acme", "beta", "gamma"][(w + i) % 3];
                    let rollback = (w * 7 + i) % 5 == 0;
                    let mut tx = c.transaction().unwrap();
                    if i % 4 != 0 {
                        tx.execute("SELECT warden.set_tenant($1)", &[&tenant]).unwrap();
                    }
                    tx.execute(
                        "SELECT warden.audit_emit('test.event', jsonb_build_object('writer', $1::int, 'i', $2::int, 'note', 'x'))",
                        &[&(w as i32), &(i as i32)],
                    )
                    .unwrap();
                    if rollback {
                        tx.rollback().unwrap();
                    } else {
                        tx.commit().unwrap();
                        committed += 1;
                    }
                }
                committed
            })
        })
        .collect();
    let committed: i64 = writers.into_iter().map(|t| t.join().unwrap()).sum();
    wait_inbox_empty(&mut admin);
    assert_eq!(
        chained(&mut admin),
        committed,
        "every committed event, once"
    );
    // gapless from 1 in every chain, each (writer, i) once
    let bad: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT chain, count(*) n, min(seq) lo, max(seq) hi FROM warden.audit_log GROUP BY chain) c
              WHERE lo <> 1 OR hi <> n",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(bad, 0, "a chain with gaps");
    let doubled: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT fields FROM warden.audit_log GROUP BY fields HAVING count(*) > 1) d",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(doubled, 0);
    let chains: Vec<(String, bool, i64)> = admin
        .query("SELECT chain, ok, checked FROM warden.audit_verify()", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(chains.len(), 4, "{chains:?}");
    assert!(chains.iter().all(|(_, ok, _)| *ok), "{chains:?}");
    assert_eq!(chains.iter().map(|c| c.2).sum::<i64>(), committed);
    let _ = cluster;
}

#[test]
fn the_log_refuses_changes_and_tampering_is_found() {
    let cluster = Cluster::start("audit_tamper", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    for i in 1..=6 {
        admin
            .execute(
                "SELECT warden.audit_emit('test.event', jsonb_build_object('i', $1::int))",
                &[&i],
            )
            .unwrap();
    }
    wait_inbox_empty(&mut admin);
    // refused for the superuser too, also under session_replication_role
    for stmt in [
        "UPDATE warden.audit_log SET event_type = 'forged' WHERE seq = 3",
        "DELETE FROM warden.audit_log WHERE seq = 3",
        "TRUNCATE warden.audit_log",
        "SET session_replication_role = replica; DELETE FROM warden.audit_log WHERE seq = 3",
    ] {
        let err = admin.batch_execute(stmt).unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{stmt}: {err:?}"
        );
        admin
            .batch_execute("RESET session_replication_role")
            .unwrap();
    }
    // an application role cannot write the log at all
    admin
        .batch_execute("CREATE ROLE app LOGIN; GRANT warden_app TO app;")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    let err = app
        .batch_execute("INSERT INTO warden.audit_log SELECT * FROM warden.audit_log LIMIT 1")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    // what a superuser forces through is found by verification
    let verdict = |c: &mut Client| -> (bool, Option<i64>, Option<String>) {
        let r = c
            .query_one(
                "SELECT ok, first_bad_seq, reason FROM warden.audit_verify('global')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(verdict(&mut admin), (true, None, None));
    admin
        .batch_execute(
            "ALTER TABLE warden.audit_log DISABLE TRIGGER audit_log_append_only;
             UPDATE warden.audit_log SET fields = '{\"i\": 99}' WHERE chain = 'global' AND seq = 3;",
        )
        .unwrap();
    assert_eq!(verdict(&mut admin), (false, Some(3), Some("edited".into())));
    admin
        .batch_execute("DELETE FROM warden.audit_log WHERE chain = 'global' AND seq IN (2, 3)")
        .unwrap();
    assert_eq!(
        verdict(&mut admin),
        (false, Some(2), Some("deleted".into()))
    );
    let _ = cluster;
}
