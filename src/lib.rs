//! # EaseChat Nexus
//!
//! A channel-subscription message exchange over WebSocket, built
//! thread-per-core on io_uring. Game servers, tools and debug consoles
//! connect, name themselves (`1h`), subscribe to channels for a time to live
//! (`1c`) and publish text (`1t`); the nexus fans each message out as `1r` to
//! every live subscriber. The wire protocol is in `docs/protocol.md`.
//!
//! How the parts fit:
//! - The [`shards`] crate starts one pinned glommio executor per core, each
//!   with its own `SO_REUSEPORT` listener, joined by bounded SPSC rings.
//! - [`server`] runs on every shard: accept loop, ring drains, expiry purge,
//!   and on shard 0 the [`console`].
//! - [`session`] owns one connection: WebSocket upgrade and frames
//!   (tungstenite), the read loop, and a writer task draining the
//!   connection's [`outbox`] in batches.
//! - [`protocol`] parses client messages and encodes `1r` frames: pure
//!   functions, no I/O.
//! - [`shard`] holds a shard's connection table and subscription index and
//!   does local fan-out; [`router`] carries publishes and interest changes
//!   to the shards that want them. No lock is taken per message.
//! - [`cli`] and [`config`] turn flags into limits; [`signals`] turns
//!   SIGTERM and a double Ctrl-C into a graceful stop; [`client`] is a
//!   blocking client library (used by `easechat` and the tests); [`metrics`] serves
//!   `/metrics` and `/healthz`; [`stats`] keeps the per-shard counters.
//! - [`cluster`] joins several nexus processes through NATS (`--nats`): a
//!   bridge thread beside the shards carries publishes between nodes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod shard;
pub mod shutdown;
pub mod signals;
pub mod stats;

pub use config::Config;
pub use server::run;
