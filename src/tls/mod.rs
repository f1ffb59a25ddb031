//! wss beside ws: the certificates of `--tls-listen`, how they are loaded
//! and swapped on reload, and the TLS side of a connection.
//!
//! rustls is driven directly — bytes in with `read_tls`, bytes out with
//! `write_tls` — rather than through an async stream adapter such as
//! `futures-rustls`. An adapter would own the socket and write each
//! connection on its own; driven directly, the flusher keeps its design
//! for wss too: it encrypts a round's frames into each connection's send
//! buffer and hands every buffer of the round to the kernel in one io_uring
//! submission ([`crate::session`]'s writer). That is also the seam where a
//! kernel-TLS socket would skip the encryption: nothing else would change.
//!
//! - [`store`]: the server configuration built from the PEM files, behind a
//!   lock taken once per handshake, swapped whole by a reload.
//! - [`session`]: one connection's TLS state; its handshake is bounded in
//!   bytes and paced by the shard's start gate
//!   ([`crate::session::gate`]) so a storm of handshakes cannot hold up a
//!   shard.
//! - [`identity`]: the subject of a verified client certificate, which can
//!   stand in for a token's identity.

pub mod identity;
pub mod session;
pub mod store;

pub use session::TlsSession;
pub use store::{Certificates, Loaded, TlsError, TlsSettings};
