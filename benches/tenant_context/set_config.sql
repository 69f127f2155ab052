\set id random(1, 1000)
BEGIN;
SELECT set_config('app.tenant', 't' || :id, true);
SELECT current_setting('app.tenant', true);
END;
