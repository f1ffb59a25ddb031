//! The EaseChat wire protocol, version 1, as the nexus uses it.
//!
//! The codec itself (the [`Message`] type, [`parse`] and the encoders) lives
//! in the `easechat_protocol` crate, shared with the client library, and is
//! re-exported here. [`frame`] adds what only a server does: the `1r`
//! message as a complete unmasked WebSocket frame, built once per publish
//! and shared by every subscriber, plus pings and close frames.

pub mod frame;

pub use easechat_protocol::*;
