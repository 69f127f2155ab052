INSERT INTO bench_queue (payload) VALUES ('{"order": 42}');
DELETE FROM bench_queue WHERE id IN (SELECT id FROM bench_queue ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);
