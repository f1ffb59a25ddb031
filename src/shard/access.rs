//! Access control on one shard: refused upgrades in the log (bounded),
//! tokens that expire on live connections, and policy reloads applied to
//! the connections already open.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use easechat_auth::Operation;
use tracing::{info, warn};

use super::ShardState;
use crate::access::{revoked_reason, unix_now};
use crate::stats::Metric;

/// Refused upgrades logged per shard per second; the rest are counted and
/// reported with the next line (a flood of bad tokens must not flood the log).
const REFUSAL_LOG_PER_SECOND: u32 = 10;

/// A shard's access-control bookkeeping.
#[derive(Debug, Default)]
pub struct AccessSweep {
    /// The policy generation the shard last applied to its connections.
    generation: Cell<u64>,
    /// The earliest token expiry among its connections (Unix seconds).
    next_expiry: Cell<Option<u64>>,
    /// Refusal log budget: the second it counts, lines logged, suppressed.
    log_window: Cell<(u64, u32, u64)>,
}

impl ShardState {
    /// Logs a refused upgrade with its reason (the client saw only 401/403),
    /// at most [`REFUSAL_LOG_PER_SECOND`] lines a second.
    pub fn log_refusal(&self, peer: SocketAddr, why: &str) {
        let now = unix_now();
        let (second, logged, suppressed) = self.access_sweep.log_window.get();
        let (logged, suppressed) = if second == now {
            (logged, suppressed)
        } else {
            (0, suppressed)
        };
        if logged >= REFUSAL_LOG_PER_SECOND {
            self.access_sweep
                .log_window
                .set((now, logged, suppressed + 1));
            return;
        }
        if suppressed > 0 {
            warn!(%peer, reason = why, suppressed, "upgrade refused by access control (and {suppressed} more not logged)");
        } else {
            warn!(%peer, reason = why, "upgrade refused by access control");
        }
        self.access_sweep.log_window.set((now, logged + 1, 0));
    }

    /// Reports refusals that were counted but not logged, once their second
    /// is over (called with every purge).
    fn flush_refusal_log(&self) {
        let (second, logged, suppressed) = self.access_sweep.log_window.get();
        if suppressed > 0 && unix_now() != second {
            warn!(suppressed, "upgrades refused by access control and not logged (at most {REFUSAL_LOG_PER_SECOND} lines a second per shard)");
            self.access_sweep.log_window.set((second, logged, 0));
        }
    }

    /// Whether `conn` holds a subscription to `channel`.
    pub fn is_subscribed(&self, conn: &super::Connection, channel: &str) -> bool {
        self.index.borrow().contains(conn.id, channel)
    }

    /// How many subscriptions `conn` holds.
    pub fn subscription_count(&self, conn: &super::Connection) -> usize {
        self.index.borrow().count_of(conn.id)
    }

    /// Called with each purge: closes connections whose token expired, and
    /// after a policy reload re-checks every connection: a token the policy
    /// no longer accepts closes its connection (1008 with the reason), a
    /// name no longer allowed too, and subscriptions no longer allowed are
    /// dropped. Everybody else keeps going.
    pub fn sweep_access(&self) {
        let Some(access) = &self.config.access else {
            return;
        };
        self.flush_refusal_log();
        let now = unix_now();
        let generation = access.generation();
        let reloaded = generation != self.access_sweep.generation.get();
        let expiring = self
            .access_sweep
            .next_expiry
            .get()
            .is_some_and(|t| now >= t);
        if !reloaded && !expiring {
            return;
        }
        self.access_sweep.generation.set(generation);
        let mut next_expiry: Option<u64> = None;
        for conn in self.open_connections() {
            let Some(rights) = &conn.access else {
                continue;
            };
            let close: Option<String> = match rights.refresh(now) {
                Err(refusal) => Some(revoked_reason(&refusal)),
                Ok(_) if rights.closes_at().is_some_and(|at| now >= at) => {
                    Some(rights.expiry_reason().to_string())
                }
                Ok(_) => conn
                    .name()
                    .and_then(|name| rights.check_name(&name).err())
                    .map(|denied| denied.to_string()),
            };
            if let Some(reason) = close {
                if conn.outbox.close(1008, &reason) {
                    self.stats.add(Metric::TokenClosures, 1);
                    self.conn_span(&conn).in_scope(|| {
                        info!(
                            reason = reason.as_str(),
                            "closing connection: access control (1008)"
                        );
                    });
                }
                continue;
            }
            if let Some(at) = rights.closes_at() {
                next_expiry = Some(next_expiry.map_or(at, |t| t.min(at)));
            }
            if reloaded {
                self.drop_denied_subscriptions(&conn);
            }
        }
        self.access_sweep.next_expiry.set(next_expiry);
    }

    fn drop_denied_subscriptions(&self, conn: &std::rc::Rc<super::Connection>) {
        let Some(rights) = &conn.access else {
            return;
        };
        let channels = self.index.borrow().channels_of(conn.id, Instant::now());
        for (channel, _) in channels {
            if rights
                .allows(Operation::Subscribe, &channel)
                .unwrap_or(false)
            {
                continue;
            }
            let _ = self.subscribe(conn, &channel, Duration::ZERO);
            rights.note_dropped(&channel);
            self.conn_span(conn).in_scope(|| {
                info!(
                    channel = &*channel,
                    "subscription dropped: the reloaded policy denies it"
                );
            });
        }
        rights.count_subscriptions(self.subscription_count(conn));
    }

    /// A connection with a token expiring at `at` joined: the sweep must
    /// look at it by then.
    pub fn note_token_expiry(&self, at: Option<u64>) {
        if let Some(at) = at {
            let next = self.access_sweep.next_expiry.get();
            self.access_sweep
                .next_expiry
                .set(Some(next.map_or(at, |t| t.min(at))));
        }
    }
}
