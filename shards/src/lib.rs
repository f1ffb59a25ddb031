//! `shards`: a protocol-agnostic thread-per-core runtime.
//!
//! The runtime starts one [glommio] executor per selected core, pins it there,
//! hands it its own listening socket bound to the same address with
//! `SO_REUSEPORT` (so the kernel spreads connections across shards), and joins
//! every pair of shards with a bounded single-producer single-consumer ring.
//! It knows nothing about the protocol spoken on the sockets or the messages
//! carried by the rings: the application supplies both.
//!
//! - [`preflight`] checks that io_uring and locked memory are usable before any
//!   executor starts, so a blocked host gets a clear message, not a panic.
//! - [`listener`] builds the per-shard `SO_REUSEPORT` sockets with socket2.
//! - [`rings`] wraps glommio's channel mesh with ring-full and in-flight
//!   byte accounting.
//! - [`links`] sends over the rings without ever blocking the caller: ordered
//!   per-peer backlogs, a byte budget per peer, per-sender waiting, and the
//!   drain loop.
//! - [`asks`] asks every shard a question and gathers the answers.
//! - [`doorbell`] lets a foreign thread wake a task on a shard.
//! - [`runtime`] ties them together: [`launch`] runs one future per shard.

pub mod asks;
pub mod doorbell;
pub mod links;
pub mod listener;
pub mod preflight;
pub mod rings;
pub mod runtime;

pub use asks::{with_timeout, Asks};
pub use links::{Deferred, Links, NothingDeferred, Weighed};
pub use rings::{Inbound, RingClosed, RingStats, Rings, TrySendError};
pub use runtime::{
    available_cores, launch, LaunchError, Running, RuntimeConfig, Shard, MAX_SHARDS,
};
