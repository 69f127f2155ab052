\set t random(1, 1000)
\set k random(0, 999)
BEGIN;
SELECT set_config('app.tenant', 't' || :t, true);
UPDATE rls_plain SET n = n + 1 WHERE tenant = 't' || :t AND id = :t * 1000 + :k;
END;
