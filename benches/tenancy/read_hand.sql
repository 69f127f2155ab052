\set t random(1, 1000)
\set k random(0, 999)
BEGIN;
SELECT set_config('app.tenant', 't' || :t, true);
SELECT payload FROM rls_hand WHERE id = :t * 1000 + :k;
END;
