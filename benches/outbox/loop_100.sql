SELECT coalesce(array_agg(lease), '{}') AS leases FROM warden.claim('bench_pull', 100, '30 seconds', ack => :leases::uuid[]) \gset
