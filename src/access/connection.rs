//! One connection's rights as its shard checks them: its grant, re-made
//! when the policy changes, and a small cache of channel decisions so a
//! publisher's checks cost one hash lookup.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use easechat_auth::rate::Taken;
use easechat_auth::{Grant, Operation, Refusal, RefusalKind};

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
    /// Channels a reload dropped (at most the connection's subscriptions).
    dropped: RefCell<std::collections::HashSet<Box<str>>>,
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
            dropped: RefCell::default(),
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

    /// The close reason when the credential runs out: a client certificate
    /// (mutual TLS, no token) or a token.
    pub fn expiry_reason(&self) -> &'static str {
        if self.presented.token.is_none() && self.presented.certificate.is_some() {
            "certificate expired"
        } else {
            "token expired"
        }
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

    /// Asks the identity's publish budget for a publish of `bytes`:
    /// `Go(wait)` when taken (publish after the wait, zero within the
    /// budget or without a rate quota), `Retry(wait)` when nothing was
    /// taken because the identity already owes more than a pause may be
    /// long: wait, then ask again. The message and byte budgets are asked in
    /// turn; a byte budget that says retry leaves the message taken, which
    /// errs on the strict side.
    pub fn publish_budget(&self, bytes: usize) -> Taken {
        let quotas = &self.grant.borrow().quotas;
        if quotas.publish_rate.is_none() && quotas.publish_bytes_rate.is_none() {
            return Taken::Go(Duration::ZERO);
        }
        let nanos = super::monotonic_nanos();
        let mut wait = Duration::ZERO;
        if let Some(rate) = quotas.publish_rate {
            let burst = quotas.publish_burst.unwrap_or(rate);
            match self
                .usage
                .usage
                .messages
                .take(nanos, 1.0, rate, burst, MAX_RATE_PAUSE)
            {
                Taken::Go(w) => wait = wait.max(w),
                retry => return retry,
            }
        }
        if let Some(rate) = quotas.publish_bytes_rate {
            let cost = bytes as f64;
            match self
                .usage
                .usage
                .bytes
                .take(nanos, cost, rate, rate, MAX_RATE_PAUSE)
            {
                Taken::Go(w) => wait = wait.max(w),
                retry => return retry,
            }
        }
        Taken::Go(wait)
    }

    /// Remembers that a reload dropped this connection's subscription to
    /// `channel`: its clients' periodic renewal of it is then ignored
    /// rather than closing the connection.
    pub fn note_dropped(&self, channel: &str) {
        self.dropped.borrow_mut().insert(channel.into());
    }

    /// Whether a reload dropped `channel` from this connection.
    pub fn was_dropped(&self, channel: &str) -> bool {
        self.dropped.borrow().contains(channel)
    }
}

/// What a connection whose token the policy no longer accepts is told.
pub fn revoked_reason(refusal: &Refusal) -> String {
    match refusal.kind {
        RefusalKind::Expired => "token expired".into(),
        RefusalKind::Revoked => "token revoked".into(),
        RefusalKind::Other => "token no longer accepted".into(),
    }
}
