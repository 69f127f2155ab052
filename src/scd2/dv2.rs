//! Data Vault 2.0 hash keys and hash diffs, the way existing warehouses
//! compute them: each value `upper(trim(v))`, NULL or blank replaced by a
//! placeholder ('' by default; AutomateDV's is '^^'), joined with '||',
//! hashed with MD5 (default) or SHA-256. Written in SQL on purpose: the
//! result must match what `UPPER()`/`TRIM()`/`MD5()` give in the same
//! database (locale-dependent upper-casing included), which a Rust
//! reimplementation would not.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE FUNCTION warden.dv2_hash(VARIADIC cols text[]) RETURNS bytea
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $fn$
  SELECT CASE WHEN pg_catalog.count(CASE WHEN pg_catalog.btrim(c) OPERATOR(pg_catalog.=) '' THEN NULL ELSE c END) OPERATOR(pg_catalog.=) 0 THEN NULL
              ELSE pg_catalog.decode(pg_catalog.md5(pg_catalog.string_agg(
                     pg_catalog.upper(pg_catalog.btrim(COALESCE(c, ''))), '||' ORDER BY n)), 'hex') END
    FROM pg_catalog.unnest(cols) WITH ORDINALITY AS u(c, n)
$fn$;

CREATE FUNCTION warden.dv2_hash_diff(VARIADIC cols text[]) RETURNS bytea
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $fn$
  SELECT pg_catalog.decode(pg_catalog.md5(pg_catalog.string_agg(
           pg_catalog.upper(pg_catalog.btrim(COALESCE(c, ''))), '||' ORDER BY n)), 'hex')
    FROM pg_catalog.unnest(cols) WITH ORDINALITY AS u(c, n)
$fn$;

CREATE FUNCTION warden.dv2_hash_diff(cols text[], algorithm text, null_as text DEFAULT '')
RETURNS bytea IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  joined text;
BEGIN
  IF algorithm IS NULL OR NOT (algorithm OPERATOR(pg_catalog.=) 'md5' OR algorithm OPERATOR(pg_catalog.=) 'sha256') THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = pg_catalog.format('unknown Data Vault hash algorithm %L', algorithm),
      HINT = 'Use ''md5'' (the Data Vault 2.0 default) or ''sha256''.';
  END IF;
  IF null_as IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'null_as must not be NULL',
      HINT = 'Pass '''' (Data Vault 2.0) or ''^^'' (AutomateDV''s default).';
  END IF;
  SELECT pg_catalog.string_agg(COALESCE(CASE WHEN pg_catalog.btrim(c) OPERATOR(pg_catalog.=) '' THEN NULL ELSE pg_catalog.upper(pg_catalog.btrim(c)) END, null_as), '||' ORDER BY n)
    INTO joined
    FROM pg_catalog.unnest(cols) WITH ORDINALITY AS u(c, n);
  IF joined IS NULL THEN
    RETURN NULL;
  END IF;
  IF algorithm OPERATOR(pg_catalog.=) 'md5' THEN
    RETURN pg_catalog.decode(pg_catalog.md5(joined), 'hex');
  END IF;
  RETURN pg_catalog.sha256(pg_catalog.convert_to(joined, 'UTF8'));
END
$fn$;

-- A hash key is the hash diff of its parts, and NULL when none is
-- present (the arguments are checked either way).
CREATE FUNCTION warden.dv2_hash(cols text[], algorithm text, null_as text DEFAULT '') RETURNS bytea
IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  digest bytea := warden.dv2_hash_diff(cols, algorithm, null_as);
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.unnest(cols) c WHERE pg_catalog.btrim(c) OPERATOR(pg_catalog.<>) '') THEN
    RETURN NULL;
  END IF;
  RETURN digest;
END
$fn$;

COMMENT ON FUNCTION warden.dv2_hash(text[]) IS
  'Data Vault 2.0 hash key: MD5 of upper(trim(v)) joined with ''||'', NULL or blank as ''''; NULL when every part is NULL or blank.';
COMMENT ON FUNCTION warden.dv2_hash_diff(text[]) IS
  'Data Vault 2.0 hash diff: MD5 of upper(trim(v)) joined with ''||'', NULL or blank as ''''; never NULL for a non-empty list.';
COMMENT ON FUNCTION warden.dv2_hash(text[], text, text) IS
  'Data Vault 2.0 hash key with the algorithm (''md5'' or ''sha256'') and NULL placeholder (AutomateDV: ''^^'') chosen.';
COMMENT ON FUNCTION warden.dv2_hash_diff(text[], text, text) IS
  'Data Vault 2.0 hash diff with the algorithm (''md5'' or ''sha256'') and NULL placeholder (AutomateDV: ''^^'') chosen.';
"#,
    name = "scd2_dv2",
);
