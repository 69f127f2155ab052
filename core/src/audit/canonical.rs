//! The canonical encodings of an audit event (format v1), the bytes its
//! digest and hash are computed over. Specified in the README so that a
//! verifier can be written in any language:
//!
//! ```text
//! fields (a JSON value):
//!   null            'n'
//!   true / false    't' / 'f'
//!   number          'd' len:u32be <the number's text, as Postgres' jsonb prints it>
//!   string          's' len:u32be <UTF-8 bytes>
//!   array           'a' count:u32be <value>...
//!   object          'o' count:u32be (len:u32be <key UTF-8> <value>)...   keys sorted by their bytes
//!
//! header:
//!   "pg_warden audit v1" 0x00
//!   text(chain) i64be(seq) i64be(ts: microseconds since 1970-01-01 UTC)
//!   text(event_type) opt(tenant) opt(actor) opt(actor_kind) opt(correlation_id)
//!   u64be(txid)
//!   where text(s) = len:u32be <UTF-8 bytes>, opt(NULL) = 0x00, opt(s) = 0x01 text(s)
//! ```
//!
//! Every variable-length part is length-prefixed and every value tagged,
//! so no two different events encode the same (property-tested).

use serde_json::Value;

/// Domain separation: the hash of a v1 event can never be the hash of
/// anything else pg_warden hashes.
pub const HEADER_MAGIC: &[u8] = b"pg_warden audit v1\0";

/// The columns of an event that its hash covers, besides the payload
/// digest and the previous hash. `fields`, its salt and `redacted_at` are
/// not among them: erasing a payload leaves the chain intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    pub chain: String,
    pub seq: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_micros: i64,
    pub event_type: String,
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub actor_kind: Option<String>,
    pub correlation_id: Option<String>,
    pub txid: u64,
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // lengths above u32 cannot occur: Postgres values are at most 1 GB
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

pub(super) fn put_text(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_text(out, s);
        }
    }
}

/// The canonical header bytes.
pub fn canonical_header(h: &EventHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + h.chain.len() + h.event_type.len());
    out.extend_from_slice(HEADER_MAGIC);
    put_text(&mut out, &h.chain);
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.ts_micros.to_be_bytes());
    put_text(&mut out, &h.event_type);
    put_opt(&mut out, h.tenant.as_deref());
    put_opt(&mut out, h.actor.as_deref());
    put_opt(&mut out, h.actor_kind.as_deref());
    put_opt(&mut out, h.correlation_id.as_deref());
    out.extend_from_slice(&h.txid.to_be_bytes());
    out
}

/// The canonical bytes of a JSON value (the event's `fields`).
pub fn canonical_fields(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_value(&mut out, value);
    out
}

/// The canonical bytes of a JSON text (a jsonb value as Postgres prints
/// it); None when it is not JSON.
pub fn canonical_fields_text(json: &str) -> Option<Vec<u8>> {
    serde_json::from_str::<Value>(json)
        .ok()
        .map(|v| canonical_fields(&v))
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(true) => out.push(b't'),
        Value::Bool(false) => out.push(b'f'),
        Value::Number(n) => {
            out.push(b'd');
            // with serde_json's arbitrary_precision, the text as written
            put_text(out, &n.to_string());
        }
        Value::String(s) => {
            out.push(b's');
            put_text(out, s);
        }
        Value::Array(items) => {
            out.push(b'a');
            put_len(out, items.len());
            for item in items {
                put_value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(b'o');
            put_len(out, map.len());
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (key, item) in entries {
                put_text(out, key);
                put_value(out, item);
            }
        }
    }
}

/// The canonical encoding built from a stream of tokens, the way a jsonb
/// iterator walks a stored value (no JSON text in between): begin and end
/// containers, keys, scalars. Gives exactly `canonical_fields` of the
/// value the tokens describe.
#[derive(Debug, Default)]
pub struct CanonicalBuilder {
    stack: Vec<Frame>,
    done: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Frame {
    Array {
        count: usize,
        out: Vec<u8>,
    },
    Object {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        key: Option<Vec<u8>>,
    },
}

impl CanonicalBuilder {
    pub fn new() -> CanonicalBuilder {
        CanonicalBuilder::default()
    }

    pub fn begin_array(&mut self) {
        self.stack.push(Frame::Array {
            count: 0,
            out: Vec::new(),
        });
    }

    pub fn begin_object(&mut self) {
        self.stack.push(Frame::Object {
            entries: Vec::new(),
            key: None,
        });
    }

    /// The key of the next value of the open object.
    pub fn key(&mut self, key: &[u8]) {
        if let Some(Frame::Object { key: k, .. }) = self.stack.last_mut() {
            *k = Some(key.to_vec());
        }
    }

    pub fn null(&mut self) {
        self.value(vec![b'n']);
    }

    pub fn boolean(&mut self, b: bool) {
        self.value(vec![if b { b't' } else { b'f' }]);
    }

    /// A number, as Postgres prints it.
    pub fn number(&mut self, text: &str) {
        let mut out = vec![b'd'];
        put_text(&mut out, text);
        self.value(out);
    }

    /// A string's UTF-8 bytes.
    pub fn string(&mut self, s: &[u8]) {
        let mut out = vec![b's'];
        put_len(&mut out, s.len());
        out.extend_from_slice(s);
        self.value(out);
    }

    /// Closes the open array or object.
    pub fn end(&mut self) {
        let encoded = match self.stack.pop() {
            Some(Frame::Array { count, out }) => {
                let mut e = Vec::with_capacity(5 + out.len());
                e.push(b'a');
                put_len(&mut e, count);
                e.extend_from_slice(&out);
                e
            }
            Some(Frame::Object { mut entries, .. }) => {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut e = vec![b'o'];
                put_len(&mut e, entries.len());
                for (k, v) in entries {
                    put_len(&mut e, k.len());
                    e.extend_from_slice(&k);
                    e.extend_from_slice(&v);
                }
                e
            }
            None => return,
        };
        self.value(encoded);
    }

    fn value(&mut self, encoded: Vec<u8>) {
        match self.stack.last_mut() {
            Some(Frame::Array { count, out }) => {
                *count += 1;
                out.extend_from_slice(&encoded);
            }
            Some(Frame::Object { entries, key }) => {
                entries.push((key.take().unwrap_or_default(), encoded));
            }
            None => self.done = Some(encoded),
        }
    }

    /// The encoding of the whole value, once every container is closed.
    pub fn finish(self) -> Option<Vec<u8>> {
        self.stack.is_empty().then_some(self.done).flatten()
    }
}

/// How deeply a JSON value nests (a scalar is 0, `[]` and `{}` are 1).
pub fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}
