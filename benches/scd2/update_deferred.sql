\set id random(1, 100000)
UPDATE upd_deferred SET n = n + 1 WHERE id = :id;
