\set k random(0, 999)
BEGIN;
SELECT warden.set_tenant_token('@TOKEN@');
SELECT payload FROM rls_warden WHERE id = 1000 + :k;
END;
