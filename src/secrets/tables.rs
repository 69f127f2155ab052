//! The secrets store's tables and its catalog. Values are stored only as
//! envelopes under the tenant's data key, written encrypted in the one
//! INSERT that creates a version (no plaintext tuple ever reaches the
//! heap or the WAL). Application and admin roles have no rights on the
//! tables: they go through the functions, and read the catalog view,
//! which shows the current tenant's versions and never a value.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TABLE warden.secret_names (
    tenant         text NOT NULL,
    name           text NOT NULL,
    latest_version integer NOT NULL,
    PRIMARY KEY (tenant, name)
);
COMMENT ON TABLE warden.secret_names IS
  'Each secret''s latest version number (never reused, also after destroy): the row check-and-set writers queue on. Internal.';
COMMENT ON INDEX warden.secret_names_pkey IS 'One row per tenant and secret name.';

CREATE TABLE warden.secrets (
    tenant       text NOT NULL,
    name         text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    ciphertext   bytea,
    is_json      boolean NOT NULL,
    fingerprint  bytea NOT NULL,
    key_id       integer NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    expires_at   timestamptz,
    deleted_at   timestamptz,
    destroyed_at timestamptz,
    PRIMARY KEY (tenant, name, version),
    CHECK ((destroyed_at IS NULL) = (ciphertext IS NOT NULL))
);
COMMENT ON TABLE warden.secrets IS
  'Secret versions: the value as an envelope under the tenant''s data key (associated data: name and version), NULL once destroyed. Internal: use warden.secret_* and warden.secret_catalog.';
COMMENT ON COLUMN warden.secrets.fingerprint IS
  'HMAC-SHA256 of the value under the tenant''s audit key: equal values of one tenant have equal fingerprints; nobody without the key can test a guess.';
COMMENT ON COLUMN warden.secrets.key_id IS 'The data key the value was encrypted under (warden.keys).';
COMMENT ON INDEX warden.secrets_pkey IS 'A secret''s versions.';
-- no statistics on what names a tenant's secrets: a planner estimate
-- must not hand one tenant's names to another's leaky operator
ALTER TABLE warden.secrets ALTER COLUMN tenant SET STATISTICS 0, ALTER COLUMN name SET STATISTICS 0,
  ALTER COLUMN description SET STATISTICS 0, ALTER COLUMN created_by SET STATISTICS 0;
ALTER TABLE warden.secret_names ALTER COLUMN tenant SET STATISTICS 0, ALTER COLUMN name SET STATISTICS 0;
-- secrets are data: dumped (encrypted, with warden.keys) and restored
SELECT pg_catalog.pg_extension_config_dump('warden.secret_names', '');
SELECT pg_catalog.pg_extension_config_dump('warden.secrets', '');

-- the catalog reads the table with pg_warden's rights (application roles
-- have none on it), filtered to the current tenant here, not by policies
CREATE FUNCTION warden.secret_versions()
RETURNS TABLE (tenant text, name text, version integer, state text, fingerprint text, description text,
               created_at timestamptz, created_by text, expires_at timestamptz, deleted_at timestamptz,
               destroyed_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
SELECT s.tenant, s.name, s.version,
       CASE WHEN s.destroyed_at IS NOT NULL THEN 'destroyed'
            WHEN s.deleted_at IS NOT NULL THEN 'deleted'
            WHEN s.expires_at <= pg_catalog.now() THEN 'expired'
            ELSE 'live' END,
       pg_catalog.encode(s.fingerprint, 'hex'),
       s.description, s.created_at, s.created_by, s.expires_at, s.deleted_at, s.destroyed_at
  FROM warden.secrets s
 WHERE s.tenant OPERATOR(pg_catalog.=) warden.current_tenant()
$$;
COMMENT ON FUNCTION warden.secret_versions() IS
  'The rows of warden.secret_catalog: the current tenant''s secret versions, never a value.';
CREATE VIEW warden.secret_catalog WITH (security_barrier = true) AS
SELECT * FROM warden.secret_versions();
COMMENT ON VIEW warden.secret_catalog IS
  'The current tenant''s secret versions (state live, deleted, destroyed or expired; the value''s keyed fingerprint); never a value. No tenant set: no rows.';
"#,
    name = "secrets_tables",
    requires = ["tenancy_context_functions"],
);
