//! The durable path's ring: variable-length records in a fixed byte
//! buffer (the shared-memory segment the audit subsystem registers), in
//! arrival order, never overwritten before the sequencer took them. The
//! caller holds the ring's lock around each call; this is the pure part.
//!
//! Positions count bytes since the ring was made and only grow; a byte's
//! place in the buffer is its position modulo the capacity. A record is
//! `len:u32le id:u64le payload`; one that does not fit before the end of
//! the buffer starts at its beginning, and the gap is skipped (marked with
//! `len = u32::MAX` when the gap can hold a length).

pub const RECORD_HEADER: usize = 12;
const WRAP: u32 = u32::MAX;

/// The ring's bookkeeping (lives beside the buffer in shared memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RingState {
    /// Next byte position to write.
    pub head: u64,
    /// Next byte position to read.
    pub tail: u64,
    /// Id of the next record pushed (ids start at 1).
    pub next_id: u64,
    /// Records in the ring.
    pub records: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Not enough free space now: wait for the sequencer, or fail.
    Full,
    /// Larger than the ring can ever hold.
    TooLarge,
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// Appends `payload`; returns its id.
pub fn push(state: &mut RingState, buf: &mut [u8], payload: &[u8]) -> Result<u64, PushError> {
    let cap = buf.len() as u64;
    let need = (RECORD_HEADER + payload.len()) as u64;
    if need > cap || payload.len() >= WRAP as usize {
        return Err(PushError::TooLarge);
    }
    let offset = state.head % cap;
    let to_end = cap - offset;
    // a record never straddles the end: skip to the start if it would
    let skip = if need > to_end { to_end } else { 0 };
    let used = state.head - state.tail;
    if used + skip + need > cap {
        return Err(PushError::Full);
    }
    if skip > 0 {
        if skip >= 4 {
            put_u32(buf, offset as usize, WRAP);
        }
        state.head += skip;
    }
    let at = (state.head % cap) as usize;
    if state.next_id == 0 {
        state.next_id = 1;
    }
    let id = state.next_id;
    put_u32(buf, at, payload.len() as u32);
    buf[at + 4..at + RECORD_HEADER].copy_from_slice(&id.to_le_bytes());
    buf[at + RECORD_HEADER..at + RECORD_HEADER + payload.len()].copy_from_slice(payload);
    state.head += need;
    state.next_id += 1;
    state.records += 1;
    Ok(id)
}

/// Takes up to `max_records` records, oldest first.
pub fn pop(state: &mut RingState, buf: &[u8], max_records: usize) -> Vec<(u64, Vec<u8>)> {
    let cap = buf.len() as u64;
    let mut out = Vec::new();
    while out.len() < max_records && state.records > 0 {
        let offset = state.tail % cap;
        let to_end = cap - offset;
        // the writer skipped a gap too small for a record here
        if to_end < RECORD_HEADER as u64 || get_u32(buf, offset as usize) == WRAP {
            state.tail += to_end;
            continue;
        }
        let at = offset as usize;
        let len = get_u32(buf, at) as usize;
        let id = u64::from_le_bytes(buf[at + 4..at + RECORD_HEADER].try_into().expect("8 bytes"));
        out.push((
            id,
            buf[at + RECORD_HEADER..at + RECORD_HEADER + len].to_vec(),
        ));
        state.tail += (RECORD_HEADER + len) as u64;
        state.records -= 1;
    }
    if state.records == 0 {
        // nothing left: what remains before the head is skipped space
        state.tail = state.head;
    }
    out
}

/// What `peek` took, for `release` once it is safely elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    /// The read position after the records taken.
    pub tail: u64,
    pub records: u64,
    /// Id of the last record taken (0: none).
    pub last_id: u64,
}

/// Copies up to `max_records` records, oldest first, without freeing
/// their space: the consumer frees it with `release` only once they are
/// committed elsewhere, so a failed consumer loses nothing. Writers may
/// push in between; one consumer at a time.
pub fn peek(state: &RingState, buf: &[u8], max_records: usize) -> (Vec<(u64, Vec<u8>)>, Taken) {
    let mut copy = *state;
    let out = pop(&mut copy, buf, max_records);
    let taken = Taken {
        tail: copy.tail,
        records: out.len() as u64,
        last_id: out.last().map_or(0, |(id, _)| *id),
    };
    (out, taken)
}

/// Frees what `peek` took.
pub fn release(state: &mut RingState, taken: Taken) {
    if taken.records == 0 {
        return;
    }
    state.tail = taken.tail;
    state.records -= taken.records;
    if state.records == 0 {
        state.tail = state.head;
    }
}

/// Bytes in use (records and skipped gaps).
pub fn used(state: &RingState) -> u64 {
    state.head - state.tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Pop(usize),
        /// peek, then release
        Take(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Op::Push),
            1 => (1usize..5).prop_map(Op::Pop),
            1 => (1usize..5).prop_map(Op::Take),
        ]
    }

    proptest! {
        // Against a queue: records come out whole, in order, with their
        // ids, none lost or doubled; a push is refused only when the
        // records in the ring leave no room for it.
        #[test]
        fn behaves_like_a_bounded_queue(cap in 24usize..400, ops in proptest::collection::vec(op(), 1..200)) {
            let mut buf = vec![0u8; cap];
            let mut state = RingState::default();
            let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Push(p) => match push(&mut state, &mut buf, &p) {
                        Ok(id) => {
                            prop_assert_eq!(id, next);
                            next += 1;
                            model.push_back((id, p));
                        }
                        Err(PushError::TooLarge) => prop_assert!(RECORD_HEADER + p.len() > cap),
                        Err(PushError::Full) => {
                            // refused only when nearly full: the live
                            // records and this one, plus at most two gaps
                            // (one behind a live record, one before this
                            // one), each smaller than a record, exceed it
                            let need = RECORD_HEADER + p.len();
                            let live: usize = model.iter().map(|(_, p)| RECORD_HEADER + p.len()).sum();
                            let largest = model.iter().map(|(_, p)| RECORD_HEADER + p.len()).max().unwrap_or(0).max(need);
                            prop_assert!(live + need + 2 * largest > cap, "live {} need {} cap {}", live, need, cap);
                        }
                    },
                    Op::Pop(n) => {
                        let got = pop(&mut state, &buf, n);
                        let want: Vec<(u64, Vec<u8>)> = (0..n.min(model.len())).map(|_| model.pop_front().unwrap()).collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::Take(n) => {
                        let (got, taken) = peek(&state, &buf, n);
                        // a peek changes nothing until released
                        prop_assert_eq!(state.records as usize, model.len());
                        let want: Vec<(u64, Vec<u8>)> = (0..n.min(model.len())).map(|_| model.pop_front().unwrap()).collect();
                        prop_assert_eq!(taken.last_id, want.last().map_or(0, |(id, _)| *id));
                        prop_assert_eq!(got, want);
                        release(&mut state, taken);
                    }
                }
                prop_assert_eq!(state.records as usize, model.len());
                prop_assert!(used(&state) <= cap as u64);
            }
            let rest = pop(&mut state, &buf, usize::MAX);
            prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(used(&state), 0);
        }
    }

    #[test]
    fn an_empty_ring_takes_a_record_that_fills_it() {
        let mut buf = vec![0u8; 40];
        let mut state = RingState::default();
        assert_eq!(push(&mut state, &mut buf, &[7; 28]), Ok(1));
        assert_eq!(push(&mut state, &mut buf, &[]), Err(PushError::Full));
        assert_eq!(pop(&mut state, &buf, 10), vec![(1, vec![7; 28])]);
        assert_eq!(
            push(&mut state, &mut buf, &[8; 29]),
            Err(PushError::TooLarge)
        );
        // wraps: 40 bytes in use again, starting at 40 % 40 = 0
        assert_eq!(push(&mut state, &mut buf, &[9; 20]), Ok(2));
        assert_eq!(push(&mut state, &mut buf, &[1; 4]), Err(PushError::Full));
        assert_eq!(pop(&mut state, &buf, 10), vec![(2, vec![9; 20])]);
        assert_eq!(push(&mut state, &mut buf, &[1; 4]), Ok(3));
    }
}
