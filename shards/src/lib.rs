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
//! - [`rings`] wraps glommio's channel mesh with ring-full accounting.
//! - [`doorbell`] lets a foreign thread wake a task on a shard.
//! - [`runtime`] ties them together: [`launch`] runs one future per shard.

pub mod doorbell;
pub mod listener;
pub mod preflight;
pub mod rings;
pub mod runtime;

pub use rings::{Inbound, RingClosed, RingStats, Rings, TrySendError};
pub use runtime::{available_cores, launch, LaunchError, Running, RuntimeConfig, Shard};
