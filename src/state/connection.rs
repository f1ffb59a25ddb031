//! One client connection as its shard sees it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::subscriptions::ConnId;
use crate::access::ConnectionAccess;
use crate::outbox::Outbox;

/// A connection in a shard's table: its name and its outbound queue.
#[derive(Debug)]
pub struct Connection {
    /// Unique within the shard; shown as `s<shard>#<id>` on the console.
    pub id: ConnId,
    /// The client's address, for logs.
    pub peer: SocketAddr,
    /// When it was registered (the admin console's clients list).
    pub connected_at: SystemTime,
    /// Set by `1h`; `None` until the connection identifies itself.
    name: RefCell<Option<Rc<str>>>,
    /// Frames waiting to be written to this connection.
    pub outbox: Outbox,
    /// When the client last sent anything (keepalive).
    last_heard: Cell<Instant>,
    /// When the nexus pinged a silent client, if it has not answered yet.
    pinged_at: Cell<Option<Instant>>,
    /// What it may do, with access control on (`--auth`); `None` trusts it.
    /// Boxed: fan-out walks connections, and a trusted one should not carry
    /// the rights' bytes in its cache lines.
    pub access: Option<Box<ConnectionAccess>>,
    /// Set once the client asked for positions (`1h` with `positions`):
    /// the channels whose recovery it is waiting for. Boxed for the same
    /// reason as `access`.
    positions: RefCell<Option<Box<Positions>>>,
}

/// A positions client's channels waiting for their home shard's answer,
/// each with the id of the ask it waits for. The channel's numbered frames
/// that reach it meanwhile are dropped: the rings between two shards keep
/// order, so every one of them was fanned out before the answer and is in
/// its replay (or older than the position it reports).
#[derive(Debug, Default)]
pub struct Positions {
    waiting: HashMap<Box<str>, u64>,
    next_ask: u64,
}

/// What keepalive should do about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from recently, or a ping is still within its time.
    Alive,
    /// Silent for too long: send a ping now.
    Ping,
    /// Pinged and silent past the timeout: close it.
    Dead,
}

impl Connection {
    /// A new, unidentified connection with its rights (`None`: access
    /// control is off).
    pub fn new(
        id: ConnId,
        peer: SocketAddr,
        outbox_limit: usize,
        access: Option<ConnectionAccess>,
    ) -> Self {
        let access = access.map(Box::new);
        Connection {
            id,
            peer,
            connected_at: SystemTime::now(),
            name: RefCell::new(None),
            outbox: Outbox::new(outbox_limit),
            last_heard: Cell::new(Instant::now()),
            pinged_at: Cell::new(None),
            access,
            positions: RefCell::new(None),
        }
    }

    /// Records that the client sent something at `now`.
    pub fn heard(&self, now: Instant) {
        self.last_heard.set(now);
        self.pinged_at.set(None);
    }

    /// Decides, at `now`, whether to ping the connection or give up on it;
    /// records the ping when it says [`Liveness::Ping`].
    pub fn check_liveness(&self, now: Instant, idle: Duration, timeout: Duration) -> Liveness {
        match self.pinged_at.get() {
            Some(pinged) if now.saturating_duration_since(pinged) >= timeout => Liveness::Dead,
            Some(_) => Liveness::Alive,
            None if now.saturating_duration_since(self.last_heard.get()) >= idle => {
                self.pinged_at.set(Some(now));
                Liveness::Ping
            }
            None => Liveness::Alive,
        }
    }

    /// The current name, if the connection said `1h`.
    pub fn name(&self) -> Option<Rc<str>> {
        self.name.borrow().clone()
    }

    /// True when identified and named exactly `name` (sender exclusion).
    pub fn is_named(&self, name: &str) -> bool {
        self.name.borrow().as_deref() == Some(name)
    }

    /// Names or renames the connection; returns the previous name.
    pub fn set_name(&self, name: &str) -> Option<Rc<str>> {
        self.name.replace(Some(Rc::from(name)))
    }

    /// Whether the client asked for positions.
    pub fn positions(&self) -> bool {
        self.positions.borrow().is_some()
    }

    /// Records that the client asked for positions (for good).
    pub fn enable_positions(&self) {
        let mut positions = self.positions.borrow_mut();
        if positions.is_none() {
            *positions = Some(Box::default());
        }
    }

    /// Starts waiting for the answer to a new ask on `channel` (a newer ask
    /// replaces an older one: only the newest answer is taken); its id.
    pub fn start_waiting(&self, channel: &str) -> u64 {
        let mut positions = self.positions.borrow_mut();
        let Some(positions) = positions.as_mut() else {
            return 0;
        };
        positions.next_ask += 1;
        let ask = positions.next_ask;
        positions.waiting.insert(channel.into(), ask);
        ask
    }

    /// Whether `channel` waits for an answer (its numbered frames are then
    /// dropped, see [`Positions`]).
    pub fn is_waiting(&self, channel: &str) -> bool {
        self.positions
            .borrow()
            .as_ref()
            .is_some_and(|p| p.waiting.contains_key(channel))
    }

    /// Ends the wait for `channel` if `ask` is the one it waits for (or,
    /// with `None`, whichever it is); false when it was not waiting for it
    /// (unsubscribed, answered already, or a newer ask replaced it).
    pub fn finish_waiting(&self, channel: &str, ask: Option<u64>) -> bool {
        let mut positions = self.positions.borrow_mut();
        let Some(positions) = positions.as_mut() else {
            return false;
        };
        match (positions.waiting.get(channel), ask) {
            (Some(&waiting), Some(ask)) if waiting != ask => false,
            (Some(_), _) => positions.waiting.remove(channel).is_some(),
            (None, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_connections_are_pinged_then_declared_dead() {
        let conn = Connection::new(1, "127.0.0.1:1".parse().unwrap(), 1024, None);
        let t0 = conn.last_heard.get();
        let (idle, timeout) = (Duration::from_secs(30), Duration::from_secs(10));
        assert_eq!(
            conn.check_liveness(t0 + Duration::from_secs(29), idle, timeout),
            Liveness::Alive
        );
        let ping_at = t0 + Duration::from_secs(30);
        assert_eq!(conn.check_liveness(ping_at, idle, timeout), Liveness::Ping);
        assert_eq!(
            conn.check_liveness(ping_at + Duration::from_secs(9), idle, timeout),
            Liveness::Alive
        );
        assert_eq!(
            conn.check_liveness(ping_at + Duration::from_secs(10), idle, timeout),
            Liveness::Dead
        );
        // An answer resets everything.
        conn.heard(ping_at + Duration::from_secs(5));
        assert_eq!(
            conn.check_liveness(ping_at + Duration::from_secs(10), idle, timeout),
            Liveness::Alive
        );
    }
}
