//! What access control costs a publish: times `ConnectionAccess::check`
//! (publish on a channel, cached after the first) and an uncached check
//! against the same patterns, with the token and policy of the bench's
//! `auth` family. Prints ns per check.
//!
//! ```sh
//! cargo run --release --example access_check
//! ```

use std::time::Instant;

use ease_chat_nexus::access::{Access, Presented};
use easechat_auth::claims::Claims;
use easechat_auth::permissions::{PermissionsText, RuleText};
use easechat_auth::{Mode, Operation, PolicyFiles, SigningKey};

const SECRET: &str = "access-check-secret-0123456789abcdef-0123";
const POLICY: &str = r#"
[identity."bench"]
names = ["auth-*"]
publish = { allow = ["bench/*", "game/*"], deny = ["ops/*", "game/admin/*"] }
subscribe = { allow = ["bench/*", "game/*", "ops/broadcast"], deny = ["ops/secret/*"] }
"#;

fn main() {
    let dir = std::env::temp_dir().join(format!("easechat-access-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hmac.key"), SECRET).unwrap();
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let access = Access::load(PolicyFiles {
        mode: Mode::Required,
        key_file: Some(dir.join("hmac.key")),
        policy_file: Some(dir.join("policy.toml")),
    })
    .unwrap();
    let rule = |allow: &[&str], deny: &[&str]| RuleText {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    };
    let now = easechat_auth_now();
    let token = SigningKey::from_file_bytes(SECRET.as_bytes(), None)
        .unwrap()
        .sign(&Claims {
            sub: "bench".into(),
            name: Some("auth-*".into()),
            perm: Some(PermissionsText {
                publish: rule(&["bench/*", "game/*"], &["ops/*"]),
                subscribe: rule(&["*"], &["ops/secret/*"]),
            }),
            exp: Some(now + 3600),
            iat: Some(now),
            jti: Some("check".into()),
            nbf: None,
        })
        .unwrap();
    let rights = access
        .admit(
            Presented {
                token: Some(token),
                console: false,
                certificate: None,
            },
            now,
        )
        .unwrap();
    const N: u32 = 5_000_000;
    for (label, channels) in [
        ("cached, one channel", vec!["bench/0".to_string()]),
        (
            "cached, 10 channels",
            (0..10).map(|i| format!("bench/{i}")).collect(),
        ),
        (
            "uncached (a new channel every check, cache cleared at 128)",
            (0..1_000_000).map(|i| format!("bench/{i}")).collect(),
        ),
    ] {
        let started = Instant::now();
        let mut allowed = 0u32;
        for i in 0..N {
            let channel = &channels[i as usize % channels.len()];
            allowed += rights.check(Operation::Publish, channel).is_ok() as u32;
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(N);
        assert_eq!(allowed, N);
        println!("{label}: {ns:.1} ns per publish check");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn easechat_auth_now() -> u64 {
    ease_chat_nexus::access::unix_now()
}
