//! What abusing connections do and how their fate is told: a writer loop
//! that times every write (a write blocked for a second or more means the
//! nexus stopped reading it: paused) and a reader that waits for the close.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::client::{self, Conn, Fate};
use crate::nexus::Target;

/// A write blocked at least this long counts as the nexus pausing the abuser.
pub const PAUSED: Duration = Duration::from_secs(1);
/// Interval between the bytes of a trickling partial frame.
const TRICKLE: Duration = Duration::from_secs(2);

/// How one abusing connection ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its address (to find the nexus's log line).
    pub local: SocketAddr,
    /// Seen from the client.
    pub fate: Fate,
    /// Longest single write.
    pub max_stall: Duration,
    /// Bytes written.
    pub sent: u64,
}

/// Writes `batches` in order, then stops (as [`flood`] does otherwise).
pub async fn flood_batches(conn: Conn, until: Instant, batches: Vec<Vec<u8>>) -> Report {
    let mut batches = batches.into_iter();
    flood(conn, until, move |b| match batches.next() {
        Some(bytes) => {
            b.extend_from_slice(&bytes);
            true
        }
        None => false,
    })
    .await
}

/// Writes `frame` over and over, `per_batch` copies per write, until
/// [`flood`] stops; also returns how many copies were offered.
pub async fn flood_repeated(
    conn: Conn,
    until: Instant,
    frame: &[u8],
    per_batch: u64,
) -> (Report, u64) {
    let mut n = 0u64;
    let report = flood(conn, until, |b| {
        for _ in 0..per_batch {
            b.extend_from_slice(frame);
        }
        n += per_batch;
        true
    })
    .await;
    (report, n)
}

/// Writes batches from `next` as fast as the socket takes them until
/// `until`, the connection ends, or `next` returns false.
pub async fn flood(
    conn: Conn,
    until: Instant,
    mut next: impl FnMut(&mut Vec<u8>) -> bool,
) -> Report {
    let local = conn.local;
    let ended: Rc<Cell<Option<Fate>>> = Rc::new(Cell::new(None));
    let reader = {
        let ended = ended.clone();
        tokio::task::spawn_local(async move {
            let (fate, _) = client::drain(conn.read, conn.pending, until).await;
            ended.set(Some(fate.clone()));
            fate
        })
    };
    let mut write = conn.write;
    let mut max_stall = Duration::ZERO;
    let mut sent = 0u64;
    let mut batch = Vec::new();
    loop {
        let fate = ended.take();
        if fate.is_some() {
            ended.set(fate);
            break;
        }
        batch.clear();
        if Instant::now() >= until || !next(&mut batch) {
            break;
        }
        let started = Instant::now();
        let left = until.saturating_duration_since(started);
        let result = tokio::time::timeout(left, write.write_all(&batch)).await;
        max_stall = max_stall.max(started.elapsed());
        match result {
            Ok(Ok(())) => sent += batch.len() as u64,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let fate = reader.await.unwrap_or(Fate::Dropped);
    drop(write);
    Report {
        local,
        fate,
        max_stall,
        sent,
    }
}

/// Sends `head` once, then one byte every 2 s until `until` or the end.
pub async fn trickle(conn: Conn, until: Instant, head: Vec<u8>) -> Report {
    let local = conn.local;
    let reader =
        tokio::task::spawn_local(
            async move { client::drain(conn.read, conn.pending, until).await.0 },
        );
    let mut write = conn.write;
    let mut sent = 0u64;
    if write.write_all(&head).await.is_ok() {
        sent += head.len() as u64;
        let mut next_byte = Instant::now() + TRICKLE;
        while Instant::now() < until && !reader.is_finished() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if Instant::now() >= next_byte {
                next_byte += TRICKLE;
                if write.write_all(b"a").await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    let fate = reader.await.unwrap_or(Fate::Dropped);
    Report {
        local,
        fate,
        max_stall: Duration::ZERO,
        sent,
    }
}

/// What a group of abusers amounted to.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// One line for the table.
    pub text: String,
    /// Closed with a code, or paused.
    pub handled: bool,
}

/// Summarises the reports, quoting the nexus's log for one closed abuser.
pub fn summarise(target: &Target, reports: &[Report]) -> Summary {
    let n = reports.len();
    let mut codes: Vec<(u16, usize)> = Vec::new();
    let (mut open, mut dropped, mut paused) = (0, 0, 0);
    let mut logged = None;
    for r in reports {
        match r.fate {
            Fate::Closed(code) => {
                match codes.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, k)) => *k += 1,
                    None => codes.push((code, 1)),
                }
                if logged.is_none() {
                    logged = target.closed(r.local);
                }
            }
            Fate::Dropped => dropped += 1,
            Fate::Open => open += 1,
        }
        if r.max_stall >= PAUSED {
            paused += 1;
        }
    }
    let max_stall = reports
        .iter()
        .map(|r| r.max_stall)
        .max()
        .unwrap_or_default();
    let mut parts = Vec::new();
    for (code, k) in &codes {
        parts.push(format!("{k}/{n} closed {code}"));
    }
    if dropped > 0 {
        parts.push(format!("{dropped}/{n} dropped without close"));
    }
    if open > 0 {
        parts.push(format!("{open}/{n} still open"));
    }
    if paused > 0 {
        parts.push(format!(
            "{paused}/{n} paused (writes blocked up to {:.1} s)",
            max_stall.as_secs_f64()
        ));
    } else if max_stall >= Duration::from_millis(50) {
        // Slowed but not paused by the 1 s definition: worth seeing.
        parts.push(format!(
            "longest write blocked {:.2} s",
            max_stall.as_secs_f64()
        ));
    }
    let mut text = parts.join(", ");
    if let Some(line) = logged {
        text += &format!(" [log: {}]", line.replace('|', "/"));
    }
    Summary {
        text,
        handled: n > 0 && (codes.iter().map(|(_, k)| k).sum::<usize>() + paused) == n,
    }
}

/// `n` raw frames making one `1t` of exactly 15 bytes each, up to `bytes`.
pub fn small_publishes(channel: &str, bytes: usize) -> Vec<u8> {
    // `1t|1|b|6|abcdef` is 15 bytes when the channel has one letter.
    let text = client::publish(channel, "abcdef");
    let one = client::frame(&text);
    let mut out = Vec::with_capacity(bytes);
    while out.len() + one.len() <= bytes {
        out.extend_from_slice(&one);
    }
    out
}

/// A masked text frame header (FIN and opcode in `first`) declaring `len`
/// payload bytes, 14 bytes long.
pub fn header(first: u8, len: u64) -> Vec<u8> {
    let mut out = vec![first, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// Writes `text` frames on `conn` (used for setup messages).
pub async fn say(conn: &mut Conn, texts: &[String]) -> Result<(), String> {
    let mut out = Vec::new();
    for t in texts {
        out.extend_from_slice(&client::frame(t));
    }
    conn.write.write_all(&out).await.map_err(|e| e.to_string())
}
