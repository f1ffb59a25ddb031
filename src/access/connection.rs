//! One connection's rights as its shard checks them: its grant, re-made
//! when the policy changes, and a small cache of channel decisions so a
//! publisher's checks cost one hash lookup.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use easechat_auth::{Grant, Operation, Refusal};

use super::usage::{IdentityUsage, UsageSlot};
use super::{credential_of, Access, Presented};

/// Channel decisions kept per connection (as NATS keeps 128); the cache
/// is cleared when full and on every policy change.
const CACHE_ENTRIES: usize = 128;
/// Longest pause a publish budget imposes at once; a connection whose debt
/// is longer pauses again on its next publish.
const MAX_RATE_PAUSE: Duration = Duration::from_secs(5);

/// Why a command was refused (the connection is closed with 1008 and the
/// reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The `1h` name is not one the token allows.
    #[error("name {0:?} not allowed for this token")]
    Name(String),
    /// Publishing or subscribing on this channel is not allowed.
    #[error("{} to {channel:?} denied", operation.as_str())]
    Channel {
        /// Publish or subscribe.
        operation: Operation,
        /// The channel.
        channel: String,
    },
    /// The identity holds its subscription quota.
    #[error("subscription quota of this identity reached ({0})")]
    SubscriptionQuota(usize),
    /// The policy changed and no longer accepts this connection's token.
    #[error("{0}")]
    Revoked(String),
}

/// What the connection may do, and what its identity uses.
#[derive(Debug)]
pub struct ConnectionAccess {
    access: Arc<Access>,
    presented: Presented,
    grant: RefCell<Grant>,
    generation: Cell<u64>,
    usage: UsageSlot,
    /// Subscriptions of this connection counted in its identity's usage.
    counted: Cell<usize>,
    /// channel → bit 0: publish checked, 1: publish allowed, 2: subscribe
    /// checked, 3: subscribe allowed.
    cache: RefCell<HashMap<Box<str>, u8>>,
}

impl Drop for ConnectionAccess {
    fn drop(&mut self) {
        self.usage
            .usage
            .subscriptions
            .fetch_sub(self.counted.get(), Ordering::AcqRel);
    }
}

impl ConnectionAccess {
    pub(super) fn new(
        access: Arc<Access>,
        presented: Presented,
        grant: Grant,
        generation: u64,
        usage: UsageSlot,
    ) -> Self {
        ConnectionAccess {
            access,
            presented,
            grant: RefCell::new(grant),
            generation: Cell::new(generation),
            usage,
            counted: Cell::new(0),
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The identity, for logs, the console and the API.
    pub fn identity(&self) -> Arc<str> {
        self.grant.borrow().identity.clone()
    }

    /// The token's id, if it has one.
    pub fn token_id(&self) -> Option<Arc<str>> {
        self.grant.borrow().token_id.clone()
    }

    /// When the token runs out (Unix seconds, leeway included).
    pub fn closes_at(&self) -> Option<u64> {
        self.grant.borrow().closes_at
    }

    /// The connection left its shard: its identity's connection slot and
    /// subscriptions are given back at once.
    pub fn release(&self) {
        self.count_subscriptions(0);
        self.usage.release();
    }

    /// The identity's usage (shared with its other connections).
    pub fn usage(&self) -> &IdentityUsage {
        &self.usage.usage
    }

    /// Brings the grant up to the policy in force: once per reload, the
    /// token is checked again at `now`. `Err` when the policy now refuses it.
    pub fn refresh(&self, now: u64) -> Result<bool, Refusal> {
        let generation = self.access.generation();
        if generation == self.generation.get() {
            return Ok(false);
        }
        let grant = self
            .access
            .policy()
            .authenticate(credential_of(&self.presented), now)?;
        *self.grant.borrow_mut() = grant;
        self.generation.set(generation);
        self.cache.borrow_mut().clear();
        Ok(true)
    }

    fn current(&self) -> Result<(), Denied> {
        if self.access.generation() == self.generation.get() {
            return Ok(());
        }
        self.refresh(super::unix_now())
            .map(|_| ())
            .map_err(|refusal| Denied::Revoked(revoked_reason(&refusal)))
    }

    /// Checks a `1h` name.
    pub fn check_name(&self, name: &str) -> Result<(), Denied> {
        self.current()?;
        if self.grant.borrow().may_use_name(name) {
            Ok(())
        } else {
            Err(Denied::Name(name.to_string()))
        }
    }

    /// Whether `operation` on `channel` is allowed now (cached).
    pub fn allows(&self, operation: Operation, channel: &str) -> Result<bool, Denied> {
        self.current()?;
        let (checked, allowed) = match operation {
            Operation::Publish => (1u8, 2u8),
            Operation::Subscribe => (4u8, 8u8),
        };
        let mut cache = self.cache.borrow_mut();
        if let Some(&bits) = cache.get(channel) {
            if bits & checked != 0 {
                return Ok(bits & allowed != 0);
            }
        }
        let verdict = self.grant.borrow().may(operation, channel);
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(channel) {
            cache.clear();
        }
        let bits = cache.entry(channel.into()).or_default();
        *bits |= checked | if verdict { allowed } else { 0 };
        Ok(verdict)
    }

    /// Checks `operation` on `channel`.
    pub fn check(&self, operation: Operation, channel: &str) -> Result<(), Denied> {
        if self.allows(operation, channel)? {
            Ok(())
        } else {
            Err(Denied::Channel {
                operation,
                channel: channel.to_string(),
            })
        }
    }

    /// Before a new subscription: takes one of the identity's subscription
    /// quota. Give it back with [`ConnectionAccess::count_subscriptions`].
    pub fn reserve_subscription(&self) -> Result<(), Denied> {
        let max = self.grant.borrow().quotas.max_subscriptions;
        let held = self
            .usage
            .usage
            .subscriptions
            .fetch_add(1, Ordering::AcqRel);
        self.counted.set(self.counted.get() + 1);
        match max {
            Some(max) if held >= max => {
                self.count_subscriptions(self.counted.get() - 1);
                Err(Denied::SubscriptionQuota(max))
            }
            _ => Ok(()),
        }
    }

    /// Records that this connection now holds `count` subscriptions.
    pub fn count_subscriptions(&self, count: usize) {
        let old = self.counted.replace(count);
        let subs = &self.usage.usage.subscriptions;
        if count > old {
            subs.fetch_add(count - old, Ordering::AcqRel);
        } else {
            subs.fetch_sub(old - count, Ordering::AcqRel);
        }
    }

    /// How long a publish of `bytes` must wait for the identity's publish
    /// budget (zero when within it, or without a rate quota).
    pub fn publish_wait(&self, bytes: usize) -> Duration {
        let quotas = &self.grant.borrow().quotas;
        if quotas.publish_rate.is_none() && quotas.publish_bytes_rate.is_none() {
            return Duration::ZERO;
        }
        let nanos = super::monotonic_nanos();
        let mut wait = Duration::ZERO;
        if let Some(rate) = quotas.publish_rate {
            let burst = quotas.publish_burst.unwrap_or(rate);
            wait = wait.max(self.usage.usage.messages.take(nanos, 1.0, rate, burst));
        }
        if let Some(rate) = quotas.publish_bytes_rate {
            wait = wait.max(self.usage.usage.bytes.take(nanos, bytes as f64, rate, rate));
        }
        wait.min(MAX_RATE_PAUSE)
    }
}

/// What a connection whose token the policy no longer accepts is told.
pub fn revoked_reason(refusal: &Refusal) -> String {
    if refusal.reason.contains("expired") {
        "token expired".into()
    } else if refusal.reason.contains("revoked") {
        "token revoked".into()
    } else {
        "token no longer accepted".into()
    }
}
