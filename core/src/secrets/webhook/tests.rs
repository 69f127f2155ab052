//! Known-answer vectors from each scheme's own documentation and
//! reference libraries, then for every scheme: a tampered payload, a
//! wrong secret, stale and future timestamps, a list where only one entry
//! is right, malformed headers, rotation, and a property: what `sign`
//! makes, `verify` accepts, and no one-character change of it passes.

use super::*;
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000;

fn received<'a>(
    payload: &'a [u8],
    signature: &'a str,
    msg_id: Option<&'a str>,
    sent_at: Option<i64>,
    now: i64,
) -> Received<'a> {
    Received {
        payload,
        signature,
        msg_id,
        sent_at,
        now,
        tolerance: 300,
    }
}

fn ok(scheme: Scheme, secret: &str, r: &Received) -> bool {
    verify(scheme, &[secret.as_bytes()], r)
}

// GitHub, "Validating webhook deliveries": secret "It's a Secret to
// Everybody", payload "Hello, World!".
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_documented_example() {
    let d = Delivery {
        payload: b"Hello, World!",
        msg_id: None,
        timestamp: None,
    };
    assert_eq!(
        sign(Scheme::Github, GITHUB_SECRET.as_bytes(), &d).unwrap(),
        GITHUB_SIG
    );
    assert!(ok(
        Scheme::Github,
        GITHUB_SECRET,
        &received(b"Hello, World!", GITHUB_SIG, None, None, NOW)
    ));
    // upper-case hex is the same bytes
    let upper = format!("sha256={}", GITHUB_SIG[7..].to_ascii_uppercase());
    assert!(ok(
        Scheme::Github,
        GITHUB_SECRET,
        &received(b"Hello, World!", &upper, None, None, NOW)
    ));
    assert!(!ok(
        Scheme::Github,
        GITHUB_SECRET,
        &received(b"Hello, World?", GITHUB_SIG, None, None, NOW)
    ));
    assert!(!ok(
        Scheme::Github,
        "It's a secret to everybody",
        &received(b"Hello, World!", GITHUB_SIG, None, None, NOW)
    ));
    for bad in [
        "",
        "sha256=",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17ff",
        "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ] {
        assert!(
            !ok(
                Scheme::Github,
                GITHUB_SECRET,
                &received(b"Hello, World!", bad, None, None, NOW)
            ),
            "{bad}"
        );
    }
    // a timestamp, when given, must be fresh
    assert!(!ok(
        Scheme::Github,
        GITHUB_SECRET,
        &received(b"Hello, World!", GITHUB_SIG, None, Some(NOW - 301), NOW)
    ));
}

// Slack, "Verifying requests from Slack".
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: i64 = 1_531_420_618;
const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slack_documented_example() {
    let d = Delivery {
        payload: SLACK_BODY,
        msg_id: None,
        timestamp: Some(SLACK_TS),
    };
    assert_eq!(
        sign(Scheme::Slack, SLACK_SECRET.as_bytes(), &d).unwrap(),
        SLACK_SIG
    );
    let at = |now| received(SLACK_BODY, SLACK_SIG, None, Some(SLACK_TS), now);
    assert!(ok(Scheme::Slack, SLACK_SECRET, &at(SLACK_TS + 300)));
    assert!(ok(Scheme::Slack, SLACK_SECRET, &at(SLACK_TS - 300)));
    assert!(
        !ok(Scheme::Slack, SLACK_SECRET, &at(SLACK_TS + 301)),
        "stale"
    );
    assert!(
        !ok(Scheme::Slack, SLACK_SECRET, &at(SLACK_TS - 301)),
        "future"
    );
    let mut tampered = SLACK_BODY.to_vec();
    tampered[6] ^= 1;
    assert!(!ok(
        Scheme::Slack,
        SLACK_SECRET,
        &received(&tampered, SLACK_SIG, None, Some(SLACK_TS), SLACK_TS)
    ));
    assert!(!ok(
        Scheme::Slack,
        "8f742231b10e8888abcd99yyyzzz85a6",
        &at(SLACK_TS)
    ));
    // the timestamp is signed: another one does not verify
    assert!(!ok(
        Scheme::Slack,
        SLACK_SECRET,
        &received(SLACK_BODY, SLACK_SIG, None, Some(SLACK_TS + 1), SLACK_TS)
    ));
    assert!(
        !ok(
            Scheme::Slack,
            SLACK_SECRET,
            &received(SLACK_BODY, SLACK_SIG, None, None, SLACK_TS)
        ),
        "no timestamp"
    );
    for bad in [
        "",
        "v0=",
        "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "v0=a2114d57",
    ] {
        assert!(
            !ok(
                Scheme::Slack,
                SLACK_SECRET,
                &received(SLACK_BODY, bad, None, Some(SLACK_TS), SLACK_TS)
            ),
            "{bad}"
        );
    }
    assert_eq!(
        sign(
            Scheme::Slack,
            b"k",
            &Delivery {
                timestamp: None,
                ..d
            }
        ),
        Err(SignError::TimestampRequired)
    );
}

// Standard Webhooks: the vector its libraries share.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn standard_webhooks_shared_vector() {
    let d = Delivery {
        payload: SW_BODY,
        msg_id: Some(SW_ID),
        timestamp: Some(SW_TS),
    };
    assert_eq!(
        sign(Scheme::StandardWebhooks, SW_SECRET.as_bytes(), &d).unwrap(),
        SW_SIG
    );
    // the libraries accept the secret without its prefix too
    assert_eq!(
        sign(Scheme::StandardWebhooks, &SW_SECRET.as_bytes()[6..], &d).unwrap(),
        SW_SIG
    );
    let at = |sig, now| received(SW_BODY, sig, Some(SW_ID), Some(SW_TS), now);
    assert!(ok(Scheme::StandardWebhooks, SW_SECRET, &at(SW_SIG, SW_TS)));
    assert!(
        !ok(
            Scheme::StandardWebhooks,
            SW_SECRET,
            &at(SW_SIG, SW_TS + 301)
        ),
        "stale"
    );
    assert!(
        !ok(
            Scheme::StandardWebhooks,
            SW_SECRET,
            &at(SW_SIG, SW_TS - 301)
        ),
        "future"
    );
    // a list: unknown versions skipped, one right entry is enough
    let list = format!(
        "v1,Zm9vYmFy v2,{} {SW_SIG} v1a,bm90IGEgc2lnbmF0dXJl",
        &SW_SIG[3..]
    );
    assert!(ok(Scheme::StandardWebhooks, SW_SECRET, &at(&list, SW_TS)));
    assert!(!ok(
        Scheme::StandardWebhooks,
        SW_SECRET,
        &at(
            "v1,Zm9vYmFy v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            SW_TS
        )
    ));
    assert!(!ok(
        Scheme::StandardWebhooks,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx",
        &at(SW_SIG, SW_TS)
    ));
    assert!(!ok(
        Scheme::StandardWebhooks,
        SW_SECRET,
        &received(
            br#"{"test": 2432232315}"#,
            SW_SIG,
            Some(SW_ID),
            Some(SW_TS),
            SW_TS
        )
    ));
    // id and timestamp are signed
    assert!(!ok(
        Scheme::StandardWebhooks,
        SW_SECRET,
        &received(SW_BODY, SW_SIG, Some("msg_other"), Some(SW_TS), SW_TS)
    ));
    assert!(!ok(
        Scheme::StandardWebhooks,
        SW_SECRET,
        &received(SW_BODY, SW_SIG, Some(SW_ID), Some(SW_TS + 1), SW_TS)
    ));
    assert!(!ok(
        Scheme::StandardWebhooks,
        SW_SECRET,
        &received(SW_BODY, SW_SIG, None, Some(SW_TS), SW_TS)
    ));
    assert!(!ok(
        Scheme::StandardWebhooks,
        SW_SECRET,
        &received(SW_BODY, SW_SIG, Some(SW_ID), None, SW_TS)
    ));
    for bad in [
        "",
        "v1",
        "v1,",
        ",g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
        "v1 g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,!!!!",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ] {
        assert!(
            !ok(Scheme::StandardWebhooks, SW_SECRET, &at(bad, SW_TS)),
            "{bad}"
        );
    }
    // a secret that is not base64 cannot sign, and verifies nothing
    assert!(matches!(
        sign(Scheme::StandardWebhooks, b"whsec_not base64!", &d),
        Err(SignError::SecretFormat(_))
    ));
    assert!(!ok(
        Scheme::StandardWebhooks,
        "whsec_not base64!",
        &at(SW_SIG, SW_TS)
    ));
    assert_eq!(
        sign(
            Scheme::StandardWebhooks,
            SW_SECRET.as_bytes(),
            &Delivery { msg_id: None, ..d }
        ),
        Err(SignError::MsgIdRequired)
    );
}

#[test]
fn rotation_tries_every_secret() {
    let r = received(b"Hello, World!", GITHUB_SIG, None, None, NOW);
    assert!(verify(
        Scheme::Github,
        &[b"new secret", GITHUB_SECRET.as_bytes()],
        &r
    ));
    assert!(verify(
        Scheme::Github,
        &[GITHUB_SECRET.as_bytes(), b"new secret"],
        &r
    ));
    assert!(!verify(Scheme::Github, &[b"new secret", b"older"], &r));
    assert!(!verify(Scheme::Github, &[], &r));
    // which one matched: the event names that version
    assert_eq!(
        verify_which(
            Scheme::Github,
            &[b"new secret", GITHUB_SECRET.as_bytes()],
            &r
        ),
        Some(1)
    );
    assert_eq!(
        verify_which(
            Scheme::Github,
            &[GITHUB_SECRET.as_bytes(), GITHUB_SECRET.as_bytes()],
            &r
        ),
        Some(0)
    );
    assert_eq!(verify_which(Scheme::Github, &[b"new secret"], &r), None);
}

#[test]
fn hmac_sha256_scheme_takes_hex_or_base64() {
    let d = Delivery {
        payload: b"Hello, World!",
        msg_id: None,
        timestamp: None,
    };
    let hex = sign(Scheme::HmacSha256, GITHUB_SECRET.as_bytes(), &d).unwrap();
    assert_eq!(hex, &GITHUB_SIG[7..]);
    let b64 = base64_text(&crate::audit::from_hex(&hex).unwrap());
    for sig in [hex.as_str(), b64.as_str()] {
        assert!(
            ok(
                Scheme::HmacSha256,
                GITHUB_SECRET,
                &received(b"Hello, World!", sig, None, None, NOW)
            ),
            "{sig}"
        );
        assert!(
            !ok(
                Scheme::HmacSha256,
                GITHUB_SECRET,
                &received(b"Hello, World?", sig, None, None, NOW)
            ),
            "{sig}"
        );
        assert!(
            !ok(
                Scheme::HmacSha256,
                "other",
                &received(b"Hello, World!", sig, None, None, NOW)
            ),
            "{sig}"
        );
    }
    for bad in ["", "sha256=757107ea", "%%%", &hex[1..]] {
        assert!(
            !ok(
                Scheme::HmacSha256,
                GITHUB_SECRET,
                &received(b"Hello, World!", bad, None, None, NOW)
            ),
            "{bad}"
        );
    }
}

#[test]
fn scheme_names_round_trip() {
    for name in Scheme::NAMES {
        assert!(Scheme::parse(name).is_some(), "{name}");
    }
    assert_eq!(Scheme::parse("GitHub"), None);
    assert_eq!(Scheme::parse("svix"), None);
}

fn any_scheme() -> impl Strategy<Value = Scheme> {
    prop::sample::select(Scheme::NAMES.to_vec()).prop_map(|n| Scheme::parse(n).unwrap())
}

proptest! {
    #[test]
    fn what_sign_makes_verify_accepts_and_no_one_character_change_passes(
        scheme in any_scheme(),
        key in proptest::collection::vec(any::<u8>(), 1..40),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        ts in 1_000_000_000i64..2_000_000_000,
        skew in -300i64..=300,
        at in 0usize..200,
        with in any::<u8>(),
    ) {
        use base64::Engine;
        let secret = if scheme == Scheme::StandardWebhooks {
            format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key)).into_bytes()
        } else {
            key.clone()
        };
        let d = Delivery { payload: &payload, msg_id: Some("msg_1"), timestamp: Some(ts) };
        let sig = sign(scheme, &secret, &d).unwrap();
        let r = Received { payload: &payload, signature: &sig, msg_id: Some("msg_1"), sent_at: Some(ts), now: ts + skew, tolerance: 300 };
        prop_assert!(verify(scheme, &[&secret], &r));
        // change one character of the signature header
        let mut changed = sig.clone().into_bytes();
        let i = at % changed.len();
        let c = with | 0x20; // printable-ish, never a no-op below
        if changed[i] != c && c.is_ascii_graphic() {
            changed[i] = c;
            if let Ok(changed) = String::from_utf8(changed) {
                let r = Received { signature: &changed, ..r };
                // hex and base64 letters of other case may decode to the
                // same bytes only for hex: upper/lower of the same digit
                let same_hex = sig.as_bytes()[i].eq_ignore_ascii_case(&c);
                if !same_hex {
                    prop_assert!(!verify(scheme, &[&secret], &r), "{} accepted {}", sig, changed);
                }
            }
        }
        // a stale or future timestamp fails where one is signed
        if matches!(scheme, Scheme::Stripe | Scheme::StandardWebhooks | Scheme::Slack) {
            let late = Received { now: ts + 301, ..r };
            prop_assert!(!verify(scheme, &[&secret], &late));
            let early = Received { now: ts - 301, ..r };
            prop_assert!(!verify(scheme, &[&secret], &early));
        }
    }
}

// Standard Webhooks' Rust library (libraries/rust/src/lib.rs, test_sign).
#[test]
fn standard_webhooks_rust_library_vector() {
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let d = Delivery {
        payload: body,
        msg_id: Some("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
        timestamp: Some(1_649_367_553),
    };
    let sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    assert_eq!(
        sign(Scheme::StandardWebhooks, secret.as_bytes(), &d).unwrap(),
        sig
    );
    let r = |sig| received(body, sig, d.msg_id, d.timestamp, 1_649_367_553);
    assert!(ok(Scheme::StandardWebhooks, secret, &r(sig)));
    // its test_no_verify signature, and the empty or cut signatures its
    // own comparison (zip without a length check) wrongly accepted
    for bad in [
        "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
        "v1,",
        "v1,tZ",
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kk",
    ] {
        assert!(!ok(Scheme::StandardWebhooks, secret, &r(bad)), "{bad}");
    }
}

// Standard Webhooks' Go library (webhook_asymmetric_test.go,
// TestAsymmetricWebhookSign): Ed25519 over the shared vector's content;
// the public key of its seed.
#[test]
fn standard_webhooks_v1a_ed25519() {
    let public = "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
    let sig = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==";
    let at = |sig, body: &'static [u8]| received(body, sig, Some(SW_ID), Some(SW_TS), SW_TS);
    assert!(ok(Scheme::StandardWebhooks, public, &at(sig, SW_BODY)));
    let list = format!("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= {sig}");
    assert!(ok(Scheme::StandardWebhooks, public, &at(&list, SW_BODY)));
    assert!(!ok(
        Scheme::StandardWebhooks,
        public,
        &at(sig, br#"{"test": 2432232315}"#)
    ));
    // a symmetric signature does not count for a public key, nor the
    // reverse; an empty v1a is no signature
    assert!(!ok(Scheme::StandardWebhooks, public, &at(SW_SIG, SW_BODY)));
    assert!(!ok(Scheme::StandardWebhooks, SW_SECRET, &at(sig, SW_BODY)));
    assert!(!ok(Scheme::StandardWebhooks, public, &at("v1a,", SW_BODY)));
    assert!(!ok(
        Scheme::StandardWebhooks,
        "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/h=",
        &at(sig, SW_BODY)
    ));
    let d = Delivery {
        payload: SW_BODY,
        msg_id: Some(SW_ID),
        timestamp: Some(SW_TS),
    };
    assert_eq!(
        sign(Scheme::StandardWebhooks, public.as_bytes(), &d),
        Err(SignError::PublicKeyCannotSign)
    );
}

// Shopify's PHP library (tests/Webhooks/RegistryTest.php, secret from
// tests/BaseTestCase.php).
#[test]
fn shopify_library_vector() {
    let d = Delivery {
        payload: br#"{"foo":"bar"}"#,
        msg_id: None,
        timestamp: None,
    };
    let sig = "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo=";
    assert_eq!(sign(Scheme::Shopify, b"steffi", &d).unwrap(), sig);
    assert!(ok(
        Scheme::Shopify,
        "steffi",
        &received(br#"{"foo":"bar"}"#, sig, None, None, NOW)
    ));
    // Ruby's Base64.encode64 ends the value with a newline
    assert!(ok(
        Scheme::Shopify,
        "steffi",
        &received(
            br#"{"foo":"bar"}"#,
            "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo=\n",
            None,
            None,
            NOW
        )
    ));
    assert!(!ok(
        Scheme::Shopify,
        "steffi",
        &received(br#"{"foo":"baz"}"#, sig, None, None, NOW)
    ));
    assert!(!ok(
        Scheme::Shopify,
        "steffy",
        &received(br#"{"foo":"bar"}"#, sig, None, None, NOW)
    ));
    for bad in [
        "whoops_this_is_wrong",
        "",
        "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8w",
        "sha256=/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo=",
    ] {
        assert!(
            !ok(
                Scheme::Shopify,
                "steffi",
                &received(br#"{"foo":"bar"}"#, bad, None, None, NOW)
            ),
            "{bad}"
        );
    }
}

// stripe-dotnet (EventUtilityTest.cs with event_test_signature.json, LF
// line endings, ending in a newline); its v0 is a decoy.
const STRIPE_BODY: &str = "{\n  \"id\": \"evt_123\",\n  \"object\": \"event\",\n  \"account\": \"acct_123\",\n  \"api_version\": \"2017-05-25\",\n  \"created\": 1533204620,\n  \"data\": {\n    \"object\": {\n      \"id\": \"cus_123\",\n      \"object\": \"customer\",\n      \"created\": 123456789,\n      \"email\": \"test@stripe.com\",\n      \"livemode\": false,\n      \"metadata\": {}\n    }\n  },\n  \"livemode\": false,\n  \"pending_webhooks\": 1,\n  \"request\": {\n    \"id\": \"req_123\",\n    \"idempotency_key\": \"idempotency-key-123\"\n  },\n  \"type\": \"customer.created\"\n}\n";
const STRIPE_HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";

#[test]
fn stripe_dotnet_vector() {
    let body = STRIPE_BODY.as_bytes();
    assert_eq!(body.len(), 484);
    let r = |sig, now| received(body, sig, None, None, now);
    assert!(ok(
        Scheme::Stripe,
        "webhook_secret",
        &r(STRIPE_HEADER, 1_533_204_720)
    ));
    assert!(
        !ok(
            Scheme::Stripe,
            "webhook_secret",
            &r(STRIPE_HEADER, 1_533_205_020)
        ),
        "400 s late"
    );
    assert!(
        !ok(
            Scheme::Stripe,
            "webhook_secret",
            &r(STRIPE_HEADER, 1_533_204_220)
        ),
        "400 s early"
    );
    let d = Delivery {
        payload: body,
        msg_id: None,
        timestamp: Some(1_533_204_620),
    };
    assert_eq!(
        sign(Scheme::Stripe, b"webhook_secret", &d).unwrap(),
        "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"
    );
    // without the final newline the payload is another one
    assert!(!ok(
        Scheme::Stripe,
        "webhook_secret",
        &received(&body[..483], STRIPE_HEADER, None, None, 1_533_204_620)
    ));
    assert!(!ok(
        Scheme::Stripe,
        "webhook_secret2",
        &r(STRIPE_HEADER, 1_533_204_620)
    ));
    // only v1 counts: the v0 alone, and other keys, match nothing
    let v0_only =
        "t=1533204620,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
    assert!(!ok(
        Scheme::Stripe,
        "webhook_secret",
        &r(v0_only, 1_533_204_620)
    ));
    // a list: unknown keys, a bad v1, the right one
    let list = "t=1533204620,foo=bar,v1=deadbeef,v0=abc,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";
    assert!(ok(
        Scheme::Stripe,
        "webhook_secret",
        &r(list, 1_533_204_620)
    ));
    for bad in [
        "",
        "t=1533204620",
        "v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
        "t=abc,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
        "t=-1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
        "t=01533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
        "t=1533204620,v1=",
        "t=1533204620;v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
    ] {
        assert!(
            !ok(Scheme::Stripe, "webhook_secret", &r(bad, 1_533_204_620)),
            "{bad}"
        );
    }
}

// Stripe with a whsec_ secret: the key is the whole string's bytes (as
// stripe-python 16.1.0's generate_signature_header computes it), not its
// base64 decoding.
#[test]
fn stripe_keys_with_the_whole_whsec_string() {
    let payload = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}";
    let d = Delivery {
        payload,
        msg_id: None,
        timestamp: Some(12_345),
    };
    let header = "t=12345,v1=07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda";
    assert_eq!(
        sign(Scheme::Stripe, b"whsec_test_secret", &d).unwrap(),
        header
    );
    assert!(ok(
        Scheme::Stripe,
        "whsec_test_secret",
        &received(payload, header, None, None, 12_345)
    ));
    assert!(!ok(
        Scheme::Stripe,
        "test_secret",
        &received(payload, header, None, None, 12_345)
    ));
}

#[test]
fn a_public_key_is_never_an_hmac_key() {
    let public = "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
    let d = Delivery {
        payload: b"x",
        msg_id: Some("m"),
        timestamp: Some(NOW),
    };
    for scheme in [
        Scheme::HmacSha256,
        Scheme::Github,
        Scheme::Stripe,
        Scheme::Slack,
        Scheme::Shopify,
    ] {
        assert_eq!(
            sign(scheme, public.as_bytes(), &d),
            Err(SignError::PublicKeyCannotSign)
        );
        // what anyone holding the public key could compute
        let forged = sign(scheme, b"whpk_other", &d);
        assert!(forged.is_err());
        let mac = crate::audit::to_hex(&crate::secrets::hmac_sha256(public.as_bytes(), b"x"));
        let header = match scheme {
            Scheme::Github => format!("sha256={mac}"),
            Scheme::HmacSha256 => mac.clone(),
            _ => continue,
        };
        assert!(!verify(
            scheme,
            &[public.as_bytes()],
            &received(b"x", &header, None, None, NOW)
        ));
    }
}
