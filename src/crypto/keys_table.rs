//! The keyring's tables. Data keys are stored only wrapped under the root
//! key; `warden.key_catalog` shows everything but the key material.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TABLE warden.keys (
    key_id       integer PRIMARY KEY CHECK (key_id > 0),
    tenant       text NOT NULL,
    purpose      text NOT NULL CHECK (purpose IN ('data', 'blind_index', 'audit', 'token', 'audit_signing')),
    root_version integer NOT NULL CHECK (root_version > 0),
    wrapped      bytea,
    state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'shredded')),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    retired_at   timestamptz,
    shredded_at  timestamptz,
    CHECK ((state = 'shredded') = (wrapped IS NULL))
);
CREATE SEQUENCE warden.keys_key_id_seq AS integer OWNED BY warden.keys.key_id;
CREATE UNIQUE INDEX keys_one_active_per_tenant_purpose ON warden.keys (tenant, purpose) WHERE state = 'active';
CREATE INDEX keys_tenant ON warden.keys (tenant);

CREATE TABLE warden.keyring_check (
    root_version integer PRIMARY KEY CHECK (root_version > 0),
    check_value  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);

SELECT pg_catalog.pg_extension_config_dump('warden.keys', '');
SELECT pg_catalog.pg_extension_config_dump('warden.keys_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.keyring_check', '');

-- security_invoker: an operator sees the keys RLS lets them see (all of
-- them with BYPASSRLS, the current tenant's otherwise), never key bytes.
CREATE VIEW warden.key_catalog WITH (security_invoker = true) AS
SELECT key_id, tenant, purpose, root_version, state, created_at, retired_at, shredded_at
  FROM warden.keys;

COMMENT ON TABLE warden.keys IS
  'Data keys, one active per (tenant, purpose), stored only wrapped (AES-256-GCM) under the root key. Internal: use warden.key_catalog.';
COMMENT ON TABLE warden.keyring_check IS
  'Key check values of the root key versions in use: detect a wrong or missing root key before any decryption. Internal.';
COMMENT ON SEQUENCE warden.keys_key_id_seq IS 'Key ids of warden.keys (they appear in every envelope).';
COMMENT ON INDEX warden.keys_pkey IS 'Key ids are unique (they are written into every envelope).';
COMMENT ON INDEX warden.keys_one_active_per_tenant_purpose IS 'At most one active key per (tenant, purpose); concurrent first uses agree on one.';
COMMENT ON INDEX warden.keys_tenant IS 'Finds a tenant''s keys for rotation and shredding.';
COMMENT ON INDEX warden.keyring_check_pkey IS 'One key check value per root key version.';
COMMENT ON VIEW warden.key_catalog IS
  'Data keys without key material: id, tenant, purpose, root key version, state (active, retired, shredded) and dates.';
"#,
    name = "keys_table",
);
