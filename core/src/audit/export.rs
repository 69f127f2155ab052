//! The export format (`warden.audit_export`, read by `warden-verify`):
//! one JSON object per line, events of a chain in seq order, and the
//! chain's signed checkpoints.
//!
//! ```text
//! {"type":"event","chain":..,"seq":..,"ts_us":..,"event_type":..,"tenant":..|null,"actor":..|null,
//!  "actor_kind":..|null,"correlation_id":..|null,"txid":..,"fields":<JSON>|null,"fields_salt":"<hex>"|null,
//!  "payload_digest":"<hex>","prev_hash":"<hex>","hash":"<hex>"}
//! {"type":"checkpoint","chain":..,"seq":..,"hash":"<hex>","ts_us":..,"system_identifier":..,
//!  "timeline":..,"signature":"<hex>"}
//! ```
//!
//! An export that starts after seq 1 (a pruned chain) must include the
//! checkpoint at the seq before its first event: verification starts from
//! that signed hash.

use std::collections::BTreeMap;

use serde_json::Value;

use super::canonical::{canonical_fields, EventHeader};
use super::chain::{StoredEvent, HASH_BYTES};
use super::checkpoint::Checkpoint;
use super::signed::verify_signed_chain;

/// A chain's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerdict {
    pub chain: String,
    pub checked: u64,
    /// None: the chain verifies.
    pub failure: Option<(i64, &'static str)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError {
    pub line: usize,
    pub message: String,
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    // digits only: from_str_radix would also take a sign ("+f")
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hash_field(v: &Value, name: &str) -> Option<[u8; HASH_BYTES]> {
    hex_decode(v.get(name)?.as_str()?)?.try_into().ok()
}

fn text_field(v: &Value, name: &str) -> Option<Option<String>> {
    match v.get(name)? {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        _ => None,
    }
}

fn event(v: &Value) -> Option<StoredEvent> {
    let fields = match v.get("fields")? {
        Value::Null => None,
        f => Some(canonical_fields(f)),
    };
    let salt = match v.get("fields_salt")? {
        Value::Null => None,
        s => Some(hex_decode(s.as_str()?)?),
    };
    Some(StoredEvent {
        header: EventHeader {
            chain: v.get("chain")?.as_str()?.to_string(),
            seq: v.get("seq")?.as_i64()?,
            ts_micros: v.get("ts_us")?.as_i64()?,
            event_type: v.get("event_type")?.as_str()?.to_string(),
            tenant: text_field(v, "tenant")?,
            actor: text_field(v, "actor")?,
            actor_kind: text_field(v, "actor_kind")?,
            correlation_id: text_field(v, "correlation_id")?,
            txid: v.get("txid")?.as_u64()?,
        },
        canonical_fields: fields,
        fields_salt: salt,
        payload_digest: hash_field(v, "payload_digest")?,
        prev_hash: hash_field(v, "prev_hash")?,
        hash: hash_field(v, "hash")?,
    })
}

fn checkpoint(v: &Value) -> Option<(Checkpoint, Vec<u8>)> {
    Some((
        Checkpoint {
            chain: v.get("chain")?.as_str()?.to_string(),
            seq: v.get("seq")?.as_i64()?,
            hash: hash_field(v, "hash")?,
            ts_micros: v.get("ts_us")?.as_i64()?,
            system_identifier: v.get("system_identifier")?.as_u64()?,
            timeline: u32::try_from(v.get("timeline")?.as_u64()?).ok()?,
        },
        hex_decode(v.get("signature")?.as_str()?)?,
    ))
}

#[derive(Default)]
struct ChainExport {
    events: Vec<StoredEvent>,
    checkpoints: Vec<(Checkpoint, Vec<u8>)>,
}

/// Verifies every chain of an export under `public_key`: the events'
/// hashes and digests, the checkpoints' signatures, and that each chain
/// reaches and agrees with its latest checkpoint.
pub fn verify_export(text: &str, public_key: &[u8]) -> Result<Vec<ChainVerdict>, ExportError> {
    let mut chains: BTreeMap<String, ChainExport> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |message: &str| ExportError {
            line: i + 1,
            message: message.to_string(),
        };
        let v: Value = serde_json::from_str(line).map_err(|_| bad("not JSON"))?;
        match v.get("type").and_then(Value::as_str) {
            Some("event") => {
                let e = event(&v).ok_or_else(|| bad("malformed event"))?;
                chains
                    .entry(e.header.chain.clone())
                    .or_default()
                    .events
                    .push(e);
            }
            Some("checkpoint") => {
                let c = checkpoint(&v).ok_or_else(|| bad("malformed checkpoint"))?;
                chains
                    .entry(c.0.chain.clone())
                    .or_default()
                    .checkpoints
                    .push(c);
            }
            _ => return Err(bad("unknown line type")),
        }
    }
    Ok(chains
        .into_iter()
        .map(|(chain, mut export)| {
            export.events.sort_by_key(|e| e.header.seq);
            let outcome =
                verify_signed_chain(&export.events, &export.checkpoints, Some(public_key), None);
            ChainVerdict {
                chain,
                checked: outcome.unwrap_or(0),
                failure: outcome.err().map(|f| (f.seq, f.reason.as_str())),
            }
        })
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The export line of a stored event; `fields_json` is its fields as
/// stored (JSON text; None once redacted). Unparsable fields are
/// exported as null: such a row cannot verify anyway.
pub fn event_line(e: &StoredEvent, fields_json: Option<&str>) -> String {
    let h = &e.header;
    let fields = fields_json
        .and_then(|f| serde_json::from_str::<Value>(f).ok())
        .unwrap_or(Value::Null);
    serde_json::json!({
        "type": "event", "chain": h.chain, "seq": h.seq, "ts_us": h.ts_micros,
        "event_type": h.event_type, "tenant": h.tenant, "actor": h.actor,
        "actor_kind": h.actor_kind, "correlation_id": h.correlation_id, "txid": h.txid,
        "fields": fields, "fields_salt": e.fields_salt.as_deref().map(hex),
        "payload_digest": hex(&e.payload_digest), "prev_hash": hex(&e.prev_hash),
        "hash": hex(&e.hash),
    })
    .to_string()
}

/// The export line of a signed checkpoint.
pub fn checkpoint_line(c: &Checkpoint, signature: &[u8]) -> String {
    serde_json::json!({
        "type": "checkpoint", "chain": c.chain, "seq": c.seq, "hash": hex(&c.hash),
        "ts_us": c.ts_micros, "system_identifier": c.system_identifier,
        "timeline": c.timeline, "signature": hex(signature),
    })
    .to_string()
}

/// A checkpoint as `checkpoint_line` writes it (for digests kept outside
/// the database); None when malformed.
pub fn parse_checkpoint(v: &Value) -> Option<(Checkpoint, Vec<u8>)> {
    checkpoint(v)
}

/// Bytes from hex; None when malformed.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    hex_decode(s)
}

/// Bytes as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    hex(bytes)
}
