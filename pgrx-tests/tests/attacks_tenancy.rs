//! Attack tier: tenant isolation holes of the hardening review (findings
//! 7 to 11), each attempted as an application role (or the table owner)
//! across two tenants: a partition named directly (one attached or
//! created after enable_tenancy too), an owner's permissive
//! policy voided or widening isolation, owner code escaping the self-test,
//! a pinned login role switching tenants, tenant ids that alias under the
//! policy's cast.

use pg_warden_integration::*;

fn setup(cluster: &Cluster) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE owner_role LOGIN; GRANT warden_admin TO owner_role;
             CREATE ROLE app LOGIN; GRANT warden_app TO app; GRANT app TO owner_role;
             CREATE SCHEMA s AUTHORIZATION owner_role; GRANT USAGE ON SCHEMA s TO app;",
        )
        .unwrap();
    admin
}

/// Runs `sql` as `client` with `tenant` set; the count it returns.
fn count_as(client: &mut Client, tenant: &str, sql: &str) -> Result<i64, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])?;
    let n: i64 = tx.query_one(sql, &[])?.get(0);
    tx.rollback()?;
    Ok(n)
}

fn exec_as(client: &mut Client, tenant: &str, sql: &str) -> Result<u64, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])?;
    let n = tx.execute(sql, &[])?;
    tx.commit()?;
    Ok(n)
}

/// Finding 7: enable_tenancy on a partitioned table protected only the
/// parent; partitions named directly crossed tenants.
#[test]
fn partitions_named_directly_never_cross_tenants() {
    let cluster = Cluster::start("attack_partitions", &[]);
    let mut admin = setup(&cluster);
    let mut owner = cluster.connect_as("postgres", "owner_role");
    owner
        .batch_execute(
            "CREATE TABLE s.ev (tenant text NOT NULL, id int NOT NULL, body text) PARTITION BY LIST (tenant);
             CREATE TABLE s.ev_acme PARTITION OF s.ev FOR VALUES IN ('acme');
             CREATE TABLE s.ev_other PARTITION OF s.ev DEFAULT;
             SELECT warden.enable_tenancy('s.ev');
             -- added after enable_tenancy: created as a partition, and attached
             CREATE TABLE s.ev_globex PARTITION OF s.ev FOR VALUES IN ('globex');
             CREATE TABLE s.ev_initech (LIKE s.ev);
             ALTER TABLE s.ev DETACH PARTITION s.ev_other;
             ALTER TABLE s.ev ATTACH PARTITION s.ev_initech FOR VALUES IN ('initech');
             ALTER TABLE s.ev ATTACH PARTITION s.ev_other DEFAULT;
             -- sub-partitioned
             CREATE TABLE s.ev_hooli PARTITION OF s.ev FOR VALUES IN ('hooli') PARTITION BY HASH (id);
             CREATE TABLE s.ev_hooli_0 PARTITION OF s.ev_hooli FOR VALUES WITH (MODULUS 1, REMAINDER 0);
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA s TO app;",
        )
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    for tenant in ["acme", "globex", "initech", "hooli", "umbrella"] {
        exec_as(
            &mut app,
            tenant,
            "INSERT INTO s.ev (id, body) VALUES (1, 'mine')",
        )
        .unwrap();
    }
    for part in [
        "ev_acme",
        "ev_globex",
        "ev_initech",
        "ev_other",
        "ev_hooli",
        "ev_hooli_0",
    ] {
        for tenant in ["acme", "globex", "hooli", "umbrella"] {
            // a partition named directly shows the tenant's own rows only
            let n = count_as(
                &mut app,
                tenant,
                &format!("SELECT count(*) FROM s.{part} WHERE tenant <> '{tenant}'"),
            )
            .unwrap();
            assert_eq!(n, 0, "{tenant} reads other tenants' rows in s.{part}");
            for write in [
                format!("UPDATE s.{part} SET body = 'pwned' WHERE tenant <> '{tenant}'"),
                format!("DELETE FROM s.{part} WHERE tenant <> '{tenant}'"),
            ] {
                assert_eq!(
                    exec_as(&mut app, tenant, &write).unwrap(),
                    0,
                    "{tenant}: {write}"
                );
            }
        }
        // a row that belongs in this partition, planted by another tenant
        let target = match part {
            "ev_acme" => "acme",
            "ev_globex" => "globex",
            "ev_initech" => "initech",
            "ev_hooli" | "ev_hooli_0" => "hooli",
            _ => "umbrella",
        };
        let attacker = if target == "acme" { "globex" } else { "acme" };
        let err = exec_as(
            &mut app,
            attacker,
            &format!("INSERT INTO s.{part} (tenant, id, body) VALUES ('{target}', 9, 'planted')"),
        )
        .expect_err(&format!("insert into s.{part} directly"));
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{part}: {err:?}"
        );
    }
    // through the parent each tenant sees exactly its row
    for tenant in ["acme", "globex", "initech", "hooli", "umbrella"] {
        assert_eq!(
            count_as(&mut app, tenant, "SELECT count(*) FROM s.ev").unwrap(),
            1
        );
    }
    let untouched: i64 = admin
        .query_one("SELECT count(*) FROM s.ev WHERE body = 'mine'", &[])
        .unwrap()
        .get(0);
    assert_eq!(untouched, 5);
}

/// Finding 8: the permissive `USING (true)` base policy voided the
/// owner's permissive policies; and a permissive policy added later must
/// not widen a tenant's view.
#[test]
fn the_owners_permissive_policies_keep_their_meaning_and_never_widen_a_tenant() {
    let cluster = Cluster::start("attack_policies", &[]);
    setup(&cluster);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT app TO alice, bob;")
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_role");
    owner
        .batch_execute(
            "CREATE TABLE s.docs (id int PRIMARY KEY, tenant text NOT NULL, author name NOT NULL DEFAULT current_user, public boolean NOT NULL DEFAULT false);
             ALTER TABLE s.docs ENABLE ROW LEVEL SECURITY;
             -- per-user rule inside a tenant
             CREATE POLICY own_docs ON s.docs USING (author = current_user);
             SELECT warden.enable_tenancy('s.docs');
             GRANT SELECT, INSERT, UPDATE, DELETE ON s.docs TO app;",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut alice = cluster.connect_as("postgres", "alice");
    let mut bob = cluster.connect_as("postgres", "bob");
    exec_as(&mut alice, "acme", "INSERT INTO s.docs (id) VALUES (1)").unwrap();
    exec_as(&mut bob, "acme", "INSERT INTO s.docs (id) VALUES (2)").unwrap();
    exec_as(
        &mut bob,
        "globex",
        "INSERT INTO s.docs (id, public) VALUES (3, true)",
    )
    .unwrap();
    // the owner's rule still applies within the tenant: alice sees her row only
    assert_eq!(
        count_as(&mut alice, "acme", "SELECT count(*) FROM s.docs").unwrap(),
        1
    );
    assert_eq!(
        exec_as(
            &mut alice,
            "acme",
            "UPDATE s.docs SET public = true WHERE id = 2"
        )
        .unwrap(),
        0
    );

    // later, the owner adds a permissive "public documents" policy: it
    // must not show globex's public row to acme
    owner
        .batch_execute("CREATE POLICY public_docs ON s.docs FOR SELECT USING (public)")
        .unwrap();
    assert_eq!(
        count_as(
            &mut alice,
            "acme",
            "SELECT count(*) FROM s.docs WHERE tenant = 'globex'"
        )
        .unwrap(),
        0,
        "a permissive policy widened acme's view to globex"
    );
    assert_eq!(
        count_as(&mut bob, "globex", "SELECT count(*) FROM s.docs").unwrap(),
        1
    );
    // the same on a table whose isolation policy started out alone
    owner
        .batch_execute(
            "CREATE TABLE s.notes (id int PRIMARY KEY, tenant text NOT NULL, public boolean NOT NULL DEFAULT false);
             SELECT warden.enable_tenancy('s.notes');
             GRANT SELECT, INSERT ON s.notes TO app;",
        )
        .unwrap();
    exec_as(
        &mut bob,
        "globex",
        "INSERT INTO s.notes (id, public) VALUES (1, true)",
    )
    .unwrap();
    owner
        .batch_execute("CREATE POLICY public_notes ON s.notes FOR SELECT USING (public)")
        .unwrap();
    assert_eq!(
        count_as(&mut alice, "acme", "SELECT count(*) FROM s.notes").unwrap(),
        0
    );
    // and the lint has nothing to say about pg_warden's policies
    let widened: i64 = owner
        .query_one(
            "SELECT count(*) FROM warden.lint() WHERE name = 'tenant_policy_widened'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(widened, 0);
}

/// Finding 9: the self-test ran the owner's defaults, triggers and
/// policies under `SET LOCAL ROLE`, which that code could `RESET ROLE`
/// out of to act as the operator running the self-test (a superuser).
#[test]
fn owner_code_cannot_escape_the_self_test_to_the_operator() {
    let cluster = Cluster::start("attack_selftest", &[]);
    let mut admin = setup(&cluster);
    let mut owner = cluster.connect_as("postgres", "owner_role");
    owner
        .batch_execute(
            "-- the self-test rolls back: its evidence goes into sequences
             CREATE SEQUENCE s.ran; CREATE SEQUENCE s.escaped;
             GRANT USAGE ON SEQUENCE s.ran, s.escaped TO PUBLIC;
             CREATE FUNCTION s.escape() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               BEGIN RESET ROLE; EXCEPTION WHEN OTHERS THEN NULL; END;
               BEGIN SET ROLE postgres; EXCEPTION WHEN OTHERS THEN NULL; END;
               PERFORM nextval('s.ran');
               IF current_user <> 'app' OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
                 PERFORM nextval('s.escaped');
               END IF;
               BEGIN ALTER ROLE owner_role SUPERUSER; EXCEPTION WHEN OTHERS THEN NULL; END;
               RETURN NEW;
             END $$;
             CREATE TABLE s.orders (id serial PRIMARY KEY, tenant text NOT NULL);
             SELECT warden.enable_tenancy('s.orders');
             CREATE TRIGGER t BEFORE INSERT OR UPDATE ON s.orders FOR EACH ROW EXECUTE FUNCTION s.escape();
             GRANT SELECT, INSERT, UPDATE, DELETE ON s.orders TO app;
             GRANT USAGE ON SEQUENCE s.orders_id_seq TO app;",
        )
        .unwrap();
    // the operator (a superuser) runs the self-test
    let rows = admin
        .query(
            "SELECT check_name, passed FROM warden.tenant_isolation_selftest('s.orders', 'app')",
            &[],
        )
        .unwrap();
    let mut counter = |seq: &str| -> i64 {
        admin
            .query_one(
                &format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq}"),
                &[],
            )
            .unwrap()
            .get(0)
    };
    let (escaped, ran) = (counter("s.escaped"), counter("s.ran"));
    assert!(ran > 0, "the trigger never ran");
    assert_eq!(escaped, 0, "owner code ran as someone other than app");
    let su: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'owner_role'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!su);
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    assert!(failed.is_empty(), "self-test checks failed: {failed:?}");
}

/// Finding 10: a login role pinned with `ALTER ROLE ... SET
/// warden.tenant` could still switch with set_tenant / set_tenant_token.
#[test]
fn a_pinned_login_role_cannot_switch_tenants() {
    let cluster = Cluster::start("attack_pinned", &[]);
    let mut admin = setup(&cluster);
    admin
        .batch_execute(
            "CREATE ROLE pinned LOGIN; GRANT warden_app TO pinned;
             ALTER ROLE pinned SET warden.tenant = 'acme';
             CREATE TABLE s.t (id int, tenant text NOT NULL);
             SELECT warden.enable_tenancy('s.t');
             GRANT USAGE ON SCHEMA s TO pinned; GRANT SELECT ON s.t TO pinned;
             INSERT INTO s.t VALUES (1, 'acme'), (2, 'globex');",
        )
        .unwrap();
    let token: String = admin
        .query_one("SELECT warden.tenant_token('globex', '1 minute')", &[])
        .unwrap()
        .get(0);
    let mut pinned = cluster.connect_as("postgres", "pinned");
    let n: i64 = pinned
        .query_one("SELECT count(*) FROM s.t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the pinned tenant applies without set_tenant");
    for (what, sql, param) in [
        (
            "set_tenant",
            "SELECT warden.set_tenant($1)",
            "globex".to_string(),
        ),
        (
            "set_tenant_token",
            "SELECT warden.set_tenant_token($1)",
            token,
        ),
    ] {
        let mut tx = pinned.transaction().unwrap();
        let err = tx.execute(sql, &[&param]).expect_err(what);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{what}: {err:?}"
        );
    }
    // its own tenant is still fine
    let mut tx = pinned.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM s.t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// Finding 11: tenant ids aliased under the policy's cast (`+42`, `042`
/// equal `42` on a bigint column; upper-case or hyphen-free uuids), while
/// keys and tokens are bound to the raw text.
#[test]
fn non_canonical_tenant_ids_match_no_rows() {
    let cluster = Cluster::start("attack_alias", &[]);
    let mut admin = setup(&cluster);
    admin
        .batch_execute(
            "CREATE TABLE s.b (id int, org bigint NOT NULL); SELECT warden.enable_tenancy('s.b', 'org');
             CREATE TABLE s.i (id int, org integer NOT NULL); SELECT warden.enable_tenancy('s.i', 'org');
             CREATE TABLE s.u (id int, org uuid NOT NULL); SELECT warden.enable_tenancy('s.u', 'org');
             INSERT INTO s.b VALUES (1, 42); INSERT INTO s.i VALUES (1, 42);
             INSERT INTO s.u VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
             GRANT SELECT, INSERT ON s.b, s.i, s.u TO app;",
        )
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    for (table, canonical, aliases) in [
        ("s.b", "42", vec!["042", "+42", "0042", "42.0"]),
        ("s.i", "42", vec!["042", "+42"]),
        (
            "s.u",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            vec![
                "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            ],
        ),
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            count_as(&mut app, canonical, &sql).unwrap(),
            1,
            "{table} as {canonical}"
        );
        for alias in aliases {
            let n = count_as(&mut app, alias, &sql).unwrap_or(0);
            assert_eq!(
                n, 0,
                "{table}: tenant {alias:?} reads tenant {canonical}'s rows"
            );
            let err = exec_as(
                &mut app,
                alias,
                &format!("INSERT INTO {table} (id) VALUES (2)"),
            );
            assert!(err.is_err(), "{table}: tenant {alias:?} wrote a row");
        }
    }
}

/// Review of the hardening: a tenant set inside pg_warden's switch to a
/// table owner (the per-tenant SCD2 apply, the self-test's probes)
/// survived the switch and stayed the caller's tenant for the rest of
/// the transaction, whatever pinning or tokens said.
#[test]
fn no_tenant_leaks_out_of_an_apply_or_a_probe() {
    let cluster = Cluster::start("attack_tenant_leak", &[]);
    let mut admin = setup(&cluster);
    let mut owner = cluster.connect_as("postgres", "owner_role");
    owner
        .batch_execute(
            "CREATE TABLE s.d (id int PRIMARY KEY, tenant text NOT NULL, v text);
             SELECT warden.enable_tenancy('s.d');
             SELECT warden.scd2_track('s.d', ARRAY['id'], deferred => true);
             GRANT SELECT, INSERT ON s.d TO app;",
        )
        .unwrap();
    for (id, tenant) in [(1, "acme"), (2, "victim")] {
        exec_as(
            &mut owner,
            tenant,
            &format!("INSERT INTO s.d (id, v) VALUES ({id}, 'x')"),
        )
        .unwrap();
    }
    let mut tx = owner.transaction().unwrap();
    tx.execute("SELECT warden.scd2_flush('s.d')", &[]).unwrap();
    let after_flush: Option<String> = tx
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    // the self-test's probes set both of its tenants in turn
    let n = tx
        .execute(
            "SELECT * FROM warden.tenant_isolation_selftest('s.d', 'app')",
            &[],
        )
        .unwrap();
    assert!(n > 5, "{n} self-test rows");
    let after_probe: Option<String> = tx
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    let visible: i64 = tx
        .query_one("SELECT count(*) FROM s.d", &[])
        .unwrap()
        .get(0);
    tx.rollback().unwrap();
    assert_eq!(after_flush, None, "the apply left its last tenant set");
    assert_eq!(after_probe, None, "the probe left its tenant set");
    assert_eq!(visible, 0);
    let _ = &mut admin;
}
