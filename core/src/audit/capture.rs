//! Table change capture (`warden.audit_table`): the event a changed row
//! becomes. Pure: the extension reads the rows (as JSON objects, by the
//! writing role) and supplies the keyed fingerprint function.
//!
//! ```text
//! row.insert  {"table", "key": {pk columns}, "new": {columns}}
//! row.update  {"table", "key": {pk columns, new values}, "old": {changed columns}, "new": {changed columns}}
//! row.delete  {"table", "key": {pk columns}, "old": {columns}}
//! ```
//!
//! Excluded columns are left out; redacted columns (in `key` too) become
//! `"fp:<hex HMAC-SHA256 under the tenant's audit key of the value's
//! canonical encoding>"`: the same value gives the same fingerprint for a
//! tenant, so "did it change" and "same as" still work, and the value
//! itself appears nowhere.

use serde_json::{Map, Value};

use super::canonical::canonical_fields;

/// What `audit_table` recorded for a table.
#[derive(Debug, Clone, Default)]
pub struct CaptureSpec {
    pub table: String,
    pub key_columns: Vec<String>,
    pub redact: Vec<String>,
    pub exclude: Vec<String>,
    /// The tenant column of a tenant-isolated table: each row's event
    /// goes to its own tenant's chain.
    pub tenant_column: Option<String>,
}

/// One changed row, as JSON objects of its columns.
pub enum RowChange<'a> {
    Insert(&'a Map<String, Value>),
    Update(&'a Map<String, Value>, &'a Map<String, Value>),
    Delete(&'a Map<String, Value>),
}

/// A captured event: its type, its tenant (None: the statement's) and
/// fields.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    pub event_type: &'static str,
    pub tenant: Option<String>,
    pub fields: Value,
}

/// The tenant a row belongs to: its tenant column as text (a JSON
/// string as is, a number as written).
fn row_tenant(spec: &CaptureSpec, row: &Map<String, Value>) -> Option<String> {
    match row.get(spec.tenant_column.as_deref()?)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The fingerprint of a value under `tenant`'s key.
pub fn fingerprint_text(mac: [u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(3 + 64);
    out.push_str("fp:");
    for b in mac {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// The recorded form of `row`'s columns `cols` (all when None).
fn columns(
    spec: &CaptureSpec,
    row: &Map<String, Value>,
    cols: Option<&[&String]>,
    fingerprint: &mut impl FnMut(&[u8]) -> [u8; 32],
) -> Value {
    let mut out = Map::new();
    for (name, value) in row {
        if spec.exclude.contains(name) || cols.is_some_and(|c| !c.contains(&name)) {
            continue;
        }
        let recorded = if spec.redact.contains(name) {
            Value::String(fingerprint_text(fingerprint(&canonical_fields(value))))
        } else {
            value.clone()
        };
        out.insert(name.clone(), recorded);
    }
    Value::Object(out)
}

/// The event of one changed row. `fingerprint` is called with the
/// canonical encoding of each redacted value and the row's tenant
/// (`Some`) or the statement's (`None`).
pub fn capture_event(
    spec: &CaptureSpec,
    change: RowChange<'_>,
    mut fingerprint: impl FnMut(Option<&str>, &[u8]) -> [u8; 32],
) -> CapturedEvent {
    let (event_type, keyed) = match change {
        RowChange::Insert(n) => ("row.insert", n),
        RowChange::Update(_, n) => ("row.update", n),
        RowChange::Delete(o) => ("row.delete", o),
    };
    let tenant = row_tenant(spec, keyed);
    let mut fp = |bytes: &[u8]| fingerprint(tenant.as_deref(), bytes);
    let mut fields = Map::new();
    fields.insert("table".into(), spec.table.clone().into());
    if !spec.key_columns.is_empty() {
        let key: Vec<&String> = spec.key_columns.iter().collect();
        // a key column is never left out: it says which row changed
        let keep_key = CaptureSpec {
            exclude: Vec::new(),
            ..spec.clone()
        };
        fields.insert("key".into(), columns(&keep_key, keyed, Some(&key), &mut fp));
    }
    match change {
        RowChange::Insert(n) => {
            fields.insert("new".into(), columns(spec, n, None, &mut fp));
        }
        RowChange::Delete(o) => {
            fields.insert("old".into(), columns(spec, o, None, &mut fp));
        }
        RowChange::Update(o, n) => {
            let changed: Vec<&String> = n
                .iter()
                .filter(|(k, v)| o.get(*k) != Some(v))
                .map(|(k, _)| k)
                .chain(o.keys().filter(|k| !n.contains_key(*k)))
                .collect();
            fields.insert("old".into(), columns(spec, o, Some(&changed), &mut fp));
            fields.insert("new".into(), columns(spec, n, Some(&changed), &mut fp));
        }
    }
    CapturedEvent {
        event_type,
        tenant,
        fields: Value::Object(fields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec() -> CaptureSpec {
        CaptureSpec {
            table: "public.users".into(),
            key_columns: vec!["id".into()],
            redact: vec!["email".into()],
            exclude: vec!["password_hash".into()],
            tenant_column: Some("org".into()),
        }
    }

    /// A stand-in MAC: tenant and value bytes folded (the real one is
    /// HMAC-SHA256 under the tenant's key).
    fn mac(tenant: Option<&str>, bytes: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in tenant
            .unwrap_or("")
            .bytes()
            .chain(bytes.iter().copied())
            .enumerate()
        {
            out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(b);
        }
        out
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_fingerprint_is_fp_and_lowercase_hex_of_the_mac() {
        let mut mac = [0u8; 32];
        mac[0] = 0x01;
        mac[1] = 0xab;
        mac[31] = 0xf0;
        let text = fingerprint_text(mac);
        assert_eq!(
            text,
            format!("fp:01ab{}f0", "00".repeat(29)),
            "the README's format"
        );
    }

    #[test]
    fn an_insert_keeps_the_key_redacts_and_excludes() {
        let row = obj(
            json!({"id": 7, "org": "acme", "email": "a@x.io", "password_hash": "h", "name": "A"}),
        );
        let e = capture_event(&spec(), RowChange::Insert(&row), mac);
        assert_eq!(e.event_type, "row.insert");
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        let f = &e.fields;
        assert_eq!(f["key"], json!({"id": 7}));
        assert_eq!(f["new"]["name"], "A");
        assert!(f["new"].get("password_hash").is_none());
        assert!(f["new"]["email"].as_str().unwrap().starts_with("fp:"));
        assert!(!f.to_string().contains("a@x.io"));
    }

    #[test]
    fn an_update_records_only_the_changed_columns() {
        let old = obj(json!({"id": 7, "org": "acme", "email": "a@x.io", "name": "A", "n": 1}));
        let new = obj(json!({"id": 7, "org": "acme", "email": "b@x.io", "name": "A", "n": 2}));
        let e = capture_event(&spec(), RowChange::Update(&old, &new), mac);
        assert_eq!(e.event_type, "row.update");
        let f = &e.fields;
        assert_eq!(f["old"]["n"], 1);
        assert_eq!(f["new"]["n"], 2);
        assert!(f["new"].get("name").is_none(), "unchanged: {f}");
        assert_ne!(
            f["old"]["email"], f["new"]["email"],
            "the fingerprint shows a change"
        );
    }

    #[test]
    fn a_fingerprint_is_stable_per_value_and_tenant() {
        let a = obj(json!({"id": 1, "org": "acme", "email": "same@x.io"}));
        let b = obj(json!({"id": 2, "org": "acme", "email": "same@x.io"}));
        let c = obj(json!({"id": 3, "org": "beta", "email": "same@x.io"}));
        let fp = |r: &Map<String, Value>| {
            capture_event(&spec(), RowChange::Delete(r), mac).fields["old"]["email"].clone()
        };
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c));
    }

    proptest! {
        // a redacted or excluded value never reaches the event, whatever
        // the other columns hold
        #[test]
        fn redacted_and_excluded_values_never_appear(
            secret in "[a-zA-Z0-9@.]{6,20}", hidden in "[a-zA-Z0-9]{6,20}",
            name in "[a-z]{0,5}", id in any::<i32>(), update in any::<bool>(),
        ) {
            let old = obj(json!({"id": id, "org": "acme", "email": "old-value", "password_hash": "old-hash", "name": name}));
            let new = obj(json!({"id": id, "org": "acme", "email": secret, "password_hash": hidden, "name": name}));
            let e = if update {
                capture_event(&spec(), RowChange::Update(&old, &new), mac)
            } else {
                capture_event(&spec(), RowChange::Insert(&new), mac)
            };
            let text = e.fields.to_string();
            let quoted = format!("\"{}\"", secret);
            prop_assert!(!text.contains(&quoted));
            prop_assert!(!text.contains(&hidden));
        }
    }
}
