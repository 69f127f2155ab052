//! Attack tier: silent key loss (finding 4 of the hardening review). A
//! tenant's first data key made inside a subtransaction that rolls back,
//! or in a prepared transaction that is rolled back, must not stay cached
//! as the active key: data encrypted after it must stay readable by every
//! other backend.

use pg_warden_integration::*;

fn setup(cluster: &Cluster) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE TABLE vault (tenant text NOT NULL, label text, secret bytea, idx bytea);
             GRANT SELECT, INSERT ON vault TO app;",
        )
        .unwrap();
    admin
}

/// Decrypts every row of `tenant` in a new backend (with a cold cache).
fn readable_elsewhere(cluster: &Cluster, tenant: &str) -> Vec<String> {
    let mut other = cluster.connect_as("postgres", "app");
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    let rows = tx
        .query(
            "SELECT warden.decrypt_text(secret, label) FROM vault WHERE tenant = $1 ORDER BY label",
            &[&tenant],
        )
        .unwrap_or_else(|e| {
            panic!("tenant {tenant}: data written after the rollback is lost: {e:?}")
        });
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn a_key_created_in_a_rolled_back_subtransaction_is_never_used() {
    let cluster = Cluster::start("attack_savepoint", &["max_prepared_transactions = 4"]);
    let pid = cluster.postmaster_pid();
    setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app");

    // ROLLBACK TO SAVEPOINT
    app.batch_execute(
        "BEGIN;
         SELECT warden.set_tenant('t_savepoint');
         SAVEPOINT s;
         SELECT warden.encrypt('x');
         ROLLBACK TO s;
         INSERT INTO vault VALUES ('t_savepoint', 'v1', warden.encrypt('precious', 'v1'));
         COMMIT;",
    )
    .unwrap();
    assert_eq!(
        readable_elsewhere(&cluster, "t_savepoint"),
        vec!["precious"]
    );

    // nested savepoints, the inner one released into the rolled-back outer
    app.batch_execute(
        "BEGIN;
         SELECT warden.set_tenant('t_nested');
         SAVEPOINT outer_s;
         SAVEPOINT inner_s;
         SELECT warden.encrypt('x');
         RELEASE inner_s;
         ROLLBACK TO outer_s;
         INSERT INTO vault VALUES ('t_nested', 'v1', warden.encrypt('precious', 'v1'));
         COMMIT;",
    )
    .unwrap();
    assert_eq!(readable_elsewhere(&cluster, "t_nested"), vec!["precious"]);

    // a PL/pgSQL EXCEPTION block (a subtransaction) that fails after the
    // key was made
    app.batch_execute(
        "BEGIN;
         SELECT warden.set_tenant('t_plpgsql');
         DO $$
         BEGIN
           BEGIN
             PERFORM warden.encrypt('x');
             PERFORM warden.blind_index('x', 'email');
             RAISE EXCEPTION 'boom';
           EXCEPTION WHEN OTHERS THEN NULL;
           END;
         END $$;
         INSERT INTO vault VALUES ('t_plpgsql', 'v1', warden.encrypt('precious', 'v1'),
                                   warden.blind_index('a@b.c', 'email'));
         COMMIT;",
    )
    .unwrap();
    assert_eq!(readable_elsewhere(&cluster, "t_plpgsql"), vec!["precious"]);
    // the blind index made after the rollback matches one made elsewhere
    let mut other = cluster.connect_as("postgres", "app");
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('t_plpgsql')", &[])
        .unwrap();
    let same: bool = tx
        .query_one(
            "SELECT idx = warden.blind_index('a@b.c', 'email') FROM vault WHERE tenant = 't_plpgsql'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(same, "blind index key lost");
    tx.rollback().unwrap();

    // a subtransaction that commits keeps its key (no needless churn)
    app.batch_execute(
        "BEGIN;
         SELECT warden.set_tenant('t_released');
         SAVEPOINT s;
         INSERT INTO vault VALUES ('t_released', 'v0', warden.encrypt('first', 'v0'));
         RELEASE s;
         INSERT INTO vault VALUES ('t_released', 'v1', warden.encrypt('second', 'v1'));
         COMMIT;",
    )
    .unwrap();
    assert_eq!(
        readable_elsewhere(&cluster, "t_released"),
        vec!["first", "second"]
    );

    // ROLLBACK PREPARED: the backend that prepared the transaction goes on
    for stmt in [
        "BEGIN;
         SELECT warden.set_tenant('t_2pc');
         SELECT warden.encrypt('x');
         PREPARE TRANSACTION 'p1';",
        "ROLLBACK PREPARED 'p1'",
        "BEGIN;
         SELECT warden.set_tenant('t_2pc');
         INSERT INTO vault VALUES ('t_2pc', 'v1', warden.encrypt('precious', 'v1'));
         COMMIT;",
    ] {
        app.batch_execute(stmt)
            .unwrap_or_else(|e| panic!("2pc: {e:?}"));
    }
    assert_eq!(readable_elsewhere(&cluster, "t_2pc"), vec!["precious"]);

    // every tenant above has exactly one active data key, and it is the
    // one its rows were written with
    let mut admin = cluster.connect("postgres");
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM warden.keys WHERE purpose = 'data' AND state = 'active'
               AND tenant IN ('t_savepoint', 't_nested', 't_plpgsql', 't_released', 't_2pc')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
    cluster.assert_survived(pid);
}
