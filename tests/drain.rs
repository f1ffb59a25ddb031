//! Lame-duck drain and restarts through the real binary: the drain's 1001
//! closes spread over the duration, `/healthz` 503, exit 0; and a successor
//! process on the same port (SO_REUSEPORT) taking over while connects keep
//! coming, with none refused or reset, after a drain and after a plain stop.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{http_get, Event, Nexus, PATIENCE};
use easechat::{Client, Options};

#[test]
fn drain_closes_everything_with_1001_over_the_duration_then_exits_0() {
    let mut nexus = Nexus::start(&[
        "--lame-duck-duration",
        "3",
        "--lame-duck-grace",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = nexus.metrics_addr();
    assert_eq!(http_get(metrics, "/healthz").0, "HTTP/1.1 200 OK");
    let clients = nexus.identified_clients(24);

    let started = Instant::now();
    nexus.console("drain");
    let closes: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || match client.next_within(Duration::from_secs(15)) {
                Some(Event::Closed(code, reason)) => (code, reason, started.elapsed()),
                other => panic!("expected the drain's close, got {other:?}"),
            })
        })
        .collect();

    // Draining: health 503 and the port no longer in this process's hands.
    nexus.wait_log(|l| l.contains("shard draining shard=0"));
    let (status, body) = http_get(metrics, "/healthz");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(body.contains("draining"), "{body}");
    nexus.wait_log(|l| l.contains("listener left the listen group"));
    let refused = TcpStream::connect(nexus.addr).expect_err("no listener left");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    let mut at: Vec<Duration> = closes
        .into_iter()
        .map(|t| {
            let (code, reason, at) = t.join().unwrap();
            assert_eq!((code, reason.as_str()), (1001, "server draining"));
            at
        })
        .collect();
    at.sort();
    // Nothing before the grace; all within grace + duration; and spread:
    // every second of the three has some closes.
    assert!(at[0] >= Duration::from_millis(950), "{at:?}");
    assert!(
        *at.last().unwrap() <= Duration::from_millis(4_500),
        "{at:?}"
    );
    for second in 0..3 {
        let from = Duration::from_secs(1 + second);
        let to = from + Duration::from_secs(1);
        let n = at.iter().filter(|t| **t >= from && **t < to).count();
        assert!(
            n >= 2,
            "second {second} of the duration had {n} closes: {at:?}"
        );
    }
    let status = nexus.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3 + 1 + 5));
}

#[test]
fn sigusr2_drains_and_a_stop_during_a_drain_still_closes_with_1001() {
    let mut nexus = Nexus::start(&["--lame-duck-duration", "30", "--lame-duck-grace", "30"]);
    let mut clients = nexus.identified_clients(2);
    nexus.signal("USR2");
    nexus.wait_log(|l| l.contains("shard draining shard=1"));
    nexus.console("stop");
    for client in clients.iter_mut() {
        assert_eq!(client.expect_close(), (1001, "server shutdown".to_string()));
    }
    assert!(nexus.wait_exit().success());
}

/// Opens connections to `addr` from a few threads, back to back, until
/// stopped; each must be upgraded. Counts successes and records failures
/// (refused, reset, no answer).
struct Connector {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Connector {
    fn start(addr: SocketAddr, threads: usize) -> Connector {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match connect_once(addr) {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Connector {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// One connection: the WebSocket upgrade must be answered with 101.
fn connect_once(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: nexus\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .map_err(|e| format!("request: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("upgrade answer: {e}"))?;
    if &head != b"HTTP/1.1 101" {
        return Err(format!(
            "upgrade answered {:?}",
            String::from_utf8_lossy(&head)
        ));
    }
    Ok(())
}

/// A successor on the same port, then the old process leaves (`how`), with
/// connects arriving throughout: every one is served by one of the two.
/// `clients` reconnecting library clients start on the old process and must
/// end on the new one with their subscription. (With none, the old process
/// exits as soon as it stops: the moment the window used to open.)
fn handover(how: &str, clients: usize) {
    let mut old = Nexus::start(&["--lame-duck-duration", "1", "--lame-duck-grace", "0.5"]);
    let addr = old.addr;
    let mut new = Nexus::start_at(&addr.to_string(), &[]);
    assert_eq!(new.addr, addr);
    // Reconnecting library clients on the old process, subscribed.
    let url = old.url();
    let subscribers: Vec<_> = (0..clients)
        .map(|i| {
            let mut client = Client::connect(
                &url,
                &format!("sub{i}"),
                Options {
                    reconnect: true,
                    ..Options::default()
                },
            )
            .unwrap();
            client.subscribe("room", Duration::from_secs(600)).unwrap();
            client
        })
        .collect();
    let connector = Connector::start(addr, 2);
    thread::sleep(Duration::from_millis(200));
    let receivers: Vec<_> = subscribers
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let Some(m) = client.recv(Duration::from_millis(100)).unwrap() {
                        if m.text == "on the new process" {
                            return;
                        }
                    }
                }
                panic!("{} never heard from the new process", client.name());
            })
        })
        .collect();
    match how {
        "drain" => old.signal("USR2"),
        _ => old.console("stop"),
    }
    assert!(old.wait_exit().success());
    thread::sleep(Duration::from_millis(500));
    let (ok, failures) = connector.finish();
    assert!(
        failures.is_empty(),
        "{} of {} connects failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok > 20, "only {ok} connects");
    // Every reconnecting client ended on the new process with its subscription.
    new.wait_subscribers("room", clients);
    new.console("push tool room on the new process");
    for r in receivers {
        r.join().unwrap();
    }
}

#[test]
fn restart_with_a_drain_refuses_and_resets_nothing() {
    handover("drain", 6);
}

#[test]
fn restart_with_a_plain_stop_refuses_and_resets_nothing() {
    handover("stop", 0);
}
