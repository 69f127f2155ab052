//! Transactional outbox rules: which topics are valid, which subscription
//! patterns they match, when a failed delivery is tried again, and what a
//! pull consumer's lease token holds.

mod failure;
mod lease;
mod progress;
mod retry;
mod topic;

pub use failure::{after_failure, AfterFailure};
pub use lease::{lease_token, parse_lease};
pub use progress::{FanoutProgress, PendingRange};
pub use retry::retry_delay_us;
pub use topic::{validate_published_topic, validate_topic};
pub use topic::{
    Pattern, PatternError, TopicError, DEAD_LETTER_TOPIC, MAX_SEGMENTS, MAX_SEGMENT_BYTES,
    MAX_TOPIC_BYTES, RESERVED_PREFIX,
};
