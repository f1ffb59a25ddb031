//! Access-control tokens for the tests: claims with a 10-minute expiry and
//! the given publish and subscribe allow lists.

use std::time::{SystemTime, UNIX_EPOCH};

use easechat_auth::claims::Claims;
use easechat_auth::permissions::{PermissionsText, RuleText};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Owned strings.
pub fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Identity `sub` (token id `jti-<sub>`), allowed to publish and subscribe
/// where the patterns say, for ten minutes.
pub fn claims(sub: &str, publish: &[&str], subscribe: &[&str]) -> Claims {
    Claims {
        sub: sub.into(),
        exp: Some(now() + 600),
        iat: Some(now()),
        jti: Some(format!("jti-{sub}")),
        perm: Some(PermissionsText {
            publish: RuleText {
                allow: list(publish),
                deny: vec![],
            },
            subscribe: RuleText {
                allow: list(subscribe),
                deny: vec![],
            },
        }),
        ..Default::default()
    }
}
