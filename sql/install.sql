-- What CREATE EXTENSION gives a psql user: the schema, the roles, the
-- functions with their comments, and nothing callable by PUBLIC.
CREATE EXTENSION pg_warden;

SELECT extname, extversion, extrelocatable, n.nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'pg_warden';

SELECT rolname, rolcanlogin, rolsuper, rolbypassrls
  FROM pg_roles WHERE rolname IN ('warden_admin', 'warden_app') ORDER BY rolname;

-- public API and internal helpers, with their volatility and parallel safety
SELECT p.oid::regprocedure AS function, p.provolatile AS volatility, p.proparallel AS parallel,
       p.prosecdef AS security_definer
  FROM pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
 ORDER BY p.oid::regprocedure::text;

-- SECURITY DEFINER only with search_path pinned to pg_catalog, pg_temp
SELECT p.oid::regprocedure AS definer_without_fixed_search_path
  FROM pg_proc p WHERE p.pronamespace = 'warden'::regnamespace AND p.prosecdef
   AND NOT COALESCE(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);

-- internal functions (named _...) are executable by nobody but the
-- extension owner and superusers, whatever role asks (docs/security.md, rule 8)
SELECT p.oid::regprocedure AS internal_function, r.rolname AS executable_by
  FROM pg_proc p CROSS JOIN pg_roles r
 WHERE p.pronamespace = 'warden'::regnamespace AND p.proname LIKE '\_%'
   AND r.oid <> p.proowner AND NOT r.rolsuper
   AND has_function_privilege(r.oid, p.oid, 'EXECUTE');

-- every object in the schema has a comment
SELECT p.oid::regprocedure::text AS uncommented
  FROM pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
   AND obj_description(p.oid, 'pg_proc') IS NULL
UNION ALL
SELECT c.oid::regclass::text
  FROM pg_class c WHERE c.relnamespace = 'warden'::regnamespace AND c.relkind <> 'c'
   AND obj_description(c.oid, 'pg_class') IS NULL
UNION ALL
-- composite types carry their comment on the type
SELECT t.oid::regtype::text
  FROM pg_type t WHERE t.typnamespace = 'warden'::regnamespace AND t.typtype = 'c'
   AND t.typrelid IN (SELECT c.oid FROM pg_class c WHERE c.relkind = 'c')
   AND obj_description(t.oid, 'pg_type') IS NULL;

-- nothing is executable by PUBLIC
SELECT p.oid::regprocedure AS public_can_execute
  FROM pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE');

-- who may call what
SELECT p.oid::regprocedure AS function,
       has_function_privilege('warden_app', p.oid, 'EXECUTE') AS app,
       has_function_privilege('warden_admin', p.oid, 'EXECUTE') AS admin
  FROM pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
 ORDER BY p.oid::regprocedure::text;

SELECT has_table_privilege('warden_admin', 'warden.worker_status', 'SELECT') AS admin_reads_status,
       has_table_privilege('warden_app', 'warden.worker_status', 'SELECT') AS app_reads_status;

-- settings pg_warden defines (the warden. prefix is reserved)
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'warden.%'
   AND name <> 'warden.enable_fault_injection' ORDER BY name;
SET warden.no_such_setting = 'x';

-- pg_warden's own schema passes its own lint (a fresh database: no findings at all)
SELECT name, level, metadata->>'object' AS object FROM warden.lint();
