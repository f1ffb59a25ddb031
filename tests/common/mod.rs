//! Test harness: a real nexus process on an ephemeral loopback port, driven
//! through its standard input, and real WebSocket clients.
//!
//! The client crate's tests (`client/tests/`) include this file too.

#![allow(dead_code)]

mod http;
pub mod pki;
pub mod tokens;

#[allow(unused_imports)] // not every test binary probes HTTP
pub use http::{healthz, http_get, http_post_json};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use easechat_protocol::Message as Wire;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Upper bound for anything a test waits for; tests never sleep this long
/// unless something is broken.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A nexus process started for one test; killed on drop if still running.
pub struct Nexus {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every stderr line seen so far.
    pub log: Vec<String>,
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The nexus binary. Cargo names it to this package's tests; the client
/// crate's tests find it where Cargo puts the workspace's binaries, the
/// folder above the `deps` folder that holds the test executable
/// (`cargo test --workspace` builds it before any test runs).
fn nexus_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_ease_chat_nexus") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps");
    let path = dir.join("ease_chat_nexus");
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace` or `cargo build -p ease_chat_nexus`",
        path.display()
    );
    path
}

impl Nexus {
    /// Starts `ease_chat_nexus 127.0.0.1:0 --cores 2 <extra>` and waits
    /// until it listens.
    pub fn start(extra: &[&str]) -> Nexus {
        Nexus::start_at("127.0.0.1:0", extra)
    }

    /// Like [`Nexus::start`] on a given address.
    pub fn start_at(listen: &str, extra: &[&str]) -> Nexus {
        Nexus::start_wrapped(&[], listen, extra)
    }

    /// Like [`Nexus::start_at`], run through `wrapper` (e.g. `prlimit
    /// --nofile=256: --`); an empty wrapper runs the binary directly.
    pub fn start_wrapped(wrapper: &[&str], listen: &str, extra: &[&str]) -> Nexus {
        let binary = nexus_binary();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command.args([listen, "--cores", "2"]).args(extra);
        let mut nexus = Nexus::spawn(command);
        let line = nexus.wait_log(|l| l.contains("listening addr="));
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("address in the listening line");
        nexus.addr = addr.parse().expect("socket address");
        nexus.wait_log(|l| l.contains("shard started shard=0"));
        nexus.wait_log(|l| l.contains("shard started shard=1"));
        nexus
    }

    /// Like [`Nexus::start`] with `--log-format json`: the same start-up
    /// lines are awaited in their JSON form (`"message":"listening"` with
    /// its `"addr"`, then both shards' `"shard started"`).
    pub fn start_json_logs(extra: &[&str]) -> Nexus {
        let mut command = Command::new(nexus_binary());
        command
            .args(["127.0.0.1:0", "--cores", "2", "--log-format", "json"])
            .args(extra);
        let mut nexus = Nexus::spawn(command);
        let line = nexus.wait_log(|l| l.contains(r#""message":"listening","addr":""#));
        let addr = line
            .split(r#""addr":""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("address in the listening line");
        nexus.addr = addr.parse().expect("socket address");
        for shard in 0..2 {
            let started = format!(r#""message":"shard started","shard":{shard},"#);
            nexus.wait_log(|l| l.contains(&started));
        }
        nexus
    }

    /// Runs `command` (the nexus with its arguments) with piped standard
    /// streams and `RUST_LOG=info`; the caller waits for its start-up lines.
    fn spawn(mut command: Command) -> Nexus {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the nexus binary");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Nexus {
            child,
            stdin,
            stdout,
            stderr,
            addr: "0.0.0.0:0".parse().unwrap(),
            log: Vec::new(),
        }
    }

    /// The `ws://` URL of this nexus.
    pub fn url(&self) -> String {
        url(self.addr)
    }

    /// Waits for a stderr line matching `pred` (earlier lines are searched too).
    pub fn wait_log(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.log.iter().find(|l| pred(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("log line not seen; log so far:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Types a console command.
    pub fn console(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the nexus's standard input (as in a container without a terminal).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next console output line.
    pub fn output_line(&mut self) -> String {
        match self.stdout.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => panic!("no console output: {e:?}"),
        }
    }

    /// Console output lines until one matches `pred` (returned last).
    pub fn output_until(&mut self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.output_line();
            let done = pred(&line);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// True if no console output arrives within `wait`.
    pub fn output_quiet(&mut self, wait: Duration) -> bool {
        matches!(
            self.stdout.recv_timeout(wait),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// Runs `list KEYWORD` and returns (endpoint lines, subscriber lines).
    pub fn list_keyword(&mut self, keyword: &str) -> (Vec<String>, Vec<String>) {
        self.console(&format!("list {keyword}"));
        let endpoint_header = format!("endpoint {keyword:?} listens to ");
        let lines = self.output_until(|l| l.starts_with(&endpoint_header));
        let n = count_in(lines.last().unwrap(), &endpoint_header);
        let endpoint: Vec<String> = (0..n).map(|_| self.output_line()).collect();
        let channel_header = format!("channel {keyword:?} has ");
        let header = self.output_line();
        assert!(header.starts_with(&channel_header), "{header}");
        let m = count_in(&header, &channel_header);
        let subscribers: Vec<String> = (0..m).map(|_| self.output_line()).collect();
        (endpoint, subscribers)
    }

    /// Opens `count` clients named `c0`, `c1`… and waits until the console
    /// counts them all identified.
    pub fn identified_clients(&mut self, count: usize) -> Vec<Client> {
        let clients = (0..count)
            .map(|i| Client::named(self, &format!("c{i}")))
            .collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.console("list");
            let lines = self.output_until(|l| l.starts_with("  shard 1:"));
            if lines[0].starts_with(&format!("{count} clients identified")) {
                return clients;
            }
            assert!(Instant::now() < deadline, "{lines:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `list CHANNEL` shows `count` subscribers. Interest changes
    /// travel over the same rings as the console's question, so once the
    /// answer shows them every shard also knows where to forward.
    pub fn wait_subscribers(&mut self, channel: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (_, subs) = self.list_keyword(channel);
            if subs.len() == count {
                return subs;
            }
            assert!(
                Instant::now() < deadline,
                "channel {channel} has {} subscribers, expected {count}",
                subs.len()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the nexus process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "nexus did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time (user + system, in clock ticks) the process has used.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (0 once the process is gone).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The admin address from the log (the nexus must run with `--metrics`;
    /// an unspecified IP is reached on loopback).
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let line = self.wait_log(|l| l.contains("metrics listening"));
        let mut addr: SocketAddr = line
            .split("addr=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("address in the metrics line");
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        addr
    }

    /// Where it serves wss (`--tls-listen`), from its log.
    pub fn tls_addr(&mut self) -> SocketAddr {
        let line = self.wait_log(|l| l.contains("serving wss"));
        line.split("addr=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("address in the wss line")
    }

    /// The shard on which the connection from `peer` was identified (`1h`).
    pub fn shard_of(&mut self, peer: SocketAddr) -> usize {
        // The peer is a field of the connection's span: `peer=ADDR}` or
        // `peer=ADDR endpoint=…}`.
        let keys = [format!("peer={peer} "), format!("peer={peer}}}")];
        let line = self.wait_log(|l| {
            l.contains("connection identified") && keys.iter().any(|k| l.contains(k.as_str()))
        });
        line.split("conn=s")
            .nth(1)
            .and_then(|s| s.split('#').next())
            .and_then(|s| s.parse().ok())
            .expect("shard in the identified line")
    }

    /// A client named `name` identified on `shard` (reconnects until the
    /// kernel's spreading puts it there).
    pub fn client_on_shard(&mut self, name: &str, shard: usize) -> Client {
        for _ in 0..64 {
            let client = Client::named(self, name);
            if self.shard_of(client.local_addr()) == shard {
                return client;
            }
        }
        panic!("never landed on shard {shard}");
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Nexus {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback `HOST:PORT` whose port was free a moment ago, for a test
/// that must start a nexus (or two, one after the other) on a known port.
pub fn free_loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port();
    format!("127.0.0.1:{port}")
}

/// The `ws://` URL of a nexus listening at `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

/// Resident set size of `pid` in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn count_in(line: &str, header: &str) -> usize {
    line[header.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("count in {line:?}"))
}

/// A raw WebSocket client speaking protocol text.
pub struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// What a client saw when waiting for a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A text frame.
    Text(String),
    /// A close frame with code and reason.
    Closed(u16, String),
}

impl Client {
    /// Connects and upgrades.
    pub fn connect(nexus: &Nexus) -> Client {
        Client::connect_addr(nexus.addr)
    }

    /// Connects to any nexus listening at `addr` and upgrades.
    pub fn connect_addr(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (ws, _) = tungstenite::client(url(addr), MaybeTlsStream::Plain(stream))
            .expect("websocket upgrade");
        Client { ws }
    }

    /// Connects to `addr` requesting `target` (path and query, e.g.
    /// `/?token=…`); `Err` with the upgrade error (its HTTP status) when
    /// the nexus refuses.
    pub fn try_connect_target(addr: SocketAddr, target: &str) -> Result<Client, String> {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        match tungstenite::client(
            format!("ws://{addr}{target}"),
            MaybeTlsStream::Plain(stream),
        ) {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Connects to a wss listener at `addr` with `tls` (its trust, its
    /// client certificate) and upgrades; `Err` with the TLS or upgrade error.
    pub fn try_connect_tls(
        addr: SocketAddr,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Client, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let url = format!("wss://localhost:{}/", addr.port());
        match tungstenite::client_tls_with_config(
            url,
            stream,
            None,
            Some(tungstenite::Connector::Rustls(tls)),
        ) {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Connects and says `1h` with `name`.
    pub fn named(nexus: &Nexus, name: &str) -> Client {
        let mut client = Client::connect(nexus);
        client.hello(name);
        client
    }

    /// Our end's address (the nexus logs it as `peer=`).
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s.local_addr().expect("local address"),
            MaybeTlsStream::Rustls(s) => s.get_ref().local_addr().expect("local address"),
            _ => unreachable!("plain TCP or rustls only"),
        }
    }

    /// Sends one text frame as is.
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// Sends any WebSocket message (including raw frames).
    pub fn send_message(&mut self, message: Message) {
        self.ws.send(message).expect("send");
    }

    /// Sends a binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).expect("send");
    }

    /// Sends one protocol message, encoded by the codec.
    pub fn send_wire(&mut self, message: Wire<'_>) {
        self.send(&message.encode());
    }

    /// `1h`.
    pub fn hello(&mut self, name: &str) {
        self.send_wire(Wire::Hello { name });
    }

    /// `1c` with a TTL in seconds and nanoseconds.
    pub fn subscribe_ttl(&mut self, channel: &str, seconds: u64, nanos: u64) {
        let ttl = Duration::from_secs(seconds) + Duration::from_nanos(nanos);
        self.send_wire(Wire::Subscribe { channel, ttl });
    }

    /// `1c` with a 600 s TTL, as the Java client does.
    pub fn subscribe(&mut self, channel: &str) {
        self.subscribe_ttl(channel, 600, 0);
    }

    /// `1t`.
    pub fn publish(&mut self, channel: &str, text: &str) {
        self.send_wire(Wire::Transmit { channel, text });
    }

    /// The next text or close frame, within `wait`; None on timeout.
    pub fn next_within(&mut self, wait: Duration) -> Option<Event> {
        self.set_timeout(wait);
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(Event::Text(t.to_string())),
                Ok(Message::Close(frame)) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Some(Event::Closed(code, reason));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("websocket error: {e}"),
            }
        }
    }

    fn set_timeout(&mut self, wait: Duration) {
        let wait = Some(wait.max(Duration::from_millis(1)));
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(s) => s.set_read_timeout(wait).unwrap(),
            MaybeTlsStream::Rustls(s) => s.get_mut().set_read_timeout(wait).unwrap(),
            _ => {}
        }
    }

    /// The next text frame; panics on anything else.
    pub fn recv(&mut self) -> String {
        match self.next_within(PATIENCE) {
            Some(Event::Text(t)) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The close frame; text frames before it are skipped and counted.
    pub fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_within(PATIENCE) {
                Some(Event::Closed(code, reason)) => return (code, reason),
                Some(Event::Text(_)) => continue,
                None => panic!("expected a close frame, got nothing"),
            }
        }
    }

    /// Asserts that nothing arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        if let Some(event) = self.next_within(wait) {
            panic!("expected silence, got {event:?}");
        }
    }
}

/// A subscriber (`bystander`) and a publisher (`watcher`) on channel
/// `watch` that must keep working while other connections misbehave.
pub struct Bystander {
    sub: Client,
    publisher: Client,
    /// Rounds served so far; the last one's text is `round N`.
    pub round: usize,
}

impl Bystander {
    pub fn new(nexus: &mut Nexus) -> Bystander {
        let mut sub = Client::named(nexus, "bystander");
        sub.subscribe("watch");
        nexus.wait_subscribers("watch", 1);
        Bystander {
            sub,
            publisher: Client::named(nexus, "watcher"),
            round: 0,
        }
    }

    /// One more message goes through, in order.
    pub fn still_served(&mut self) {
        self.round += 1;
        let text = format!("round {}", self.round);
        self.publisher.publish("watch", &text);
        assert_eq!(self.sub.recv(), receive("watcher", "watch", &text));
    }
}

/// The `1r` text a subscriber receives.
pub fn receive(sender: &str, channel: &str, text: &str) -> String {
    Wire::Receive {
        sender,
        channel,
        text,
    }
    .encode()
}
