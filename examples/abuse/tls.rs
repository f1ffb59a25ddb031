//! The wss abuse rows, against a nexus with `--tls-listen` on (a test CA
//! and server certificate made here with rcgen): garbage where a
//! ClientHello belongs, a ClientHello dribbled slower than the handshake
//! timeout, and connections that start a ClientHello and stop. The
//! bystanders are the suite's usual ws pairs; beside them a checker opens
//! a fresh wss connection every 250 ms (handshake, upgrade, `1h`, `1d`,
//! the nexus's close) to show wss keeps serving new clients meanwhile.
//!
//! Which shard a TLS abuser landed on is not in the log (it never gets as
//! far as `1h`): it is read afterwards from the per-shard
//! `easechat_tls_handshake_failures_total`, and the bystanders' "same" and
//! "other" are swapped when a lone abuser was on shard 1.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::abusers::Summary;
use crate::client;
use crate::nexus::Target;
use crate::scenarios::{Ctx, Measures, Outcome};
use crate::ws::{self, Incoming};

/// The scenarios of this file; row 0 is shown as `wss` (no issue row).
pub const ALL: &[(&str, u32)] = &[
    ("tls-garbage", 0),
    ("tls-slow-handshake", 0),
    ("tls-half-open", 0),
];

/// The nexus's `--handshake-timeout` when no `--nexus-arg` sets it.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How late after the handshake timeout a close still counts as its.
const CLOSE_SLACK: Duration = Duration::from_secs(3);
/// How long a garbage connection may stay open before it counts as kept.
const GARBAGE_PATIENCE: Duration = Duration::from_secs(5);
/// Interval between the bytes of a dribbled ClientHello.
const DRIBBLE: Duration = Duration::from_millis(200);
/// Bytes of a ClientHello a half-open connection sends.
const HALF_OPEN_BYTES: usize = 64;
/// Interval between the checker's fresh wss clients.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Time a checker's client has for everything.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Client settings trusting the test CA (set by [`setup`]).
static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
/// Where [`setup`] wrote the certificate files.
static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Makes a test CA and a server certificate for `localhost`/`127.0.0.1`,
/// writes them, and returns the nexus flags that serve wss with them.
pub fn setup() -> Result<Vec<String>, String> {
    let e = |e: rcgen::Error| e.to_string();
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "EaseChat abuse CA");
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(e)?).map_err(e)?;
    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(e)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(e)?;
    let cert = server.signed_by(&key, &issuer).map_err(e)?;

    let dir = std::env::temp_dir().join(format!("easechat-abuse-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _ = DIR.set(dir.clone());
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, format!("{}{}", cert.pem(), issuer.pem()))
        .map_err(|e| e.to_string())?;
    std::fs::write(&key_path, key.serialize_pem()).map_err(|e| e.to_string())?;

    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(issuer.pem().as_bytes()) {
        roots
            .add(der.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let _ = CLIENT.set(Arc::new(config));
    Ok(vec![
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        cert_path.display().to_string(),
        "--tls-key".into(),
        key_path.display().to_string(),
    ])
}

/// Removes what [`setup`] wrote (once the nexus has stopped).
pub fn cleanup() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    CLIENT
        .get()
        .cloned()
        .ok_or_else(|| "wss is not set up".into())
}

/// The nexus's handshake timeout, from its flags (`--handshake-timeout
/// SECS` or `--handshake-timeout=SECS`; the nexus's default otherwise).
pub fn handshake_timeout(nexus_args: &[String]) -> Duration {
    let mut value = None;
    for (i, arg) in nexus_args.iter().enumerate() {
        if arg == "--handshake-timeout" {
            value = nexus_args.get(i + 1).map(String::as_str);
        } else if let Some(v) = arg.strip_prefix("--handshake-timeout=") {
            value = Some(v);
        }
    }
    value
        .and_then(|secs| secs.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
}

/// A real ClientHello (rustls's, for `localhost`): one TLS record.
fn client_hello() -> Result<Vec<u8>, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(client_config()?, name).map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).map_err(|e| e.to_string())?;
    }
    Ok(hello)
}

fn wss_addr(target: &Target) -> Result<SocketAddr, String> {
    target
        .tls_addr
        .ok_or_else(|| "the nexus did not say where it serves wss".into())
}

/// Runs scenario `name`.
pub async fn run(ctx: &Ctx, name: &str) -> Result<(Measures, Outcome), String> {
    let timeout = ctx.handshake_timeout;
    match name {
        "tls-garbage" => garbage(ctx).await,
        "tls-slow-handshake" => slow_handshake(ctx, timeout).await,
        "tls-half-open" => half_open(ctx, timeout).await,
        other => Err(format!("unknown scenario {other:?}")),
    }
}

/// `easechat_tls_handshake_failures_total` per shard, from `/metrics`.
fn handshake_failures(target: &Target) -> Vec<u64> {
    let (_, body) = crate::http::http_get(target.metrics, "/metrics");
    let mut out = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("easechat_tls_handshake_failures_total{shard=\"") else {
            continue;
        };
        let Some((shard, value)) = rest.split_once("\"} ") else {
            continue;
        };
        if let (Ok(shard), Ok(value)) = (shard.parse::<usize>(), value.trim().parse::<u64>()) {
            if out.len() <= shard {
                out.resize(shard + 1, 0);
            }
            out[shard] = value;
        }
    }
    out
}

/// Per-shard growth of the failure counter between two readings.
fn growth(before: &[u64], after: &[u64]) -> Vec<u64> {
    after
        .iter()
        .enumerate()
        .map(|(i, a)| a.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect()
}

fn describe_growth(growth: &[u64]) -> String {
    let parts: Vec<String> = growth
        .iter()
        .enumerate()
        .map(|(i, n)| format!("s{i} +{n}"))
        .collect();
    format!(
        "handshake failures counted by the nexus: {}",
        parts.join(", ")
    )
}

/// The checker's tally: fresh wss clients that went all the way, and not.
#[derive(Debug, Default)]
struct Checks {
    worked: u64,
    failed: u64,
    slowest: Duration,
    last_error: String,
}

impl Checks {
    fn ok(&self) -> bool {
        self.worked > 0 && self.failed == 0
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "fresh wss clients: {} went through (slowest {:.0} ms), {} failed",
            self.worked,
            self.slowest.as_secs_f64() * 1e3,
            self.failed
        );
        if self.failed > 0 {
            s += &format!(" (last: {})", self.last_error);
        }
        s
    }
}

/// A fresh wss client every [`CHECK_EVERY`] until `until`: handshake,
/// upgrade, `1h` and `1d`, and the nexus's close 1000 within
/// [`CHECK_TIMEOUT`].
fn checker(addr: SocketAddr, until: Instant) -> tokio::task::JoinHandle<Checks> {
    tokio::task::spawn_local(async move {
        let mut checks = Checks::default();
        tokio::time::sleep(Duration::from_millis(100)).await;
        while Instant::now() < until {
            let started = Instant::now();
            match tokio::time::timeout(CHECK_TIMEOUT, wss_round_trip(addr)).await {
                Ok(Ok(())) => {
                    checks.worked += 1;
                    checks.slowest = checks.slowest.max(started.elapsed());
                }
                Ok(Err(e)) => {
                    checks.failed += 1;
                    checks.last_error = e;
                }
                Err(_) => {
                    checks.failed += 1;
                    checks.last_error = format!("no close within {CHECK_TIMEOUT:?}");
                }
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
        checks
    })
}

async fn wss_round_trip(addr: SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(client_config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    tls.write_all(&ws::upgrade_request(
        &format!("localhost:{}", addr.port()),
        "/",
    ))
    .await
    .map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let used = loop {
        let n = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(used) = ws::parse_upgrade_response(&buf).map_err(|e| e.to_string())? {
            break used;
        }
    };
    buf.drain(..used);
    let mut frames = client::frame(&client::hello("wss-check"));
    frames.extend_from_slice(&client::frame("1d|5|check"));
    tls.write_all(&frames).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    loop {
        let mut used = 0;
        while let Some((frame, n)) = ws::next_frame(&buf[used..]) {
            used += n;
            if let Incoming::Close(code) = frame {
                return match code {
                    Some(1000) => Ok(()),
                    other => Err(format!("closed with {other:?}")),
                };
            }
        }
        buf.drain(..used);
        let n = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("dropped before the close frame".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How an abusing TLS connection ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    /// The nexus sent a TLS alert, then closed.
    Alert,
    /// Closed (end of stream) without an alert.
    Closed,
    /// Reset.
    Reset,
    /// Still open when we stopped waiting.
    Open,
    /// Could not even connect.
    ConnectFailed,
}

impl End {
    fn closed_by_nexus(self) -> bool {
        matches!(self, End::Alert | End::Closed | End::Reset)
    }

    fn label(self) -> &'static str {
        match self {
            End::Alert => "closed after a TLS alert",
            End::Closed => "closed without an alert",
            End::Reset => "reset",
            End::Open => "still open",
            End::ConnectFailed => "could not connect",
        }
    }
}

/// Reads `stream` until the nexus ends it or `until`; how it ended.
async fn wait_for_end(stream: &mut TcpStream, until: Instant) -> End {
    let mut first = None;
    let mut chunk = [0u8; 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return End::Open;
        }
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return End::Open,
            Ok(Ok(0)) => {
                return if first == Some(0x15) {
                    End::Alert
                } else {
                    End::Closed
                }
            }
            Ok(Ok(_)) => {
                first.get_or_insert(chunk[0]);
            }
            Ok(Err(_)) => return End::Reset,
        }
    }
}

/// One garbage attempt: connect, send `bytes`, wait for the end.
async fn one_garbage(addr: SocketAddr, bytes: &[u8]) -> (End, Duration) {
    let started = Instant::now();
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(client::CONNECT_TIMEOUT, TcpStream::connect(addr)).await
    else {
        return (End::ConnectFailed, started.elapsed());
    };
    if stream.write_all(bytes).await.is_err() {
        // The nexus reset it before taking everything: ended all the same.
        return (End::Reset, started.elapsed());
    }
    let end = wait_for_end(&mut stream, Instant::now() + GARBAGE_PATIENCE).await;
    (end, started.elapsed())
}

/// The kinds of garbage, by name.
fn garbage_kinds() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let hello = client_hello()?;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    // Random bytes, the first not a TLS content type (20..=24): otherwise
    // one in ~16,000 would declare a record and wait for its body.
    let mut random: Vec<u8> = (0..2048).map(|_| rng.u8(..)).collect();
    random[0] = 0x42;
    // A handshake record holding a "ClientHello" of random bytes.
    let mut bogus = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    bogus.extend((0..508).map(|_| rng.u8(..)));
    // rustls's own ClientHello with everything after the version flipped.
    let mut corrupt = hello.clone();
    for b in corrupt.iter_mut().skip(11) {
        *b ^= 0x5a;
    }
    // Application data before any handshake.
    let mut early = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    early.extend((0..64).map(|_| rng.u8(..)));
    // A record header declaring more than any record may carry.
    let oversized = vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01];
    // The plaintext upgrade, on the wss port.
    let plaintext = ws::upgrade_request("localhost", "/");
    Ok(vec![
        ("random bytes", random),
        ("random ClientHello body", bogus),
        ("corrupted ClientHello", corrupt),
        ("application data first", early),
        ("oversized record", oversized),
        ("plaintext HTTP upgrade", plaintext),
    ])
}

/// Many connections sending garbage where a ClientHello belongs,
/// `ctx.parallel` at once, `ctx.connections` of them at least and for the
/// whole duration: every one closed by the nexus, none kept.
async fn garbage(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let addr = wss_addr(&ctx.target)?;
    let kinds = Rc::new(garbage_kinds()?);
    let failures_before = handshake_failures(&ctx.target);
    let measuring = ctx.measure(0)?;
    let until = ctx.until();
    let hard_deadline = Instant::now() + ctx.duration.max(Duration::from_secs(60));
    let check = checker(addr, until);
    let total = ctx.connections;
    let ends: Rc<RefCell<BTreeMap<(End, &'static str), usize>>> = Rc::default();
    let slowest = Rc::new(RefCell::new(Duration::ZERO));
    let next = Rc::new(RefCell::new(0usize));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..ctx.parallel.max(1) {
        let (kinds, ends, slowest, next) =
            (kinds.clone(), ends.clone(), slowest.clone(), next.clone());
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = {
                    let mut n = next.borrow_mut();
                    let now = Instant::now();
                    if (*n >= total && now >= until) || now > hard_deadline {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let (kind, bytes) = &kinds[i % kinds.len()];
                let (end, took) = one_garbage(addr, bytes).await;
                *ends.borrow_mut().entry((end, kind)).or_default() += 1;
                if end.closed_by_nexus() {
                    let mut s = slowest.borrow_mut();
                    *s = (*s).max(took);
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let took = started.elapsed();
    let checks = check.await.unwrap_or_default();
    let measures = measuring.finish();
    let done = *next.borrow();
    let ends = ends.borrow();
    let mut by_end: BTreeMap<End, usize> = BTreeMap::new();
    for ((end, _), n) in ends.iter() {
        *by_end.entry(*end).or_default() += n;
    }
    let kept: Vec<String> = ends
        .iter()
        .filter(|((end, _), _)| !end.closed_by_nexus())
        .map(|((end, kind), n)| format!("{n}× {kind}: {}", end.label()))
        .collect();
    let mut text = by_end
        .iter()
        .map(|(end, n)| format!("{n}/{done} {}", end.label()))
        .collect::<Vec<_>>()
        .join(", ");
    text += &format!(
        "; slowest close {:.0} ms",
        slowest.borrow().as_secs_f64() * 1e3
    );
    if !kept.is_empty() {
        text += &format!(" [not closed: {}]", kept.join("; "));
    }
    text += &format!("; {}", checks.describe());
    let handled = done >= total && kept.is_empty() && checks.ok();
    let failures = growth(&failures_before, &handshake_failures(&ctx.target));
    let notes = format!(
        "{done} garbage handshakes ({} kinds in turn) in {:.1} s ({:.0}/s); {}",
        kinds.len(),
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64().max(1e-9),
        describe_growth(&failures)
    );
    Ok((
        measures,
        Outcome {
            abuser: Summary { text, handled },
            notes,
        },
    ))
}

/// One connection's course: opened, then how and when it ended.
struct Course {
    end: End,
    /// From the connection's open to its end.
    lasted: Duration,
    /// Bytes it sent.
    sent: usize,
}

/// Connects (holding a permit of `opening` for the connect only), sends
/// `bytes` at once (`dribble` None) or one byte per `dribble`, then waits;
/// returns how it ended and when.
async fn abuse_one(
    addr: SocketAddr,
    opening: Rc<tokio::sync::Semaphore>,
    bytes: Rc<Vec<u8>>,
    dribble: Option<Duration>,
    until: Instant,
) -> Course {
    let permit = opening.acquire().await.ok();
    let connected = tokio::time::timeout(client::CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
    drop(permit);
    let Ok(Ok(mut stream)) = connected else {
        return Course {
            end: End::ConnectFailed,
            lasted: Duration::ZERO,
            sent: 0,
        };
    };
    let opened = Instant::now();
    let mut sent = 0;
    let end = match dribble {
        None => {
            if stream.write_all(&bytes).await.is_err() {
                End::Reset
            } else {
                sent = bytes.len();
                wait_for_end(&mut stream, until).await
            }
        }
        Some(every) => {
            let mut end = End::Open;
            for byte in bytes.iter() {
                if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                    end = End::Reset;
                    break;
                }
                sent += 1;
                // Wait for the next byte's turn, or the nexus's end.
                let next = (opened + every * sent as u32).min(until);
                end = wait_for_end(&mut stream, next).await;
                if end != End::Open || Instant::now() >= until {
                    break;
                }
            }
            if end == End::Open {
                end = wait_for_end(&mut stream, until).await;
            }
            end
        }
    };
    Course {
        end,
        lasted: opened.elapsed(),
        sent,
    }
}

/// Opens `n` abusers `ctx.parallel` at a time, each sending `bytes` (or
/// dribbling them), and waits for all to end or `until`.
async fn abuse_many(
    ctx: &Ctx,
    n: usize,
    bytes: Vec<u8>,
    dribble: Option<Duration>,
    until: Instant,
) -> Result<(Vec<Course>, Duration), String> {
    let addr = wss_addr(&ctx.target)?;
    let bytes = Rc::new(bytes);
    let opening = Rc::new(tokio::sync::Semaphore::new(ctx.parallel.max(1)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (bytes, opening) = (bytes.clone(), opening.clone());
            tokio::task::spawn_local(abuse_one(addr, opening, bytes, dribble, until))
        })
        .collect();
    let mut courses = Vec::new();
    for t in tasks {
        courses.push(t.await.map_err(|e| e.to_string())?);
    }
    Ok((courses, started.elapsed()))
}

/// What a group of held abusers amounted to, against the handshake
/// timeout: each must be closed by the nexus, no later than the timeout
/// (plus slack).
fn timed_summary(courses: &[Course], timeout: Duration, checks: &Checks) -> Summary {
    let n = courses.len();
    let mut by_end: BTreeMap<End, usize> = BTreeMap::new();
    for c in courses {
        *by_end.entry(c.end).or_default() += 1;
    }
    let mut lasted: Vec<Duration> = courses
        .iter()
        .filter(|c| c.end.closed_by_nexus())
        .map(|c| c.lasted)
        .collect();
    lasted.sort();
    let late = lasted
        .iter()
        .filter(|d| **d > timeout + CLOSE_SLACK)
        .count();
    let mut text = by_end
        .iter()
        .map(|(end, k)| format!("{k}/{n} {}", end.label()))
        .collect::<Vec<_>>()
        .join(", ");
    if let (Some(first), Some(last)) = (lasted.first(), lasted.last()) {
        let median = lasted[lasted.len() / 2];
        text += &format!(
            "; closed after {:.1} s (median), {:.1}–{:.1} s (handshake timeout {} s)",
            median.as_secs_f64(),
            first.as_secs_f64(),
            last.as_secs_f64(),
            timeout.as_secs()
        );
    }
    if late > 0 {
        text += &format!("; {late} closed later than the timeout + {CLOSE_SLACK:?}");
    }
    text += &format!("; {}", checks.describe());
    Summary {
        text,
        handled: n > 0 && lasted.len() == n && late == 0 && checks.ok(),
    }
}

/// A valid ClientHello sent one byte every [`DRIBBLE`], far slower than
/// the handshake timeout allows: closed at the timeout.
async fn slow_handshake(ctx: &Ctx, timeout: Duration) -> Result<(Measures, Outcome), String> {
    let addr = wss_addr(&ctx.target)?;
    let hello = client_hello()?;
    let failures_before = handshake_failures(&ctx.target);
    let measuring = ctx.measure(0)?;
    let until = ctx.until();
    let check = checker(addr, until);
    let (courses, _) =
        abuse_many(ctx, ctx.connections, hello.clone(), Some(DRIBBLE), until).await?;
    let checks = check.await.unwrap_or_default();
    let mut measures = measuring.finish();
    let failures = growth(&failures_before, &handshake_failures(&ctx.target));
    // A lone dribbler: its shard is the one whose failure counter moved.
    if ctx.connections == 1 && failures.get(1) == Some(&1) && failures.iter().sum::<u64>() == 1 {
        std::mem::swap(&mut measures.same, &mut measures.other);
    }
    let sent = courses.iter().map(|c| c.sent).max().unwrap_or(0);
    let notes = format!(
        "{} connection(s) dribbling a {}-byte ClientHello one byte per {} ms ({sent} bytes sent at most before the end); {}",
        courses.len(),
        hello.len(),
        DRIBBLE.as_millis(),
        describe_growth(&failures)
    );
    Ok((
        measures,
        Outcome {
            abuser: timed_summary(&courses, timeout, &checks),
            notes,
        },
    ))
}

/// Many connections that send the first bytes of a ClientHello and stop:
/// all closed at the handshake timeout, nothing else noticing.
async fn half_open(ctx: &Ctx, timeout: Duration) -> Result<(Measures, Outcome), String> {
    let addr = wss_addr(&ctx.target)?;
    let mut hello = client_hello()?;
    hello.truncate(HALF_OPEN_BYTES);
    let failures_before = handshake_failures(&ctx.target);
    let measuring = ctx.measure(0)?;
    let until = ctx.until();
    let check = checker(addr, until);
    let (courses, took) = abuse_many(ctx, ctx.connections, hello, None, until).await?;
    let checks = check.await.unwrap_or_default();
    let measures = measuring.finish();
    let failures = growth(&failures_before, &handshake_failures(&ctx.target));
    let per_conn = measures.rss_peak_kib.saturating_sub(measures.rss_base_kib) as f64
        / courses.len().max(1) as f64;
    let notes = format!(
        "{} connections sent the first {HALF_OPEN_BYTES} bytes of a ClientHello and stopped ({:.1} s until the last ended); RSS growth {per_conn:.1} KiB per connection; {}",
        courses.len(),
        took.as_secs_f64(),
        describe_growth(&failures)
    );
    Ok((
        measures,
        Outcome {
            abuser: timed_summary(&courses, timeout, &checks),
            notes,
        },
    ))
}
