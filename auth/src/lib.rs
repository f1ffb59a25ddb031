//! # EaseChat access control
//!
//! Who may connect, under which name, and on which channels: pure logic, no
//! sockets and no clock of its own (the time is passed in), so every rule is
//! unit- and property-tested. The nexus calls it at the WebSocket upgrade
//! ([`Policy::authenticate`]), on `1h`, `1c` and `1t` ([`Grant`]), and on a
//! policy reload (authenticate again, compare). `easechat token` signs
//! tokens with [`SigningKey`].
//!
//! - [`pattern`]: channel and name patterns (`*` is any run of characters).
//! - [`permissions`]: publish/subscribe allow and deny lists, deny wins.
//! - [`claims`]: what a token says (`sub`, `name`, `perm`, `exp` …).
//! - [`keys`]: HMAC, ES256 and EdDSA keys, verifying and signing.
//! - [`policy`]: the policy file, modes, revocation, [`Policy::authenticate`].
//! - [`grant`]: one connection's rights and its identity's quotas.
//! - [`rate`]: the lock-free per-identity publish budget.
//! - [`secret`]: the admin token, compared in constant time.
//! - [`load`]: reading the files (the crate's only I/O).
//!
//! The file format and the rules are documented in `docs/access-control.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod claims;
pub mod grant;
pub mod keys;
pub mod load;
pub mod pattern;
pub mod permissions;
pub mod policy;
pub mod rate;
pub mod secret;

pub use claims::Claims;
pub use grant::{Grant, Quotas};
pub use keys::SigningKey;
pub use load::PolicyFiles;
pub use permissions::Operation;
pub use policy::{Credential, Mode, Policy, Refusal, RefusalKind, Status};
