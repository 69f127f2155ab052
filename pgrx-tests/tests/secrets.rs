//! The secrets store from outside: an application role across two
//! tenants trying every way to another tenant's secret (the tables, the
//! catalog, the functions, a view and a SECURITY DEFINER function of its
//! own); access events that survive ROLLBACK and ERROR; strict mode
//! failing closed with the worker stopped (the value is not returned);
//! check-and-set under 8 concurrent writers; expiry and
//! `warden.secret_max_versions` enforced by the worker.

use std::thread;
use std::time::Duration;

use pg_warden_integration::*;

fn setup(name: &str, extra: &[&str]) -> (Cluster, Client) {
    let cluster = Cluster::start(name, extra);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE ROLE ops LOGIN; GRANT warden_admin TO ops;
             GRANT CREATE ON SCHEMA public TO app;",
        )
        .unwrap();
    wait_running(&mut admin, "postgres");
    (cluster, admin)
}

fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

fn in_tenant(
    c: &mut Client,
    tenant: &str,
    sql: &str,
) -> Result<Vec<postgres::Row>, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])?;
    let rows = tx.query(sql, &[])?;
    tx.commit()?;
    Ok(rows)
}

fn wait_chained(c: &mut Client) {
    wait_for(Duration::from_secs(30), "the audit sequencer", || {
        c.query_one(
            "SELECT inbox_events = 0 AND ring_events = 0 FROM warden.audit_status",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)
        .then_some(())
    });
}

/// Once the sequencer has chained them: `columns` (of the row, or fields
/// of the event) of each `event_type` event of `tenant`, in chain order.
fn events(
    c: &mut Client,
    tenant: &str,
    event_type: &str,
    columns: &[&str],
) -> Vec<Vec<Option<String>>> {
    wait_chained(c);
    c.query(
        "SELECT array_agg(((to_jsonb(l) - 'fields') || l.fields) ->> col ORDER BY i)
           FROM warden.audit_log l, unnest($3::text[]) WITH ORDINALITY u(col, i)
          WHERE l.tenant = $1 AND l.event_type = $2
          GROUP BY l.chain, l.seq ORDER BY l.seq",
        &[&tenant, &event_type, &columns],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// `Some` of each string: an expected row of `events`.
fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[test]
fn an_application_role_reaches_no_other_tenants_secret() {
    let (cluster, mut admin) = setup("secrets_tenants", &[]);
    let mut app = cluster.connect_as("postgres", "app");
    for (tenant, value) in [
        ("acme", "acme-secret-value"),
        ("globex", "globex-secret-value"),
    ] {
        in_tenant(
            &mut app,
            tenant,
            &format!("SELECT warden.secret_set('api/key', '{value}')"),
        )
        .unwrap();
    }
    // each tenant reads its own
    let own: String =
        in_tenant(&mut app, "acme", "SELECT warden.secret_get('api/key')").unwrap()[0].get(0);
    assert_eq!(own, "acme-secret-value");
    // the tables: no rights, whatever the tenant
    for table in ["warden.secrets", "warden.secret_names"] {
        let e = in_tenant(&mut app, "acme", &format!("SELECT * FROM {table}")).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{table}: {e}");
    }
    // the catalog: its own tenant's versions only, none without a tenant
    let rows = in_tenant(&mut app, "acme", "SELECT tenant FROM warden.secret_catalog").unwrap();
    assert!(rows.iter().all(|r| r.get::<_, String>(0) == "acme") && rows.len() == 1);
    let none: i64 = app
        .query_one("SELECT count(*) FROM warden.secret_catalog", &[])
        .unwrap()
        .get(0);
    assert_eq!(none, 0);
    // the functions: only the current tenant's names exist
    let e = in_tenant(&mut app, "initech", "SELECT warden.secret_get('api/key')").unwrap_err();
    assert_eq!(sqlstate(&e), "P0002", "{e}");
    let e = app
        .query_one("SELECT warden.secret_get('api/key')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "no tenant: {e}");
    // a view the app role creates over the table, and a SECURITY DEFINER
    // function it owns: its own rights, which are none
    let e = app
        .batch_execute("CREATE VIEW public.peek AS SELECT * FROM warden.secrets")
        .map(|_| app.query("SELECT * FROM public.peek", &[]))
        .and_then(|r| r)
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    app.batch_execute(
        "CREATE FUNCTION public.peek_fn() RETURNS SETOF bytea LANGUAGE sql SECURITY DEFINER
           AS $$ SELECT ciphertext FROM warden.secrets $$",
    )
    .map(|_| ())
    .or_else(|e| {
        // refused at creation (the body is checked) is as good
        assert_eq!(sqlstate(&e), "42501", "{e}");
        Ok::<_, postgres::Error>(())
    })
    .unwrap();
    if let Err(e) = app.query("SELECT * FROM public.peek_fn()", &[]) {
        assert!(["42501", "42883"].contains(&sqlstate(&e).as_str()), "{e}");
    } else {
        panic!("a SECURITY DEFINER function of the app role read the secrets table");
    }
    // every function, from another tenant, on a name only acme has
    in_tenant(
        &mut app,
        "acme",
        "SELECT warden.secret_set('acme/only', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')",
    )
    .unwrap();
    let mut ops = cluster.connect_as("postgres", "ops");
    for sql in [
        "SELECT warden.secret_get('acme/only')",
        "SELECT warden.secret_get('acme/only', 1)",
        "SELECT warden.secret_get_jsonb('acme/only')",
        "SELECT warden.secret_delete('acme/only')",
        "SELECT warden.secret_undelete('acme/only', 1)",
        "SELECT warden.webhook_sign('acme/only', '\\x00', 'standard-webhooks', 'msg_1')",
        "SELECT warden.webhook_verify('acme/only', '\\x00', 'v1,AAAA', 'standard-webhooks', msg_id => 'msg_1', sent_at => now())",
    ] {
        let e = in_tenant(&mut app, "globex", sql).unwrap_err();
        assert_eq!(sqlstate(&e), "P0002", "{sql}: {e}");
    }
    let e = in_tenant(
        &mut ops,
        "globex",
        "SELECT warden.secret_destroy('acme/only')",
    )
    .unwrap_err();
    assert_eq!(sqlstate(&e), "P0002", "{e}");
    // and acme's secret is untouched
    let v: String =
        in_tenant(&mut app, "acme", "SELECT warden.secret_get('acme/only')").unwrap()[0].get(0);
    assert!(v.starts_with("whsec_"));
    // the envelope does not open through warden.decrypt (its context is reserved)
    let e = in_tenant(
        &mut app,
        "acme",
        "SELECT warden.decrypt_text('\\x00'::bytea, E'pg_warden secret v1\\x1facme/only\\x1f1')",
    )
    .unwrap_err();
    assert_eq!(sqlstate(&e), "22023", "{e}");
    // a switch of tenant inside one transaction sees the new tenant's only
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    tx.execute("SELECT warden.set_tenant('globex')", &[])
        .unwrap();
    let v: String = tx
        .query_one("SELECT warden.secret_get('api/key')", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "globex-secret-value");
    tx.rollback().unwrap();
    // neither value is in the table's bytes: only envelopes
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM warden.secrets WHERE position('secret-value'::bytea IN ciphertext) > 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
}

#[test]
fn access_events_survive_rollback_and_error_and_strict_mode_fails_closed() {
    let (cluster, mut admin) = setup("secrets_audit", &["warden.audit_strict_timeout = '300ms'"]);
    let mut app = cluster.connect_as("postgres", "app");
    in_tenant(
        &mut app,
        "acme",
        "SELECT warden.secret_set('db/password', 'hunter2-but-longer')",
    )
    .unwrap();
    // BEGIN; get; ROLLBACK
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    tx.execute("SELECT warden.set_correlation_id('rolled-back')", &[])
        .unwrap();
    let v: String = tx
        .query_one("SELECT warden.secret_get('db/password')", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "hunter2-but-longer");
    tx.rollback().unwrap();
    // an error later in the transaction
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    tx.execute("SELECT warden.set_correlation_id('after-error')", &[])
        .unwrap();
    tx.query_one("SELECT warden.secret_get('db/password')", &[])
        .unwrap();
    assert!(tx.execute("SELECT 1/0", &[]).is_err());
    drop(tx);
    assert_eq!(
        events(
            &mut admin,
            "acme",
            "secret.get",
            &["outcome", "correlation_id"]
        ),
        vec![row(&["ok", "rolled-back"]), row(&["ok", "after-error"])]
    );
    // the chain verifies and holds no value
    let leaked: i64 = admin
        .query_one(
            "SELECT count(*) FROM warden.audit_log WHERE fields::text LIKE '%hunter2%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
    // strict mode with the worker stopped: no value
    admin
        .batch_execute("ALTER ROLE app SET warden.audit_strict = on")
        .unwrap();
    set_worker(&mut admin, false);
    let mut strict_app = cluster.connect_as("postgres", "app");
    let e = in_tenant(
        &mut strict_app,
        "acme",
        "SELECT warden.secret_get('db/password')",
    )
    .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    // and with the worker back, the value is released once on record
    set_worker(&mut admin, true);
    let v: String = in_tenant(
        &mut strict_app,
        "acme",
        "SELECT warden.secret_get('db/password')",
    )
    .unwrap()[0]
        .get(0);
    assert_eq!(v, "hunter2-but-longer");
}

#[test]
fn check_and_set_under_eight_writers_gives_distinct_versions_and_40001_to_the_stale() {
    let (cluster, _admin) = setup("secrets_cas", &[]);
    let mut app = cluster.connect_as("postgres", "app");
    in_tenant(
        &mut app,
        "acme",
        "SELECT warden.secret_set('counter', '0', expected_version => 0)",
    )
    .unwrap();
    let conn = cluster.conn_str("postgres", "app");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let conn = conn.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&conn, NoTls).unwrap();
                let (mut won, mut stale) = (Vec::new(), 0);
                for i in 0..40 {
                    let mut tx = c.transaction().unwrap();
                    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
                    let current: i32 = tx
                        .query_one(
                            "SELECT max(version) FROM warden.secret_catalog WHERE name = 'counter'",
                            &[],
                        )
                        .unwrap()
                        .get(0);
                    match tx.query_one(
                        "SELECT warden.secret_set('counter', $1, expected_version => $2)",
                        &[&format!("w{w}-{i}"), &current],
                    ) {
                        Ok(row) => {
                            let v: i32 = row.get(0);
                            tx.commit().unwrap();
                            assert_eq!(v, current + 1);
                            won.push(v);
                        }
                        Err(e) => {
                            assert_eq!(sqlstate(&e), "40001", "{e}");
                            stale += 1;
                        }
                    }
                }
                (won, stale)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut stale = 0;
    for w in writers {
        let (won, s) = w.join().unwrap();
        all.extend(won);
        stale += s;
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "two writers got the same version");
    assert!(stale > 0, "eight writers never collided");
    let latest: i32 = in_tenant(
        &mut app,
        "acme",
        "SELECT max(version) FROM warden.secret_catalog WHERE name = 'counter'",
    )
    .unwrap()[0]
        .get(0);
    assert_eq!(latest as usize, n + 1);
    eprintln!("check-and-set: {n} writes won, {stale} refused as stale (40001)");
}

#[test]
fn the_worker_destroys_expired_and_surplus_versions() {
    // strict mode on: the worker records its destroys in its own
    // transaction, never waiting on the ring it drains itself
    let (cluster, mut admin) = setup(
        "secrets_retention",
        &["warden.secret_max_versions = 3", "warden.audit_strict = on"],
    );
    let mut app = cluster.connect_as("postgres", "app");
    for i in 1..=5 {
        in_tenant(
            &mut app,
            "acme",
            &format!("SELECT warden.secret_set('rotating', 'value-{i}')"),
        )
        .unwrap();
    }
    in_tenant(
        &mut app,
        "acme",
        "SELECT warden.secret_set('short/lived', 'soon gone', expires_at => clock_timestamp() + interval '1 second')",
    )
    .unwrap();
    wait_for(Duration::from_secs(40), "expiry and max_versions", || {
        let rows = in_tenant(
            &mut app,
            "acme",
            "SELECT name, version, state FROM warden.secret_catalog ORDER BY name, version",
        )
        .unwrap();
        let states: Vec<(String, i32, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        (states
            == vec![
                ("rotating".into(), 1, "destroyed".into()),
                ("rotating".into(), 2, "destroyed".into()),
                ("rotating".into(), 3, "live".into()),
                ("rotating".into(), 4, "live".into()),
                ("rotating".into(), 5, "live".into()),
                ("short/lived".into(), 1, "destroyed".into()),
            ])
        .then_some(())
    });
    let gone: i64 = admin
        .query_one("SELECT count(*) FROM warden.secrets WHERE ciphertext IS NOT NULL AND destroyed_at IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    let e = in_tenant(&mut app, "acme", "SELECT warden.secret_get('short/lived')").unwrap_err();
    assert_eq!(sqlstate(&e), "P0002", "{e}");
    let mut reasons = events(&mut admin, "acme", "secret.destroy", &["reason"]);
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            row(&["expired"]),
            row(&["max_versions"]),
            row(&["max_versions"])
        ]
    );
}

#[test]
fn a_rotated_webhook_secret_verifies_while_its_replacement_is_younger_than_the_overlap() {
    let (cluster, mut admin) = setup("secrets_overlap", &[]);
    let mut app = cluster.connect_as("postgres", "app");
    in_tenant(
        &mut app,
        "acme",
        "SELECT warden.secret_set('hook', 'old-secret')",
    )
    .unwrap();
    // the first version is old: made two days ago
    admin
        .batch_execute(
            "UPDATE warden.secrets SET created_at = now() - interval '2 days' WHERE name = 'hook'",
        )
        .unwrap();
    in_tenant(
        &mut app,
        "acme",
        "SELECT warden.secret_set('hook', 'new-secret', expected_version => 1)",
    )
    .unwrap();
    let verify_with = |app: &mut Client, key: &str| -> bool {
        let sql = format!(
            "SELECT warden.webhook_verify('hook', 'payload', 'sha256=' || encode(warden.hmac_sha256('{key}', 'payload'), 'hex'), 'github')"
        );
        in_tenant(app, "acme", &sql).unwrap()[0].get(0)
    };
    // replaced just now: senders still on the old secret are accepted
    assert!(verify_with(&mut app, "new-secret"));
    assert!(verify_with(&mut app, "old-secret"));
    assert!(!verify_with(&mut app, "other-secret"));
    // each event names the version that matched (the newest when none did)
    assert_eq!(
        events(
            &mut admin,
            "acme",
            "webhook.verify",
            &["outcome", "version"]
        ),
        vec![row(&["ok", "2"]), row(&["ok", "1"]), row(&["denied", "2"])]
    );
    // replaced two days ago (past the one-day overlap): no longer
    admin
        .batch_execute("UPDATE warden.secrets SET created_at = now() - interval '2 days' WHERE name = 'hook' AND version = 2")
        .unwrap();
    assert!(verify_with(&mut app, "new-secret"));
    assert!(!verify_with(&mut app, "old-secret"));
    // a deleted version is never tried
    admin
        .batch_execute(
            "UPDATE warden.secrets SET created_at = now() WHERE name = 'hook' AND version = 2",
        )
        .unwrap();
    in_tenant(&mut app, "acme", "SELECT warden.secret_delete('hook', 1)").unwrap();
    assert!(!verify_with(&mut app, "old-secret"));
    // a delete names the key and the value's fingerprint
    let deleted = events(
        &mut admin,
        "acme",
        "secret.delete",
        &["key_id", "fingerprint"],
    );
    let [deleted] = deleted.as_slice() else {
        panic!("one secret.delete event: {deleted:?}")
    };
    let (key_id, fingerprint) = (&deleted[0], &deleted[1]);
    let stored: String = admin
        .query_one(
            "SELECT encode(fingerprint, 'hex') FROM warden.secrets WHERE name = 'hook' AND version = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(key_id.is_some());
    assert_eq!(fingerprint.as_deref(), Some(stored.as_str()));
}

/// `secret_get` and `webhook_verify` keep decrypted secrets per backend:
/// each change that alters what they would find drops them, in this
/// backend and in others, within one transaction too.
#[test]
fn cached_plaintexts_follow_every_change() {
    let (cluster, mut admin) = setup("secrets_plaintext_cache", &[]);
    let mut a = cluster.connect_as("postgres", "app");
    let mut b = cluster.connect_as("postgres", "app");
    let verify_sql = |key: &str| {
        format!(
            "SELECT warden.webhook_verify('hook', 'payload', 'sha256=' || encode(warden.hmac_sha256('{key}', 'payload'), 'hex'), 'github')"
        )
    };
    let verify = |c: &mut Client, tenant: &str, key: &str| -> bool {
        in_tenant(c, tenant, &verify_sql(key)).unwrap()[0].get(0)
    };
    let get = |c: &mut Client, tenant: &str| -> Result<String, String> {
        in_tenant(c, tenant, "SELECT warden.secret_get('hook')")
            .map(|r| r[0].get(0))
            .map_err(|e| sqlstate(&e))
    };
    let get_in = |tx: &mut postgres::Transaction| -> String {
        tx.query_one("SELECT warden.secret_get('hook')", &[])
            .unwrap()
            .get(0)
    };
    in_tenant(&mut b, "acme", "SELECT warden.secret_set('hook', 'k1')").unwrap();
    assert!(verify(&mut a, "acme", "k1"));
    assert!(verify(&mut a, "acme", "k1"), "a cached call");
    assert_eq!(get(&mut a, "acme").unwrap(), "k1");
    // another session rotates: the new version at once, the old one
    // during the overlap
    in_tenant(
        &mut b,
        "acme",
        "SELECT warden.secret_set('hook', 'k2', expected_version => 1)",
    )
    .unwrap();
    assert_eq!(
        get(&mut a, "acme").unwrap(),
        "k2",
        "a rotation was not seen"
    );
    assert!(verify(&mut a, "acme", "k2"), "a rotation was not seen");
    assert!(verify(&mut a, "acme", "k1"));
    // a superuser's own statement on the table is seen too
    admin
        .batch_execute(
            "UPDATE warden.secrets SET created_at = now() - interval '2 days' WHERE name = 'hook' AND version = 2",
        )
        .unwrap();
    assert!(
        !verify(&mut a, "acme", "k1"),
        "an ended overlap was not seen"
    );
    // within one transaction: a delete another session commits is seen at
    // the next call
    {
        let mut tx = a.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        let before: bool = tx.query_one(&verify_sql("k2"), &[]).unwrap().get(0);
        assert!(before);
        assert_eq!(get_in(&mut tx), "k2");
        in_tenant(&mut b, "acme", "SELECT warden.secret_delete('hook', 2)").unwrap();
        let after: bool = tx.query_one(&verify_sql("k2"), &[]).unwrap().get(0);
        assert!(
            !after,
            "a committed delete was not seen in a running transaction"
        );
        let old: bool = tx.query_one(&verify_sql("k1"), &[]).unwrap().get(0);
        assert!(old, "the version left live is the newest again");
        assert_eq!(get_in(&mut tx), "k1");
        tx.commit().unwrap();
    }
    // a REPEATABLE READ transaction reads its snapshot, and leaves nothing
    // older than what has committed since for the next one
    {
        let mut tx = a
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()
            .unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        assert_eq!(get_in(&mut tx), "k1");
        in_tenant(&mut b, "acme", "SELECT warden.secret_set('hook', 'k5')").unwrap();
        assert_eq!(get_in(&mut tx), "k1", "a snapshot saw a later commit");
        tx.commit().unwrap();
    }
    assert_eq!(
        get(&mut a, "acme").unwrap(),
        "k5",
        "a snapshot's old value was cached"
    );
    in_tenant(&mut b, "acme", "SELECT warden.secret_delete('hook', 3)").unwrap();
    assert_eq!(get(&mut a, "acme").unwrap(), "k1");
    // a version written and rolled back was never there
    {
        let mut tx = a.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        tx.execute("SELECT warden.secret_set('hook', 'k3')", &[])
            .unwrap();
        let inside: bool = tx.query_one(&verify_sql("k3"), &[]).unwrap().get(0);
        assert!(inside);
        assert_eq!(get_in(&mut tx), "k3");
        tx.rollback().unwrap();
    }
    assert!(
        !verify(&mut a, "acme", "k3"),
        "a rolled-back version verified"
    );
    assert_eq!(
        get(&mut a, "acme").unwrap(),
        "k1",
        "a rolled-back version was read"
    );
    // tenants: one name, two secrets, never the other's
    in_tenant(&mut b, "globex", "SELECT warden.secret_set('hook', 'g1')").unwrap();
    assert!(!verify(&mut a, "acme", "g1"));
    assert!(verify(&mut a, "globex", "g1"));
    assert!(!verify(&mut a, "globex", "k1"));
    assert!(verify(&mut a, "acme", "k1"));
    assert_eq!(get(&mut a, "globex").unwrap(), "g1");
    assert_eq!(get(&mut a, "acme").unwrap(), "k1");
    // the tenant's keys shredded: nothing decrypts any more
    admin
        .batch_execute("SELECT warden.shred_tenant('globex')")
        .unwrap();
    assert!(
        !verify(&mut a, "globex", "g1"),
        "a shredded key still verified"
    );
    assert_eq!(
        get(&mut a, "globex").unwrap_err(),
        "22000",
        "a shredded secret was read"
    );
    // expiry, with no write at all
    in_tenant(
        &mut b,
        "acme",
        "SELECT warden.secret_set('hook', 'k4', expires_at => clock_timestamp() + interval '1.5 seconds')",
    )
    .unwrap();
    assert!(verify(&mut a, "acme", "k4"));
    assert_eq!(get(&mut a, "acme").unwrap(), "k4");
    thread::sleep(Duration::from_millis(2000));
    assert!(!verify(&mut a, "acme", "k4"), "an expired version verified");
    assert_eq!(
        get(&mut a, "acme").unwrap(),
        "k1",
        "an expired version was read"
    );
    assert!(verify(&mut a, "acme", "k1"));
}
