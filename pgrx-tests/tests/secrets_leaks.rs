//! Attack tier for the secrets store: its values (and webhook secrets)
//! must appear nowhere Postgres itself writes things down. With every
//! statement logged (log_statement = all, every duration, verbose
//! errors with their statement and parameters), auto_explain analysing
//! every nested statement, and pg_stat_statements, every value-taking
//! function runs with literals, with bound parameters, and failing; then
//! no canary may be in the server log, in pg_stat_statements, in an
//! audit event, or anywhere in the data directory's files (heap, WAL,
//! statistics), read as raw bytes after a checkpoint.

use std::fs;
use std::path::Path;

use pg_warden_integration::*;

fn files_containing(dir: &Path, needle: &[u8], skip: &str, found: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_containing(&path, needle, skip, found);
        } else if !path.to_string_lossy().contains(skip) {
            if let Ok(bytes) = fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
}

#[test]
fn secret_values_reach_no_log_statistics_audit_row_heap_or_wal() {
    let cluster = Cluster::start(
        "secrets_leaks",
        &[
            "shared_preload_libraries = 'pg_warden,auto_explain,pg_stat_statements'",
            "log_statement = 'all'",
            "log_min_duration_statement = 0",
            "log_error_verbosity = verbose",
            "log_min_error_statement = 'error'",
            "log_parameter_max_length = -1",
            "log_parameter_max_length_on_error = -1",
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_verbose = on",
            "auto_explain.log_nested_statements = on",
            "pg_stat_statements.track = 'all'",
        ],
    );
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden; CREATE EXTENSION pg_stat_statements;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;",
        )
        .unwrap();
    wait_running(&mut admin, "postgres");
    let canaries: Vec<String> = (1..=9).map(|i| format!("canary{i}x7Q2vLp")).collect();
    let mut app = cluster.connect_as("postgres", "app");
    // simple protocol: literals
    app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant('acme');
         SELECT warden.secret_set('lit/text', '{c1}');
         SELECT warden.secret_set('lit/json', '{{\"password\": \"{c2}\"}}'::jsonb);
         SELECT warden.secret_set('hook/stripe', 'whsec_{c3}');
         SELECT warden.secret_get('lit/text'), warden.secret_get_jsonb('lit/json');
         SELECT warden.webhook_sign('hook/stripe', '\\x7b7d', 'stripe');
         SELECT warden.webhook_verify('hook/stripe', '\\x7b7d', 't=1,v1=00', 'stripe');
         SELECT warden.hmac_sha256('{c4}', 'data');
         COMMIT;",
        c1 = canaries[0],
        c2 = canaries[1],
        c3 = canaries[2],
        c4 = canaries[3],
    ))
    .unwrap();
    // extended protocol: bound parameters
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    tx.execute(
        "SELECT warden.secret_set('bound/text', $1)",
        &[&canaries[4]],
    )
    .unwrap();
    tx.execute(
        "SELECT warden.secret_set('bound/text', $1, expected_version => 1)",
        &[&canaries[5]],
    )
    .unwrap();
    let got: String = tx
        .query_one("SELECT warden.secret_get('bound/text', 1)", &[])
        .unwrap()
        .get(0);
    assert_eq!(got, canaries[4]);
    tx.commit().unwrap();
    // failing calls: the value in the STATEMENT line, the parameters in
    // the error's context
    for sql in [
        format!("BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.secret_set('bad name', '{}'); COMMIT;", canaries[6]),
        format!("BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.secret_set('lit/text', '{}', expected_version => 9); COMMIT;", canaries[7]),
        format!("SELECT warden.secret_set('no/tenant', '{}')", canaries[8]),
    ] {
        assert!(app.batch_execute(&sql).is_err(), "{sql}");
        app.batch_execute("ROLLBACK").ok();
    }
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    assert!(tx
        .execute(
            "SELECT warden.secret_set('lit/text', $1, expected_version => 0)",
            &[&canaries[8]]
        )
        .is_err());
    drop(tx);
    admin.batch_execute("CHECKPOINT").unwrap();
    // the audit sequencer has chained every access
    wait_for(std::time::Duration::from_secs(30), "the sequencer", || {
        admin
            .query_one(
                "SELECT inbox_events = 0 AND ring_events = 0 FROM warden.audit_status",
                &[],
            )
            .unwrap()
            .get::<_, bool>(0)
            .then_some(())
    });
    let events: i64 = admin
        .query_one("SELECT count(*) FROM warden.audit_log WHERE event_type LIKE 'secret.%' OR event_type LIKE 'webhook.%'", &[])
        .unwrap()
        .get(0);
    assert!(events >= 12, "{events} access events");
    admin.batch_execute("CHECKPOINT").unwrap();

    let log = cluster.log();
    assert!(log.contains("secret_set"), "statement logging is on");
    assert!(
        log.contains("Query Text") || log.contains("duration"),
        "auto_explain or durations logged"
    );
    let data = cluster.key_file().parent().unwrap().to_path_buf();
    for c in &canaries {
        assert!(!log.contains(c.as_str()), "{c} in the server log");
        let in_stats: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%'",
                &[c],
            )
            .unwrap()
            .get(0);
        assert_eq!(in_stats, 0, "{c} in pg_stat_statements");
        let in_audit: i64 = admin
            .query_one(
                "SELECT count(*) FROM warden.audit_log WHERE fields::text LIKE '%' || $1 || '%' OR event_type LIKE '%' || $1 || '%'",
                &[c],
            )
            .unwrap()
            .get(0);
        assert_eq!(in_audit, 0, "{c} in an audit event");
        let mut found = Vec::new();
        files_containing(&data, c.as_bytes(), "server.log", &mut found);
        assert!(found.is_empty(), "{c} on disk in {found:?}");
    }
    // the scan finds what is there: a canary stored as plain text is found
    admin
        .batch_execute("CREATE TABLE public.plain (v text); INSERT INTO public.plain VALUES ('controlcanary5Rt'); CHECKPOINT")
        .unwrap();
    let mut found = Vec::new();
    files_containing(&data, b"controlcanary5Rt", "server.log", &mut found);
    assert!(!found.is_empty(), "the scan finds a plaintext it should");
}
