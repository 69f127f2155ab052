BEGIN;
INSERT INTO bench_notify (payload) VALUES ('{"order": 42, "total": 99.5, "currency": "EUR"}');
SELECT pg_notify('bench_orders', '42');
COMMIT;
