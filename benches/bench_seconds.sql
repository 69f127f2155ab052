-- Seconds one statement takes, measured inside one backend (no client
-- round trips): the timer of the single-session benchmark groups.
CREATE OR REPLACE FUNCTION public.bench_seconds(q text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz;
BEGIN
  t0 := clock_timestamp();
  EXECUTE q;
  RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;
