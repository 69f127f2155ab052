\set t random(1, 1000)
\set k random(0, 999)
BEGIN;
SELECT set_config('app.tenant', 't' || :t, true);
UPDATE rls_hand SET n = n + 1 WHERE id = :t * 1000 + :k;
END;
