//! The nexus under test: started by the tool (so it knows the pid, the
//! addresses and every log line), watched by samplers while a scenario runs.
//!
//! The log is the tool's view into the nexus: `connection identified` tells
//! which shard a connection landed on (by its peer address), `connection
//! closed by nexus` how an abuser was closed, `accept failed` is counted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::healthz;

/// How long the nexus has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the log has said so far.
#[derive(Debug, Default)]
pub struct LogState {
    /// Peer address (as the nexus prints it) → shard index.
    pub shard_of_peer: HashMap<String, usize>,
    /// Peer address → `code=… reason=…` of `connection closed by nexus`.
    pub closed_by_nexus: HashMap<String, String>,
    /// `accept failed` lines (client and metrics listeners).
    pub accept_failed: u64,
    /// `refusing connection` lines (HTTP 503).
    pub refused: u64,
    /// Client listener address.
    pub addr: Option<SocketAddr>,
    /// wss listener address (`serving wss`), with `--tls-listen`.
    pub tls_addr: Option<SocketAddr>,
    /// Admin listener address.
    pub metrics: Option<SocketAddr>,
    /// Shards that said `shard started`.
    pub started: usize,
}

/// A running nexus.
pub struct Nexus {
    child: Child,
    /// Process id (for /proc sampling).
    pub pid: u32,
    /// Where it listens and what it logged; cheap to clone into threads.
    pub target: Target,
}

/// The addresses and log of a running nexus.
#[derive(Clone)]
pub struct Target {
    /// Client listener.
    pub addr: SocketAddr,
    /// wss listener, when the nexus serves wss.
    pub tls_addr: Option<SocketAddr>,
    /// Admin listener (`--metrics`).
    pub metrics: SocketAddr,
    /// Parsed log.
    pub log: Arc<Mutex<LogState>>,
}

/// Value of `key=` in a log line, up to the next space or the end of the
/// connection's span (`session{conn=s1#7 peer=ADDR}: …`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split([' ', '}']).next()
}

fn absorb(state: &mut LogState, line: &str) {
    if line.contains("connection identified") {
        if let (Some(conn), Some(peer)) = (field(line, "conn=s"), field(line, "peer=")) {
            if let Some(shard) = conn.split('#').next().and_then(|s| s.parse().ok()) {
                state.shard_of_peer.insert(peer.to_string(), shard);
            }
        }
    } else if line.contains("connection closed by nexus") {
        if let (Some(peer), Some(at)) = (field(line, "peer="), line.find("code=")) {
            state
                .closed_by_nexus
                .insert(peer.to_string(), line[at..].to_string());
        }
    } else if line.contains("accept failed") || line.contains("accept failing") {
        state.accept_failed += 1;
    } else if line.contains("refusing connection") {
        state.refused += 1;
    } else if line.contains("metrics listening") || line.contains("admin listening") {
        state.metrics = field(line, "addr=").and_then(|a| a.parse().ok());
    } else if line.contains("serving wss") {
        state.tls_addr = field(line, "addr=").and_then(|a| a.parse().ok());
    } else if line.contains(" listening addr=") {
        state.addr = field(line, "addr=").and_then(|a| a.parse().ok());
    } else if line.contains("shard started") {
        state.started += 1;
    }
}

impl Nexus {
    /// Starts `bin 127.0.0.1:0 --cores CORES ADMIN_FLAG 127.0.0.1:0 EXTRA…`
    /// (`admin_flag`: `--metrics` today), under `prlimit --nofile=SOFT:`
    /// when `nofile` is given, with its log copied to `log_file`. With
    /// `--tls-listen` among `extra` it also waits for the wss address.
    pub fn start(
        bin: &str,
        cores: usize,
        admin_flag: &str,
        extra: &[String],
        nofile: Option<u64>,
        log_file: Option<&str>,
    ) -> Result<Nexus, String> {
        let mut command = match nofile {
            Some(soft) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .args(["127.0.0.1:0", "--cores", &cores.to_string()])
            .args([admin_flag, "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("{bin}: {e}"))?;
        let pid = child.id();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(LogState::default()));
        let mut copy = match log_file {
            Some(path) => Some(std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?),
            None => None,
        };
        {
            let log = log.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(file) = copy.as_mut() {
                        let _ = writeln!(file, "{line}");
                    }
                    absorb(&mut log.lock().unwrap(), &line);
                }
            });
        }
        let wss = extra.iter().any(|a| a == "--tls-listen");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            {
                let state = log.lock().unwrap();
                if let (Some(addr), Some(metrics)) = (state.addr, state.metrics) {
                    if state.started >= cores && (!wss || state.tls_addr.is_some()) {
                        return Ok(Nexus {
                            child,
                            pid,
                            target: Target {
                                addr,
                                tls_addr: state.tls_addr,
                                metrics,
                                log: log.clone(),
                            },
                        });
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nexus exited at start: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("nexus did not start listening".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s. Returns
    /// whether it stopped by itself.
    pub fn stop(mut self) -> bool {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Target {
    /// The shard a connection from `peer` was identified on, if logged yet.
    pub fn shard_of(&self, peer: SocketAddr) -> Option<usize> {
        self.log
            .lock()
            .unwrap()
            .shard_of_peer
            .get(&peer.to_string())
            .copied()
    }

    /// `code=… reason=…` if the nexus logged closing `peer`.
    pub fn closed(&self, peer: SocketAddr) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .closed_by_nexus
            .get(&peer.to_string())
            .cloned()
    }
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Peaks of RSS and open files, sampled every 100 ms.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    rss_peak: Arc<AtomicU64>,
    fd_peak: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let rss_peak = Arc::new(AtomicU64::new(0));
        let fd_peak = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, rss_peak, fd_peak) = (stop.clone(), rss_peak.clone(), fd_peak.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(r) = rss_kib(pid) {
                        rss_peak.fetch_max(r, Ordering::Relaxed);
                    }
                    if let Some(f) = fd_count(pid) {
                        fd_peak.fetch_max(f, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Sampler {
            stop,
            rss_peak,
            fd_peak,
            handle,
        }
    }

    /// Stops; returns (RSS peak KiB, open files peak).
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        (
            self.rss_peak.load(Ordering::Relaxed),
            self.fd_peak.load(Ordering::Relaxed),
        )
    }
}

/// `/healthz` answers seen while polling.
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// 200 answers.
    pub ok: u64,
    /// Other statuses (status → count).
    pub bad: Vec<(u16, u64)>,
    /// No answer within 3 s, refused or reset.
    pub errors: u64,
}

impl Health {
    /// True if every probe answered 200.
    pub fn all_ok(&self) -> bool {
        self.ok > 0 && self.bad.is_empty() && self.errors == 0
    }

    /// `200×N 503×M err×K`.
    pub fn describe(&self) -> String {
        let mut s = format!("200×{}", self.ok);
        for (status, n) in &self.bad {
            s += &format!(" {status}×{n}");
        }
        if self.errors > 0 {
            s += &format!(" no-answer×{}", self.errors);
        }
        s
    }
}

/// Polls `/healthz` every 250 ms in a thread.
pub struct HealthPoller {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Health>,
}

impl HealthPoller {
    /// Starts polling `addr`.
    pub fn start(addr: SocketAddr) -> HealthPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut health = Health::default();
                while !stop.load(Ordering::Relaxed) {
                    match healthz(addr) {
                        Some(200) => health.ok += 1,
                        Some(status) => match health.bad.iter_mut().find(|(s, _)| *s == status) {
                            Some((_, n)) => *n += 1,
                            None => health.bad.push((status, 1)),
                        },
                        None => health.errors += 1,
                    }
                    thread::sleep(Duration::from_millis(250));
                }
                health
            })
        };
        HealthPoller { stop, handle }
    }

    /// Stops; returns what was seen.
    pub fn finish(self) -> Health {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}
