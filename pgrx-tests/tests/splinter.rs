//! Supabase's own linter, splinter (an unmodified copy in
//! `../shared/external/splinter/`), run on a database where pg_warden's
//! tables, tenancy (plain, next to the owner's policies, partitioned) and
//! SCD2 tracking (synchronous, deferred, tenant-isolated) are in use: no
//! finding may name an object pg_warden created.

use std::path::PathBuf;

use pg_warden_integration::*;

fn splinter_dir() -> PathBuf {
    // CI lays shared/ beside the clone of the repository
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/external/splinter")
}

#[test]
fn splinter_finds_nothing_pg_warden_created() {
    let dir = std::env::var("WARDEN_SPLINTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| splinter_dir());
    if !dir.join("splinter.sql").exists() && std::env::var_os("CI").is_none() {
        // a checkout without the project's shared/ folder beside it: CI
        // always has it (CI=true), so only a local run can skip
        eprintln!(
            "SKIPPED: no splinter at {} (set WARDEN_SPLINTER_DIR to a copy of supabase/splinter)",
            dir.display()
        );
        return;
    }
    let fixtures = std::fs::read_to_string(dir.join("fixtures.sql")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared/ must sit beside the repository)",
            dir.display()
        )
    });
    let splinter = std::fs::read_to_string(dir.join("splinter.sql")).unwrap();
    let cluster = Cluster::start("splinter", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    admin.batch_execute(&fixtures).unwrap();
    admin
        .batch_execute(
            "RESET search_path;
             CREATE ROLE owner_role LOGIN; GRANT warden_admin TO owner_role;
             GRANT CREATE ON SCHEMA public TO owner_role;",
        )
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_role");
    owner
        .batch_execute(
            "-- tenancy on a table with no policy of its own
             CREATE TABLE public.orders (id bigint PRIMARY KEY, tenant text NOT NULL, item text);
             SELECT warden.enable_tenancy('public.orders');
             -- next to the owner's permissive policy
             CREATE TABLE public.docs (id bigint PRIMARY KEY, tenant text NOT NULL, author name NOT NULL DEFAULT current_user);
             ALTER TABLE public.docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_docs ON public.docs USING (author = current_user);
             SELECT warden.enable_tenancy('public.docs');
             -- a policy added afterwards
             CREATE POLICY docs_public ON public.docs FOR SELECT USING (author = 'nobody');
             -- partitioned
             CREATE TABLE public.events (tenant text NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant, id)) PARTITION BY LIST (tenant);
             CREATE TABLE public.events_a PARTITION OF public.events FOR VALUES IN ('a');
             SELECT warden.enable_tenancy('public.events');
             CREATE TABLE public.events_b PARTITION OF public.events FOR VALUES IN ('b');
             -- SCD2: synchronous, deferred, tenant-isolated deferred
             CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, tier text);
             SELECT warden.scd2_track('public.customers', ARRAY['id']);
             CREATE TABLE public.prices (id bigint PRIMARY KEY, amount numeric);
             SELECT warden.scd2_track('public.prices', ARRAY['id'], deferred => true);
             CREATE TABLE public.seats (id bigint PRIMARY KEY, tenant text NOT NULL, holder text);
             SELECT warden.enable_tenancy('public.seats');
             SELECT warden.scd2_track('public.seats', ARRAY['id'], deferred => true);
             INSERT INTO public.customers VALUES (1, 'a', 'gold');
             INSERT INTO public.prices VALUES (1, 9.99);",
        )
        .unwrap();
    // pg_warden's own tables, the ones it created (histories, queues) and
    // the partitions whose row security it set up, as "schema.name"
    let ours: Vec<String> = admin
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND (n.nspname = 'warden'
                     OR c.oid IN (SELECT history FROM warden.scd2_registry UNION SELECT queue FROM warden.scd2_registry)
                     OR (c.relispartition AND pg_partition_root(c.oid) IN (SELECT table_name FROM warden.tenant_tables)))",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        ours.iter().any(|t| t.ends_with("_history_queue")),
        "{ours:?}"
    );
    assert!(ours.iter().any(|t| t == "public.events_b"), "{ours:?}");

    let mut tx = admin.transaction().unwrap();
    // splinter: a `set local search_path` line, then one query
    let (set_line, query) = splinter.split_once(';').unwrap();
    tx.batch_execute(set_line).unwrap();
    let rows = tx.query(query.trim().trim_end_matches(';'), &[]).unwrap();
    tx.rollback().unwrap();
    let mut findings = Vec::new();
    for r in &rows {
        let name: String = r.get("name");
        let detail: String = r.get("detail");
        let metadata: serde_json_value::Value = r.get("metadata");
        findings.push((name, detail, metadata.0));
    }
    for (name, detail, meta) in &findings {
        eprintln!("splinter: {name}: {detail} {meta}");
    }
    let named_ours: Vec<&(String, String, String)> = findings
        .iter()
        // statistics-based, not a property of the schema (splinter's README)
        .filter(|(name, _, _)| name != "unused_index")
        .filter(|(_, detail, meta)| {
            let object = |key: &str| {
                meta.split(&format!("\"{key}\": \""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            let table = format!("{}.{}", object("schema"), object("name"));
            object("schema") == "warden"
                || ours.contains(&table)
                || detail.contains("warden_tenant")
                || detail.contains("`warden.")
        })
        .collect();
    assert!(
        named_ours.is_empty(),
        "splinter names objects pg_warden created: {named_ours:#?}"
    );
}

/// `metadata` as text: the postgres crate's jsonb needs a feature this
/// crate does not enable, so read it through its text form.
mod serde_json_value {
    use postgres::types::{FromSql, Type};

    pub struct Value(pub String);

    impl<'a> FromSql<'a> for Value {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            // jsonb binary: a version byte, then the text
            let text = raw.strip_prefix(&[1u8]).unwrap_or(raw);
            Ok(Value(String::from_utf8_lossy(text).into_owned()))
        }

        fn accepts(ty: &Type) -> bool {
            *ty == Type::JSONB || *ty == Type::JSON
        }
    }
}
