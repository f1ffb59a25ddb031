//! What one connection may do: its identity, the names it may take, its
//! channel rights and its identity's quotas. Built by
//! [`Policy::authenticate`](crate::Policy::authenticate) at the upgrade and
//! again on every policy reload.

use std::sync::Arc;

use crate::pattern::PatternSet;
use crate::permissions::{Operation, Rule};

/// The identity connections without a token act as (mode `optional`).
pub const ANONYMOUS: &str = "anonymous";
/// The identity the admin console's tap and publish act as.
pub const CONSOLE: &str = "console";

/// Per-identity limits; `None` is no limit beyond the nexus's flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    /// Open connections of the identity, all shards together.
    pub max_connections: Option<usize>,
    /// Subscriptions of the identity, all its connections together.
    pub max_subscriptions: Option<usize>,
    /// Publishes per second (token bucket; over it the connection pauses).
    pub publish_rate: Option<f64>,
    /// Publish burst in messages (default: one second's worth).
    pub publish_burst: Option<f64>,
    /// Published text bytes per second.
    pub publish_bytes_rate: Option<f64>,
}

/// One connection's rights.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Who the connection is (`sub`, [`ANONYMOUS`] or [`CONSOLE`]).
    pub identity: Arc<str>,
    /// The token's id (`jti`), if it has one.
    pub token_id: Option<Arc<str>>,
    /// When the connection must be closed (`exp` plus leeway), Unix seconds.
    pub closes_at: Option<u64>,
    /// The identity's quotas.
    pub quotas: Quotas,
    /// `1h` names the token allows.
    pub(crate) token_names: PatternSet,
    /// `1h` names the policy allows for the identity, when it says.
    pub(crate) policy_names: Option<Arc<PatternSet>>,
    /// Rights carried by the token (`perm`), when it has them.
    pub(crate) token_rules: Option<Arc<[Rule; 2]>>,
    /// Rights the policy gives the identity, per operation, when it says.
    pub(crate) policy_rules: [Option<Arc<Rule>>; 2],
}

fn slot(operation: Operation) -> usize {
    match operation {
        Operation::Publish => 0,
        Operation::Subscribe => 1,
    }
}

impl Grant {
    /// Whether the connection may say `1h` with `name`: the token's name
    /// pattern and the policy's (when it has one) must both allow it.
    pub fn may_use_name(&self, name: &str) -> bool {
        self.token_names.matches(name) && self.policy_names.as_ref().is_none_or(|p| p.matches(name))
    }

    /// Whether the connection may `operation` on `channel`: every side that
    /// speaks (the token's `perm`, the policy's entry) must allow it, deny
    /// winning within each; when neither speaks, nothing is allowed.
    pub fn may(&self, operation: Operation, channel: &str) -> bool {
        let i = slot(operation);
        let token = self.token_rules.as_ref().map(|rules| &rules[i]);
        let policy = self.policy_rules[i].as_deref();
        match (token, policy) {
            (None, None) => false,
            (Some(t), None) => t.allows(channel),
            (None, Some(p)) => p.allows(channel),
            (Some(t), Some(p)) => t.allows(channel) && p.allows(channel),
        }
    }

    /// Whether the token has expired at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.closes_at.is_some_and(|at| now >= at)
    }
}
