-- a table each transaction writes one row to, so every commit is a real one
DROP TABLE IF EXISTS bench_wake_log;
CREATE UNLOGGED TABLE bench_wake_log (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz DEFAULT now());
