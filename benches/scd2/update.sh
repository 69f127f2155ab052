# Sourced by benches/run: single-row UPDATEs of a tracked table (every
# update changes a tracked column) against the same table untracked and
# against a typical hand-written PL/pgSQL history trigger, with
# synchronous_commit on and off, and the same table tracked with
# deferred => true (its queue applied by the worker). pgbench, $CLIENTS
# clients.
scd2_update_setup() {
  local psql_cmd=("$@")
  "${psql_cmd[@]}" -q <<'SQL' >/dev/null
SELECT warden.scd2_untrack(source) FROM warden.scd2_tables WHERE source::text IN ('upd_tracked', 'upd_deferred');
DROP TABLE IF EXISTS upd_tracked_history, upd_plpgsql_history, upd_deferred_history;
DROP TABLE IF EXISTS upd_plain, upd_tracked, upd_plpgsql, upd_deferred;
CREATE TABLE upd_plain (id int PRIMARY KEY, name text NOT NULL, tier text, n int NOT NULL);
INSERT INTO upd_plain SELECT i, 'customer ' || i, 'tier ' || i % 5, 0 FROM generate_series(1, 100000) i;
CREATE TABLE upd_tracked (LIKE upd_plain INCLUDING ALL);
INSERT INTO upd_tracked SELECT * FROM upd_plain;
CREATE TABLE upd_plpgsql (LIKE upd_plain INCLUDING ALL);
INSERT INTO upd_plpgsql SELECT * FROM upd_plain;
SELECT warden.scd2_track('upd_tracked', ARRAY['id']);
CREATE TABLE upd_deferred (LIKE upd_plain INCLUDING ALL);
INSERT INTO upd_deferred SELECT * FROM upd_plain;
SELECT warden.scd2_track('upd_deferred', ARRAY['id'], deferred => true);
CREATE TABLE upd_plpgsql_history (id int NOT NULL, name text, tier text, n int,
  valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, is_current boolean NOT NULL);
CREATE UNIQUE INDEX ON upd_plpgsql_history (id) WHERE is_current;
CREATE INDEX ON upd_plpgsql_history (id, valid_from);
INSERT INTO upd_plpgsql_history SELECT *, now(), 'infinity', true FROM upd_plpgsql;
CREATE OR REPLACE FUNCTION upd_plpgsql_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (OLD.name, OLD.tier, OLD.n) IS DISTINCT FROM (NEW.name, NEW.tier, NEW.n) THEN
    UPDATE upd_plpgsql_history SET valid_to = now(), is_current = false WHERE id = OLD.id AND is_current;
    INSERT INTO upd_plpgsql_history VALUES (NEW.id, NEW.name, NEW.tier, NEW.n, now(), 'infinity', true);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER history AFTER UPDATE ON upd_plpgsql FOR EACH ROW EXECUTE FUNCTION upd_plpgsql_trigger();
VACUUM ANALYZE upd_plain, upd_tracked, upd_plpgsql, upd_tracked_history, upd_plpgsql_history, upd_deferred, upd_deferred_history;
SQL
}

# Prints "<changes still queued> <ms to apply them>" for upd_deferred.
scd2_update_drain() {
  local psql_cmd=("$@")
  "${psql_cmd[@]}" -At <<'SQL'
SELECT count(*) AS queued FROM upd_deferred_history_queue \gset
SELECT clock_timestamp() AS started \gset
SELECT warden.scd2_flush('upd_deferred') \g /dev/null
SELECT :'queued' || ' ' || round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz) * 1000);
SQL
}
