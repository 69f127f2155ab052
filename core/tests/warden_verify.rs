//! The offline verifier, run as a program on exports: an untouched export
//! verifies; each kind of tampering is reported with its seq and reason;
//! a pruned export verifies from its signed anchor.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use warden_core::audit::{
    canonical_fields, event_hash, payload_digest, public_key, sign_checkpoint, Checkpoint,
    EventHeader, GENESIS,
};

const SEED: [u8; 32] = [42; 32];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An export of chain `acme`: `n` events and a checkpoint signed at each
/// seq in `checkpoints`.
fn export(n: i64, checkpoints: &[i64]) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut prev = GENESIS;
    for seq in 1..=n {
        let fields = json!({ "id": seq, "amount": "12.50", "ok": true });
        let salt = [seq as u8; 16];
        let digest = payload_digest(&salt, &canonical_fields(&fields));
        let header = EventHeader {
            chain: "acme".into(),
            seq,
            ts_micros: 1_780_000_000_000_000 + seq,
            event_type: "row.insert".into(),
            tenant: Some("acme".into()),
            actor: Some("svc".into()),
            actor_kind: Some("service".into()),
            correlation_id: Some(format!("req-{seq}")),
            txid: 500 + seq as u64,
        };
        let hash = event_hash(&prev, &header, &digest);
        lines.push(json!({
            "type": "event", "chain": "acme", "seq": seq, "ts_us": header.ts_micros,
            "event_type": "row.insert", "tenant": "acme", "actor": "svc", "actor_kind": "service",
            "correlation_id": format!("req-{seq}"), "txid": header.txid, "fields": fields,
            "fields_salt": hex(&salt), "payload_digest": hex(&digest), "prev_hash": hex(&prev),
            "hash": hex(&hash),
        }));
        if checkpoints.contains(&seq) {
            let c = Checkpoint {
                chain: "acme".into(),
                seq,
                hash,
                ts_micros: header.ts_micros,
                system_identifier: 7_000_000_000_000_000_001,
                timeline: 1,
            };
            lines.push(json!({
                "type": "checkpoint", "chain": "acme", "seq": seq, "hash": hex(&hash),
                "ts_us": c.ts_micros, "system_identifier": c.system_identifier, "timeline": 1,
                "signature": hex(&sign_checkpoint(&SEED, &c)),
            }));
        }
        prev = hash;
    }
    lines
}

/// Runs warden-verify on the lines; returns its exit code and output.
fn verify(lines: &[Value]) -> (i32, String) {
    verify_with(lines, &[])
}

/// As `verify`, with more arguments before the export.
fn verify_with(lines: &[Value], extra: &[&str]) -> (i32, String) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let key = hex(&public_key(&SEED));
    let mut args = vec!["--public-key", key.as_str()];
    args.extend_from_slice(extra);
    args.push("-");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden-verify"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn event_index(lines: &[Value], seq: i64) -> usize {
    lines
        .iter()
        .position(|l| l["type"] == "event" && l["seq"] == seq)
        .unwrap()
}

#[test]
fn an_untouched_export_verifies() {
    assert_eq!(
        verify(&export(20, &[10, 20])),
        (0, "acme: ok, 20 events\n".into())
    );
}

#[test]
fn each_kind_of_tampering_is_reported() {
    let base = export(20, &[10, 20]);
    // a field edited
    let mut e = base.clone();
    let i = event_index(&e, 7);
    e[i]["fields"]["amount"] = json!("99.00");
    assert_eq!(verify(&e), (1, "acme: FAILED at seq 7: edited\n".into()));
    // a middle event deleted
    let mut e = base.clone();
    e.remove(event_index(&e, 7));
    assert_eq!(verify(&e), (1, "acme: FAILED at seq 7: deleted\n".into()));
    // the tail cut below the last checkpoint (kept apart from the log)
    let mut e = base.clone();
    for seq in [20, 19, 18] {
        e.remove(event_index(&e, seq));
    }
    assert_eq!(
        verify(&e),
        (1, "acme: FAILED at seq 18: truncated\n".into())
    );
    // two events swapped, their seqs kept in order
    let mut e = base.clone();
    let (a, b) = (event_index(&e, 7), event_index(&e, 8));
    e.swap(a, b);
    e[a]["seq"] = json!(7);
    e[b]["seq"] = json!(8);
    assert_eq!(verify(&e), (1, "acme: FAILED at seq 7: reordered\n".into()));
    // a checkpoint whose signature does not match what it says
    let mut e = base.clone();
    let cp = e.iter().position(|l| l["type"] == "checkpoint").unwrap();
    e[cp]["system_identifier"] = json!(7_000_000_000_000_000_002u64);
    assert_eq!(
        verify(&e),
        (1, "acme: FAILED at seq 10: bad_signature\n".into())
    );
}

#[test]
fn a_pruned_export_verifies_from_its_signed_anchor() {
    let base = export(20, &[10, 20]);
    // events 1..10 pruned; the checkpoint at 10 is the anchor
    let pruned: Vec<Value> = base
        .iter()
        .filter(|l| l["type"] != "event" || l["seq"].as_i64().unwrap() > 10)
        .cloned()
        .collect();
    assert_eq!(verify(&pruned), (0, "acme: ok, 10 events\n".into()));
    // without the anchor, the start of the chain is missing
    let unanchored: Vec<Value> = pruned
        .into_iter()
        .filter(|l| !(l["type"] == "checkpoint" && l["seq"] == 10))
        .collect();
    assert_eq!(
        verify(&unanchored),
        (1, "acme: FAILED at seq 1: deleted\n".into())
    );
}

#[test]
fn a_kept_digest_catches_a_log_cut_consistently() {
    let base = export(20, &[10, 20]);
    let digest = json!({
        "format": "pg_warden audit digest v1",
        "public_key": hex(&public_key(&SEED)),
        "checkpoints": base.iter().filter(|l| l["type"] == "checkpoint" && l["seq"] == 20).cloned().collect::<Vec<_>>(),
    });
    let path = std::env::temp_dir().join(format!("warden-digest-{}.json", std::process::id()));
    std::fs::write(&path, digest.to_string()).unwrap();
    let path = path.to_str().unwrap();
    assert_eq!(
        verify_with(&base, &["--digest", path]),
        (0, "acme: ok, 20 events\n".into())
    );
    // the log cut after 15 with its checkpoint at 20: consistent in
    // itself, but short of the digest kept outside
    let cut: Vec<Value> = base
        .iter()
        .filter(|l| l["seq"].as_i64().unwrap() <= 15)
        .cloned()
        .collect();
    assert_eq!(verify(&cut), (0, "acme: ok, 15 events\n".into()));
    assert_eq!(
        verify_with(&cut, &["--digest", path]),
        (1, "acme: FAILED at seq 16: truncated\n".into())
    );
    std::fs::remove_file(path).unwrap();
}
