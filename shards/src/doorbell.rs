//! A doorbell a foreign thread rings to wake a task on a shard.
//!
//! glommio cannot be woken cheaply from a thread outside its executors, but
//! it reads sockets through io_uring like any other I/O. A doorbell is a Unix
//! socket pair: the foreign side ([`Ringer`]) writes one byte, without ever
//! blocking, when it hands the shard work; the shard side ([`Bell`]), adopted
//! into the executor, is an ordinary glommio stream a task awaits. The bytes
//! carry no meaning: one pending byte is enough to wake the reader.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use futures_lite::AsyncReadExt;

/// The foreign thread's side: rings without blocking.
#[derive(Debug)]
pub struct Ringer(UnixStream);

impl Ringer {
    /// Writes one byte. A full socket buffer means bytes are already
    /// pending and the reader will wake anyway, so it is not an error.
    pub fn ring(&self) {
        let _ = (&self.0).write(&[1]);
    }
}

/// The shard's side, still a plain socket until [`Bell::adopt`] runs on
/// the shard's executor (it can cross threads until then).
#[derive(Debug)]
pub struct Bell(UnixStream);

/// A doorbell pair.
pub fn doorbell() -> io::Result<(Ringer, Bell)> {
    let (ringer, bell) = UnixStream::pair()?;
    ringer.set_nonblocking(true)?;
    Ok((Ringer(ringer), Bell(bell)))
}

impl Bell {
    /// Hands the socket to the calling executor.
    ///
    /// # Panics
    /// If called outside a glommio executor.
    pub fn adopt(self) -> AdoptedBell {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor is one end of a socket pair we own and
        // give up here; glommio takes ownership of it.
        let stream = unsafe { glommio::net::UnixStream::from_raw_fd(self.0.into_raw_fd()) };
        AdoptedBell(stream)
    }
}

/// The shard's side inside its executor.
#[derive(Debug)]
pub struct AdoptedBell(glommio::net::UnixStream);

impl AdoptedBell {
    /// Waits until the doorbell was rung at least once since the last call
    /// (pending rings are consumed together). False once the ringer is gone
    /// (or the socket fails, which a socket pair only does when closed).
    pub async fn wait(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match self.0.read(&mut buf).await {
                Ok(n) => return n > 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_wakes_the_shard_side_and_a_dropped_ringer_ends_it() {
        let (ringer, bell) = doorbell().unwrap();
        let handle = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut bell = bell.adopt();
                let first = bell.wait().await;
                let after_drop = bell.wait().await;
                (first, after_drop)
            })
            .unwrap();
        ringer.ring();
        ringer.ring();
        drop(ringer);
        assert_eq!(handle.join().unwrap(), (true, false));
    }
}
