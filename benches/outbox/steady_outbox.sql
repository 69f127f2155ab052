SELECT warden.publish('bench.pull.order', '{"order": 42}');
SELECT coalesce(array_agg(lease), '{}') AS leases FROM warden.claim('bench_pull', 1, '30 seconds') \gset
SELECT warden.ack(:leases::uuid[]);
