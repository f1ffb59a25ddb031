//! A connection's writer task: drains the outbox in batches, one `send` per
//! batch, until the outbox is closed and empty.

use std::future::poll_fn;
use std::rc::Rc;

use crate::outbox::Batch;
use crate::shard::{Connection, ShardState};
use crate::stats::Metric;

use super::stream::SharedStream;

/// A batch buffer larger than this is released after use, so a burst does
/// not pin memory on a connection that goes idle.
const KEEP_BUFFER_BYTES: usize = 16 * 1024;

/// Writes `conn`'s outbox to `stream` until it is finished, then sends FIN.
/// A write error aborts the outbox, which also stops the reader.
pub async fn run(stream: SharedStream, conn: Rc<Connection>, shard: Rc<ShardState>) {
    let mut buf = Vec::new();
    loop {
        let batch = poll_fn(|cx| conn.outbox.poll_batch(cx, &mut buf)).await;
        // Bytes count as sent once the kernel took them.
        let written = match batch {
            Batch::One(frame) => {
                let result = stream.write_all(&frame).await;
                result.map(|()| frame.len())
            }
            Batch::Many => {
                let result = stream.write_all(&buf).await.map(|()| buf.len());
                buf.clear();
                if buf.capacity() > KEEP_BUFFER_BYTES {
                    buf = Vec::new();
                }
                result
            }
            Batch::Finished => {
                stream.close_write().await;
                return;
            }
        };
        match written {
            Ok(bytes) => shard.stats.add(Metric::BytesOut, bytes as u64),
            Err(_) => {
                conn.outbox.abort();
                return;
            }
        }
    }
}
