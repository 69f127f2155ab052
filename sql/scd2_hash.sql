-- warden.hash_diff and the Data Vault 2.0 hashes as an application role
-- sees them. Most checks print t: the expected value is in the query.
CREATE ROLE regress_scd2_app LOGIN;
GRANT warden_app TO regress_scd2_app;
GRANT CREATE ON SCHEMA public TO regress_scd2_app;
SET ROLE regress_scd2_app;

-- the README's known answer: row('a', NULL, '') is
-- SHA-256("pg_warden.hash_diff.v1\0" 01 00000019 00000001 61 00 01 00000019 00000000)
SELECT encode(warden.hash_diff(ROW('a'::text, NULL::text, ''::text)), 'hex') AS known_answer;
SELECT warden.hash_diff(ROW('a'::text, NULL::text, ''::text))
     = sha256('\x70675f77617264656e2e686173685f646966662e763100'::bytea
              || '\x0100000019000000016100010000001900000000'::bytea) AS matches_spec;

-- NULL, '' and 'NULL' differ; shifted delimiters do not collide
SELECT count(DISTINCT h) AS distinct_of_3 FROM (VALUES
  (warden.hash_diff(ROW(NULL::text, 'x'))),
  (warden.hash_diff(ROW(''::text, 'x'))),
  (warden.hash_diff(ROW('NULL'::text, 'x')))) v(h);
SELECT warden.hash_diff(ROW('ab', 'c')) <> warden.hash_diff(ROW('a', 'bc')) AS ab_c_vs_a_bc,
       warden.hash_diff(ROW('a|', 'b')) <> warden.hash_diff(ROW('a', '|b')) AS pipes;

-- trailing NULLs do not count; inner ones do
SELECT warden.hash_diff(ROW(1, NULL::text, NULL::date)) = warden.hash_diff(ROW(1)) AS trailing_nulls_ignored,
       warden.hash_diff(ROW(NULL::int, 1)) <> warden.hash_diff(ROW(1)) AS leading_null_counts;

-- equal by the type's equality, equal hash
SELECT warden.hash_diff(ROW('-0'::float8)) = warden.hash_diff(ROW('0'::float8)) AS float8_zero,
       warden.hash_diff(ROW('NaN'::float4)) = warden.hash_diff(ROW('NaN'::float4)) AS float4_nan,
       warden.hash_diff(ROW(1.0::numeric)) = warden.hash_diff(ROW(1.00::numeric)) AS numeric_scale,
       warden.hash_diff(ROW('1 day'::interval)) = warden.hash_diff(ROW('24 hours'::interval)) AS interval_linear,
       warden.hash_diff(ROW('a'::char(3))) = warden.hash_diff(ROW('a  '::char(5))) AS bpchar_padding,
       warden.hash_diff(ROW(1::int2)) = warden.hash_diff(ROW(1::int8)) AS int_family,
       warden.hash_diff(ROW('x'::varchar)) = warden.hash_diff(ROW('x'::text)) AS text_family;
-- and different values differ
SELECT warden.hash_diff(ROW(1.5::numeric)) <> warden.hash_diff(ROW(1.05::numeric)) AS numeric_values,
       warden.hash_diff(ROW('1 day'::interval)) <> warden.hash_diff(ROW('1 day 1 microsecond'::interval)) AS interval_values,
       warden.hash_diff(ROW(1::int4)) <> warden.hash_diff(ROW('1'::text)) AS int_vs_text,
       warden.hash_diff(ROW(ARRAY[1, NULL])) <> warden.hash_diff(ROW(ARRAY[1])) AS array_nulls,
       warden.hash_diff(ROW('[0:1]={1,2}'::int[])) <> warden.hash_diff(ROW('{1,2}'::int[])) AS array_bounds,
       warden.hash_diff(ROW(ROW(1, 'a'))) <> warden.hash_diff(ROW(1, 'a')) AS nesting;

-- the same values under other session settings hash the same
CREATE TABLE public.hash_sample (
  id int, at timestamptz, local_at timestamp, day date, span interval, amount numeric,
  ratio float8, name text, doc jsonb, uid uuid, flag boolean, tags text[], blob bytea);
INSERT INTO public.hash_sample VALUES
  (1, '2026-03-29 01:30:00+00', '2026-03-29 01:30:00', '2026-03-29', '1 year 2 mons 3 days 04:05:06.789',
   12345.6789, 0.1, 'Zoë Ångström', '{"b": [1, 2.50], "a": "é"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   true, ARRAY['x', NULL, 'ÿ'], '\x00ff'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE public.hash_baseline AS SELECT id, warden.hash_diff(s) AS h FROM public.hash_sample s;
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'Pacific/Chatham';
SET IntervalStyle = 'iso_8601';
SET extra_float_digits = -3;
SET lc_monetary = 'C';
SET client_encoding = 'LATIN1';
SELECT count(*) AS same_under_other_settings
  FROM public.hash_sample s JOIN public.hash_baseline b USING (id)
 WHERE warden.hash_diff(s) = b.h;
RESET client_encoding;
RESET DateStyle;
RESET TimeZone;
RESET IntervalStyle;
RESET extra_float_digits;
RESET lc_monetary;

-- adding a nullable column changes no hash; dropped columns are skipped
ALTER TABLE public.hash_sample ADD COLUMN note text;
SELECT count(*) AS same_after_add_column
  FROM public.hash_sample s JOIN public.hash_baseline b USING (id)
 WHERE warden.hash_diff(s) = b.h;
ALTER TABLE public.hash_sample DROP COLUMN note;
SELECT count(*) AS same_after_drop_column
  FROM public.hash_sample s JOIN public.hash_baseline b USING (id)
 WHERE warden.hash_diff(s) = b.h;

-- a column list: order matters, names are exact
SELECT warden.hash_diff(s, ARRAY['name', 'amount']) <> warden.hash_diff(s, ARRAY['amount', 'name']) AS order_matters,
       warden.hash_diff(s, ARRAY['id']) = warden.hash_diff(ROW(s.id)) AS subset_is_row_of_subset
  FROM public.hash_sample s WHERE id = 1;
SELECT warden.hash_diff(s, ARRAY['nope']) FROM public.hash_sample s WHERE id = 1;
SELECT warden.hash_diff(s, ARRAY[]::text[]) FROM public.hash_sample s WHERE id = 1;
SELECT warden.hash_diff(s, ARRAY['id', 'id']) FROM public.hash_sample s WHERE id = 1;
SELECT warden.hash_diff(s, ARRAY['id', NULL]) FROM public.hash_sample s WHERE id = 1;
-- STRICT
SELECT warden.hash_diff(NULL::record) IS NULL AS null_row;

-- a type without a binary send form is refused, with what to do
SELECT warden.hash_diff(ROW(makeaclitem('postgres'::regrole, 'postgres'::regrole, 'SELECT', false)));

-- Data Vault 2.0: upper(trim(v)), '||', NULL or blank as '', MD5 by default
SELECT encode(warden.dv2_hash(' acme ', '42'), 'hex') = '093268a3e341662aa1818b7815f34d3e' AS md5_key,
       encode(warden.dv2_hash('Acme'), 'hex') = '3fbeb6a5a3e2f60d2a9c015a6f527a08' AS single,
       encode(warden.dv2_hash_diff('acme', NULL), 'hex') = '79201f64b2633a8f15507c3540a2e53d' AS null_as_empty,
       encode(warden.dv2_hash_diff(NULL, NULL), 'hex') = '7d010443693eec253a121e2aa2ba177c' AS all_null_diff,
       warden.dv2_hash(NULL, '  ') IS NULL AS all_null_key_is_null;
SELECT encode(warden.dv2_hash(ARRAY['acme', '42'], 'sha256'), 'hex')
         = '00d942562ea0cb957c6e7235f8a763fdd4fbdae923ee0b37dd38ab07865096f2' AS sha256_key,
       encode(warden.dv2_hash_diff(ARRAY[NULL, 'acme'], 'md5', '^^'), 'hex')
         = 'fef7f5667198944ee96f7682a05a5a09' AS automatedv_placeholder,
       encode(warden.dv2_hash(ARRAY['acme', ''], 'sha256', '^^'), 'hex')
         = '2b97c789cc6f6e26927989230813244f6224cac92f689b26bd333cd01d759b4d' AS blank_is_null;
SELECT warden.dv2_hash(ARRAY['a'], 'sha1');
SELECT warden.dv2_hash(ARRAY['a'], 'md5', NULL);

RESET ROLE;
DROP TABLE public.hash_sample, public.hash_baseline;
REVOKE CREATE ON SCHEMA public FROM regress_scd2_app;
DROP ROLE regress_scd2_app;
