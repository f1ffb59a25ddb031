//! Saving channel traffic to SQLite: one row per message with its receive
//! time, in batched transactions so bursts of thousands per second keep up.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::Received;

/// Rows are committed when this many are pending…
pub const BATCH_ROWS: usize = 1_000;
/// …or, by default, when the oldest pending row is this old.
pub const DEFAULT_BATCH_AGE: Duration = Duration::from_millis(200);

/// Buffers received messages and writes them in transactions.
#[derive(Debug)]
pub struct Recorder {
    db: Connection,
    pending: Vec<(i64, Received)>,
    oldest: Option<Instant>,
    /// Longest a received row waits before it is committed.
    batch_age: Duration,
    written: u64,
}

impl Recorder {
    /// Opens (or creates) the database, in WAL mode, with the `messages`
    /// table; pending rows are committed at least every `batch_age`.
    pub fn open(path: &Path, batch_age: Duration) -> rusqlite::Result<Recorder> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 id          INTEGER PRIMARY KEY,
                 received_at INTEGER NOT NULL, -- microseconds since the Unix epoch
                 sender      TEXT NOT NULL,
                 channel     TEXT NOT NULL,
                 text        TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS messages_channel_time ON messages (channel, received_at);",
        )?;
        Ok(Recorder {
            db,
            pending: Vec::with_capacity(BATCH_ROWS),
            oldest: None,
            batch_age,
            written: 0,
        })
    }

    /// Queues a message received now; commits when the batch is full or old.
    pub fn push(&mut self, message: Received) -> rusqlite::Result<()> {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        self.pending.push((micros, message));
        self.oldest.get_or_insert_with(Instant::now);
        if self.pending.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits if the oldest pending row has waited long enough.
    pub fn tick(&mut self) -> rusqlite::Result<()> {
        if self.oldest.is_some_and(|t| t.elapsed() >= self.batch_age) {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes every pending row in one transaction.
    pub fn flush(&mut self) -> rusqlite::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self.db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (received_at, sender, channel, text) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (at, m) in &self.pending {
                insert.execute(params![at, m.sender, m.channel, m.text])?;
            }
        }
        tx.commit()?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        self.oldest = None;
        Ok(())
    }

    /// Rows committed so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}
