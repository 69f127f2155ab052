//! Install-time SQL that belongs to no single subsystem: the roles
//! (bootstrap, before everything) and the privileges (finalize, after
//! everything). CREATE EXTENSION creates the schema `warden` itself, from
//! the control file.

use pgrx::prelude::*;

extension_sql!(
    r#"
-- Roles are cluster-wide and outlive the extension; create them only once.
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'warden_admin') THEN
    CREATE ROLE warden_admin NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'warden_app') THEN
    CREATE ROLE warden_app NOLOGIN;
  END IF;
  -- reached only through warden.break_glass(), which records why
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'warden_break_glass') THEN
    CREATE ROLE warden_break_glass NOLOGIN BYPASSRLS;
    GRANT warden_admin TO warden_break_glass;
  END IF;
END
$roles$;
"#,
    name = "bootstrap_roles",
    bootstrap,
);

extension_sql!(
    r#"
COMMENT ON SCHEMA warden IS 'pg_warden: tenant context, keyring, secrets, audit chain, SCD2 and outbox';

-- Nothing is callable by PUBLIC: applications get warden_app, operators
-- warden_admin. (Default privileges cannot revoke PUBLIC's EXECUTE per
-- schema: an upgrade script revokes it from each function it adds.)
-- Internal functions (named _...) are granted to nobody: public functions
-- reach them through the function manager (docs/security.md, rule 8).
REVOKE ALL ON SCHEMA warden FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA warden FROM PUBLIC;
GRANT USAGE ON SCHEMA warden TO warden_admin, warden_app;

GRANT EXECUTE ON FUNCTION
  warden.set_tenant(text),
  warden.current_tenant(),
  warden.current_tenant_bigint(),
  warden.current_tenant_integer(),
  warden.current_tenant_uuid(),
  warden.require_tenant()
TO warden_app, warden_admin;

GRANT EXECUTE ON FUNCTION
  warden.encrypt(bytea, text),
  warden.encrypt(text, text),
  warden.encrypt(jsonb, text),
  warden.decrypt(bytea, text),
  warden.decrypt_text(bytea, text),
  warden.decrypt_jsonb(bytea, text),
  warden.reencrypt(bytea, text),
  warden.blind_index(text, text)
TO warden_app, warden_admin;

GRANT EXECUTE ON FUNCTION warden.set_tenant_token(text) TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.hash_diff(record),
  warden.hash_diff(record, text[]),
  warden.hash_diff_values("any"),
  warden.dv2_hash(text[]),
  warden.dv2_hash_diff(text[]),
  warden.dv2_hash(text[], text, text),
  warden.dv2_hash_diff(text[], text, text)
TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.enable_tenancy(regclass, name),
  warden.disable_tenancy(regclass),
  warden.lint(),
  warden.tenant_isolation_selftest(regclass, name),
  warden.tenant_token(text, interval)
TO warden_admin;
GRANT SELECT ON warden.tenant_tables TO warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.scd2_track(regclass, text[], text[], boolean),
  warden.scd2_untrack(regclass, boolean),
  warden.scd2_flush(regclass),
  warden.scd2_merge(regclass, regclass, timestamptz, boolean)
TO warden_admin;
GRANT EXECUTE ON FUNCTION warden.scd2_as_of(anyelement, timestamptz) TO warden_app, warden_admin;
GRANT SELECT ON warden.scd2_tables, warden.scd2_registry TO warden_admin;

GRANT EXECUTE ON FUNCTION
  warden.rotate_master_key(),
  warden.rotate_data_key(text, text),
  warden.shred_tenant(text)
TO warden_admin;
GRANT SELECT ON warden.key_catalog TO warden_admin;
GRANT SELECT (key_id, tenant, purpose, root_version, state, created_at, retired_at, shredded_at)
  ON warden.keys TO warden_admin;

GRANT EXECUTE ON FUNCTION warden.worker_status_snapshot() TO warden_admin;

GRANT EXECUTE ON FUNCTION
  warden.audit_emit(text, jsonb, boolean, boolean),
  warden.set_actor(text, text),
  warden.set_correlation_id(text)
TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.audit_verify(text, bigint),
  warden.audit_public_key(),
  warden.audit_digest(text),
  warden.audit_verify_digest(jsonb),
  warden.audit_export(text, bigint),
  warden.audit_status_snapshot(),
  warden.audit_prune(text, timestamptz),
  warden.audit_redact(text, bigint, text),
  warden.break_glass(text),
  warden.audit_table(regclass, text[], text[]),
  warden.audit_untable(regclass)
TO warden_admin;
GRANT SELECT ON warden.audited_tables TO warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.publish(text, jsonb, text, jsonb, text, interval),
  warden.publish_batch(text, jsonb[], text[])
TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.subscribe(text, text, regprocedure, integer, interval, interval, boolean, interval, jsonb, regrole),
  warden.unsubscribe(text),
  warden.pause(text),
  warden.resume(text)
TO warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.claim(text, integer, interval, uuid[]),
  warden.ack(uuid[]),
  warden.nack(uuid, text, interval),
  warden.extend(uuid, interval)
TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.replay_dead_letters(bigint[]),
  warden.purge_dead_letters(timestamptz),
  warden.outbox_health(),
  warden.outbox_last_delivered_at(integer)
TO warden_admin;
GRANT SELECT ON warden.outbox_subscriptions, warden.dead_letters,
  warden.outbox_stats, warden.outbox_blocked_keys TO warden_admin;
-- the views are security_invoker: row-level security scopes what an
-- operator counts to the current tenant (all with BYPASSRLS)
GRANT SELECT ON warden.outbox_deliveries, warden.outbox_leases, warden.outbox_messages TO warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.secret_set(text, text, integer, timestamptz, text),
  warden.secret_set(text, jsonb, integer, timestamptz, text),
  warden.secret_get(text, integer),
  warden.secret_get_jsonb(text, integer),
  warden.secret_delete(text, integer),
  warden.secret_undelete(text, integer),
  warden.secret_destroy(text, integer),
  warden.webhook_sign(text, bytea, text, text, timestamptz),
  warden.webhook_verify(text, bytea, text, text, interval, text, timestamptz),
  warden.secret_versions()
TO warden_app, warden_admin;
-- the catalog shows the current tenant's versions, never a value; the
-- tables themselves are pg_warden's alone
GRANT SELECT ON warden.secret_catalog TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.hmac_sha256(bytea, bytea),
  warden.timing_safe_equal(bytea, bytea),
  warden.hash_prefix(text, integer)
TO warden_app, warden_admin;
GRANT SELECT ON warden.audit_status, warden.audit_chains TO warden_admin;
-- row-level security: an application reads its own tenant's chain
GRANT SELECT ON warden.audit_log, warden.audit_checkpoints TO warden_app, warden_admin;
GRANT SELECT ON warden.worker_status TO warden_admin;

-- pg_warden's own per-tenant table uses its own policies (superusers,
-- which pg_warden's internal queries run as, bypass them).
SELECT warden.enable_tenancy('warden.keys');
SELECT warden.enable_tenancy('warden.audit_log');
SELECT warden.enable_tenancy('warden.audit_inbox');
SELECT warden.enable_tenancy('warden.audit_checkpoints');
COMMENT ON INDEX warden.audit_checkpoints_tenant_idx IS 'Finds a tenant''s checkpoints (made by enable_tenancy).';
COMMENT ON INDEX warden.audit_log_tenant_idx IS 'Finds a tenant''s chain (made by enable_tenancy).';
-- the sequencer reads the inbox in id order only; an index on tenant
-- would cost every audit_emit a btree insert for nothing
DROP INDEX warden.audit_inbox_tenant_idx;
-- the outbox's messages likewise: read by id only, by pg_warden
SELECT warden.enable_tenancy('warden.outbox_messages');
DROP INDEX warden.outbox_messages_tenant_idx;
SELECT warden.enable_tenancy('warden.outbox_deliveries');
DROP INDEX warden.outbox_deliveries_tenant_idx;
SELECT warden.enable_tenancy('warden.outbox_leases');
DROP INDEX warden.outbox_leases_tenant_idx;
SELECT warden.enable_tenancy('warden.dead_letters');
COMMENT ON INDEX warden.dead_letters_tenant_idx IS 'Finds a tenant''s dead letters (made by enable_tenancy).';

-- the secrets store: isolated by its own policies too (read by pg_warden
-- only, as superuser; the primary keys lead with the tenant, so no index
-- is added)
SELECT warden.enable_tenancy('warden.secret_names');
SELECT warden.enable_tenancy('warden.secrets');

-- Start this database's worker as soon as CREATE EXTENSION commits.
SELECT warden._launcher_register_database();
"#,
    name = "finalize_privileges",
    finalize,
);
