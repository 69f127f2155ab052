//! An event on its way to the sequencer through the durable path's ring:
//! the header the caller knows (chain and seq are the sequencer's to
//! give) and the fields as JSON text, in a length-prefixed binary record
//! built from the canonical encoding's parts.
//! A record that does not decode is a bug, never input: the ring is
//! written only by pg_warden's own code.

use super::canonical::{put_opt, put_text, EventHeader};

const VERSION: u8 = 1;

/// The ring record of an event (`header.chain` and `header.seq` are not
/// stored).
pub fn encode_pending(header: &EventHeader, fields_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + header.event_type.len() + fields_json.len());
    out.push(VERSION);
    out.extend_from_slice(&header.ts_micros.to_be_bytes());
    out.extend_from_slice(&header.txid.to_be_bytes());
    put_text(&mut out, &header.event_type);
    put_opt(&mut out, header.tenant.as_deref());
    put_opt(&mut out, header.actor.as_deref());
    put_opt(&mut out, header.actor_kind.as_deref());
    put_opt(&mut out, header.correlation_id.as_deref());
    put_text(&mut out, fields_json);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<String> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn opt(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.text()?)),
            _ => None,
        }
    }
}

/// The header (chain empty, seq 0) and fields JSON of a ring record.
pub fn decode_pending(record: &[u8]) -> Option<(EventHeader, String)> {
    let mut r = Reader(record);
    if r.u8()? != VERSION {
        return None;
    }
    let ts_micros = r.u64()? as i64;
    let txid = r.u64()?;
    let event_type = r.text()?;
    let tenant = r.opt()?;
    let actor = r.opt()?;
    let actor_kind = r.opt()?;
    let correlation_id = r.opt()?;
    let fields = r.text()?;
    if !r.0.is_empty() {
        return None;
    }
    Some((
        EventHeader {
            chain: String::new(),
            seq: 0,
            ts_micros,
            event_type,
            tenant,
            actor,
            actor_kind,
            correlation_id,
            txid,
        },
        fields,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(".{0,20}")
    }

    proptest! {
        #[test]
        fn a_record_decodes_to_what_was_encoded(
            ts in any::<i64>(), txid in any::<u64>(), event_type in ".{0,30}",
            tenant in opt_text(), actor in opt_text(), kind in opt_text(), corr in opt_text(),
            fields in ".{0,60}",
        ) {
            let h = EventHeader { chain: String::new(), seq: 0, ts_micros: ts, event_type,
                                  tenant, actor, actor_kind: kind, correlation_id: corr, txid };
            let rec = encode_pending(&h, &fields);
            prop_assert_eq!(decode_pending(&rec), Some((h, fields)));
            // a cut record never decodes
            for cut in 0..rec.len() {
                prop_assert!(decode_pending(&rec[..cut]).is_none());
            }
        }
    }
}
