INSERT INTO bench_queue (payload) VALUES ('{"order": 42, "total": 99.5, "currency": "EUR"}');
