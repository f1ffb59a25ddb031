//! What a token says: the JWT claims the nexus reads.
//!
//! Required: `sub` (the identity) and, unless the policy allows tokens
//! without it, `exp`. Optional: `name` (the `1h` names allowed, a
//! [pattern](crate::pattern); default: exactly `sub`), `perm` (publish and
//! subscribe allow and deny lists), `nbf`, `iat` (needed for revocation by
//! "issued before"), `jti` (the token id, for revocation and logs). Other
//! claims (`iss`, `aud` …) are carried but not checked.

use serde::{Deserialize, Serialize};

use crate::permissions::PermissionsText;

/// The claims of an EaseChat token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity the token names (quotas and policy entries are per identity).
    pub sub: String,
    /// The `1h` names allowed, as a pattern; absent: exactly `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Channel permissions carried by the token; absent: the policy's only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm: Option<PermissionsText>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}
