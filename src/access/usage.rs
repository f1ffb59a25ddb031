//! What each identity uses, across every shard: open connections, live
//! subscriptions and its publish budget. One entry per identity with a
//! connection open; its mutex-guarded table is touched only when a
//! connection opens (the counters are atomics held by each connection).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use easechat_auth::rate::RateMeter;

/// One identity's usage.
#[derive(Debug, Default)]
pub struct IdentityUsage {
    /// Open connections.
    pub connections: AtomicUsize,
    /// Live subscriptions over all its connections.
    pub subscriptions: AtomicUsize,
    /// Publishes (messages).
    pub messages: RateMeter,
    /// Published text bytes.
    pub bytes: RateMeter,
}

/// Identity → usage; entries go away with the identity's last connection.
#[derive(Debug, Default)]
pub struct UsageTable {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Arc<str>, Weak<IdentityUsage>>,
    /// Entries of closed identities are swept when the table reaches this.
    sweep_at: usize,
}

/// A connection's share of its identity's usage; releasing or dropping it
/// gives the connection slot back (once).
#[derive(Debug)]
pub struct UsageSlot {
    /// The identity's usage.
    pub usage: Arc<IdentityUsage>,
    released: Cell<bool>,
}

impl UsageSlot {
    /// Gives the connection slot back now (the connection left its shard's
    /// table; its socket may linger a little longer).
    pub fn release(&self) {
        if !self.released.replace(true) {
            self.usage.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for UsageSlot {
    fn drop(&mut self) {
        self.release();
    }
}

impl UsageTable {
    /// Takes a connection slot of `identity`, or returns the quota it is at.
    pub fn connect(&self, identity: &Arc<str>, max: Option<usize>) -> Result<UsageSlot, usize> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let usage = match table.entries.get(identity).and_then(Weak::upgrade) {
            Some(usage) => usage,
            None => {
                if table.entries.len() >= table.sweep_at {
                    // Forget identities whose last connection closed.
                    table.entries.retain(|_, weak| weak.strong_count() > 0);
                    table.sweep_at = (table.entries.len() * 2).max(64);
                }
                let usage = Arc::new(IdentityUsage::default());
                table
                    .entries
                    .insert(identity.clone(), Arc::downgrade(&usage));
                usage
            }
        };
        let open = usage.connections.fetch_add(1, Ordering::AcqRel);
        let slot = UsageSlot {
            usage,
            released: Cell::new(false),
        };
        match max {
            Some(max) if open >= max => Err(max), // dropping `slot` gives it back
            _ => Ok(slot),
        }
    }
}
