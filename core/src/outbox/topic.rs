//! Topics and subscription patterns.
//!
//! A topic is dot-separated segments of `[A-Za-z0-9_-]` (`orders.eu.created`).
//! A pattern is the same with two wildcards as whole segments: `*` matches
//! exactly one segment, `#` (last segment only) matches the rest: zero or
//! more segments, as in AMQP topic exchanges (`orders.#` matches `orders`,
//! `orders.created` and `orders.eu.created`).

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_BYTES: usize = 255;
/// Longest segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 64;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 16;
/// Topics under this prefix are pg_warden's own: applications subscribe to
/// them but cannot publish on them.
pub const RESERVED_PREFIX: &str = "warden.";
/// The topic dead letters are fanned out on.
pub const DEAD_LETTER_TOPIC: &str = "warden.dead_letter";

/// Why a topic is not valid (the messages never echo the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong,
    TooManySegments,
    EmptySegment,
    SegmentTooLong,
    BadCharacter,
    Reserved,
}

impl TopicError {
    pub fn message(self) -> &'static str {
        match self {
            TopicError::Empty => "a topic must not be empty",
            TopicError::TooLong => "a topic is at most 255 bytes",
            TopicError::TooManySegments => "a topic has at most 16 segments",
            TopicError::EmptySegment => {
                "a topic's segments must not be empty (no leading, trailing or double dots)"
            }
            TopicError::SegmentTooLong => "a topic's segments are at most 64 bytes",
            TopicError::BadCharacter => "a topic's segments hold only letters, digits, '_' and '-'",
            TopicError::Reserved => "topics starting with 'warden.' are pg_warden's own",
        }
    }
}

/// Why a pattern is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// As for a topic, wildcards aside.
    Topic(TopicError),
    /// `#` somewhere other than the last segment.
    HashNotLast,
    /// A wildcard inside a segment (`ord*`).
    PartialWildcard,
}

impl PatternError {
    pub fn message(self) -> &'static str {
        match self {
            PatternError::Topic(e) => e.message(),
            PatternError::HashNotLast => "'#' may only be a pattern's last segment",
            PatternError::PartialWildcard => {
                "'*' and '#' stand for whole segments ('orders.*', not 'ord*')"
            }
        }
    }
}

fn check_shape(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    if s.split('.').count() > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments);
    }
    Ok(())
}

fn check_segment(seg: &str) -> Result<(), TopicError> {
    if seg.is_empty() {
        return Err(TopicError::EmptySegment);
    }
    if seg.len() > MAX_SEGMENT_BYTES {
        return Err(TopicError::SegmentTooLong);
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TopicError::BadCharacter);
    }
    Ok(())
}

/// Checks a topic (any topic, pg_warden's own included).
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_shape(topic)?;
    topic.split('.').try_for_each(check_segment)
}

/// Checks a topic an application publishes on: valid and not reserved.
pub fn validate_published_topic(topic: &str) -> Result<(), TopicError> {
    validate_topic(topic)?;
    if topic.starts_with(RESERVED_PREFIX) {
        return Err(TopicError::Reserved);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        check_shape(pattern).map_err(PatternError::Topic)?;
        let parts: Vec<&str> = pattern.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "#" if i + 1 == parts.len() => Segment::Rest,
                "#" => return Err(PatternError::HashNotLast),
                p if p.contains(['*', '#']) => return Err(PatternError::PartialWildcard),
                p => {
                    check_segment(p).map_err(PatternError::Topic)?;
                    Segment::Literal(p.to_string())
                }
            });
        }
        Ok(Pattern { segments })
    }

    /// Whether `topic` (a valid topic) is one this pattern subscribes to.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topics() {
        for ok in ["orders", "orders.created", "a-b.c_d.E9", &"x".repeat(64)] {
            assert_eq!(validate_published_topic(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", TopicError::Empty),
            (".a", TopicError::EmptySegment),
            ("a.", TopicError::EmptySegment),
            ("a..b", TopicError::EmptySegment),
            ("a b", TopicError::BadCharacter),
            ("a.*", TopicError::BadCharacter),
            ("ä", TopicError::BadCharacter),
            (&"x".repeat(65), TopicError::SegmentTooLong),
            (&["a"; 17].join("."), TopicError::TooManySegments),
            (&["abcdefghijklmnop"; 16].join("."), TopicError::TooLong),
        ];
        for (bad, why) in cases {
            assert_eq!(validate_topic(bad), Err(why), "{bad}");
        }
        assert_eq!(validate_topic(DEAD_LETTER_TOPIC), Ok(()));
        assert_eq!(
            validate_published_topic(DEAD_LETTER_TOPIC),
            Err(TopicError::Reserved)
        );
        assert_eq!(validate_published_topic("warden"), Ok(()));
    }

    #[test]
    fn patterns() {
        let m = |p: &str, t: &str| Pattern::parse(p).unwrap().matches(t);
        assert!(m("orders.created", "orders.created"));
        assert!(!m("orders.created", "orders.created.eu"));
        assert!(!m("orders.created", "orders"));
        assert!(m("orders.*", "orders.created"));
        assert!(!m("orders.*", "orders"));
        assert!(!m("orders.*", "orders.eu.created"));
        assert!(m("*.created", "invoices.created"));
        assert!(m("orders.#", "orders"));
        assert!(m("orders.#", "orders.eu.created"));
        assert!(!m("orders.#", "order"));
        assert!(m("#", "anything.at.all"));
        assert!(m("*.*.created", "orders.eu.created"));
        assert!(m("warden.dead_letter", DEAD_LETTER_TOPIC));
        assert!(m("warden.#", DEAD_LETTER_TOPIC));
        assert!(m("#", DEAD_LETTER_TOPIC));
        assert!(!m("orders.#", DEAD_LETTER_TOPIC));
        assert_eq!(Pattern::parse("#.created"), Err(PatternError::HashNotLast));
        assert_eq!(Pattern::parse("ord*"), Err(PatternError::PartialWildcard));
        assert_eq!(Pattern::parse("a.#x"), Err(PatternError::PartialWildcard));
        assert_eq!(
            Pattern::parse("a..b"),
            Err(PatternError::Topic(TopicError::EmptySegment))
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-c]{1,2}"
    }

    /// A reference matcher: patterns as regular expressions over the
    /// dotted text.
    fn reference(pattern: &str, topic: &str) -> bool {
        fn go(p: &[&str], t: &[&str]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some(&"#"), _) => true,
                (Some(&"*"), Some(_)) => go(&p[1..], &t[1..]),
                (Some(l), Some(s)) => l == s && go(&p[1..], &t[1..]),
                _ => false,
            }
        }
        let p: Vec<&str> = pattern.split('.').collect();
        let t: Vec<&str> = topic.split('.').collect();
        go(&p, &t)
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            topic in proptest::collection::vec(segment(), 1..5),
            pattern in proptest::collection::vec(prop_oneof![segment(), Just("*".to_string())], 0..5),
            rest in any::<bool>(),
        ) {
            let topic = topic.join(".");
            let mut pattern = pattern;
            if rest || pattern.is_empty() { pattern.push("#".to_string()); }
            let pattern = pattern.join(".");
            let parsed = Pattern::parse(&pattern).unwrap();
            prop_assert_eq!(parsed.matches(&topic), reference(&pattern, &topic));
        }

        #[test]
        fn a_topic_as_a_pattern_matches_only_itself(a in proptest::collection::vec(segment(), 1..4), b in proptest::collection::vec(segment(), 1..4)) {
            let (a, b) = (a.join("."), b.join("."));
            let p = Pattern::parse(&a).unwrap();
            prop_assert!(p.matches(&a));
            prop_assert_eq!(p.matches(&b), a == b);
        }

        #[test]
        fn valid_topics_are_valid_literal_patterns(t in "[A-Za-z0-9_-]{1,8}(\\.[A-Za-z0-9_-]{1,8}){0,6}") {
            prop_assert_eq!(validate_topic(&t), Ok(()));
            prop_assert!(Pattern::parse(&t).unwrap().matches(&t));
        }
    }
}
