//! A scripted stand-in for a nexus with history, in the test process: plain
//! `ws://` on 127.0.0.1, speaking v1 and the positions extension as
//! `docs/protocol.md` describes it, small enough to check by reading. It
//! lets the client's recovery be tested before (and independently of) the
//! real nexus's history, and lets a test cut every connection and publish
//! into the gap atomically, so the tests do not depend on timing.
//!
//! Channels starting with `h/` keep history (the last `limit` messages);
//! others do not. Every connection runs on its own thread and receives its
//! frames through a queue filled under the one lock, so a recovery's `1p`,
//! its replay and the live messages after it are queued in order with no
//! publish in between: the seam is closed by the lock, as the real nexus
//! must close it by design.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use easechat_protocol::{parse, Message, PositionStatus};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::Message as WsMessage;

use super::PATIENCE;

/// What a connection's thread is told to send.
enum Out {
    Frame(String),
    Close(u16, String),
    /// Drop the socket without a close frame (a network break).
    Break,
}

/// One client connection.
struct Conn {
    out: Sender<Out>,
    name: String,
    /// Said `1h` with `positions`.
    positions: bool,
    subscriptions: BTreeSet<String>,
}

/// One channel's history.
pub struct History {
    pub epoch: String,
    /// The offset of the last message published (0: none yet).
    pub head: u64,
    /// The messages held, the last one at `head`.
    held: VecDeque<(String, String)>,
}

impl History {
    /// The offset of the oldest message held (`head + 1` when none is).
    fn first(&self) -> u64 {
        self.head + 1 - self.held.len() as u64
    }
}

/// Everything the fake nexus knows, behind its one lock.
pub struct State {
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    histories: BTreeMap<String, History>,
    /// Messages held per history channel.
    limit: usize,
    /// Every frame a client sent, with its connection's number, in order.
    pub frames: Vec<(u64, String)>,
    /// Epochs are `e1`, `e2`…
    epochs: u64,
    /// Each recovery takes the first number here, if any, replays only
    /// that many messages, then breaks the connection (a cut in the middle
    /// of a replay).
    pub cut_replays_after: VecDeque<usize>,
}

impl State {
    fn is_history(channel: &str) -> bool {
        channel.starts_with("h/")
    }

    fn new_epoch(&mut self) -> String {
        self.epochs += 1;
        format!("e{}", self.epochs)
    }

    fn history(&mut self, channel: &str) -> &mut History {
        if !self.histories.contains_key(channel) {
            let epoch = self.new_epoch();
            self.histories.insert(
                channel.to_string(),
                History {
                    epoch,
                    head: 0,
                    held: VecDeque::new(),
                },
            );
        }
        self.histories.get_mut(channel).unwrap()
    }

    /// Publishes as the nexus does: into the history, then to every
    /// subscriber (with its position to positions clients).
    pub fn publish(&mut self, channel: &str, sender: &str, text: &str) {
        let position = if State::is_history(channel) {
            let limit = self.limit;
            let history = self.history(channel);
            history.head += 1;
            history
                .held
                .push_back((sender.to_string(), text.to_string()));
            while history.held.len() > limit {
                history.held.pop_front();
            }
            Some((history.head, history.epoch.clone()))
        } else {
            None
        };
        for conn in self.conns.values() {
            if conn.subscriptions.contains(channel) {
                let frame = frame_for(conn, sender, channel, text, position.as_ref());
                let _ = conn.out.send(Out::Frame(frame));
            }
        }
    }

    /// Restarts `channel`'s history in a new epoch, as a nexus restart does.
    pub fn restart_history(&mut self, channel: &str) -> String {
        let epoch = self.new_epoch();
        self.histories.insert(
            channel.to_string(),
            History {
                epoch: epoch.clone(),
                head: 0,
                held: VecDeque::new(),
            },
        );
        epoch
    }

    /// Closes every connection with 1001 (a drain): none of them receives
    /// anything published after this.
    pub fn drop_all(&mut self) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            let _ = conn.out.send(Out::Close(1001, "server draining".into()));
        }
    }

    fn handle(&mut self, id: u64, text: &str) {
        self.frames.push((id, text.to_string()));
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // dropped: what it still sends is ignored
        };
        let close = |conn: &Conn, code, reason: &str| {
            let _ = conn.out.send(Out::Close(code, reason.to_string()));
        };
        let message = match parse(text) {
            Ok(message) => message,
            Err(e) => return close(conn, e.close_code(), &e.to_string()),
        };
        match message {
            Message::Hello { name } => {
                conn.name = name.to_string();
                conn.positions = false;
            }
            Message::HelloWith { name, options } => {
                conn.name = name.to_string();
                conn.positions = options.split(',').any(|o| o == "positions");
            }
            Message::Subscribe { channel, ttl } if ttl.is_zero() => {
                conn.subscriptions.remove(channel);
            }
            Message::Subscribe { channel, .. } => {
                let first = conn.subscriptions.insert(channel.to_string());
                if first && conn.positions && State::is_history(channel) {
                    let history = self.history(channel);
                    let report = position(channel, PositionStatus::Subscribed, history);
                    let _ = self.conns[&id].out.send(Out::Frame(report));
                }
            }
            Message::Recover { .. } if !conn.positions => close(
                conn,
                1002,
                "malformed message: bytes left after the last field",
            ),
            Message::Recover {
                channel,
                offset,
                epoch,
                ..
            } => {
                conn.subscriptions.insert(channel.to_string());
                if !State::is_history(channel) {
                    let report = Message::Position {
                        channel,
                        status: PositionStatus::NotRecovered,
                        offset: 0,
                        epoch: "",
                    };
                    let _ = conn.out.send(Out::Frame(report.encode()));
                    return;
                }
                let history = self.history(channel);
                let held = epoch == history.epoch
                    && offset <= history.head
                    && offset + 1 >= history.first();
                let mut frames = Vec::new();
                if held {
                    frames.push(position(channel, PositionStatus::Recovered, history));
                    let skip = (offset + 1 - history.first()) as usize;
                    for (i, (sender, text)) in history.held.iter().enumerate().skip(skip) {
                        let at = history.first() + i as u64;
                        frames.push(
                            Message::ReceiveAt {
                                sender,
                                channel,
                                text,
                                offset: at,
                                epoch: &history.epoch,
                            }
                            .encode(),
                        );
                    }
                } else {
                    frames.push(position(channel, PositionStatus::NotRecovered, history));
                }
                let cut = self.cut_replays_after.pop_front();
                let conn = &self.conns[&id];
                for frame in frames.into_iter().take(cut.map_or(usize::MAX, |n| 1 + n)) {
                    let _ = conn.out.send(Out::Frame(frame));
                }
                if cut.is_some() {
                    let conn = self.conns.remove(&id).unwrap();
                    let _ = conn.out.send(Out::Break);
                }
            }
            Message::Transmit { channel, text } => {
                let sender = conn.name.clone();
                self.publish(channel, &sender, text);
            }
            Message::Disconnect { reason } => close(conn, 1000, reason),
            _ => {}
        }
    }
}

fn position(channel: &str, status: PositionStatus, history: &History) -> String {
    Message::Position {
        channel,
        status,
        offset: history.head,
        epoch: &history.epoch,
    }
    .encode()
}

fn frame_for(
    conn: &Conn,
    sender: &str,
    channel: &str,
    text: &str,
    position: Option<&(u64, String)>,
) -> String {
    match position {
        Some((offset, epoch)) if conn.positions => Message::ReceiveAt {
            sender,
            channel,
            text,
            offset: *offset,
            epoch,
        }
        .encode(),
        _ => Message::Receive {
            sender,
            channel,
            text,
        }
        .encode(),
    }
}

/// The fake nexus; it stops with the test process.
pub struct FakeNexus {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeNexus {
    /// Listens on 127.0.0.1; history channels hold the last `limit`
    /// messages.
    pub fn start(limit: usize) -> FakeNexus {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            conns: BTreeMap::new(),
            next_conn: 1,
            histories: BTreeMap::new(),
            limit,
            frames: Vec::new(),
            epochs: 0,
            cut_replays_after: VecDeque::new(),
        }));
        let shared = state.clone();
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let state = shared.clone();
                thread::spawn(move || serve(tcp, state));
            }
        });
        FakeNexus { port, state }
    }

    /// Its `ws://` URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The state, locked: publish, drop connections, read frames.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Publishes `text` on `channel` as `sender`.
    pub fn publish(&self, channel: &str, sender: &str, text: &str) {
        self.state().publish(channel, sender, text);
    }

    /// The channel's history position (head offset, epoch).
    pub fn head(&self, channel: &str) -> (u64, String) {
        let mut state = self.state();
        let history = state.history(channel);
        (history.head, history.epoch.clone())
    }

    /// Waits until `count` connections are subscribed to `channel`.
    pub fn wait_subscribers(&self, channel: &str, count: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self
                .state()
                .conns
                .values()
                .filter(|c| c.subscriptions.contains(channel))
                .count();
            if now == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{channel}: {now} subscribers, expected {count}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every frame clients sent, parsed back into owned text per
    /// connection number.
    pub fn frames(&self) -> Vec<(u64, String)> {
        self.state().frames.clone()
    }
}

fn serve(tcp: TcpStream, state: Arc<Mutex<State>>) {
    let Ok(mut ws) = tungstenite::accept(tcp) else {
        return;
    };
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let (out, queue): (Sender<Out>, Receiver<Out>) = mpsc::channel();
    let id = {
        let mut state = state.lock().unwrap();
        let id = state.next_conn;
        state.next_conn += 1;
        state.conns.insert(
            id,
            Conn {
                out,
                name: String::new(),
                positions: false,
                subscriptions: BTreeSet::new(),
            },
        );
        id
    };
    let forget = |state: &Mutex<State>| {
        state.lock().unwrap().conns.remove(&id);
    };
    loop {
        match ws.read() {
            Ok(WsMessage::Text(text)) => state.lock().unwrap().handle(id, &text),
            Ok(WsMessage::Close(_)) => {
                forget(&state);
                let _ = ws.flush();
                return;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return forget(&state),
        }
        while let Ok(out) = queue.try_recv() {
            match out {
                Out::Frame(frame) => {
                    if ws.send(WsMessage::text(frame)).is_err() {
                        return forget(&state);
                    }
                }
                Out::Break => return forget(&state),
                Out::Close(code, reason) => {
                    forget(&state);
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    }));
                    let _ = ws.flush();
                    // Let the close frame go out before the socket drops.
                    thread::sleep(Duration::from_millis(50));
                    return;
                }
            }
        }
    }
}
