//! Attack tier: a `warden_admin` member or a table owner tries to make
//! pg_warden run their code with more privilege than they have (findings 1
//! and 2 of the hardening review). The attacker's payload, planted in every
//! place Postgres runs user code during a write (row and statement
//! triggers, rules, CHECK constraints, domains, defaults, index
//! expressions, a view as source), records the role it ran as and tries
//! `ALTER ROLE ... SUPERUSER`. Every test asserts the attacker is still not
//! a superuser and the payload never ran as one.

use std::time::{Duration, Instant};

use pg_warden_integration::*;
use postgres::error::SqlState;

/// The attacker `mallory` (a warden_admin member owning schema `m`) and
/// the payload: `m.note()` logs who it runs as in `m.seen` and tries to
/// become superuser; `m.imm(int)` wraps it for index expressions.
fn setup(cluster: &Cluster) -> (Client, Client) {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE mallory LOGIN; GRANT warden_admin TO mallory;
             CREATE SCHEMA m AUTHORIZATION mallory;",
        )
        .unwrap();
    let mut mallory = cluster.connect_as("postgres", "mallory");
    mallory
        .batch_execute(
            "SET search_path = m;
             CREATE TABLE m.seen (who text, superuser text);
             GRANT INSERT ON m.seen TO PUBLIC;
             CREATE FUNCTION m.note() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO m.seen SELECT current_user, r.rolsuper::text FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
               BEGIN
                 ALTER ROLE mallory SUPERUSER;
               EXCEPTION WHEN OTHERS THEN NULL;
               END;
               RETURN true;
             END $$;
             CREATE FUNCTION m.imm(int) RETURNS int IMMUTABLE LANGUAGE sql
               AS 'SELECT CASE WHEN m.note() THEN $1 END';
             CREATE FUNCTION m.trg() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM m.note(); RETURN NULL; END $$;
             CREATE FUNCTION m.before_trg() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM m.note(); RETURN NEW; END $$;
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA m TO PUBLIC;
             GRANT USAGE ON SCHEMA m TO PUBLIC;",
        )
        .unwrap();
    (admin, mallory)
}

/// Asserts mallory gained nothing: not a superuser, and the payload never
/// ran with superuser rights. Returns how often it ran at all.
fn assert_no_escalation(admin: &mut Client, what: &str) -> i64 {
    let su: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!su, "{what}: mallory became superuser");
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE superuser = 'true'), count(*),
                    string_agg(DISTINCT who, ',')
               FROM m.seen",
            &[],
        )
        .unwrap();
    let as_su: i64 = row.get(0);
    let who: Option<String> = row.get(2);
    assert_eq!(as_su, 0, "{what}: the payload ran as superuser ({who:?})");
    admin.batch_execute("TRUNCATE m.seen").unwrap();
    row.get(1)
}

/// Finding 1: `warden._scd2_register`, granted to `warden_admin`, loaded
/// the caller's own "history" as the bootstrap superuser. Now nothing
/// internal is executable by `warden_admin` (each `_` function, called
/// with NULLs, is refused with 42501), and `scd2_track`'s initial load,
/// which evaluates the caller's code (a domain CHECK of a source column,
/// which the history's column inherits), runs as the caller.
#[test]
fn scd2_track_never_runs_a_callers_code_as_superuser() {
    let cluster = Cluster::start("attack_register", &[]);
    let pid = cluster.postmaster_pid();
    let (mut admin, mut mallory) = setup(&cluster);
    // each with NULLs of its argument types, in subqueries (a strict
    // function of constant NULLs would be folded away before the check)
    let internal: Vec<(String, String)> = admin
        .query(
            "SELECT p.oid::regprocedure::text,
                    pg_catalog.format('SELECT warden.%I(%s)', p.proname,
                      (SELECT pg_catalog.string_agg(pg_catalog.format('(SELECT NULL::%s)', pg_catalog.format_type(t, NULL)), ', ')
                         FROM pg_catalog.unnest(p.proargtypes) t))
               FROM pg_proc p
              WHERE p.pronamespace = 'warden'::regnamespace AND p.proname LIKE '\\_%'
                AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(internal.len() > 10, "internal functions: {internal:?}");
    for (function, call) in &internal {
        let err = mallory.batch_execute(call).expect_err(function);
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{function}: {err:?}"
        );
    }
    // a domain CHECK on a source column, which the history's column
    // inherits: the initial load and the trigger evaluate it
    mallory
        .batch_execute(
            "CREATE DOMAIN m.d AS text CHECK (m.note());
             CREATE TABLE m.s (id int PRIMARY KEY, v m.d);
             INSERT INTO m.s VALUES (1, 'a'), (2, 'b');
             SELECT warden.scd2_track('m.s', ARRAY['id']);
             INSERT INTO m.s (id, v) VALUES (3, 'c');",
        )
        .unwrap();
    // it ran, as mallory
    assert!(
        assert_no_escalation(&mut admin, "domain CHECK") > 0,
        "the payload never ran"
    );
    mallory
        .batch_execute("SELECT warden.scd2_untrack('m.s', drop_history => true)")
        .unwrap();
    // a view as the source is refused before anything runs
    mallory
        .batch_execute(
            "DROP TABLE IF EXISTS m.s CASCADE;
             CREATE VIEW m.s AS SELECT 1 AS id, 'a'::text AS v WHERE m.note();",
        )
        .unwrap();
    let err = mallory
        .batch_execute("SELECT warden.scd2_track('m.s', ARRAY['id'])")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::WRONG_OBJECT_TYPE), "{err:?}");
    assert_no_escalation(&mut admin, "view as source");
    cluster.assert_survived(pid);
}

/// Gives the worker (every 200 ms) time to apply `queue`: until it is
/// empty, or 3 s for a plant that makes the apply fail (a DO ALSO rule
/// is refused in the apply's WITH), which is a safe outcome too.
fn wait_applied(client: &mut Client, queue: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {queue}"), &[])
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 2: the deferred apply (worker, scd2_flush, scd2_merge,
/// scd2_untrack, the drop event trigger) wrote the owner's history and
/// queue as superuser.
#[test]
fn the_deferred_apply_runs_a_table_owners_code_with_the_owners_rights_only() {
    let cluster = Cluster::start("attack_apply", &["warden.scd2_apply_interval = '200ms'"]);
    let pid = cluster.postmaster_pid();
    let (mut admin, mut mallory) = setup(&cluster);
    let plants = [
        (
            "AFTER DELETE statement trigger on the queue",
            "CREATE TRIGGER t AFTER DELETE ON m.src_history_queue FOR EACH STATEMENT EXECUTE FUNCTION m.trg()",
        ),
        (
            "BEFORE INSERT row trigger on the history",
            "CREATE TRIGGER t BEFORE INSERT ON m.src_history FOR EACH ROW EXECUTE FUNCTION m.before_trg()",
        ),
        (
            "AFTER UPDATE statement trigger on the history",
            "CREATE TRIGGER t AFTER UPDATE ON m.src_history FOR EACH STATEMENT EXECUTE FUNCTION m.trg()",
        ),
        (
            "rule on the history",
            "CREATE RULE r AS ON INSERT TO m.src_history DO ALSO SELECT m.note()",
        ),
        (
            "CHECK constraint on the history",
            "ALTER TABLE m.src_history ADD CHECK (m.note()) NOT VALID",
        ),
        (
            "index expression on the history",
            "CREATE INDEX ON m.src_history (m.imm(id))",
        ),
    ];
    // how the apply is reached: the worker, or one of the functions that
    // apply the queue first
    let reach = [
        ("worker", ""),
        ("scd2_flush", "SELECT warden.scd2_flush('m.src')"),
        (
            "scd2_merge",
            "CREATE TABLE m.stage (id int, v text); INSERT INTO m.stage VALUES (7, 'x');
             SELECT warden.scd2_merge('m.src_history', 'm.stage')",
        ),
        ("scd2_untrack", "SELECT warden.scd2_untrack('m.src')"),
        ("DROP TABLE (event trigger)", "DROP TABLE m.src"),
    ];
    let mut n = 0;
    for (plant_what, plant) in plants {
        for (how, call) in reach {
            // a table per case: a plant that breaks the apply (a DO ALSO
            // rule) stays in place
            n += 1;
            let name = |sql: &str| {
                sql.replace("m.src", &format!("m.src{n}"))
                    .replace("m.stage", &format!("m.stage{n}"))
            };
            let what = format!("{plant_what}, applied by {how}");
            mallory
                .batch_execute(&name(
                    "CREATE TABLE m.src (id int PRIMARY KEY, v text);
                     SELECT warden.scd2_track('m.src', ARRAY['id'], deferred => true);",
                ))
                .unwrap();
            mallory.batch_execute(&name(plant)).unwrap();
            mallory
                .batch_execute(&name(
                    "INSERT INTO m.src VALUES (1, 'a'), (2, 'b'); UPDATE m.src SET v = 'c' WHERE id = 1;",
                ))
                .unwrap();
            if call.is_empty() {
                wait_applied(&mut mallory, &name("m.src_history_queue"));
            } else {
                // an error is a fine answer; privilege is not
                let _ = mallory.batch_execute(&name(call));
            }
            let ran = assert_no_escalation(&mut admin, &what);
            // the plants that leave the apply working did run, as mallory
            if how == "worker" && !plant_what.starts_with("rule") {
                assert!(ran > 0, "{what}: the payload never ran");
            }
        }
    }
    // whatever is left queued, the worker keeps trying as the owner
    std::thread::sleep(Duration::from_millis(600));
    assert_no_escalation(&mut admin, "later worker rounds");
    cluster.assert_survived(pid);
}

/// The synchronous trigger writes the history as its owner: an
/// application role that writes the source never runs the owner's code
/// with its own rights, and the owner's code never runs as superuser.
#[test]
fn the_synchronous_trigger_writes_as_the_history_owner() {
    let cluster = Cluster::start("attack_sync", &[]);
    let pid = cluster.postmaster_pid();
    let (mut admin, mut mallory) = setup(&cluster);
    admin
        .batch_execute("CREATE ROLE app LOGIN; GRANT warden_app TO app;")
        .unwrap();
    mallory
        .batch_execute(
            "CREATE TABLE m.src (id int PRIMARY KEY, v text);
             SELECT warden.scd2_track('m.src', ARRAY['id']);
             GRANT SELECT, INSERT, UPDATE, DELETE ON m.src TO app;
             CREATE TRIGGER t BEFORE INSERT ON m.src_history FOR EACH ROW EXECUTE FUNCTION m.before_trg();",
        )
        .unwrap();
    // superuser writes the source: the history's trigger runs as mallory
    admin
        .batch_execute("INSERT INTO m.src VALUES (1, 'a'); UPDATE m.src SET v = 'b';")
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    app.batch_execute("INSERT INTO m.src VALUES (2, 'a')")
        .unwrap();
    let who: Vec<String> = admin
        .query("SELECT DISTINCT who FROM m.seen", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(who, vec!["mallory".to_string()]);
    assert!(assert_no_escalation(&mut admin, "sync trigger") > 0);
    cluster.assert_survived(pid);
}

/// Review of the hardening: reading a tenant-isolated queue's tenants by
/// planning a query on it as superuser const-folded the owner's
/// immutable expressions (extended statistics, index predicates) with
/// superuser rights. The queue is now read by a heap scan.
#[test]
fn planning_on_a_users_queue_never_runs_the_owners_expressions_as_superuser() {
    let cluster = Cluster::start(
        "attack_queue_planner",
        &["warden.scd2_apply_interval = '200ms'"],
    );
    let pid = cluster.postmaster_pid();
    let (mut admin, mut mallory) = setup(&cluster);
    mallory
        .batch_execute(
            "CREATE FUNCTION m.k() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT CASE WHEN m.note() THEN 0 END';
             CREATE TABLE m.t (id int PRIMARY KEY, tenant text NOT NULL, v text);
             SELECT warden.enable_tenancy('m.t');
             SELECT warden.scd2_track('m.t', ARRAY['id'], deferred => true);
             CREATE STATISTICS m.st ON (tenant || m.k()::text), tenant FROM m.t_history_queue;
             BEGIN; SELECT warden.set_tenant('acme'); INSERT INTO m.t (id, v) VALUES (1, 'a'); COMMIT;",
        )
        .unwrap();
    // every worker round lists the queue's tenants; scd2_flush does too
    std::thread::sleep(Duration::from_millis(800));
    let _ = mallory.batch_execute("SELECT warden.scd2_flush('m.t')");
    assert_no_escalation(&mut admin, "extended statistics expression on the queue");
    cluster.assert_survived(pid);
}

/// Review of the hardening: the owner's history trigger, fired by the
/// synchronous SCD2 trigger as the owner, resolved unqualified names
/// through the writer's search_path, so the writer's function ran with
/// the owner's rights.
#[test]
fn the_writers_search_path_never_reaches_the_owners_code() {
    let cluster = Cluster::start("attack_search_path", &[]);
    let pid = cluster.postmaster_pid();
    let (mut admin, mut mallory) = setup(&cluster);
    admin
        .batch_execute(
            "CREATE ROLE victim_owner LOGIN; GRANT warden_admin TO victim_owner;
             CREATE SCHEMA v AUTHORIZATION victim_owner;
             GRANT USAGE ON SCHEMA v TO mallory;",
        )
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "victim_owner");
    owner
        .batch_execute(
            "CREATE FUNCTION v.audit_note() RETURNS void LANGUAGE sql AS 'SELECT';
             -- an owner's trigger that calls a function without its schema
             CREATE TABLE v.src (id int PRIMARY KEY, x int);
             SELECT warden.scd2_track('v.src', ARRAY['id']);
             CREATE FUNCTION v.hist_trg() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM audit_note(); RETURN NEW; END $$;
             CREATE TRIGGER t BEFORE INSERT ON v.src_history FOR EACH ROW EXECUTE FUNCTION v.hist_trg();
             GRANT SELECT, INSERT, UPDATE ON v.src TO mallory;",
        )
        .unwrap();
    // mallory's own audit_note(), first in her search_path
    mallory
        .batch_execute(
            "CREATE FUNCTION m.audit_note() RETURNS void LANGUAGE plpgsql AS $$
             BEGIN PERFORM m.note(); END $$;
             SET search_path = m, v, public;",
        )
        .unwrap();
    let _ = mallory.batch_execute("INSERT INTO v.src VALUES (1, 1)");
    let who: Vec<String> = admin
        .query("SELECT DISTINCT who FROM m.seen", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !who.iter().any(|w| w == "victim_owner"),
        "mallory's function ran as the history's owner: {who:?}"
    );
    assert_no_escalation(&mut admin, "writer's search_path");
    cluster.assert_survived(pid);
}

/// A plain `SET` in the owner's code (here a trigger on the history)
/// outlived pg_warden's switch to the owner: it changed the session of
/// the writer whose change the trigger wrote, or of the superuser whose
/// `scd2_flush` applied the queue, and their next unqualified call would
/// run the owner's function with their rights. The switch now restores
/// every setting on its way out, as Postgres' maintenance commands do.
#[test]
fn the_owners_settings_never_outlive_the_switch_to_the_owner() {
    let cluster = Cluster::start("attack_owner_settings", &[]);
    let pid = cluster.postmaster_pid();
    let (mut admin, mut mallory) = setup(&cluster);
    admin.batch_execute("CREATE ROLE writer LOGIN;").unwrap();
    mallory
        .batch_execute(
            "CREATE FUNCTION m.set_path() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN SET search_path = m, pg_catalog; RETURN NEW; END $$;
             CREATE TABLE m.src (id int PRIMARY KEY, x int);
             SELECT warden.scd2_track('m.src', ARRAY['id']);
             CREATE TRIGGER t BEFORE INSERT ON m.src_history FOR EACH ROW EXECUTE FUNCTION m.set_path();
             CREATE TABLE m.dsrc (id int PRIMARY KEY, x int);
             SELECT warden.scd2_track('m.dsrc', ARRAY['id'], deferred => true);
             CREATE TRIGGER t BEFORE INSERT ON m.dsrc_history FOR EACH ROW EXECUTE FUNCTION m.set_path();
             GRANT SELECT, INSERT ON m.src, m.dsrc TO writer;",
        )
        .unwrap();
    let mut writer = cluster.connect_as("postgres", "writer");
    let path = |c: &mut Client| -> String { c.query_one("SHOW search_path", &[]).unwrap().get(0) };
    writer
        .batch_execute(
            "SET search_path = public;
             INSERT INTO m.src VALUES (1, 1);
             INSERT INTO m.dsrc VALUES (1, 1);",
        )
        .unwrap();
    assert_eq!(
        path(&mut writer),
        "public",
        "the history owner's SET reached the writer"
    );
    admin
        .batch_execute("SET search_path = public; SELECT warden.scd2_flush('m.dsrc');")
        .unwrap();
    let versions: i64 = admin
        .query_one("SELECT count(*) FROM m.dsrc_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 1, "the flush applied nothing");
    assert_eq!(
        path(&mut admin),
        "public",
        "the history owner's SET reached the superuser"
    );
    assert_no_escalation(&mut admin, "owner's settings");
    cluster.assert_survived(pid);
}
