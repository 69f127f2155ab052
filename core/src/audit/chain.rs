//! The hash chain (format v1): each event's payload digest and hash, and
//! the verification of a chain's stored rows.
//!
//! ```text
//! payload_digest = HMAC-SHA256(key = fields_salt (16 random bytes), canonical(fields))
//! hash           = SHA-256(prev_hash || canonical(header) || payload_digest)
//! prev_hash of seq 1 = 32 zero bytes
//! ```
//!
//! The chain is unkeyed: anyone holding an export can verify it. The salt
//! makes a digest left behind by an erasure useless for guessing the
//! erased value.

use ring::{digest, hmac};

use super::canonical::{canonical_header, EventHeader};

pub const HASH_BYTES: usize = 32;
pub const SALT_BYTES: usize = 16;
/// The previous hash of a chain's first event.
pub const GENESIS: [u8; HASH_BYTES] = [0; HASH_BYTES];

/// HMAC-SHA256 of the canonical fields under the event's salt.
pub fn payload_digest(salt: &[u8], canonical_fields: &[u8]) -> [u8; HASH_BYTES] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), canonical_fields);
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

/// SHA-256 of the previous hash, the canonical header and the digest.
pub fn event_hash(
    prev_hash: &[u8; HASH_BYTES],
    header: &EventHeader,
    digest: &[u8; HASH_BYTES],
) -> [u8; HASH_BYTES] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash);
    ctx.update(&canonical_header(header));
    ctx.update(digest);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// One stored row of a chain, as a verifier reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub header: EventHeader,
    /// The canonical fields, None when the payload was erased.
    pub canonical_fields: Option<Vec<u8>>,
    /// None when the payload was erased.
    pub fields_salt: Option<Vec<u8>>,
    pub payload_digest: [u8; HASH_BYTES],
    pub prev_hash: [u8; HASH_BYTES],
    pub hash: [u8; HASH_BYTES],
}

/// Why a chain does not verify, at the first bad seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// A stored value no longer matches its hash or digest.
    Edited,
    /// A seq is missing.
    Deleted,
    /// A row whose place in the chain no earlier row vouches for.
    Inserted,
    /// Rows out of their chained order.
    Reordered,
    /// The chain ends before a signed checkpoint.
    Truncated,
    /// A checkpoint's signature does not verify under the public key.
    BadSignature,
}

impl Tamper {
    pub fn as_str(self) -> &'static str {
        match self {
            Tamper::Edited => "edited",
            Tamper::Deleted => "deleted",
            Tamper::Inserted => "inserted",
            Tamper::Reordered => "reordered",
            Tamper::Truncated => "truncated",
            Tamper::BadSignature => "bad_signature",
        }
    }
}

/// Where verification stopped: the first bad seq and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub seq: i64,
    pub reason: Tamper,
}

/// What a verifier knows before the rows: where to start and with which
/// previous hash (GENESIS at seq 1; an anchor after pruning), and a signed
/// checkpoint (seq, hash) the rows must reach and agree with.
#[derive(Debug, Clone, Copy)]
pub struct VerifyFrom {
    pub seq: i64,
    pub prev_hash: [u8; HASH_BYTES],
}

impl Default for VerifyFrom {
    fn default() -> Self {
        VerifyFrom {
            seq: 1,
            prev_hash: GENESIS,
        }
    }
}

/// A check of one chain's rows, fed in seq order a window at a time (so a
/// long chain is never held in memory whole): `feed` each window, then
/// `finish`. Failures are reported with the same precedence as a check of
/// all rows at once: a broken link first, then a tail shorter than the
/// last signed checkpoint, then a row whose hash disagrees with a signed
/// checkpoint. A broken link is classified by the rows after it in the
/// same window: a caller that wants the classification a whole-chain
/// check gives feeds, from a clone taken before the window, everything
/// from that window on.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    expected_seq: i64,
    prev_hash: [u8; HASH_BYTES],
    checked: u64,
    /// Signed checkpoints (seq, hash), by seq.
    checkpoints: Vec<(i64, [u8; HASH_BYTES])>,
    /// The first checkpoint the rows disagree with.
    bad_checkpoint: Option<i64>,
}

impl ChainCheck {
    /// Starts at `from` with the chain's signed checkpoints (seq, hash)
    /// at or after it.
    pub fn new(from: VerifyFrom, checkpoints: &[(i64, [u8; HASH_BYTES])]) -> ChainCheck {
        let mut checkpoints = checkpoints.to_vec();
        checkpoints.sort_by_key(|(seq, _)| *seq);
        ChainCheck {
            expected_seq: from.seq,
            prev_hash: from.prev_hash,
            checked: 0,
            checkpoints,
            bad_checkpoint: None,
        }
    }

    /// The seq the next row must have.
    pub fn next_seq(&self) -> i64 {
        self.expected_seq
    }

    /// Checks the next rows (in seq order, following the last fed).
    pub fn feed(&mut self, rows: &[StoredEvent]) -> Result<(), Failure> {
        for (i, row) in rows.iter().enumerate() {
            let seq = row.header.seq;
            let expected_seq = self.expected_seq;
            let prev_hash = self.prev_hash;
            let fail = |reason| {
                Err(Failure {
                    seq: expected_seq.min(seq),
                    reason,
                })
            };
            if seq > expected_seq {
                // a gap: the rows in it are gone
                return fail(Tamper::Deleted);
            }
            if seq < expected_seq {
                return fail(Tamper::Reordered);
            }
            if row.prev_hash != prev_hash {
                // this row continues from a later one, or a row further on
                // continues from where this one should: rows were swapped;
                // the next row continues from our previous one: this row was
                // slipped in; otherwise something was changed
                let later = &rows[i + 1..];
                let follows_a_later_row = later.iter().any(|r| r.hash == row.prev_hash);
                let next_skips_this = later.first().is_some_and(|r| r.prev_hash == prev_hash);
                let a_later_row_continues = later.iter().any(|r| r.prev_hash == prev_hash);
                let reason = if follows_a_later_row || (a_later_row_continues && !next_skips_this) {
                    Tamper::Reordered
                } else if next_skips_this {
                    Tamper::Inserted
                } else {
                    Tamper::Edited
                };
                return fail(reason);
            }
            if let (Some(fields), Some(salt)) = (&row.canonical_fields, &row.fields_salt) {
                if payload_digest(salt, fields) != row.payload_digest {
                    return fail(Tamper::Edited);
                }
            }
            if event_hash(&prev_hash, &row.header, &row.payload_digest) != row.hash {
                return fail(Tamper::Edited);
            }
            if self.bad_checkpoint.is_none() {
                // every checkpoint at this seq (a digest kept outside sits
                // beside the stored one) must agree
                let at = self.checkpoints.partition_point(|(s, _)| *s < seq);
                if self.checkpoints[at..]
                    .iter()
                    .take_while(|(s, _)| *s == seq)
                    .any(|(_, h)| *h != row.hash)
                {
                    self.bad_checkpoint = Some(seq);
                }
            }
            self.prev_hash = row.hash;
            self.expected_seq = seq + 1;
            self.checked += 1;
        }
        Ok(())
    }

    /// Feeds the next window of rows; when a link breaks in it, feeds
    /// again, from where the window started, every row from the window's
    /// first on (`rest`, given that seq), so the failure is classified
    /// exactly as a check of the whole chain at once classifies it.
    pub fn feed_window<E>(
        &mut self,
        window: &[StoredEvent],
        rest: impl FnOnce(i64) -> Result<Vec<StoredEvent>, E>,
    ) -> Result<Result<(), Failure>, E> {
        let before = self.clone();
        match self.feed(window) {
            Ok(()) => Ok(Ok(())),
            Err(_) => {
                *self = before;
                let all = rest(window[0].header.seq)?;
                Ok(self.feed(&all))
            }
        }
    }

    /// After the last row: how many rows were checked, or why the chain
    /// does not verify.
    pub fn finish(self) -> Result<u64, Failure> {
        if let Some(&(last, _)) = self.checkpoints.last() {
            if self.expected_seq <= last {
                return Err(Failure {
                    seq: self.expected_seq,
                    reason: Tamper::Truncated,
                });
            }
        }
        if let Some(seq) = self.bad_checkpoint {
            return Err(Failure {
                seq,
                reason: Tamper::Edited,
            });
        }
        Ok(self.checked)
    }
}

/// Verifies one chain's rows, ordered by seq as stored, against the
/// (seq, hash) of its signed checkpoints: the rows must reach the latest
/// and agree with each. Returns how many rows were checked, or the first
/// failure.
pub fn verify_chain(
    rows: &[StoredEvent],
    from: VerifyFrom,
    checkpoints: &[(i64, [u8; HASH_BYTES])],
) -> Result<u64, Failure> {
    let mut check = ChainCheck::new(from, checkpoints);
    check.feed(rows)?;
    check.finish()
}
