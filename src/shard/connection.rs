//! One client connection as its shard sees it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use super::subscriptions::ConnId;
use crate::outbox::Outbox;

/// A connection in a shard's table: its name and its outbound queue.
#[derive(Debug)]
pub struct Connection {
    /// Unique within the shard; shown as `s<shard>#<id>` on the console.
    pub id: ConnId,
    /// The client's address, for logs.
    pub peer: SocketAddr,
    /// Set by `1h`; `None` until the connection identifies itself.
    name: RefCell<Option<Rc<str>>>,
    /// Frames waiting to be written to this connection.
    pub outbox: Outbox,
}

impl Connection {
    /// A new, unidentified connection.
    pub fn new(id: ConnId, peer: SocketAddr, outbox_limit: usize) -> Self {
        Connection {
            id,
            peer,
            name: RefCell::new(None),
            outbox: Outbox::new(outbox_limit),
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
}
