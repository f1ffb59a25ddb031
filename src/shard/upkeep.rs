//! Keeping a shard tidy: pinging silent connections, purging expired
//! subscriptions, and stopping.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::ShardState;
use crate::outbox::Push;
use crate::protocol::frame::PING_FRAME;
use crate::state::connection::Liveness;
use crate::stats::Metric;

impl ShardState {
    /// Pings connections that have been silent for `--keepalive` and closes
    /// (1001) those that then stay silent for `--keepalive-timeout`: a game
    /// server that lost power must not hold its subscriptions forever.
    pub fn sweep_keepalive(&self) {
        let now = Instant::now();
        let (idle, timeout) = (
            self.config.live.keepalive(),
            self.config.live.keepalive_timeout(),
        );
        for conn in self.connections.borrow().values() {
            match conn.check_liveness(now, idle, timeout) {
                Liveness::Alive => {}
                Liveness::Ping => {
                    if conn.outbox.push_control(PING_FRAME.to_vec()) == Push::Overflow {
                        self.close_slow_consumer(conn);
                    }
                }
                Liveness::Dead => {
                    if conn.outbox.close_discarding(1001, "keepalive timeout") {
                        self.stats.add(Metric::KeepaliveClosures, 1);
                        self.conn_span(conn).in_scope(|| {
                            info!("closing silent connection: keepalive timeout (1001)");
                        });
                    }
                }
            }
        }
    }

    /// Drops subscriptions whose time is up and tells other shards about
    /// channels this shard no longer listens to.
    pub fn purge_expired(&self) {
        let mut touched = Vec::new();
        let emptied = if self.config.access.is_some() {
            self.index
                .borrow_mut()
                .purge_expired_with(Instant::now(), |conn| touched.push(conn))
        } else {
            self.index.borrow_mut().purge_expired(Instant::now())
        };
        if !touched.is_empty() {
            // Identities' subscription counts follow what expired.
            touched.dedup();
            let connections = self.connections.borrow();
            for id in touched {
                if let Some(rights) = connections.get(&id).and_then(|c| c.access.as_ref()) {
                    rights.count_subscriptions(self.index.borrow().count_of(id));
                }
            }
        }
        self.sweep_access();
        if let Some(histories) = &self.histories {
            histories.borrow_mut().expire(Instant::now());
            self.answer_late_window_asks(Instant::now());
        }
        for channel in emptied {
            debug!(
                shard = self.id,
                channel = &*channel,
                "last subscription expired"
            );
            self.set_local_interest(&channel, false);
        }
    }

    /// Starts stopping this shard: no new connections, and every open one
    /// is closed with 1000 and `reason` after what is already queued.
    pub fn begin_shutdown(&self, reason: Arc<str>) {
        if !self.shutdown.trigger(reason.clone()) {
            return;
        }
        info!(shard = self.id, reason = &*reason, "shard stopping");
        // The end of a drain closes stragglers like the drain does.
        let code = if self.draining.reason().is_some() {
            crate::drain::DRAIN_CODE
        } else {
            1000
        };
        for conn in self.connections.borrow().values() {
            conn.outbox.close(code, &reason);
        }
    }

    /// Starts a lame-duck drain on this shard; the drain task does the rest.
    pub fn begin_drain(&self) {
        if self.draining.trigger(Arc::from(crate::drain::DRAIN_REASON)) {
            info!(shard = self.id, "shard draining");
        }
    }
}
