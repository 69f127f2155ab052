//! `warden._outbox_topic_matches(pattern, topic)`: the fan-out's match
//! of a subscription's pattern against a message's topic, by the rules
//! in `warden_core::outbox` (internal: called by pg_warden's own SQL).

use pgrx::prelude::*;
use warden_core::outbox::Pattern;

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn _outbox_topic_matches(pattern: &str, topic: &str) -> bool {
    Pattern::parse(pattern).is_ok_and(|p| p.matches(topic))
}

extension_sql!(
    r#"
CREATE FUNCTION warden._outbox_topic_matches(pattern text, topic text) RETURNS boolean
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', '_outbox_topic_matches_wrapper';
COMMENT ON FUNCTION warden._outbox_topic_matches(text, text) IS
  'Internal: whether a subscription pattern (* one segment, # the rest) matches a topic.';
"#,
    name = "outbox_topic_match",
    requires = ["outbox_tables"],
);
