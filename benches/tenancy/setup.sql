-- 1000 tenants x 1000 rows in three copies: isolated by warden.enable_tenancy,
-- unprotected (the application filters by tenant itself), and protected by a
-- hand-written current_setting() policy. Read and written by a
-- non-superuser role, so RLS applies.
DROP TABLE IF EXISTS rls_warden, rls_plain, rls_hand;
DROP ROLE IF EXISTS bench_app;
CREATE ROLE bench_app LOGIN;
GRANT warden_app TO bench_app;
CREATE TABLE rls_warden (id bigint PRIMARY KEY, tenant text NOT NULL, n int NOT NULL DEFAULT 0, payload text);
INSERT INTO rls_warden SELECT t * 1000 + k, 't' || t, 0, md5((t * 1000 + k)::text) FROM generate_series(1, 1000) t, generate_series(0, 999) k;
CREATE TABLE rls_plain AS SELECT * FROM rls_warden;
ALTER TABLE rls_plain ADD PRIMARY KEY (id);
CREATE INDEX ON rls_plain (tenant);
CREATE TABLE rls_hand AS SELECT * FROM rls_warden;
ALTER TABLE rls_hand ADD PRIMARY KEY (id);
CREATE INDEX ON rls_hand (tenant);
SELECT warden.enable_tenancy('rls_warden');
ALTER TABLE rls_hand ENABLE ROW LEVEL SECURITY;
CREATE POLICY hand ON rls_hand USING (tenant = (SELECT current_setting('app.tenant', true)));
GRANT SELECT, UPDATE ON rls_warden, rls_plain, rls_hand TO bench_app;
VACUUM ANALYZE rls_warden, rls_plain, rls_hand;
