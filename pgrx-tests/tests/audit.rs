//! The audit chain from outside: concurrent writers across tenants with
//! rollbacks, every committed event chained exactly once with gapless seqs
//! and verified; nothing of a rolled-back transaction; the log and its
//! DDL refuse changes for every role; each kind of tampering a superuser
//! forces through (catalog edits, heap changes, recomputed hashes, a
//! restored older copy) is found with its reason, in the database and by
//! the offline verifier's code.

use std::thread;
use std::time::Duration;

use pg_warden_integration::*;
use postgres::error::SqlState;
use warden_core::audit::{
    canonical_fields_text, event_hash, payload_digest, verify_export, EventHeader,
};

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

/// Recomputes digests and hashes of `chain` from `from_seq` on, as a
/// forger without the signing key would after an edit.
fn forge_from(c: &mut Client, chain: &str, from_seq: i64) {
    let rows = c
        .query(
            "SELECT seq, (extract(epoch FROM ts) * 1000000)::bigint, event_type, tenant, actor,
                    actor_kind, correlation_id, txid::text, fields::text, fields_salt, prev_hash
               FROM warden.audit_log WHERE chain = $1 AND seq >= $2 ORDER BY seq",
            &[&chain, &from_seq],
        )
        .unwrap();
    let mut prev: [u8; 32] = rows[0].get::<_, Vec<u8>>(10).try_into().unwrap();
    for r in rows {
        let header = EventHeader {
            chain: chain.into(),
            seq: r.get(0),
            ts_micros: r.get(1),
            event_type: r.get(2),
            tenant: r.get(3),
            actor: r.get(4),
            actor_kind: r.get(5),
            correlation_id: r.get(6),
            txid: r.get::<_, String>(7).parse().unwrap(),
        };
        let fields: String = r.get(8);
        let salt: Vec<u8> = r.get(9);
        let digest = payload_digest(&salt, &canonical_fields_text(&fields).unwrap());
        let hash = event_hash(&prev, &header, &digest);
        c.execute(
            "UPDATE warden.audit_log SET payload_digest = $3, prev_hash = $4, hash = $5
              WHERE chain = $1 AND seq = $2",
            &[
                &chain,
                &header.seq,
                &digest.to_vec(),
                &prev.to_vec(),
                &hash.to_vec(),
            ],
        )
        .unwrap();
        prev = hash;
    }
}

/// Per chain: (ok, first bad seq, reason) from audit_verify, and the
/// offline verifier's code over the chain's export agreeing with it.
fn verdicts(c: &mut Client) -> Vec<(String, Option<i64>, Option<String>)> {
    let key: Vec<u8> = c
        .query_one("SELECT warden.audit_public_key()", &[])
        .unwrap()
        .get(0);
    let rows = c
        .query(
            "SELECT chain, first_bad_seq, reason FROM warden.audit_verify() ORDER BY chain",
            &[],
        )
        .unwrap();
    rows.iter()
        .map(|r| {
            let chain: String = r.get(0);
            let (seq, reason): (Option<i64>, Option<String>) = (r.get(1), r.get(2));
            let export: Vec<String> = c
                .query("SELECT warden.audit_export($1)", &[&chain])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let offline = verify_export(&export.join("\n"), &key).unwrap();
            assert_eq!(
                offline[0].failure.map(|(s, r)| (s, r.to_string())),
                seq.zip(reason.clone()),
                "the offline verifier disagrees on {chain}"
            );
            (chain, seq, reason)
        })
        .collect()
}

/// Fields of every JSON shape jsonb can hold chain and verify: the
/// sequencer encodes them from their text, audit_verify by walking the
/// stored jsonb, the offline verifier from the export's text, and all
/// three must give the same bytes.
#[test]
fn fields_of_every_json_shape_verify_in_the_database_and_offline() {
    let cluster = Cluster::start("audit_json_shapes", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    let shapes = [
        r#"{}"#,
        r#"{"n": null, "t": true, "f": false}"#,
        r#"{"int": 42, "neg": -7, "zero": 0, "scale": 1.50, "exp": 1e5, "small": 1.5e-7, "big": 123456789012345678901234567890.000}"#,
        r#"{"s": "quote \" backslash \\ tab \t newline \n bell \u0007 é 😀 \u00e9"}"#,
        r#"{"empty": "", "arr": [], "obj": {}, "nested": [[1, [2, [3]]], {"a": {"b": {"c": [null]}}}]}"#,
        r#"{"bb": 1, "a": 2, "ccc": 3, "B": 4, "é": 5, "aa": {"z": 1, "y": [3, 2, 1]}}"#,
        r#"{"dup": 1, "dup": 2}"#,
        r#"{"mixed": [1, "1", true, null, 1.0, {"k": []}]}"#,
    ];
    for (i, shape) in shapes.iter().enumerate() {
        admin
            .execute(
                "SELECT warden.audit_emit('test.shape', $1::text::jsonb, durable => $2)",
                &[shape, &(i % 2 == 1)],
            )
            .unwrap();
    }
    wait_for(Duration::from_secs(30), "every shape chained", || {
        let chained: i64 = admin
            .query_one(
                "SELECT count(*) FROM warden.audit_log WHERE event_type = 'test.shape'",
                &[],
            )
            .unwrap()
            .get(0);
        (chained == shapes.len() as i64).then_some(())
    });
    let v = verdicts(&mut admin);
    assert!(v.iter().all(|v| v.1.is_none()), "{v:?}");
}

/// A transaction that drew its inbox id long before it committed (here
/// 200 000 ids before the newest chained event, past the window each run
/// looks back) is still chained, by the periodic scan from the start.
#[test]
fn an_event_committed_long_after_its_id_was_drawn_is_chained() {
    let cluster = Cluster::start("audit_straggler", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    let mut late = cluster.connect("postgres");
    late.batch_execute("BEGIN; SELECT warden.audit_emit('test.late', '{\"n\": 1}')")
        .unwrap();
    admin
        .batch_execute(
            "SELECT setval('warden.audit_inbox_id_seq', nextval('warden.audit_inbox_id_seq') + 200000);
             SELECT warden.audit_emit('test.early', '{\"n\": 2}');",
        )
        .unwrap();
    let count = |c: &mut Client, t: &str| -> i64 {
        c.query_one(
            "SELECT count(*) FROM warden.audit_log WHERE event_type = $1",
            &[&t],
        )
        .unwrap()
        .get(0)
    };
    wait_for(
        Duration::from_secs(10),
        "the later id to be chained",
        || (count(&mut admin, "test.early") == 1).then_some(()),
    );
    late.batch_execute("COMMIT").unwrap();
    wait_for(
        Duration::from_secs(10),
        "the earlier id to be chained",
        || (count(&mut admin, "test.late") == 1).then_some(()),
    );
    assert!(verdicts(&mut admin).iter().all(|v| v.1.is_none()));
}

#[test]
fn the_log_refuses_changes_and_each_tampering_is_found_with_its_reason() {
    let cluster = Cluster::start("audit_tamper", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    let cases = [
        "t_edit", "t_forge", "t_resign", "t_delete", "t_tail", "t_insert", "t_swap", "t_intact",
        "t_far",
    ];
    for chain in cases {
        // eight events each, chained (and checkpointed) in one batch
        admin
            .batch_execute(&format!(
                "BEGIN; SELECT warden.set_tenant('{chain}');
                 SELECT warden.audit_emit('test.event', jsonb_build_object('i', g)) FROM generate_series(1, 8) g;
                 COMMIT;"
            ))
            .unwrap();
    }
    wait_inbox_empty(&mut admin);
    // refused for the superuser too, also under session_replication_role,
    // and the DDL that would get around the triggers
    for stmt in [
        "UPDATE warden.audit_log SET event_type = 'forged' WHERE seq = 3",
        "DELETE FROM warden.audit_log WHERE seq = 3",
        "TRUNCATE warden.audit_log",
        "SET session_replication_role = replica; DELETE FROM warden.audit_log WHERE seq = 3",
        "ALTER TABLE warden.audit_log DISABLE TRIGGER ALL",
        "ALTER TABLE warden.audit_log DISABLE TRIGGER USER",
        "ALTER TABLE warden.audit_log ENABLE REPLICA TRIGGER audit_log_append_only",
        "DROP TRIGGER audit_log_no_truncate ON warden.audit_log",
        "ALTER TABLE warden.audit_checkpoints ALTER COLUMN hash TYPE text",
        "CREATE TRIGGER t BEFORE INSERT ON warden.audit_log FOR EACH ROW EXECUTE FUNCTION warden._audit_refuse_change()",
        "GRANT ALL ON ALL TABLES IN SCHEMA warden TO PUBLIC",
        "DROP EXTENSION pg_warden CASCADE",
    ] {
        let err = admin.batch_execute(stmt).unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{stmt}: {err:?}"
        );
        admin.batch_execute("RESET session_replication_role").unwrap();
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
    assert!(verdicts(&mut admin).iter().all(|v| v.1.is_none()));

    // what cannot be refused: a superuser edits the catalog to switch the
    // triggers off (seen by sessions that start afterwards) and changes
    // the heap; verification finds each change, with its reason
    admin
        .batch_execute(
            "UPDATE pg_catalog.pg_trigger SET tgenabled = 'D'
              WHERE tgrelid IN ('warden.audit_log'::regclass, 'warden.audit_checkpoints'::regclass)",
        )
        .unwrap();
    let mut forger = cluster.connect("postgres");
    forger
        .batch_execute(
            "UPDATE warden.audit_log SET fields = '{\"i\": 99}' WHERE chain = 't_edit' AND seq = 3;
             UPDATE warden.audit_log SET fields = '{\"i\": 99}' WHERE chain = 't_forge' AND seq = 3;
             UPDATE warden.audit_log SET fields = '{\"i\": 99}' WHERE chain = 't_resign' AND seq = 3;
             DELETE FROM warden.audit_log WHERE chain = 't_delete' AND seq = 4;
             DELETE FROM warden.audit_log WHERE chain = 't_tail' AND seq >= 7;
             UPDATE warden.audit_log SET seq = seq + 1000 WHERE chain = 't_insert' AND seq >= 4;
             UPDATE warden.audit_log SET seq = seq - 999 WHERE chain = 't_insert' AND seq >= 1000;
             INSERT INTO warden.audit_log
               SELECT chain, 4, ts, event_type, tenant, actor, actor_kind, correlation_id, txid,
                      '{\"i\": 99}', fields_salt, payload_digest, prev_hash, hash, redacted_at
                 FROM warden.audit_log WHERE chain = 't_insert' AND seq = 3;
             UPDATE warden.audit_log SET seq = 1004 WHERE chain = 't_swap' AND seq = 4;
             UPDATE warden.audit_log SET seq = 4 WHERE chain = 't_swap' AND seq = 5;
             UPDATE warden.audit_log SET seq = 5 WHERE chain = 't_swap' AND seq = 1004;
             -- a forged row at the last possible seq
             INSERT INTO warden.audit_log
               SELECT chain, 9223372036854775807, ts, event_type, tenant, actor, actor_kind, correlation_id,
                      txid, fields, fields_salt, payload_digest, prev_hash, hash, redacted_at
                 FROM warden.audit_log WHERE chain = 't_far' AND seq = 3;",
        )
        .unwrap();
    forge_from(&mut forger, "t_forge", 3);
    forge_from(&mut forger, "t_resign", 3);
    // the forger also moves the checkpoint to the new head: its signature
    // no longer matches
    forger
        .batch_execute(
            "UPDATE warden.audit_checkpoints c SET hash = l.hash FROM warden.audit_log l
              WHERE c.chain = 't_resign' AND l.chain = 't_resign' AND l.seq = c.seq",
        )
        .unwrap();
    // (the global chain holds the exports' own events)
    let mut got = verdicts(&mut admin);
    got.retain(|v| v.0 != "global");
    let want: Vec<(String, Option<i64>, Option<String>)> = [
        ("t_delete", Some(4), Some("deleted")),
        ("t_edit", Some(3), Some("edited")),
        ("t_far", Some(9), Some("deleted")),
        ("t_forge", Some(8), Some("edited")),
        ("t_insert", Some(4), Some("inserted")),
        ("t_intact", None, None),
        ("t_resign", Some(8), Some("bad_signature")),
        ("t_swap", Some(4), Some("reordered")),
        ("t_tail", Some(7), Some("truncated")),
    ]
    .into_iter()
    .map(|(c, s, r)| (c.to_string(), s, r.map(str::to_string)))
    .collect();
    assert_eq!(got, want);
    let _ = cluster;
}

#[test]
fn a_restored_older_copy_is_caught_by_a_digest_kept_outside() {
    let cluster = Cluster::start("audit_restore", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    let emit = |c: &mut Client, n: i32| {
        c.execute(
            "SELECT warden.audit_emit('test.event', jsonb_build_object('i', g)) FROM generate_series(1, $1) g",
            &[&n],
        )
        .unwrap();
    };
    emit(&mut admin, 5);
    wait_inbox_empty(&mut admin);
    let dump = cluster.dump("postgres", "older.dump");
    emit(&mut admin, 5);
    wait_inbox_empty(&mut admin);
    let digest: String = admin
        .query_one("SELECT warden.audit_digest()::text", &[])
        .unwrap()
        .get(0);
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    cluster.restore_into(&dump, "restored");
    let mut restored = cluster.connect("restored");
    // consistent in itself, and signed by the same key (the keyring was
    // dumped with it)...
    let (ok, checked): (bool, i64) = restored
        .query_one("SELECT ok, checked FROM warden.audit_verify('global')", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(ok);
    assert_eq!(checked, 5);
    // ...but short of the digest kept outside
    let r = restored
        .query_one(
            "SELECT seq, ok, reason FROM warden.audit_verify_digest($1::text::jsonb)",
            &[&digest],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, bool>(1),
            r.get::<_, Option<String>>(2)
        ),
        (10, false, Some("truncated".into()))
    );
    // the original extends it
    let r = admin
        .query_one(
            "SELECT ok FROM warden.audit_verify_digest($1::text::jsonb)",
            &[&digest],
        )
        .unwrap();
    assert!(r.get::<_, bool>(0));
}

#[test]
fn a_pruned_chain_verifies_from_its_anchor_and_a_redacted_event_keeps_it_whole() {
    let cluster = Cluster::start("audit_prune", &["warden.audit_min_retention = 0"]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    for batch in 0..3 {
        admin
            .batch_execute(&format!(
                "BEGIN; SELECT warden.set_tenant('acme');
                 SELECT warden.audit_emit('test.event', jsonb_build_object('batch', {batch}, 'i', g))
                   FROM generate_series(1, 5) g;
                 COMMIT;"
            ))
            .unwrap();
        wait_inbox_empty(&mut admin);
    }
    // the middle batch's first event is the first to keep: the prune
    // stops at the checkpoint of the first batch (seq 5)
    let cut: String = admin
        .query_one(
            "SELECT ts::text FROM warden.audit_log WHERE chain = 'acme' AND seq = 6",
            &[],
        )
        .unwrap()
        .get(0);
    let pruned: i64 = admin
        .query_one(
            "SELECT warden.audit_prune('acme', $1::text::timestamptz)",
            &[&cut],
        )
        .unwrap()
        .get(0);
    assert_eq!(pruned, 5);
    admin
        .batch_execute("SELECT warden.audit_redact('acme', 7, 'erasure request 1')")
        .unwrap();
    wait_for(Duration::from_secs(20), "the audit events of both", || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM warden.audit_log WHERE chain = 'acme' AND event_type LIKE 'audit.%'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    let (lo, fields): (i64, Option<String>) = admin
        .query_one(
            "SELECT min(seq), (SELECT fields::text FROM warden.audit_log WHERE chain = 'acme' AND seq = 7)
               FROM warden.audit_log WHERE chain = 'acme'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((lo, fields), (6, None));
    let v = verdicts(&mut admin);
    let acme = v.iter().find(|v| v.0 == "acme").unwrap();
    assert_eq!((acme.1, acme.2.as_deref()), (None, None), "{v:?}");
    // a quiet chain pruned up to its last checkpoint goes on from that
    // anchor (the prune's own event follows it)
    admin
        .batch_execute("SELECT warden.audit_prune('acme', now())")
        .unwrap();
    wait_for(Duration::from_secs(20), "the second prune's event", || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM warden.audit_log WHERE chain = 'acme' AND event_type = 'audit.prune'",
                &[],
            )
            .unwrap()
            .get(0);
        (n >= 1).then_some(())
    });
    let (lo, n): (i64, i64) = admin
        .query_one(
            "SELECT min(seq), count(*) FROM warden.audit_log WHERE chain = 'acme'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(
        lo > 15 && n >= 1,
        "the chain went on from its anchor: {lo}, {n}"
    );
    let v = verdicts(&mut admin);
    let acme = v.iter().find(|v| v.0 == "acme").unwrap();
    assert_eq!((acme.1, acme.2.as_deref()), (None, None), "{v:?}");
    // the anchor is what keeps it verifiable: without it the start is gone
    admin
        .batch_execute(
            "UPDATE pg_catalog.pg_trigger SET tgenabled = 'D'
              WHERE tgrelid = 'warden.audit_checkpoints'::regclass",
        )
        .unwrap();
    let mut forger = cluster.connect("postgres");
    forger
        .batch_execute(
            "DELETE FROM warden.audit_checkpoints WHERE chain = 'acme'
                AND seq = (SELECT min(seq) - 1 FROM warden.audit_log WHERE chain = 'acme')",
        )
        .unwrap();
    let v = verdicts(&mut admin);
    let acme = v.iter().find(|v| v.0 == "acme").unwrap();
    assert_eq!(
        (acme.1, acme.2.as_deref()),
        (Some(1), Some("deleted")),
        "{v:?}"
    );
}

/// A captured statement's rows reach the inbox in batches, one inbox row
/// per thousand events of a chain, and come out as one event per row, in
/// the order the rows changed, in each row's tenant chain.
#[test]
fn a_captured_bulk_load_is_batched_per_chain_and_chained_in_row_order() {
    let cluster = Cluster::start("audit_capture_batches", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE TABLE orders (tenant text NOT NULL, id int PRIMARY KEY, amount numeric, note text);
             SELECT warden.enable_tenancy('orders');
             SELECT warden.audit_table('orders');",
        )
        .unwrap();
    wait_running(&mut admin, "postgres");
    let mut tx = admin.transaction().unwrap();
    // two tenants interleaved row by row; a numeric written with a scale
    tx.batch_execute(
        "INSERT INTO orders SELECT CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, g, (g || '.50')::numeric, 'n' || g
           FROM generate_series(1, 2500) g",
    )
    .unwrap();
    // seen before commit, in our own transaction: 1250 events per
    // tenant make a batch of 1000 and one of 250 each
    let batches: Vec<(String, Option<i32>)> = tx
        .query(
            "SELECT tenant, events FROM warden.audit_inbox WHERE event_type = 'row.insert' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut sizes: Vec<(String, i32)> = batches
        .iter()
        .map(|(t, n)| (t.clone(), n.unwrap_or(1)))
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![
            ("acme".into(), 250),
            ("acme".into(), 1000),
            ("globex".into(), 250),
            ("globex".into(), 1000)
        ],
        "{batches:?}"
    );
    tx.commit().unwrap();
    wait_inbox_empty(&mut admin);
    for (tenant, parity) in [("acme", 0), ("globex", 1)] {
        let rows: Vec<(i64, i32, String)> = admin
            .query(
                "SELECT seq, (fields->'key'->>'id')::int, fields->'new'->>'amount'
                   FROM warden.audit_log WHERE chain = $1 AND event_type = 'row.insert' ORDER BY seq",
                &[&tenant],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(rows.len(), 1250, "{tenant}");
        for (i, (seq, id, amount)) in rows.iter().enumerate() {
            let expected = 2 * i as i32 + 2 - parity;
            assert_eq!(*id, expected, "{tenant} seq {seq}: out of row order");
            assert_eq!(amount, &format!("{expected}.50"), "the value as written");
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{tenant}: gaps");
    }
    assert!(verdicts(&mut admin).iter().all(|v| v.1.is_none()));
}

#[test]
fn capture_records_a_bulk_load_in_chunks_and_works_beside_scd2() {
    let cluster = Cluster::start("audit_capture", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE TABLE t (id int PRIMARY KEY, email text, v int);
             SELECT warden.audit_table('t', redact => '{email}');
             SELECT warden.scd2_track('t', ARRAY['id']);",
        )
        .unwrap();
    wait_running(&mut admin, "postgres");
    // one statement, 20 000 rows: four chunks of the trigger, read from
    // transition tables that spill to disk (a small work_mem)
    for stmt in [
        "SET work_mem = '64kB'",
        "INSERT INTO t SELECT g, 'user' || g || '@example.com', g FROM generate_series(1, 20000) g",
        "UPDATE t SET v = v + 1 WHERE id <= 10",
        "DELETE FROM t WHERE id > 19990",
    ] {
        admin.batch_execute(stmt).unwrap();
    }
    // SCD2 refuses TRUNCATE of a tracked table: the statement rolls back,
    // its capture event with it
    admin.batch_execute("TRUNCATE t").unwrap_err();
    wait_inbox_empty(&mut admin);
    let counts: Vec<(String, i64)> = admin
        .query(
            "SELECT event_type, count(*) FROM warden.audit_log WHERE event_type LIKE 'row.%' OR event_type = 'table.truncate'
              GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("row.delete".to_string(), 10),
            ("row.insert".to_string(), 20_000),
            ("row.update".to_string(), 10)
        ]
    );
    let leaks: i64 = admin
        .query_one(
            "SELECT count(*) FROM warden.audit_log l WHERE l::text LIKE '%@example.com%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaks, 0);
    let history: i64 = admin
        .query_one("SELECT count(*) FROM t_history", &[])
        .unwrap()
        .get(0);
    assert!(history >= 20_000, "SCD2 kept its history too: {history}");
    assert!(verdicts(&mut admin).iter().all(|v| v.1.is_none()));
}
