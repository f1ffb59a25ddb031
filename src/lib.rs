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
//! - [`protocol`] re-exports the codec (the `easechat_protocol` crate,
//!   shared with the `easechat` client crate) and builds `1r` frames: pure
//!   functions, no I/O.
//! - [`state`] is a shard's exchange data as plain, clock-free structures:
//!   connections, the subscription index, interest between shards, and the
//!   questions shards answer. [`router`] carries publishes, interest and
//!   questions to the shards that want them, within a byte budget per peer.
//!   [`shard`] ties them into one shard's live exchange: admission,
//!   publishing and local fan-out, queries, upkeep. No lock is taken per
//!   message.
//! - [`history`] keeps the latest messages of channels that ask for it
//!   (`--history`) on each channel's home shard, numbered per channel, so
//!   a client that reconnects recovers what it missed, all or nothing.
//! - [`access`] enforces access control (`--auth`): each connection's
//!   grant from its token, checked at the upgrade and on `1h`, `1c`, `1t`;
//!   the rules are the pure `easechat_auth` crate.
//! - [`cli`] and [`config`] turn flags (and a `--config` file) into
//!   limits; [`reload`] re-reads them on SIGHUP and applies what can change
//!   live; [`signals`] turns
//!   SIGTERM and a double Ctrl-C into a graceful stop, SIGUSR2 into a
//!   [`drain`]; [`admin`] serves the browser console, its JSON API,
//!   `/metrics` and `/healthz` on its own thread; [`stats`] keeps the
//!   per-shard counters.
//!
//! The blocking client library, the SQLite recorder and the `easechat`
//! command live in the `easechat` crate (`client/`), so this crate and its
//! binary do not link SQLite.
//! - [`cluster`] joins several nexus processes through NATS (`--nats`): a
//!   bridge thread beside the shards carries publishes between nodes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod drain;
pub mod history;
pub mod outbox;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod server;
pub mod session;
pub mod shard;
pub mod shutdown;
pub mod signals;
pub mod state;
pub mod stats;
pub mod tls;

pub use config::Config;
pub use server::run;
