//! The authentication table: every way a credential is accepted or refused,
//! with the clock passed in.

use std::path::Path;

use easechat_auth::claims::Claims;
use easechat_auth::permissions::{PermissionsText, RuleText};
use easechat_auth::policy::Sources;
use easechat_auth::{Credential, Mode, Operation, Policy, SigningKey, Status};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const NOW: u64 = 1_800_000_000;

fn keys_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| e.to_string())
}

fn policy(mode: Mode, text: Option<&str>) -> Result<Policy, String> {
    Policy::build(
        &Sources {
            mode,
            key_file: Some(SECRET),
            policy: text.map(|t| (t, keys_dir())),
        },
        &read,
    )
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: Some(NOW + 60),
        iat: Some(NOW - 10),
        jti: Some(format!("id-{sub}")),
        perm: Some(PermissionsText {
            publish: RuleText {
                allow: list(&["game/*"]),
                deny: list(&["game/admin/*"]),
            },
            subscribe: RuleText {
                allow: list(&["*"]),
                deny: vec![],
            },
        }),
        ..Default::default()
    }
}

fn hmac(claims: &Claims) -> String {
    SigningKey::from_file_bytes(SECRET, None)
        .unwrap()
        .sign(claims)
        .unwrap()
}

fn refused(policy: &Policy, token: &str) -> (Status, String) {
    let refusal = policy
        .authenticate(Credential::Token(token), NOW)
        .unwrap_err();
    (refusal.status, refusal.reason)
}

#[test]
fn a_good_token_grants_its_claims() {
    let p = policy(Mode::Required, None).unwrap();
    let grant = p
        .authenticate(Credential::Token(&hmac(&claims("gs-7"))), NOW)
        .unwrap();
    assert_eq!(&*grant.identity, "gs-7");
    assert_eq!(grant.token_id.as_deref(), Some("id-gs-7"));
    assert!(grant.may_use_name("gs-7"));
    assert!(!grant.may_use_name("gs-8"));
    assert!(grant.may(Operation::Publish, "game/7/chat"));
    assert!(
        !grant.may(Operation::Publish, "game/admin/restart"),
        "deny wins"
    );
    assert!(!grant.may(Operation::Publish, "ops"));
    assert!(grant.may(Operation::Subscribe, "ops"));
    assert_eq!(grant.closes_at, Some(NOW + 60 + p.leeway()));
}

#[test]
fn every_bad_token_is_401_with_a_reason_for_the_log() {
    let p = policy(Mode::Required, None).unwrap();
    assert_eq!(
        p.authenticate(Credential::None, NOW).unwrap_err().status,
        Status::Unauthorized
    );
    let other = SigningKey::from_file_bytes(b"another secret that is long enough!!", None).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (other.sign(&claims("a")).unwrap(), "bad signature"),
        (
            hmac(&Claims {
                exp: Some(NOW - 100),
                ..claims("a")
            }),
            "expired",
        ),
        (
            hmac(&Claims {
                nbf: Some(NOW + 100),
                ..claims("a")
            }),
            "not yet valid",
        ),
        (
            hmac(&Claims {
                exp: None,
                ..claims("a")
            }),
            "no exp",
        ),
        (
            SigningKey::from_file_bytes(SECRET, Some("nope".into()))
                .unwrap()
                .sign(&claims("a"))
                .unwrap(),
            "unknown key id",
        ),
        ("not.a.token".into(), "malformed"),
        ("".into(), "malformed"),
        ("x".repeat(5000), "too long"),
        (hmac(&claims("console")), "reserved identity"),
        (hmac(&claims("anonymous")), "reserved identity"),
    ];
    for (token, why) in cases {
        let (status, reason) = refused(&p, &token);
        assert_eq!(status, Status::Unauthorized, "{why}: {reason}");
        assert!(reason.contains(why), "{why}: {reason}");
    }
    // Within a configured leeway, a just-expired token still passes.
    let lenient = policy(Mode::Required, Some("leeway = 5")).unwrap();
    let just = hmac(&Claims {
        exp: Some(NOW - 1),
        ..claims("a")
    });
    assert!(lenient.authenticate(Credential::Token(&just), NOW).is_ok());
    assert_eq!(refused(&p, &just).0, Status::Unauthorized);
}

#[test]
fn asymmetric_keys_are_chosen_by_kid() {
    let text = r#"
        [[key]]
        kid = "ed"
        alg = "EdDSA"
        file = "ed25519.pub"
        [[key]]
        kid = "ec"
        alg = "ES256"
        file = "es256.pub"
    "#;
    let p = policy(Mode::Required, Some(text)).unwrap();
    for (kid, file) in [("ed", "ed25519.key"), ("ec", "es256.key")] {
        let bytes = std::fs::read(keys_dir().join(file)).unwrap();
        let key = SigningKey::from_file_bytes(&bytes, Some(kid.into())).unwrap();
        let token = key.sign(&claims("gs-1")).unwrap();
        assert!(
            p.authenticate(Credential::Token(&token), NOW).is_ok(),
            "{kid}"
        );
        // The same token under the other key's kid does not verify.
        let swapped =
            SigningKey::from_file_bytes(&bytes, Some(if kid == "ed" { "ec" } else { "ed" }.into()))
                .unwrap()
                .sign(&claims("gs-1"))
                .unwrap();
        assert_eq!(refused(&p, &swapped).0, Status::Unauthorized);
    }
}

#[test]
fn the_policy_narrows_and_revokes() {
    let text = r#"
        allow_no_expiry = false
        [identity."gs-eu"]
        names = ["gs-eu-*"]
        publish = { allow = ["game/*"], deny = ["game/7/*"] }
        allow_no_expiry = true
        max_connections = 3
        [identity."old"]
        subscribe = { allow = ["*"] }
        [[revoke]]
        jti = "id-bad"
        [[revoke]]
        identity = "old"
        issued_before = 1800000000
    "#;
    let p = policy(Mode::Required, Some(text)).unwrap();
    let fleet = Claims {
        name: Some("gs-*".into()),
        exp: None,
        ..claims("gs-eu")
    };
    let grant = p
        .authenticate(Credential::Token(&hmac(&fleet)), NOW)
        .unwrap();
    assert!(grant.may_use_name("gs-eu-12"));
    assert!(
        !grant.may_use_name("gs-us-1"),
        "the policy narrows the token"
    );
    assert!(grant.may(Operation::Publish, "game/8/x"));
    assert!(!grant.may(Operation::Publish, "game/7/x"), "policy deny");
    assert_eq!(grant.closes_at, None);
    assert_eq!(grant.quotas.max_connections, Some(3));

    let bad = Claims {
        jti: Some("id-bad".into()),
        ..claims("x")
    };
    assert_eq!(refused(&p, &hmac(&bad)).0, Status::Forbidden);
    assert_eq!(refused(&p, &hmac(&claims("old"))).0, Status::Forbidden);
    let fresh = Claims {
        iat: Some(NOW),
        ..claims("old")
    };
    assert!(p
        .authenticate(Credential::Token(&hmac(&fresh)), NOW)
        .is_ok());
}

#[test]
fn modes_and_the_anonymous_identity() {
    let off = policy(Mode::Off, None).unwrap();
    let g = off.authenticate(Credential::None, NOW).unwrap();
    assert!(g.may(Operation::Publish, "anything") && g.may_use_name("anyone"));

    let optional = policy(Mode::Optional, None).unwrap();
    let anon = optional.authenticate(Credential::None, NOW).unwrap();
    assert_eq!(&*anon.identity, "anonymous");
    assert!(anon.may(Operation::Subscribe, "x"));
    assert!(!anon.may(Operation::Publish, "x"), "read-only by default");
    // A bad token is not anonymous: it is refused.
    assert_eq!(refused(&optional, "garbage").0, Status::Unauthorized);

    let custom = policy(
        Mode::Optional,
        Some("[anonymous]\nnames = [\"guest-*\"]\npublish = { allow = [\"lobby\"] }\n"),
    )
    .unwrap();
    let anon = custom.authenticate(Credential::None, NOW).unwrap();
    assert!(anon.may_use_name("guest-1") && !anon.may_use_name("gs-1"));
    assert!(anon.may(Operation::Publish, "lobby"));
    assert!(!anon.may(Operation::Subscribe, "lobby"));
}

#[test]
fn broken_policies_are_refused_with_a_reason() {
    for (text, why) in [
        ("bogus = 1", "unknown field"),
        (
            "[identity.a]\npublish = { allow = [\"x\"], deni = [] }",
            "unknown field",
        ),
        ("[identity.a]\nmax_conections = 1", "unknown field"),
        (
            "[[key]]\nkid = \"k\"\nalg = \"RS256\"\nfile = \"x\"",
            "unsupported algorithm",
        ),
        (
            "[[key]]\nkid = \"k\"\nalg = \"EdDSA\"\nfile = \"missing.pub\"",
            "missing.pub",
        ),
        (
            "[[key]]\nkid = \"k\"\nalg = \"ES256\"\nfile = \"ed25519.pub\"",
            "not a PEM EC",
        ),
        ("[[revoke]]\nidentity = \"a\"", "revoke entry 1"),
        ("[quotas]\npublish_rate = -1", "positive"),
        ("leeway = \"x\"", "invalid type"),
    ] {
        let err = policy(Mode::Required, Some(text)).unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
    // Line numbers come with syntax and type errors.
    let err = policy(Mode::Required, Some("\n\nleeway = [")).unwrap_err();
    assert!(err.contains("line 3"), "{err}");
    // Required mode with no key at all cannot start.
    let err = Policy::build(
        &Sources {
            mode: Mode::Required,
            ..Default::default()
        },
        &read,
    )
    .unwrap_err();
    assert!(err.contains("needs a key"), "{err}");
    // A short HMAC secret is refused, and so is a PEM file as one.
    assert!(SigningKey::from_file_bytes(b"short", None).is_err());
    let public = std::fs::read(keys_dir().join("es256.pub")).unwrap();
    let err = Policy::build(
        &Sources {
            mode: Mode::Required,
            key_file: Some(&public),
            policy: None,
        },
        &read,
    )
    .unwrap_err();
    assert!(err.contains("not an HMAC secret"), "{err}");
    let err = policy(
        Mode::Required,
        Some("[[key]]\nkid = \"k\"\nalg = \"HS256\"\nfile = \"es256.pub\""),
    )
    .unwrap_err();
    assert!(err.contains("not an HMAC secret"), "{err}");
}
