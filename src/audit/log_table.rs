//! The audit log, its inbox and their guards.
//!
//! `warden.audit_log` is append-only for every role, the owner and
//! superusers included: BEFORE UPDATE/DELETE/TRUNCATE triggers raise, and
//! they are enabled ALWAYS so `session_replication_role = replica` does
//! not skip them. What cannot be refused (a superuser disabling the
//! trigger, direct heap edits, a restored older copy) is found by
//! verification. `warden.audit_inbox` holds transactional events until the
//! sequencer chains them.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TABLE warden.audit_log (
    chain          text NOT NULL,
    seq            bigint NOT NULL CHECK (seq > 0),
    ts             timestamptz NOT NULL,
    event_type     text NOT NULL,
    tenant         text,
    actor          text,
    actor_kind     text,
    correlation_id text,
    txid           xid8 NOT NULL,
    fields         jsonb,
    fields_salt    bytea,
    payload_digest bytea NOT NULL,
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    redacted_at    timestamptz,
    PRIMARY KEY (chain, seq)
);
CREATE TABLE warden.audit_inbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts             timestamptz NOT NULL,
    event_type     text NOT NULL,
    tenant         text,
    actor          text,
    actor_kind     text,
    correlation_id text,
    txid           xid8 NOT NULL,
    fields         jsonb NOT NULL,
    events         integer CHECK (events > 0)
);
-- written once, read once by the sequencer and deleted: compressing a
-- captured statement's batch costed the writer more than the row itself
ALTER TABLE warden.audit_inbox ALTER COLUMN fields SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('warden.audit_log', '');

CREATE FUNCTION warden._audit_refuse_change() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'audit_refuse_change';
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON warden.audit_log
    FOR EACH ROW EXECUTE FUNCTION warden._audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON warden.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_refuse_change();
ALTER TABLE warden.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE warden.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

COMMENT ON TABLE warden.audit_log IS
  'The tamper-evident audit log: one hash chain per tenant and one named global, seq gapless from 1 per chain (format v1 in the README). Append-only.';
COMMENT ON TABLE warden.audit_inbox IS
  'Events emitted in committed transactions and not chained yet (the sequencer task chains and removes them). Internal.';
COMMENT ON COLUMN warden.audit_inbox.events IS
  'NULL: the row is one event and fields its fields; n: fields is an array of n events'' fields sharing the row''s header (a captured statement''s rows, in the order they changed).';
COMMENT ON INDEX warden.audit_log_pkey IS 'One event per (chain, seq).';
COMMENT ON INDEX warden.audit_inbox_pkey IS 'Inbox rows in arrival order.';
COMMENT ON SEQUENCE warden.audit_inbox_id_seq IS 'Arrival order of inbox rows.';
COMMENT ON FUNCTION warden._audit_refuse_change() IS 'Internal: refuses UPDATE, DELETE and TRUNCATE of warden.audit_log and warden.audit_checkpoints (but for warden.audit_prune and warden.audit_redact).';
COMMENT ON TRIGGER audit_log_append_only ON warden.audit_log IS 'Refuses UPDATE and DELETE, also under session_replication_role = replica.';
COMMENT ON TRIGGER audit_log_no_truncate ON warden.audit_log IS 'Refuses TRUNCATE, also under session_replication_role = replica.';
"#,
    name = "audit_log_table",
);
