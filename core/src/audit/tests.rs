use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(seq: i64) -> EventHeader {
    EventHeader {
        chain: "acme".into(),
        seq,
        ts_micros: 1_780_000_000_000_000 + seq,
        event_type: "row.update".into(),
        tenant: Some("acme".into()),
        actor: Some("alice".into()),
        actor_kind: Some("user".into()),
        correlation_id: None,
        txid: 1000 + seq as u64,
    }
}

/// A chain of `n` events, each with its fields and salt.
fn chain(n: i64) -> Vec<StoredEvent> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let fields = canonical_fields(&json!({ "id": seq, "status": format!("s{seq}") }));
            let salt = vec![seq as u8; SALT_BYTES];
            let digest = payload_digest(&salt, &fields);
            let h = header(seq);
            let hash = event_hash(&prev, &h, &digest);
            let e = StoredEvent {
                header: h,
                canonical_fields: Some(fields),
                fields_salt: Some(salt),
                payload_digest: digest,
                prev_hash: prev,
                hash,
            };
            prev = hash;
            e
        })
        .collect()
}

/// Recomputes every hash from `from` on, as a forger would.
fn rechain(events: &mut [StoredEvent], from: usize) {
    for i in from..events.len() {
        let prev = if i == 0 { GENESIS } else { events[i - 1].hash };
        let e = &mut events[i];
        if let (Some(f), Some(s)) = (&e.canonical_fields, &e.fields_salt) {
            e.payload_digest = payload_digest(s, f);
        }
        e.prev_hash = prev;
        e.hash = event_hash(&prev, &e.header, &e.payload_digest);
    }
}

fn failure(events: &[StoredEvent], checkpoint: Option<(i64, [u8; 32])>) -> Option<(i64, Tamper)> {
    verify_chain(events, VerifyFrom::default(), checkpoint.as_slice())
        .err()
        .map(|f| (f.seq, f.reason))
}

// Known answers, also in the README's specification, so a verifier in
// another language can check itself against them.
#[test]
fn known_answer_vectors() {
    let fields: Value = serde_json::from_str(r#"{"b": [true, null, "x"], "a": 1.50}"#).unwrap();
    let canonical = canonical_fields(&fields);
    assert_eq!(
        hex(&canonical),
        "6f0000000200000001616400000004312e353000000001626100000003746e730000000178"
    );
    let salt: Vec<u8> = (0u8..16).collect();
    let digest = payload_digest(&salt, &canonical);
    let h = EventHeader {
        chain: "global".into(),
        seq: 1,
        ts_micros: 0,
        event_type: "test".into(),
        tenant: None,
        actor: Some("alice".into()),
        actor_kind: Some("user".into()),
        correlation_id: None,
        txid: 1,
    };
    let hash = event_hash(&GENESIS, &h, &digest);
    assert_eq!(hex(&digest), KAT_DIGEST);
    assert_eq!(hex(&hash), KAT_HASH);
}

// computed from the specification alone, with Python's hmac and hashlib
const KAT_DIGEST: &str = "59faedc5f5cccef362ed3db629bf61229ae3ea242f236350a9eb29228885a005";
const KAT_HASH: &str = "4c64fd7ed98e41c1b6e66aef92e7179ca496ae46d6812cdaef068bcd17ab9e44";

/// Two rows' contents swapped, each keeping its place's seq (as in a
/// table read in seq order).
fn swap_keeping_seqs(events: &mut [StoredEvent], a: usize, b: usize) {
    events.swap(a, b);
    let (sa, sb) = (events[a].header.seq, events[b].header.seq);
    events[a].header.seq = sb;
    events[b].header.seq = sa;
}

// two rows swapped across the end of a window are still found as
// reordered (the window's last row cannot tell by itself)
#[test]
fn a_swap_across_a_window_end_is_reordered() {
    let mut events = chain(10);
    swap_keeping_seqs(&mut events, 3, 4);
    let mut check = ChainCheck::new(VerifyFrom::default(), &[]);
    let first = &events[..4];
    let result = check
        .feed_window(first, |_| Ok::<_, ()>(events.clone()))
        .unwrap();
    assert_eq!(
        result,
        Err(Failure {
            seq: 4,
            reason: Tamper::Reordered
        })
    );
}

// two checkpoints at one seq (a stored one and a digest kept outside):
// the chain must agree with both, whichever order they come in
#[test]
fn every_checkpoint_at_a_seq_must_agree() {
    let events = chain(10);
    let good = (5, events[4].hash);
    let bad = (5, [7u8; 32]);
    for signed in [[good, bad], [bad, good]] {
        assert_eq!(
            verify_chain(&events, VerifyFrom::default(), &signed),
            Err(Failure {
                seq: 5,
                reason: Tamper::Edited
            })
        );
    }
}

#[test]
fn an_untouched_chain_verifies() {
    let events = chain(10);
    assert_eq!(
        verify_chain(&events, VerifyFrom::default(), &[(10, events[9].hash)]),
        Ok(10)
    );
}

#[test]
fn an_erased_payload_keeps_the_chain_verifiable() {
    let mut events = chain(5);
    events[2].canonical_fields = None;
    events[2].fields_salt = None;
    assert_eq!(verify_chain(&events, VerifyFrom::default(), &[]), Ok(5));
}

#[test]
fn tampering_is_found_with_its_reason() {
    let base = chain(10);
    // a field edited
    let mut e = base.clone();
    e[4].canonical_fields = Some(canonical_fields(&json!({ "id": 5, "status": "forged" })));
    assert_eq!(failure(&e, None), Some((5, Tamper::Edited)));
    // a header edited
    let mut e = base.clone();
    e[4].header.actor = Some("mallory".into());
    assert_eq!(failure(&e, None), Some((5, Tamper::Edited)));
    // edited and every later hash recomputed: only a checkpoint catches it
    let mut e = base.clone();
    e[4].canonical_fields = Some(canonical_fields(&json!({ "id": 5, "status": "forged" })));
    rechain(&mut e, 4);
    assert_eq!(failure(&e, None), None);
    assert_eq!(
        failure(&e, Some((10, base[9].hash))),
        Some((10, Tamper::Edited))
    );
    // a middle row deleted
    let mut e = base.clone();
    e.remove(4);
    assert_eq!(failure(&e, None), Some((5, Tamper::Deleted)));
    // the tail deleted: only a checkpoint catches it
    let mut e = base.clone();
    e.truncate(7);
    assert_eq!(failure(&e, None), None);
    assert_eq!(
        failure(&e, Some((10, base[9].hash))),
        Some((8, Tamper::Truncated))
    );
    // a forged row slipped in (later seqs shifted, their headers rewritten)
    let mut e = base.clone();
    let mut forged = e[4].clone();
    forged.canonical_fields = Some(canonical_fields(&json!({ "id": 99 })));
    e.insert(5, forged);
    for (i, row) in e.iter_mut().enumerate() {
        row.header.seq = i as i64 + 1;
    }
    assert_eq!(failure(&e, None), Some((6, Tamper::Inserted)));
    // two rows swapped (their seqs kept in order)
    let mut e = base.clone();
    e.swap(3, 4);
    e[3].header.seq = 4;
    e[4].header.seq = 5;
    assert_eq!(failure(&e, None), Some((4, Tamper::Reordered)));
}

fn any_header() -> impl Strategy<Value = EventHeader> {
    (
        "[a-z]{0,6}",
        any::<i64>(),
        any::<i64>(),
        "[a-z.]{0,8}",
        proptest::option::of("[a-z]{0,4}"),
        proptest::option::of("[a-z]{0,4}"),
        proptest::option::of("[a-z]{0,4}"),
        proptest::option::of("[a-z]{0,4}"),
        any::<u64>(),
    )
        .prop_map(
            |(
                chain,
                seq,
                ts_micros,
                event_type,
                tenant,
                actor,
                actor_kind,
                correlation_id,
                txid,
            )| EventHeader {
                chain,
                seq,
                ts_micros,
                event_type,
                tenant,
                actor,
                actor_kind,
                correlation_id,
                txid,
            },
        )
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z0-9 ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{0,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    // no two different headers, and no two different JSON values,
    // encode the same
    #[test]
    fn different_headers_encode_differently(a in any_header(), b in any_header()) {
        prop_assume!(a != b);
        prop_assert_ne!(canonical_header(&a), canonical_header(&b));
    }

    // the token-stream builder (what a jsonb iterator drives) encodes
    // exactly as the encoder of a parsed value
    #[test]
    fn the_token_builder_encodes_as_canonical_fields(v in any_json()) {
        fn walk(b: &mut CanonicalBuilder, v: &Value) {
            match v {
                Value::Null => b.null(),
                Value::Bool(x) => b.boolean(*x),
                Value::Number(n) => b.number(&n.to_string()),
                Value::String(s) => b.string(s.as_bytes()),
                Value::Array(items) => {
                    b.begin_array();
                    items.iter().for_each(|i| walk(b, i));
                    b.end();
                }
                Value::Object(map) => {
                    b.begin_object();
                    // in jsonb's order (by length, then bytes), not ours
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_by_key(|(k, _)| (k.len(), k.as_bytes().to_vec()));
                    for (k, item) in entries {
                        b.key(k.as_bytes());
                        walk(b, item);
                    }
                    b.end();
                }
            }
        }
        let mut b = CanonicalBuilder::new();
        walk(&mut b, &v);
        prop_assert_eq!(b.finish(), Some(canonical_fields(&v)));
    }

    #[test]
    fn different_values_encode_differently(a in any_json(), b in any_json()) {
        prop_assume!(a != b);
        prop_assert_ne!(canonical_fields(&a), canonical_fields(&b));
    }

    // any change of any byte of the stored digest or previous hash, or of
    // the canonical fields, changes what verification sees
    #[test]
    fn any_changed_byte_breaks_verification(which in 0usize..3, index in 0usize..32, bit in 0u8..8) {
        let mut events = chain(3);
        let e = &mut events[1];
        match which {
            0 => e.payload_digest[index] ^= 1 << bit,
            1 => e.prev_hash[index] ^= 1 << bit,
            _ => {
                let f = e.canonical_fields.as_mut().unwrap();
                let i = index % f.len();
                f[i] ^= 1 << bit;
            }
        }
        prop_assert!(verify_chain(&events, VerifyFrom::default(), &[]).is_err());
    }

    // a chain checked a window at a time (as audit_verify reads it) gives
    // exactly what a check of all rows at once gives, whatever was done
    // to it and wherever the windows end
    #[test]
    fn a_windowed_check_agrees_with_a_whole_one(
        n in 1i64..40,
        tamper in 0usize..7,
        at in 0usize..40,
        other in 0usize..40,
        window in 1usize..6,
        checkpoint in proptest::option::of(0usize..40),
    ) {
        let mut events = chain(n);
        let len = events.len();
        let (at, other) = (at % len, other % len);
        match tamper {
            0 => {}
            1 => events[at].canonical_fields = Some(canonical_fields(&json!({ "forged": true }))),
            2 => { events.remove(at); }
            3 => swap_keeping_seqs(&mut events, at, other),
            4 => {
                let mut forged = events[at].clone();
                forged.header.actor = Some("mallory".into());
                events.insert(at, forged);
            }
            5 => {
                events[at].header.actor = Some("mallory".into());
                rechain(&mut events, at);
            }
            _ => events.truncate(at),
        }
        let signed: Vec<(i64, [u8; 32])> = checkpoint
            .map(|c| {
                let original = chain(n);
                let c = c % original.len();
                (original[c].header.seq, original[c].hash)
            })
            .into_iter()
            .collect();
        let whole = verify_chain(&events, VerifyFrom::default(), &signed);
        let mut check = ChainCheck::new(VerifyFrom::default(), &signed);
        let mut windowed = Ok(());
        for (i, w) in events.chunks(window).enumerate() {
            let start = i * window;
            let result = check
                .feed_window(w, |_| Ok::<_, ()>(events[start..].to_vec()))
                .unwrap();
            if result.is_err() {
                windowed = result;
                break;
            }
        }
        let windowed = windowed.and_then(|()| check.finish());
        prop_assert_eq!(windowed, whole);
    }
}

// What the extension exports with event_line and checkpoint_line, the
// offline verifier accepts; a changed field in the export it refuses.
#[test]
fn exported_lines_verify_offline() {
    use super::{
        checkpoint_line, event_line, public_key, sign_checkpoint, verify_export, Checkpoint,
    };
    let seed = [7u8; 32];
    let events = chain(4);
    let mut lines: Vec<String> = events
        .iter()
        .map(|e| {
            let seq = e.header.seq;
            event_line(e, Some(&format!(r#"{{"id": {seq}, "status": "s{seq}"}}"#)))
        })
        .collect();
    let c = Checkpoint {
        chain: events[3].header.chain.clone(),
        seq: 4,
        hash: events[3].hash,
        ts_micros: 1,
        system_identifier: u64::MAX - 5,
        timeline: 3,
    };
    lines.push(checkpoint_line(&c, &sign_checkpoint(&seed, &c)));
    let verdicts = verify_export(&lines.join("\n"), &public_key(&seed)).unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].failure, None, "{verdicts:?}");
    assert_eq!(verdicts[0].checked, 4);
    lines[1] = lines[1].replace("\"s2\"", "\"s9\"");
    let verdicts = verify_export(&lines.join("\n"), &public_key(&seed)).unwrap();
    assert_eq!(verdicts[0].failure, Some((2, "edited")));
}
