//! The secrets store's rules that need no database: valid names, the
//! associated data a version's ciphertext is bound to, how a stored JSON
//! value comes back as text, and the fields of an access event.

use serde_json::{json, Value};

/// Longest secret name.
pub const MAX_NAME_CHARS: usize = 128;

/// Names: 1 to 128 of `A-Z a-z 0-9 _ . : / -`.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
}

/// The associated data of version `version` of secret `name` (the
/// envelope binds the tenant itself): a ciphertext copied to another
/// name or version does not decrypt.
pub fn secret_aad(name: &str, version: i32) -> String {
    format!("pg_warden secret v1\u{1f}{name}\u{1f}{version}")
}

/// A stored JSON value as `secret_get` returns it: a JSON string as the
/// string itself (not quoted), anything else as its JSON text.
pub fn json_value_as_text(json_text: &str) -> String {
    match serde_json::from_str::<Value>(json_text) {
        Ok(Value::String(s)) => s,
        _ => json_text.to_string(),
    }
}

/// A stored text value as `secret_get_jsonb` returns it: a JSON string.
pub fn text_as_json(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// What an access came to (the `outcome` of its audit event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    Denied,
    Expired,
    DecryptFailed,
    TooLarge,
    Invalid,
    Conflict,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Denied => "denied",
            Outcome::Expired => "expired",
            Outcome::DecryptFailed => "decrypt_failed",
            Outcome::TooLarge => "too_large",
            Outcome::Invalid => "invalid",
            Outcome::Conflict => "conflict",
        }
    }
}

/// What an access event records: never the value.
#[derive(Debug, Clone, Default)]
pub struct Access<'a> {
    /// None when the name itself was invalid (it is not echoed).
    pub name: Option<&'a str>,
    pub version: Option<i32>,
    pub key_id: Option<u32>,
    pub root_key_version: Option<i32>,
    /// The keyed fingerprint of the value, hex.
    pub fingerprint: Option<String>,
    /// Webhook scheme, for webhook events.
    pub scheme: Option<&'a str>,
    /// Versions affected (delete, undelete, destroy).
    pub versions: Option<i64>,
    /// The database role that called (the session's and, when a
    /// SECURITY DEFINER function called, the current one).
    pub role: Option<&'a str>,
}

/// The JSON object (text) of an access event's fields.
pub fn access_fields(outcome: Outcome, a: &Access) -> String {
    let mut v = json!({ "outcome": outcome.as_str() });
    let o = v.as_object_mut().expect("an object");
    let mut put = |k: &str, val: Option<Value>| {
        if let Some(val) = val {
            o.insert(k.to_string(), val);
        }
    };
    put("name", a.name.map(Value::from));
    put("version", a.version.map(Value::from));
    put("key_id", a.key_id.map(Value::from));
    put("root_key_version", a.root_key_version.map(Value::from));
    put("fingerprint", a.fingerprint.clone().map(Value::from));
    put("scheme", a.scheme.map(Value::from));
    put("versions", a.versions.map(Value::from));
    put("role", a.role.map(Value::from));
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "stripe/webhook-secret",
            "svc:prod.api_key",
            &"x".repeat(128),
        ] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in [
            "",
            " a",
            "a b",
            "a'b",
            "ä",
            "a;b",
            &"x".repeat(129),
            "a\0b",
            "a\\b",
        ] {
            assert!(!valid_secret_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn json_strings_come_back_unquoted() {
        assert_eq!(json_value_as_text(r#""sk_live_1""#), "sk_live_1");
        assert_eq!(json_value_as_text(r#""a \"q\" \u00e9""#), "a \"q\" é");
        assert_eq!(json_value_as_text(r#"{"a": 1}"#), r#"{"a": 1}"#);
        assert_eq!(json_value_as_text("42"), "42");
        assert_eq!(text_as_json("a\"b"), r#""a\"b""#);
    }

    #[test]
    fn aad_binds_name_and_version() {
        assert_ne!(secret_aad("a", 1), secret_aad("a", 2));
        assert_ne!(secret_aad("a", 11), secret_aad("a1", 1));
    }

    #[test]
    fn access_fields_never_hold_more_than_given() {
        let f = access_fields(
            Outcome::Ok,
            &Access {
                name: Some("n"),
                version: Some(3),
                key_id: Some(7),
                root_key_version: Some(1),
                fingerprint: Some("ab".into()),
                ..Default::default()
            },
        );
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            v,
            json!({"outcome": "ok", "name": "n", "version": 3, "key_id": 7,
                              "root_key_version": 1, "fingerprint": "ab"})
        );
        assert_eq!(
            access_fields(Outcome::Invalid, &Access::default()),
            r#"{"outcome":"invalid"}"#
        );
    }

    proptest! {
        #[test]
        fn text_round_trips_through_json(s in ".*") {
            prop_assert_eq!(json_value_as_text(&text_as_json(&s)), s);
        }
    }
}
