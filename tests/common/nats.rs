//! A real `nats-server` for the cluster tests, and helpers for nexus nodes
//! joined to it.
//!
//! Without `nats-server` a test is skipped with a loud message, except
//! under CI (`CI=true`), where it fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ease_chat_nexus::cluster::subject::subject_for;

use crate::common::{Nexus, PATIENCE};

/// A `nats-server` process on loopback; killed on drop.
pub struct Nats {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    monitor: u16,
}

/// A loopback port free right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian installs it in /usr/sbin, which a non-root PATH may lack.
fn find_nats_server() -> Option<PathBuf> {
    let candidates = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(found);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.exists())
}

impl Nats {
    /// Starts a server, or returns `None` (skip) when there is none to run.
    pub fn start() -> Option<Nats> {
        let mut nats = Nats::stopped()?;
        nats.restart();
        Some(nats)
    }

    /// Picks the ports without starting the server (see [`Nats::start`]).
    pub fn stopped() -> Option<Nats> {
        let Some(binary) = find_nats_server() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("nats-server is missing; CI must install it (apt-get install nats-server)");
            }
            eprintln!(
                "\n*** SKIPPING cluster test: nats-server not found \
                 (apt-get install nats-server) ***\n"
            );
            return None;
        };
        Some(Nats {
            binary,
            child: None,
            port: free_port(),
            monitor: free_port(),
        })
    }

    /// (Re)starts the server on its ports and waits until it accepts.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Like [`Nats::start`], with extra nats-server flags (e.g. `--user`).
    pub fn start_with(extra: &[&str]) -> Option<Nats> {
        let mut nats = Nats::stopped()?;
        nats.restart_with(extra);
        Some(nats)
    }

    fn restart_with(&mut self, extra: &[&str]) {
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.monitor)).is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The subjects subscribed on the server now (monitoring `/subsz`).
    pub fn subjects(&self) -> Vec<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "GET /subsz?subs=1&limit=100000 HTTP/1.0\r\nHost: nats\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, body) = response.split_once("\r\n\r\n").expect("head and body");
        let json: serde_json::Value = serde_json::from_str(body).expect("subsz JSON");
        json["subscriptions_list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|s| s["subject"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many subscriptions `subject` has on the server.
    pub fn subscriptions_of(&self, subject: &str) -> usize {
        self.subjects().iter().filter(|s| *s == subject).count()
    }

    /// Waits until `channel`'s subject has `count` subscriptions.
    pub fn wait_subscriptions(&self, channel: &str, count: usize) {
        let subject = subject_for(channel);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.subscriptions_of(&subject);
            if now == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{subject} has {now} subscriptions, expected {count}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A nexus joined to `nats` as `node`, connected to it.
pub fn node(nats: &Nats, node: &str) -> Nexus {
    node_with(nats, node, &[])
}

/// [`node`] with more flags.
pub fn node_with(nats: &Nats, node: &str, extra: &[&str]) -> Nexus {
    let url = nats.url();
    let mut args = vec!["--nats", &url, "--node-id", node];
    args.extend_from_slice(extra);
    let mut nexus = Nexus::start(&args);
    nexus.wait_log(|l| l.contains("connected to NATS"));
    nexus
}

/// `GET path` on `addr`: the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .expect("head and body")
        .1
        .to_string()
}

/// The console's cluster counters: (name, value) pairs.
pub fn cluster_stats(nexus: &mut Nexus) -> Vec<(String, u64)> {
    nexus.console("stats");
    nexus.output_until(|l| l.starts_with("cluster (NATS bridge):"));
    (0..5)
        .map(|_| {
            let line = nexus.output_line();
            let mut parts = line.split_whitespace();
            let name = parts.next().unwrap().to_string();
            let value = parts.next().unwrap().parse().unwrap();
            (name, value)
        })
        .collect()
}

/// The value of counter `name` in [`cluster_stats`] output.
pub fn stat(stats: &[(String, u64)], name: &str) -> u64 {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not in {stats:?}"))
        .1
}
