\set t random(1, 1000)
\set k random(0, 999)
BEGIN;
SELECT warden.set_tenant('t' || :t);
SELECT payload FROM rls_warden WHERE id = :t * 1000 + :k;
END;
