//! A chain verified with its signed checkpoints: what `warden.audit_verify`
//! and the offline verifier both run.

use super::chain::{ChainCheck, Failure, StoredEvent, Tamper, VerifyFrom};
use super::checkpoint::{verify_checkpoint, Checkpoint};

/// Verifies one chain's events (in seq order) and its checkpoints (each
/// with its signature). `public_key`: checked signatures (None: none are
/// checked, say when the database has no signing key yet). `from`: where
/// the events start and from which hash; None derives it: seq 1 from the
/// genesis hash, or after pruning, the signed anchor checkpoint just
/// before the first event (a chain starting later without one has lost
/// its beginning).
pub fn verify_signed_chain(
    events: &[StoredEvent],
    checkpoints: &[(Checkpoint, Vec<u8>)],
    public_key: Option<&[u8]>,
    from: Option<VerifyFrom>,
) -> Result<u64, Failure> {
    let first_seq = events.first().map(|e| e.header.seq);
    let mut check = start_signed_check(first_seq, checkpoints, public_key, from)?;
    check.feed(events)?;
    check.finish()
}

/// As `verify_signed_chain`, for a caller that feeds the events a window
/// at a time: checks the signatures and where the chain starts (from the
/// seq of its first stored event, None when it has none) and returns the
/// check to feed.
pub fn start_signed_check(
    first_seq: Option<i64>,
    checkpoints: &[(Checkpoint, Vec<u8>)],
    public_key: Option<&[u8]>,
    from: Option<VerifyFrom>,
) -> Result<ChainCheck, Failure> {
    if let Some(key) = public_key {
        if let Some((c, _)) = checkpoints
            .iter()
            .filter(|(c, sig)| !verify_checkpoint(key, c, sig))
            .min_by_key(|(c, _)| c.seq)
        {
            return Err(Failure {
                seq: c.seq,
                reason: Tamper::BadSignature,
            });
        }
    }
    let from = match from {
        Some(from) => from,
        None => {
            let first = first_seq.unwrap_or(1);
            let anchor = checkpoints.iter().find(|(c, _)| c.seq == first - 1);
            match anchor {
                _ if first <= 1 => VerifyFrom::default(),
                Some((c, _)) => VerifyFrom {
                    seq: first,
                    prev_hash: c.hash,
                },
                None => {
                    return Err(Failure {
                        seq: 1,
                        reason: Tamper::Deleted,
                    })
                }
            }
        }
    };
    let signed: Vec<_> = checkpoints
        .iter()
        .filter(|(c, _)| c.seq >= from.seq)
        .map(|(c, _)| (c.seq, c.hash))
        .collect();
    Ok(ChainCheck::new(from, &signed))
}
