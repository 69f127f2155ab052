\set id random(1, 1000)
BEGIN;
SELECT warden.set_tenant('t' || :id);
SELECT warden.current_tenant();
END;
