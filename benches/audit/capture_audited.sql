\set i random(1, 1000000)
INSERT INTO bench_cap_audited (email, amount, note) VALUES ('user' || (:i)::int || '@example.com', (:i)::int, 'x');
