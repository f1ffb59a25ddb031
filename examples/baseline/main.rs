//! `baseline`: the classic design EaseChat Nexus replaces, for side-by-side
//! benchmarks (`scripts/bench.sh`).
//!
//! Tokio's multi-threaded runtime (one worker by default, the script pins
//! the process to one CPU) with tokio-tungstenite; a task per connection
//! reading frames and a writer task per connection sending each delivery
//! from an unbounded mpsc queue with `send` (one write and flush per
//! message); every channel and connection in one map behind a lock. No
//! console, limits or metrics: only the v1 delivery path — `1h`, `1c` with
//! a time to live (renewal, `0|0` unsubscribes), `1t` fanned out as `1r` to
//! every live subscriber except connections with the sender's name, `1d`
//! closing with 1000 — and the protocol's error closes.
//!
//! ```sh
//! cargo run --release --example baseline -- 127.0.0.1:6501
//! ```

mod hub;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argh::FromArgs;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use hub::{Hub, Verdict};

/// A Tokio + tokio-tungstenite nexus built the classic way (see the module docs).
#[derive(FromArgs, Debug)]
struct Args {
    /// listen address (default 0.0.0.0:6500)
    #[argh(positional, default = "String::from(\"0.0.0.0:6500\")")]
    listen: String,
    /// tokio worker threads (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// write every message already queued for a connection before one
    /// flush (`feed` + `flush`) instead of one write and flush per message:
    /// a variant to compare, not the classic design (off by default)
    #[argh(switch)]
    feed_queued: bool,
}

/// The one lock every connection shares.
type Shared = Arc<Mutex<Hub>>;

fn main() {
    let args: Args = argh::from_env();
    let addr: SocketAddr = match args.listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("baseline: bad listen address {:?}: {e}", args.listen);
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(serve(addr, args.feed_queued)) {
        eprintln!("baseline: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: SocketAddr, feed_queued: bool) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let hub: Shared = Arc::new(Mutex::new(Hub::default()));
    {
        // Expired subscriptions must not cost memory forever.
        let hub = hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                hub.lock().expect("hub lock").purge_expired();
            }
        });
    }
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(hub.clone(), stream, feed_queued));
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                eprintln!("baseline: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection: upgrade, a writer task, then the read loop.
async fn connection(hub: Shared, stream: TcpStream, feed_queued: bool) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = hub.lock().expect("hub lock").register(tx.clone());
    let writer = tokio::spawn(async move {
        // One write (and flush) per delivery: the classic path.
        while let Some(message) = rx.recv().await {
            let mut last = matches!(message, Message::Close(_));
            let sent = if feed_queued {
                let mut fed = sink.feed(message).await;
                while let (false, Ok(next)) = (last || fed.is_err(), rx.try_recv()) {
                    last = matches!(next, Message::Close(_));
                    fed = sink.feed(next).await;
                }
                match fed {
                    Ok(()) => sink.flush().await,
                    Err(e) => Err(e),
                }
            } else {
                sink.send(message).await
            };
            if sent.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(frame) = source.next().await {
        let verdict = match frame {
            Ok(Message::Text(text)) => hub.lock().expect("hub lock").on_text(id, text.as_str()),
            Ok(Message::Binary(_)) => {
                Verdict::Close(1003, "binary frames are not supported".into())
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => Verdict::Continue,
        };
        if let Verdict::Close(code, reason) = verdict {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = tx.send(Message::Close(Some(frame)));
            break;
        }
    }
    hub.lock().expect("hub lock").unregister(id);
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}
