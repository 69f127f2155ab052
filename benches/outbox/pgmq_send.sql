SELECT bench_pgmq_send('{"order": 42, "total": 99.5, "currency": "EUR"}');
