SELECT coalesce(array_agg(lease), '{}') AS leases FROM warden.claim('bench_pull', 10, '30 seconds', ack => :leases::uuid[]) \gset
