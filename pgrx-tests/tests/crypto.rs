//! The keyring against a real cluster: root key rotation across restarts,
//! wrong and badly protected key files, concurrent first use, a
//! superuser's direct change of the keys and one applied by logical
//! replication reaching every backend's cache, and a leak check of logs
//! and statistics for key material.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use pg_warden_integration::*;
use warden_core::crypto::{parse_root_keys, unwrap_data_key, Purpose, WrapContext};

fn setup(cluster: &Cluster) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE ROLE ops LOGIN BYPASSRLS; GRANT warden_admin TO ops;
             CREATE TABLE secrets (id int PRIMARY KEY, tenant text, ct bytea);
             GRANT ALL ON secrets TO app;",
        )
        .unwrap();
    admin
}

/// Encrypts `text` for `tenant` as the app role and stores it under `id`.
fn store(app: &mut Client, tenant: &str, id: i32, text: &str) {
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    tx.execute(
        "INSERT INTO secrets VALUES ($1, $2, warden.encrypt($3::text, 'secrets:' || $1::int))",
        &[&id, &tenant, &text],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn read(app: &mut Client, tenant: &str, id: i32) -> Result<String, postgres::Error> {
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    let r = tx
        .query_one(
            "SELECT warden.decrypt_text(ct, 'secrets:' || id) FROM secrets WHERE id = $1",
            &[&id],
        )
        .map(|row| row.get(0));
    let _ = tx.rollback();
    r
}

fn ciphertexts(admin: &mut Client) -> Vec<Vec<u8>> {
    admin
        .query("SELECT ct FROM secrets ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn master_key_rotation_rewraps_every_data_key_and_changes_no_ciphertext() {
    let cluster = Cluster::start("rotate_master", &[]);
    let mut admin = setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app");
    store(&mut app, "acme", 1, "acme secret");
    store(&mut app, "globex", 2, "globex secret");
    let before = ciphertexts(&mut admin);
    drop(app);

    // add v2 to the key file and restart: v2 wraps from now on
    let v1 = std::fs::read_to_string(cluster.key_file()).unwrap();
    cluster.write_key_file(&format!("{v1}v2:{}\n", random_key_hex()));
    cluster.restart();
    let mut ops = cluster.connect_as("postgres", "ops");
    let n: i64 = ops
        .query_one("SELECT warden.rotate_master_key()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "one data key per tenant rewrapped");
    let versions: Vec<i32> = ops
        .query("SELECT DISTINCT root_version FROM warden.key_catalog", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![2]);
    let again: i64 = ops
        .query_one("SELECT warden.rotate_master_key()", &[])
        .unwrap()
        .get(0);
    assert_eq!(again, 0, "idempotent");

    let mut admin = cluster.connect("postgres");
    assert_eq!(ciphertexts(&mut admin), before, "no ciphertext changed");
    let mut app = cluster.connect_as("postgres", "app");
    assert_eq!(read(&mut app, "acme", 1).unwrap(), "acme secret");
    assert_eq!(read(&mut app, "globex", 2).unwrap(), "globex secret");
    drop(app);

    // v1 can now leave the key file
    let v2_only: String = std::fs::read_to_string(cluster.key_file())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("v2:"))
        .collect();
    cluster.write_key_file(&format!("{v2_only}\n"));
    cluster.restart();
    let mut app = cluster.connect_as("postgres", "app");
    assert_eq!(read(&mut app, "acme", 1).unwrap(), "acme secret");
    store(&mut app, "acme", 3, "after rotation");
    assert_eq!(read(&mut app, "acme", 3).unwrap(), "after rotation");
    assert!(
        !cluster.log().contains("does not match"),
        "{}",
        cluster.log()
    );
}

#[test]
fn a_wrong_root_key_is_reported_at_start_up_and_on_first_use() {
    let cluster = Cluster::start("wrong_key", &[]);
    setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app");
    store(&mut app, "acme", 1, "secret");
    drop(app);

    cluster.write_key_file(&format!("v1:{}\n", random_key_hex()));
    cluster.restart();
    wait_for(
        Duration::from_secs(10),
        "the worker's key check report",
        || {
            cluster
                .log()
                .contains("the root key does not match this database's keyring")
                .then_some(())
        },
    );
    let mut app = cluster.connect_as("postgres", "app");
    let err = read(&mut app, "acme", 1).unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert_eq!(
        db.message(),
        "the root key does not match this database's keyring"
    );
    // encrypting is refused too: nothing is written under a wrong key
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let err = tx
        .execute("SELECT warden.encrypt('x'::text)", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000");
}

#[test]
fn a_key_file_readable_by_others_is_refused_at_start_up() {
    let cluster = Cluster::start("key_mode", &[]);
    setup(&cluster);
    cluster.pg_ctl_stop("fast");
    set_mode(&cluster.key_file(), 0o644);
    cluster.pg_ctl_start();
    assert!(
        cluster
            .log()
            .contains("is readable or writable by group or others (mode 0644)"),
        "{}",
        cluster.log()
    );
    let mut app = cluster.connect_as("postgres", "app");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let err = tx
        .execute("SELECT warden.encrypt('x'::text)", &[])
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert_eq!(db.message(), "the pg_warden root key is not loaded");
    // the file's path and the reason are for superusers (and the log):
    // the application role is told where to look (finding 16)
    assert_eq!(db.detail(), None, "{db:?}");
    assert!(db.hint().unwrap().contains("server log"), "{db:?}");
    tx.rollback().unwrap();
    let mut admin = cluster.connect("postgres");
    let mut tx = admin.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let err = tx
        .execute("SELECT warden.encrypt('x'::text)", &[])
        .unwrap_err();
    assert!(err
        .as_db_error()
        .unwrap()
        .detail()
        .unwrap()
        .contains("chmod 600"));
}

#[test]
fn concurrent_first_use_creates_exactly_one_active_key_per_tenant() {
    let cluster = Cluster::start("concurrent_keys", &[]);
    let mut admin = setup(&cluster);
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let conn = cluster.conn_str("postgres", "app");
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&conn, NoTls).unwrap();
                let tenant = format!("t{}", n % 4);
                barrier.wait();
                let mut tx = c.transaction().unwrap();
                tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
                    .unwrap();
                let ct: Vec<u8> = tx
                    .query_one("SELECT warden.encrypt('v'::text)", &[])
                    .unwrap()
                    .get(0);
                let pt: String = tx
                    .query_one("SELECT warden.decrypt_text($1)", &[&ct])
                    .unwrap()
                    .get(0);
                tx.commit().unwrap();
                assert_eq!(pt, "v");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rows = admin
        .query(
            "SELECT tenant, count(*) FROM warden.key_catalog WHERE purpose = 'data' AND state = 'active' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap();
    let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        counts,
        vec![
            ("t0".into(), 1),
            ("t1".into(), 1),
            ("t2".into(), 1),
            ("t3".into(), 1)
        ]
    );
}

#[test]
fn no_key_material_reaches_logs_statement_statistics_or_activity() {
    let cluster = Cluster::start(
        "leak",
        &[
            "shared_preload_libraries = 'pg_warden,pg_stat_statements'",
            "log_statement = 'all'",
            "log_min_messages = debug5",
            "log_error_verbosity = verbose",
            "pg_stat_statements.track = all",
        ],
    );
    let mut admin = setup(&cluster);
    admin
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    let mut ops = cluster.connect_as("postgres", "ops");

    // every function, successes and failures
    for tenant in ["acme", "globex"] {
        store(
            &mut app,
            tenant,
            if tenant == "acme" { 1 } else { 2 },
            "top secret",
        );
    }
    let script = [
        "SELECT warden.encrypt('\\x0102'::bytea, 'a')",
        "SELECT warden.encrypt('{\"k\": 1}'::jsonb)",
        "SELECT warden.decrypt_text(ct, 'secrets:' || id) FROM secrets WHERE id = 1",
        "SELECT warden.decrypt(warden.encrypt('\\x00'::bytea))",
        "SELECT warden.decrypt_jsonb(warden.encrypt('{}'::jsonb))",
        "SELECT warden.reencrypt(ct, 'secrets:' || id) FROM secrets WHERE id = 1",
        "SELECT warden.blind_index('alice', 'email')",
        "SELECT warden.decrypt_text(ct, 'wrong aad') FROM secrets WHERE id = 1",
        "SELECT warden.decrypt_text(ct, 'secrets:2') FROM secrets WHERE id = 2",
        "SELECT warden.decrypt('\\xe75701000000ff'::bytea)",
        "SELECT warden.decrypt_text(set_byte(ct, 30, 0), 'secrets:1') FROM secrets WHERE id = 1",
    ];
    let run_script = |client: &mut Client| {
        for stmt in script {
            let mut tx = client.transaction().unwrap();
            tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
            let _ = tx.batch_execute(stmt);
            // keys made by a committed statement stay, to be looked for below
            let _ = tx.commit();
        }
    };
    // in the backend that created the keys (cache hits), then in a fresh
    // one (keys loaded and unwrapped from warden.keys)
    run_script(&mut app);
    run_script(&mut cluster.connect_as("postgres", "app"));
    for stmt in [
        "SELECT warden.tenant_token('acme', '1 minute')",
        "SELECT warden.rotate_data_key('acme')",
        "SELECT warden.rotate_master_key()",
        "SELECT * FROM warden.key_catalog",
        "SELECT warden.rotate_data_key('bad tenant')",
        "SELECT warden.shred_tenant('globex')",
    ] {
        let _ = ops.batch_execute(stmt);
    }
    let _ = app.batch_execute("SELECT * FROM warden.keys");
    // tokens: a valid one and a forged one (token keys are looked for too)
    let token: String = ops
        .query_one("SELECT warden.tenant_token('globex', '1 minute')", &[])
        .map(|r| r.get(0))
        .unwrap_or_default();
    for t in [token.clone(), format!("{token}x")] {
        let mut tx = app.transaction().unwrap();
        let _ = tx.query("SELECT warden.set_tenant_token($1)", &[&t]);
        let _ = tx.rollback();
    }

    // the secrets to look for: the root key and every data key, unwrapped
    let key_file = std::fs::read_to_string(cluster.key_file()).unwrap();
    let ring = parse_root_keys(&key_file).unwrap();
    let (root_version, root_key) = ring.active();
    let mut needles = vec![
        hex(root_key),
        hex(root_key).to_uppercase(),
        base64(root_key),
    ];
    let rows = admin
        .query(
            "SELECT key_id, tenant, purpose, root_version, wrapped FROM warden.keys WHERE wrapped IS NOT NULL",
            &[],
        )
        .unwrap();
    assert!(rows.len() >= 3, "data keys exist to look for");
    for r in &rows {
        let (key_id, tenant, purpose, version, wrapped): (i32, String, String, i32, Vec<u8>) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(version as u32, root_version);
        let ctx = WrapContext {
            tenant: &tenant,
            purpose: Purpose::parse(&purpose).unwrap(),
            key_id: key_id as u32,
            root_version: version as u32,
        };
        let dek = unwrap_data_key(root_key, &ctx, &wrapped)
            .expect("the test can unwrap with the root key");
        needles.extend([hex(&*dek), hex(&*dek).to_uppercase(), base64(&*dek)]);
    }

    let statements: Vec<String> = admin
        .query("SELECT query FROM pg_stat_statements", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let activity: Vec<String> = admin
        .query("SELECT coalesce(query, '') FROM pg_stat_activity", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let log = cluster.log();
    assert!(
        log.contains("warden.decrypt_text"),
        "log_statement = all is in effect"
    );
    assert!(
        statements.iter().any(|q| q.contains("warden.encrypt")),
        "pg_stat_statements saw the calls"
    );
    for needle in &needles {
        assert!(
            !log.contains(needle.as_str()),
            "key material in the server log"
        );
        assert!(
            !statements.iter().any(|q| q.contains(needle.as_str())),
            "key material in pg_stat_statements"
        );
        assert!(
            !activity.iter().any(|q| q.contains(needle.as_str())),
            "key material in pg_stat_activity"
        );
    }
}

/// A superuser's direct UPDATE or DELETE of `warden.keys` (a shred by
/// hand) reaches a backend that has the key cached: it can no longer
/// decrypt with it (the cache was kept for the backend's life).
#[test]
fn a_superusers_direct_change_of_the_keys_reaches_every_backends_cache() {
    let cluster = Cluster::start("crypto_keys_direct", &[]);
    let mut admin = setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app");
    store(&mut app, "acme", 1, "acme's");
    store(&mut app, "beta", 2, "beta's");
    // both keys are now in app's cache
    assert_eq!(read(&mut app, "acme", 1).unwrap(), "acme's");
    assert_eq!(read(&mut app, "beta", 2).unwrap(), "beta's");
    admin
        .batch_execute(
            "UPDATE warden.keys SET state = 'shredded', wrapped = NULL, shredded_at = now()
              WHERE tenant = 'acme'",
        )
        .unwrap();
    let shredded = read(&mut app, "acme", 1);
    assert!(
        shredded.is_err(),
        "decrypted with a key shredded by hand: {shredded:?}"
    );
    assert_eq!(read(&mut app, "beta", 2).unwrap(), "beta's");
    // a write rolled back changes nothing for anyone
    admin
        .batch_execute("BEGIN; DELETE FROM warden.keys WHERE tenant = 'beta'; ROLLBACK")
        .unwrap();
    assert_eq!(read(&mut app, "beta", 2).unwrap(), "beta's");
    admin
        .batch_execute("DELETE FROM warden.keys WHERE tenant = 'beta'")
        .unwrap();
    let deleted = read(&mut app, "beta", 2);
    assert!(
        deleted.is_err(),
        "decrypted with a key deleted by hand: {deleted:?}"
    );
}

/// `warden.keys` replicated by logical replication to a cluster with the
/// same root key: a shred on the publisher, applied on the subscriber
/// (whose apply worker fires row triggers only), reaches a backend there
/// that has the key cached.
#[test]
fn a_key_change_applied_by_logical_replication_reaches_the_subscribers_cache() {
    let publisher = Cluster::start("crypto_keys_publisher", &["wal_level = logical"]);
    let subscriber = Cluster::start("crypto_keys_subscriber", &[]);
    subscriber.write_key_file(&std::fs::read_to_string(publisher.key_file()).unwrap());
    subscriber.restart();
    let mut pub_admin = setup(&publisher);
    let mut sub_admin = setup(&subscriber);
    let mut pub_app = publisher.connect_as("postgres", "app");
    store(&mut pub_app, "acme", 1, "made on the publisher");
    pub_admin
        .batch_execute("CREATE PUBLICATION keys_pub FOR TABLE warden.keys")
        .unwrap();
    sub_admin
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION keys_sub CONNECTION '{}' PUBLICATION keys_pub",
            publisher.conn_str("postgres", "postgres")
        ))
        .unwrap();
    let active = "SELECT count(*) FROM warden.keys WHERE tenant = 'acme' AND state = 'active'";
    wait_for(Duration::from_secs(30), "the key copied", || {
        (sub_admin.query_one(active, &[]).unwrap().get::<_, i64>(0) == 1).then_some(())
    });
    let mut sub_app = subscriber.connect_as("postgres", "app");
    store(&mut sub_app, "acme", 1, "encrypted on the subscriber");
    assert_eq!(
        read(&mut sub_app, "acme", 1).unwrap(),
        "encrypted on the subscriber"
    );
    pub_admin
        .batch_execute(
            "UPDATE warden.keys SET state = 'shredded', wrapped = NULL, shredded_at = now()
              WHERE tenant = 'acme'",
        )
        .unwrap();
    wait_for(Duration::from_secs(30), "the shred applied", || {
        (sub_admin.query_one(active, &[]).unwrap().get::<_, i64>(0) == 0).then_some(())
    });
    let shredded = read(&mut sub_app, "acme", 1);
    assert!(
        shredded.is_err(),
        "decrypted on the subscriber with a key shredded on the publisher: {shredded:?}"
    );
    sub_admin
        .batch_execute("DROP SUBSCRIPTION keys_sub")
        .unwrap();
}
