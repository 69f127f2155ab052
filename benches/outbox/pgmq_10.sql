SELECT coalesce(array_agg(msg_id), '{}') AS ids FROM bench_pgmq_read(30, 10) \gset
SELECT bench_pgmq_delete(:ids::bigint[]);
