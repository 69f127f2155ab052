\set id random(1, 1000)
BEGIN;
SELECT 't' || :id;
SELECT 1;
END;
