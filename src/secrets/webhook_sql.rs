//! `warden.webhook_sign` and `warden.webhook_verify`: webhook signatures
//! (`warden_core::secrets::webhook`) under a secret of the current
//! tenant, which never leaves the database. Verification tries the
//! latest live version and, while the secret is rotated, every live
//! version created within `warden.webhook_secret_overlap`; it answers
//! true or false and never says why (a malformed header is false). Both
//! are recorded like any access (`webhook.sign`, `webhook.verify`).

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use warden_core::secrets::webhook::{self, Delivery, Received, Scheme, SignError};
use warden_core::secrets::{Access, Outcome};

use super::access_audit::{check_name, not_found, record, refuse};
use super::read::{
    access_of, decrypt_or_refuse, live_candidates_or_refuse, secret_bytes, versions,
};
use crate::error::{not_null, WardenError};
use crate::tenant_context::tenant_or_raise;

/// Longest tolerance: a day.
const MAX_TOLERANCE_S: i64 = 86_400;

fn scheme(name: &str, event: &str) -> Scheme {
    Scheme::parse(name).unwrap_or_else(|| {
        refuse(
            event,
            Outcome::Invalid,
            &Access::default(),
            WardenError::invalid_parameter(format!("unknown webhook scheme \"{name}\""))
                .hint(format!("One of: {}.", Scheme::NAMES.join(", "))),
        )
    })
}

/// Unix seconds of a finite timestamptz (22008 for infinity).
fn unix_seconds(t: TimestampWithTimeZone, event: &str) -> i64 {
    let micros = t
        .is_finite()
        .then(|| pg_sys::TimestampTz::from(t).checked_add(946_684_800_000_000))
        .flatten();
    match micros {
        Some(m) => m.div_euclid(1_000_000),
        None => refuse(
            event,
            Outcome::Invalid,
            &Access::default(),
            WardenError::new(
                pgrx::PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                "sent_at must be a finite time",
            ),
        ),
    }
}

fn now_seconds() -> i64 {
    // SAFETY: reads the clock.
    (unsafe { pg_sys::GetCurrentTimestamp() } + 946_684_800_000_000).div_euclid(1_000_000)
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn webhook_sign(
    secret_name: Option<&str>,
    payload: Option<&[u8]>,
    scheme_name: Option<&str>,
    msg_id: Option<&str>,
    sent_at: Option<TimestampWithTimeZone>,
) -> String {
    const EVENT: &str = "webhook.sign";
    let tenant = tenant_or_raise().to_string();
    let name = not_null(secret_name, "secret_name");
    check_name(EVENT, name);
    let payload = not_null(payload, "payload");
    let scheme = scheme(not_null(scheme_name, "scheme"), EVENT);
    let access = Access {
        name: Some(name),
        scheme: scheme_name,
        ..Default::default()
    };
    let Some(s) = versions(&tenant, name, None, None).into_iter().next() else {
        refuse(
            EVENT,
            Outcome::NotFound,
            &access,
            not_found(format!("secret \"{name}\" has no live version")),
        )
    };
    let secret = secret_bytes(&s, decrypt_or_refuse(EVENT, &tenant, name, &s));
    let d = Delivery {
        payload,
        msg_id,
        timestamp: sent_at.map(|t| unix_seconds(t, EVENT)),
    };
    let mut a = access_of(name, &s);
    a.scheme = scheme_name;
    match webhook::sign(scheme, &secret, &d) {
        Ok(header) => {
            record(EVENT, Outcome::Ok, &a);
            header
        }
        Err(e) => {
            let error = match e {
                SignError::MsgIdRequired => {
                    WardenError::invalid_parameter("this scheme signs the message id: pass msg_id")
                }
                SignError::TimestampRequired => WardenError::invalid_parameter(
                    "this scheme signs a timestamp: sent_at must not be NULL",
                ),
                SignError::SecretFormat(expected) => {
                    WardenError::invalid_parameter("the secret is not a key of this scheme")
                        .detail(format!("Expected {expected}."))
                }
                SignError::PublicKeyCannotSign => WardenError::invalid_parameter(
                    "the secret is a public key (whpk_): it verifies, it cannot sign",
                ),
            };
            refuse(EVENT, Outcome::Invalid, &a, error)
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn webhook_verify(
    secret_name: Option<&str>,
    payload: Option<&[u8]>,
    signature: Option<&str>,
    scheme_name: Option<&str>,
    tolerance: Option<Interval>,
    msg_id: Option<&str>,
    sent_at: Option<TimestampWithTimeZone>,
) -> bool {
    const EVENT: &str = "webhook.verify";
    let tenant = tenant_or_raise().to_string();
    let name = not_null(secret_name, "secret_name");
    check_name(EVENT, name);
    let scheme = scheme(not_null(scheme_name, "scheme"), EVENT);
    let tolerance_s = {
        let us = not_null(tolerance, "tolerance").as_micros();
        if !(0..=i128::from(MAX_TOLERANCE_S) * 1_000_000).contains(&us) {
            refuse(
                EVENT,
                Outcome::Invalid,
                &Access {
                    name: Some(name),
                    scheme: scheme_name,
                    ..Default::default()
                },
                WardenError::invalid_parameter("tolerance must be between 0 and 1 day"),
            );
        }
        (us / 1_000_000) as i64
    };
    let access = Access {
        name: Some(name),
        scheme: scheme_name,
        ..Default::default()
    };
    let candidates = live_candidates_or_refuse(EVENT, &tenant, name, &access, false);
    // a NULL payload or signature is no signature: false, like a
    // malformed header
    let (Some(payload), Some(signature)) = (payload, signature) else {
        record(EVENT, Outcome::Invalid, &access);
        return false;
    };
    let refs: Vec<&[u8]> = candidates.secrets.iter().map(|s| s.as_slice()).collect();
    let r = Received {
        payload,
        signature,
        msg_id,
        sent_at: sent_at.map(|t| unix_seconds(t, EVENT)),
        now: now_seconds(),
        tolerance: tolerance_s,
    };
    let matched = webhook::verify_which(scheme, &refs, &r);
    // the version that matched; the newest when none did
    let named = matched
        .and_then(|i| candidates.secret_versions.get(i))
        .unwrap_or(&candidates.newest);
    let mut a = access_of(name, named);
    a.scheme = scheme_name;
    record(
        EVENT,
        if matched.is_some() {
            Outcome::Ok
        } else {
            Outcome::Denied
        },
        &a,
    );
    matched.is_some()
}
