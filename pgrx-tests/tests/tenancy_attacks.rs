//! The attack suite: an application role (not the owner) and two tenants
//! over tables set up by `warden.enable_tenancy`. Every attack either
//! fails or reads and writes zero rows of the other tenant; the two
//! owner-side mistakes (a view and a SECURITY DEFINER function that
//! bypass RLS) are shown to leak and to be caught by `warden.lint()`.

use pg_warden_integration::*;

fn setup(cluster: &Cluster) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE owner_role LOGIN; GRANT warden_admin TO owner_role;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE ROLE ops LOGIN; GRANT warden_admin TO ops;
             CREATE SCHEMA shop AUTHORIZATION owner_role;
             SET ROLE owner_role;
             CREATE TABLE shop.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                      tenant text NOT NULL, body text NOT NULL DEFAULT '');
             GRANT USAGE ON SCHEMA shop TO app;
             GRANT SELECT, INSERT, UPDATE, DELETE ON shop.notes TO app;
             SELECT warden.enable_tenancy('shop.notes');
             RESET ROLE;",
        )
        .unwrap();
    // each tenant writes its own rows, through the sanctioned path
    let mut app = cluster.connect_as("postgres", "app");
    for tenant in ["acme", "globex"] {
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
            .unwrap();
        for i in 0..5 {
            tx.execute(
                "INSERT INTO shop.notes (body) VALUES ($1)",
                &[&format!("{tenant} note {i}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    admin
}

/// Rows of tenant `other` the statement lets `client` see, as acme.
fn count_as_acme(client: &mut Client, sql: &str) -> Result<i64, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT warden.set_tenant('acme')", &[])?;
    let n: i64 = tx.query_one(sql, &[])?.get(0);
    tx.rollback()?;
    Ok(n)
}

#[test]
fn an_application_role_never_reads_or_writes_another_tenants_rows() {
    let cluster = Cluster::start("attacks", &[]);
    let mut admin = setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app");

    // reads: direct, schema-qualified, by predicate, through a CTE, a
    // subquery, a join and a set operation
    for sql in [
        "SELECT count(*) FROM shop.notes WHERE tenant = 'globex'",
        "SELECT count(*) FROM shop.notes WHERE tenant <> 'acme'",
        "SELECT count(*) FROM (SELECT * FROM shop.notes) s WHERE s.tenant = 'globex'",
        "WITH all_rows AS (SELECT * FROM shop.notes) SELECT count(*) FROM all_rows WHERE tenant = 'globex'",
        "SELECT count(*) FROM shop.notes a JOIN shop.notes b USING (id) WHERE b.tenant = 'globex'",
        "SELECT count(*) FROM (SELECT tenant FROM shop.notes UNION ALL SELECT 'x') u WHERE tenant = 'globex'",
        "SELECT count(*) FROM shop.notes WHERE body LIKE 'globex%'",
    ] {
        assert_eq!(count_as_acme(&mut app, sql).unwrap(), 0, "{sql}");
    }
    assert_eq!(
        count_as_acme(&mut app, "SELECT count(*) FROM shop.notes").unwrap(),
        5
    );

    // no tenant, RESET, empty or NULL: nothing visible, and no way to set
    // the setting directly
    let n: i64 = app
        .query_one("SELECT count(*) FROM shop.notes", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no tenant sees nothing");
    for stmt in [
        "SET warden.tenant = 'globex'",
        "SET warden.tenant = ''",
        "RESET warden.tenant",
        "SELECT set_config('warden.tenant', 'globex', true)",
        "SELECT set_config('warden.tenant', '', false)",
    ] {
        let mut tx = app.transaction().unwrap();
        let err = tx.batch_execute(stmt).expect_err(stmt);
        assert_eq!(err.code().unwrap().code(), "42501", "{stmt}");
    }
    for (stmt, code) in [
        ("SELECT warden.set_tenant(NULL)", "22004"),
        ("SELECT warden.set_tenant('')", "22023"),
        ("SELECT warden.set_tenant('acme'' OR ''1''=''1')", "22023"),
        (
            "SELECT warden.set_tenant('globex; DROP TABLE shop.notes')",
            "22023",
        ),
        ("SELECT warden.set_tenant(E'acme\\nglobex')", "22023"),
    ] {
        let mut tx = app.transaction().unwrap();
        let err = tx.batch_execute(stmt).expect_err(stmt);
        assert_eq!(err.code().unwrap().code(), code, "{stmt}");
    }

    // writes: insert for the other tenant, update/delete its rows, move a
    // row to it, update by primary key of its row
    let globex_id: i64 = admin
        .query_one(
            "SELECT min(id) FROM shop.notes WHERE tenant = 'globex'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let n = tx
        .execute(
            "UPDATE shop.notes SET body = 'pwned' WHERE tenant = 'globex'",
            &[],
        )
        .unwrap();
    assert_eq!(n, 0);
    let n = tx
        .execute(
            "UPDATE shop.notes SET body = 'pwned' WHERE id = $1",
            &[&globex_id],
        )
        .unwrap();
    assert_eq!(n, 0);
    let n = tx
        .execute("DELETE FROM shop.notes WHERE id = $1", &[&globex_id])
        .unwrap();
    assert_eq!(n, 0);
    tx.commit().unwrap();
    for stmt in [
        "INSERT INTO shop.notes (tenant, body) VALUES ('globex', 'planted')",
        "UPDATE shop.notes SET tenant = 'globex'",
        "INSERT INTO shop.notes (tenant, body) SELECT 'globex', body FROM shop.notes",
    ] {
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
        let err = tx.batch_execute(stmt).expect_err(stmt);
        assert_eq!(err.code().unwrap().code(), "42501", "{stmt}");
    }
    let globex_rows: Vec<String> = admin
        .query(
            "SELECT body FROM shop.notes WHERE tenant = 'globex' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        globex_rows,
        (0..5)
            .map(|i| format!("globex note {i}"))
            .collect::<Vec<_>>()
    );
    let acme_rows: i64 = admin
        .query_one("SELECT count(*) FROM shop.notes WHERE tenant = 'acme'", &[])
        .unwrap()
        .get(0);
    assert_eq!(acme_rows, 5, "no row was moved or planted");
}

#[test]
fn tokens_forged_expired_or_for_another_tenant_get_nothing() {
    let cluster = Cluster::start("token_attacks", &[]);
    setup(&cluster);
    let mut ops = cluster.connect_as("postgres", "ops");
    let acme: String = ops
        .query_one("SELECT warden.tenant_token('acme', '5 minutes')", &[])
        .unwrap()
        .get(0);
    ops.query_one("SELECT warden.tenant_token('globex', '5 minutes')", &[])
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");

    let parts: Vec<&str> = acme.split('.').collect();
    let b64 = |s: &str| -> String {
        base64(s.as_bytes())
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    let forged = [
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"tid":"globex","exp":9999999999}"#)
        ),
        format!(
            "{}.{}.{}",
            parts[0],
            b64(r#"{"tid":"globex","exp":9999999999}"#),
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"HS512","typ":"JWT"}"#),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", parts[0], parts[1], "AAAA"),
        "".to_string(),
        "a.b.c".to_string(),
    ];
    for token in &forged {
        let mut tx = app.transaction().unwrap();
        let err = tx
            .query_one("SELECT warden.set_tenant_token($1)", &[token])
            .expect_err(token);
        assert_eq!(err.code().unwrap().code(), "28000", "{token}");
    }
    // acme's token gives acme's rows only, and cannot write globex's
    let mut tx = app.transaction().unwrap();
    let t: String = tx
        .query_one("SELECT warden.set_tenant_token($1)", &[&acme])
        .unwrap()
        .get(0);
    assert_eq!(t, "acme");
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM shop.notes WHERE tenant <> 'acme'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let err = tx
        .batch_execute("INSERT INTO shop.notes (tenant, body) VALUES ('globex', 'via token')")
        .expect_err("write to another tenant");
    assert_eq!(err.code().unwrap().code(), "42501");
}

#[test]
fn owner_side_mistakes_leak_and_the_lint_names_them() {
    let cluster = Cluster::start("lint_catches", &[]);
    let mut admin = setup(&cluster);
    // a superuser-owned view without security_invoker, and a SECURITY
    // DEFINER function callable by PUBLIC: both run as a role that
    // bypasses RLS
    admin
        .batch_execute(
            "CREATE VIEW shop.all_notes AS SELECT * FROM shop.notes;
             GRANT SELECT ON shop.all_notes TO app;
             CREATE FUNCTION shop.note_count(t text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
               AS $$ SELECT count(*) FROM shop.notes WHERE tenant = t $$;",
        )
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    assert_eq!(
        count_as_acme(
            &mut app,
            "SELECT count(*) FROM shop.all_notes WHERE tenant = 'globex'"
        )
        .unwrap(),
        5,
        "the view leaks: this is the mistake the lint must catch"
    );
    assert_eq!(
        count_as_acme(&mut app, "SELECT shop.note_count('globex')").unwrap(),
        5
    );

    let mut ops = cluster.connect_as("postgres", "ops");
    let findings: Vec<(String, String)> = ops
        .query(
            "SELECT name, metadata->>'object' FROM warden.lint() ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        findings.contains(&(
            "view_without_security_invoker".into(),
            "shop.all_notes".into()
        )),
        "{findings:?}"
    );
    assert!(
        findings.contains(&(
            "public_definer_reads_tenant_table".into(),
            "shop.note_count(text)".into()
        )),
        "{findings:?}"
    );
    assert!(
        findings.contains(&(
            "security_definer_search_path".into(),
            "shop.note_count(text)".into()
        )),
        "{findings:?}"
    );

    // fixed as the lint says: no leak, no finding
    admin
        .batch_execute(
            "ALTER VIEW shop.all_notes SET (security_invoker = true);
             GRANT SELECT ON shop.notes TO app;
             DROP FUNCTION shop.note_count(text);",
        )
        .unwrap();
    assert_eq!(
        count_as_acme(
            &mut app,
            "SELECT count(*) FROM shop.all_notes WHERE tenant = 'globex'"
        )
        .unwrap(),
        0
    );
    let left: i64 = ops
        .query_one("SELECT count(*) FROM warden.lint()", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn pgbouncer_clients_sharing_a_backend_see_only_their_tenants_rows() {
    let cluster = Cluster::start("bouncer_rows", &[]);
    setup(&cluster);
    let bouncer = PgBouncer::start(&cluster, &["app"]);
    let mut a = bouncer.connect_as("postgres", "app");
    let mut b = bouncer.connect_as("postgres", "app");
    let pa: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let pb: i32 = b.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert_eq!(pa, pb, "one server connection shared by both clients");
    for _ in 0..30 {
        for (client, tenant) in [(&mut a, "acme"), (&mut b, "globex")] {
            let mut tx = client.transaction().unwrap();
            tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
                .unwrap();
            let rows = tx.query("SELECT tenant FROM shop.notes", &[]).unwrap();
            assert_eq!(rows.len(), 5);
            assert!(rows.iter().all(|r| r.get::<_, String>(0) == tenant));
            tx.commit().unwrap();
            let leftover: i64 = client
                .query_one("SELECT count(*) FROM shop.notes", &[])
                .unwrap()
                .get(0);
            assert_eq!(leftover, 0, "nothing visible between transactions");
        }
    }
}
