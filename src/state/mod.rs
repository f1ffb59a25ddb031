//! A shard's exchange state as plain data: no I/O, no clock (every function
//! that cares about time is handed `now`), so it is unit-tested directly.
//!
//! - [`connection`]: one client connection's name, outbox and liveness.
//! - [`subscriptions`]: who listens to what until when, and what it costs.
//! - [`interest`]: which other shards listen to what, and what this shard
//!   still owes them about its own channels.
//! - [`views`]: the questions shards answer about themselves, and the answers.
//! - [`history`]: per-channel message history, positions and all-or-nothing
//!   recovery.
//! - [`listing`]: the admin console's channel and client lists, capped per
//!   shard and merged across shards.

pub mod connection;
pub mod history;
pub mod interest;
pub mod listing;
pub mod subscriptions;
pub mod views;
