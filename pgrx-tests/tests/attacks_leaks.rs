//! Attack tier: what leaks (findings 12, 16 and 17 of the hardening
//! review): tenant tokens and plaintexts in the server log, long-lived
//! tokens, another tenant's key state in an error, other databases' task
//! errors, and key bytes in core dumps.

use std::time::Duration;

use pg_warden_integration::*;

fn setup(cluster: &Cluster) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE ROLE ops LOGIN; GRANT warden_admin TO ops;",
        )
        .unwrap();
    admin
}

/// Finding 12: tokens and plaintexts passed to pg_warden's functions were
/// written to the server log by statement logging, duration logging, the
/// STATEMENT line of errors and the bound-parameter details.
#[test]
fn values_passed_to_pg_wardens_functions_never_reach_the_server_log() {
    let cluster = Cluster::start(
        "attack_log",
        &[
            "log_statement = 'all'",
            "log_min_duration_statement = 0",
            "log_min_error_statement = 'error'",
            "log_parameter_max_length = -1",
            "log_parameter_max_length_on_error = -1",
        ],
    );
    let mut admin = setup(&cluster);
    let token: String = admin
        .query_one("SELECT warden.tenant_token('acme', '1 minute')", &[])
        .unwrap()
        .get(0);
    let mut app = cluster.connect_as("postgres", "app");
    let canary = |n: u32| format!("plaintext-canary-{n}-7f3a");
    // simple protocol, literal token
    app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant_token('{token}'); SELECT warden.encrypt('{}'); COMMIT;",
        canary(1)
    ))
    .unwrap();
    // extended protocol, bound parameters
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant_token($1)", &[&token])
        .unwrap();
    tx.execute("SELECT warden.encrypt($1::text, 'ctx')", &[&canary(2)])
        .unwrap();
    // an error with the parameters in its context
    let _ = tx.execute("SELECT warden.encrypt($1::text, NULL)", &[&canary(3)]);
    tx.rollback().unwrap();
    // an error with the literal in the STATEMENT line
    let _ = app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant_token('{token}x')"
    ));
    let _ = app.batch_execute("ROLLBACK");
    let _ = app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.blind_index('{}', NULL)",
        canary(4)
    ));
    let _ = app.batch_execute("ROLLBACK");
    // a dollar-quoted plaintext inside a DO block
    let _ = app.batch_execute(&format!(
        "DO $x$ BEGIN PERFORM warden.encrypt($y${}$y$); END $x$",
        canary(5)
    ));

    // a quoted function name and a comment before the parenthesis
    let _ = app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.\"encrypt\"/**/('{}'); COMMIT",
        canary(6)
    ));
    // a prepared statement executed with the value
    let _ = app.batch_execute(&format!(
        "PREPARE p(text) AS SELECT warden.encrypt($1); BEGIN; SELECT warden.set_tenant('acme'); EXECUTE p('{}'); COMMIT",
        canary(7)
    ));
    // an input function that quotes the value in its error
    let _ = app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.encrypt('{{\"ssn\": {}}}'::jsonb)",
        canary(8)
    ));
    let _ = app.batch_execute("ROLLBACK");
    // standard_conforming_strings = off (set before the statement is
    // parsed): a backslash escapes the quote
    app.batch_execute("SET standard_conforming_strings = off")
        .unwrap();
    let _ = app.batch_execute(&format!(
        "BEGIN; SELECT warden.set_tenant('acme'); SELECT warden.encrypt('\\' {} '); COMMIT",
        canary(9)
    ));
    app.batch_execute("RESET standard_conforming_strings")
        .unwrap();

    std::thread::sleep(Duration::from_millis(300));
    let log = cluster.log();
    assert!(
        log.contains("set_tenant_token("),
        "statements were logged at all:\n{log}"
    );
    assert!(log.contains("<redacted>"), "{log}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !log.contains(signature),
        "the token reached the log:\n{log}"
    );
    for n in 1..=9 {
        assert!(
            !log.contains(&canary(n)),
            "plaintext {n} reached the log:\n{log}"
        );
    }
    // not even a prefix of one (an input function's context cuts values)
    assert!(
        !log.contains("plaintext"),
        "a plaintext prefix reached the log:\n{log}"
    );
}

/// Finding 12: a harvested token was valid for up to 30 days.
#[test]
fn tokens_live_no_longer_than_the_configured_maximum() {
    let cluster = Cluster::start("attack_token_ttl", &[]);
    let mut admin = setup(&cluster);
    let mut ops = cluster.connect_as("postgres", "ops");
    let err = ops
        .query_one("SELECT warden.tenant_token('acme', '1 hour')", &[])
        .expect_err("an hour is over the 15-minute default");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    // minted while the maximum was a day; refused once it is lowered
    admin
        .batch_execute("ALTER SYSTEM SET warden.tenant_token_max_ttl = '1d'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut ops = cluster.connect_as("postgres", "ops");
    let long: String = ops
        .query_one("SELECT warden.tenant_token('acme', '12 hours')", &[])
        .unwrap()
        .get(0);
    admin
        .batch_execute("ALTER SYSTEM RESET warden.tenant_token_max_ttl")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut app = cluster.connect_as("postgres", "app");
    let mut tx = app.transaction().unwrap();
    let err = tx
        .execute("SELECT warden.set_tenant_token($1)", &[&long])
        .expect_err("a 12-hour token after the maximum went back to 15 minutes");
    assert_eq!(err.code().map(|c| c.code()), Some("28000"), "{err:?}");
}

/// Finding 16: decrypting another tenant's ciphertext unwrapped that
/// tenant's key first, so a damaged or missing key of another tenant
/// answered with its own error instead of the one "decryption failed".
#[test]
fn another_tenants_key_state_never_shows_in_an_error() {
    let cluster = Cluster::start("attack_key_oracle", &[]);
    let mut admin = setup(&cluster);
    admin
        .batch_execute("CREATE TABLE vault (c bytea); GRANT SELECT, INSERT ON vault TO app;")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    tx.execute(
        "INSERT INTO vault SELECT warden.encrypt('acme secret'::text)",
        &[],
    )
    .unwrap();
    tx.commit().unwrap();
    // acme's key row is damaged (or its root version gone): an operator
    // problem that only acme should hear about
    admin
        .batch_execute(
            "UPDATE warden.keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1)
              WHERE tenant = 'acme' AND purpose = 'data'",
        )
        .unwrap();
    let mut other = cluster.connect_as("postgres", "app");
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('globex')", &[])
        .unwrap();
    let err = tx
        .query_one("SELECT warden.decrypt(c) FROM vault", &[])
        .expect_err("globex cannot decrypt acme's value");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22000", "{db:?}");
    assert_eq!(db.message(), "decryption failed");
}

/// Finding 16: `warden.worker_status` showed every database's task
/// errors (which name their tables and data) in any database.
#[test]
fn worker_status_shows_other_databases_errors_to_superusers_only() {
    let cluster = Cluster::start("attack_status", &[]);
    let mut admin = setup(&cluster);
    admin.batch_execute("CREATE DATABASE other").unwrap();
    let mut other = cluster.connect("other");
    other.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "other");
    other
        .batch_execute("SELECT warden._inject_worker_fault('task_error')")
        .unwrap();
    wait_for(Duration::from_secs(20), "the error in other", || {
        worker_row(&mut admin, "other").and_then(|r| r.last_error)
    });
    let mut ops = cluster.connect_as("postgres", "ops");
    let seen: Option<String> = ops
        .query_one(
            "SELECT last_error FROM warden.worker_status WHERE datname = 'other' AND task = 'heartbeat'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        seen, None,
        "a warden_admin of postgres reads other's task errors"
    );
}

/// How many writable areas of `pid`'s memory map carry `dd` (do not
/// dump). The kernel's own `[vvar]` pages always do and are not counted.
fn dont_dump_areas(pid: i32) -> usize {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut header = "";
    let mut n = 0;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            header = line;
        } else if line.starts_with("VmFlags:")
            && line.split_whitespace().any(|f| f == "dd")
            && line.split_whitespace().any(|f| f == "wr")
            && !header.contains("[vvar")
        {
            n += 1;
        }
    }
    n
}

/// Finding 17: the root keyring (inherited by every backend) and the data
/// keys a backend caches were not excluded from core dumps.
#[test]
fn key_memory_is_excluded_from_core_dumps() {
    let cluster = Cluster::start("attack_core", &[]);
    setup(&cluster);
    let postmaster = dont_dump_areas(cluster.postmaster_pid());
    assert!(
        postmaster > 0,
        "the postmaster's root key pages are dumpable"
    );
    let mut app = cluster.connect_as("postgres", "app");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    tx.execute("SELECT warden.encrypt('x'::text)", &[]).unwrap();
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert!(
        dont_dump_areas(pid) > 0,
        "the backend's key pages are dumpable"
    );
}
