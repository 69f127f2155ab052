//! The upgrade path, walked the way users take it: for every released
//! version (the frozen `sql/pg_warden--<version>.sql` scripts), a database
//! is created at that version with data in it (data keys, encrypted rows
//! and blind indexes, a tenant table, an SCD2-tracked table and a deferred
//! one), upgraded with `ALTER EXTENSION pg_warden UPDATE`, and then
//! 1. the data still works: tenants decrypt their rows and find them by
//!    blind index, tenancy holds, tracking writes versions, the queue is
//!    applied, a new tenant gets a key;
//! 2. its schema equals a fresh install of the default version, object by
//!    object: the extension's members, functions (signature, volatility,
//!    strictness, parallel safety, SECURITY DEFINER, settings, body,
//!    grants, comment), relations and their columns, indexes,
//!    constraints, triggers, policies, sequences, event triggers, types,
//!    the configuration tables pg_dump keeps, default privileges and the
//!    schema's grants. Any difference fails, listed line by line.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use pg_warden_integration::*;

/// The released versions, oldest first: every frozen install script.
fn released_versions() -> Vec<String> {
    let sql = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let mut versions: Vec<Vec<u32>> = fs::read_dir(&sql)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let v = name.strip_prefix("pg_warden--")?.strip_suffix(".sql")?;
            (!v.contains("--")).then(|| v.split('.').map(|p| p.parse().unwrap()).collect())
        })
        .collect();
    versions.sort();
    versions
        .into_iter()
        .map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join("."))
        .collect()
}

/// One line per object and property that an upgrade must get right.
const SNAPSHOT: &str = r#"
WITH ext AS (SELECT e.oid, e.extconfig, e.extcondition FROM pg_extension e WHERE e.extname = 'pg_warden'),
w AS (SELECT 'warden'::regnamespace AS nsp)
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ': ' || concat_ws(' | ',
         p.prokind, p.provolatile, p.proparallel, 'strict=' || p.proisstrict, 'definer=' || p.prosecdef,
         'leakproof=' || p.proleakproof, 'returns ' || pg_get_function_result(p.oid),
         'args ' || pg_get_function_arguments(p.oid), l.lanname, 'cost=' || p.procost, 'rows=' || p.prorows,
         'config=' || array_to_string(p.proconfig, ','), 'body=' || md5(p.prosrc), p.probin,
         'acl=' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(p.proacl) x),
         'comment=' || obj_description(p.oid, 'pg_proc'))
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang, w WHERE p.pronamespace = w.nsp
UNION ALL
SELECT 'relation ' || c.oid::regclass || ': ' || concat_ws(' | ',
         c.relkind, c.relpersistence, 'rls=' || c.relrowsecurity, 'force=' || c.relforcerowsecurity,
         'options=' || array_to_string(c.reloptions, ','),
         'acl=' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) x),
         'comment=' || obj_description(c.oid, 'pg_class'),
         'view=' || CASE WHEN c.relkind IN ('v', 'm') THEN md5(pg_get_viewdef(c.oid)) END,
         CASE WHEN c.relkind = 'i' THEN pg_get_indexdef(c.oid) END)
  FROM pg_class c, w WHERE c.relnamespace = w.nsp
UNION ALL
SELECT 'column ' || c.oid::regclass || '.' || quote_ident(a.attname) || ': ' || concat_ws(' | ',
         'position=' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
         format_type(a.atttypid, a.atttypmod), 'not null=' || a.attnotnull,
         'default=' || pg_get_expr(ad.adbin, ad.adrelid), 'identity=' || a.attidentity::text,
         'generated=' || a.attgenerated::text, 'collation=' || a.attcollation::regcollation,
         'acl=' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x),
         'comment=' || col_description(c.oid, a.attnum))
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum, w
 WHERE c.relnamespace = w.nsp AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
UNION ALL
SELECT 'constraint ' || coalesce(k.conrelid::regclass::text, k.contypid::regtype::text) || ' ' || quote_ident(k.conname)
       || ': ' || pg_get_constraintdef(k.oid) || ' | deferrable=' || k.condeferrable
       || coalesce(' | comment=' || obj_description(k.oid, 'pg_constraint'), '')
  FROM pg_constraint k, w WHERE k.connamespace = w.nsp
UNION ALL
SELECT 'trigger ' || t.tgrelid::regclass || ' ' || quote_ident(t.tgname) || ': ' || pg_get_triggerdef(t.oid)
       || ' | enabled=' || t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid, w WHERE c.relnamespace = w.nsp AND NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.polrelid::regclass || ' ' || quote_ident(p.polname) || ': ' || concat_ws(' | ',
         p.polcmd, 'permissive=' || p.polpermissive,
         'roles=' || (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1) FROM unnest(p.polroles) r),
         'using=' || pg_get_expr(p.polqual, p.polrelid), 'check=' || pg_get_expr(p.polwithcheck, p.polrelid))
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid, w WHERE c.relnamespace = w.nsp
UNION ALL
SELECT 'sequence ' || s.seqrelid::regclass || ': ' || concat_ws(' | ', s.seqtypid::regtype, s.seqstart,
         s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid, w WHERE c.relnamespace = w.nsp
UNION ALL
SELECT 'event trigger ' || quote_ident(e.evtname) || ': ' || concat_ws(' | ', e.evtevent, e.evtfoid::regproc,
         array_to_string(e.evttags, ','), e.evtenabled, 'comment=' || obj_description(e.oid, 'pg_event_trigger'))
  FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid, w WHERE p.pronamespace = w.nsp
UNION ALL
SELECT 'type ' || t.oid::regtype || ': ' || concat_ws(' | ', t.typtype, 'base=' || NULLIF(t.typbasetype, 0)::regtype,
         'labels=' || (SELECT string_agg(en.enumlabel, ',' ORDER BY en.enumsortorder) FROM pg_enum en WHERE en.enumtypid = t.oid),
         'comment=' || obj_description(t.oid, 'pg_type'))
  FROM pg_type t, w WHERE t.typnamespace = w.nsp AND t.typtype <> 'c' AND t.typelem = 0
UNION ALL
SELECT 'dumped config ' || c.cfg::regclass || ': ' || coalesce(ext.extcondition[c.n], '')
  FROM ext, unnest(ext.extconfig) WITH ORDINALITY c(cfg, n)
UNION ALL
SELECT 'default privileges ' || d.defaclobjtype::text || ': '
       || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(d.defaclacl) x)
  FROM pg_default_acl d, w WHERE d.defaclnamespace = w.nsp
UNION ALL
SELECT 'schema warden: ' || concat_ws(' | ',
         'acl=' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(n.nspacl) x),
         'comment=' || obj_description(n.oid, 'pg_namespace'))
  FROM pg_namespace n, w WHERE n.oid = w.nsp
"#;

fn snapshot(client: &mut Client) -> BTreeSet<String> {
    // names print schema-qualified, the same in both databases
    client
        .batch_execute("SET search_path = pg_catalog")
        .unwrap();
    client
        .query(SNAPSHOT, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// After the upgrade, everything `write_every_subsystem` made still works.
fn check_data(admin: &mut Client, app: &mut Client, version: &str) {
    let what = format!("from {version}");
    for tenant in DOC_TENANTS {
        let mut tx = app.transaction().unwrap();
        assert_tenant_reads_its_row(&mut tx, tenant, &what);
        tx.commit().unwrap();
    }
    // a tenant that is new after the upgrade gets a key of its own
    app.batch_execute(
        "BEGIN; SELECT warden.set_tenant('gamma');
         INSERT INTO docs (id, body) VALUES (3, warden.encrypt('g', 'docs.body'));
         COMMIT;",
    )
    .unwrap();
    let keys: i64 = admin
        .query_one(
            "SELECT count(DISTINCT key_id) FROM warden.keys WHERE state = 'active'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        keys, 5,
        "from {version}: data and blind-index keys of three tenants"
    );
    assert_tracking_goes_on(admin, &what);
}

#[test]
fn every_released_version_upgrades_to_what_a_fresh_install_gives() {
    let versions = released_versions();
    assert!(!versions.is_empty(), "no frozen install script in sql/");
    let cluster = Cluster::start("upgrade", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE fresh").unwrap();
    admin.batch_execute("CREATE ROLE app LOGIN").unwrap();
    let mut fresh = cluster.connect("fresh");
    fresh
        .batch_execute("CREATE EXTENSION pg_warden; GRANT warden_app TO app;")
        .unwrap();
    let default_version: String = fresh
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        !versions.contains(&default_version),
        "the default version {default_version} is a released one"
    );
    let expected = snapshot(&mut fresh);
    for version in &versions {
        let db = format!("from_{}", version.replace('.', "_"));
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let mut old = cluster.connect(&db);
        old.batch_execute(&format!("CREATE EXTENSION pg_warden VERSION '{version}'"))
            .unwrap();
        let mut app = cluster.connect_as(&db, "app");
        write_every_subsystem(&mut old, &mut app);
        old.batch_execute("ALTER EXTENSION pg_warden UPDATE")
            .unwrap();
        let now: String = old
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            now, default_version,
            "ALTER EXTENSION UPDATE from {version}"
        );
        check_data(&mut old, &mut app, version);
        let upgraded = snapshot(&mut old);
        let mut differences: Vec<String> = upgraded
            .difference(&expected)
            .map(|l| format!("  only after the upgrade from {version}: {l}"))
            .collect();
        differences.extend(
            expected
                .difference(&upgraded)
                .map(|l| format!("  only in a fresh install of {default_version}: {l}")),
        );
        assert!(
            differences.is_empty(),
            "upgrading from {version} does not give what installing {default_version} gives \
             (put the change into sql/pg_warden--{version}--{default_version}.sql too):\n{}",
            differences.join("\n")
        );
    }
}
