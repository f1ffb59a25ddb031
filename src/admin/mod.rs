//! The admin surface, opt-in with `--admin ADDR` (alias `--metrics`): the
//! browser console at `/`, its JSON API under `/api/`, Prometheus text at
//! `/metrics` and `/healthz`.
//!
//! It runs on its own thread (`admin`) with a current-thread tokio runtime
//! and axum, off the shards: shard 0 serves clients too, and routing, JSON,
//! static files and long-lived streams are what a well-kept HTTP stack does
//! well. The thread reaches the shards the way the console does: it sends an
//! [`AdminRequest`] carrying a reply sender over the [`Control`] channel
//! that shard 0 polls, and shard 0 gathers the answer over the rings. The
//! tap is an ordinary WebSocket subscriber of the nexus itself.
//!
//! - [`requests`]: what crosses from the admin thread to shard 0, and the
//!   shard-side answers.
//! - [`server`]: the thread, the listener's connection cap and timeouts.
//! - [`routes`]: the router, pages and JSON handlers.
//! - [`auth`]: token, `Origin` and `Host` checks.
//! - [`tap`]: a live channel tap as server-sent events.
//! - [`timed_io`]: idle and write timeouts on a socket.
//!
//! [`Control`]: crate::console::Control

pub mod auth;
pub mod requests;
pub mod routes;
pub mod server;
pub mod tap;
pub mod timed_io;

pub use requests::AdminRequest;
pub use server::{bind, spawn, AdminThread};

use std::time::Duration;

/// Default cap on the admin listener's open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = crate::config::DEFAULT_ADMIN_MAX_CONNECTIONS;
/// Time a client has to send a complete request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no byte moving either way for this long is closed
/// (the tap sends a keep-alive comment well within it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that cannot make progress for this long closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent taps (browser streams) allowed; more are answered 429.
pub const MAX_TAPS: usize = 16;
