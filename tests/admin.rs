//! The admin console's HTTP surface through the real binary: JSON shapes,
//! publish, the tap stream, token, `Origin` and `Host` checks, the
//! listener's connection cap and header timeout, and channel histories.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{receive, Client, Nexus, PATIENCE};
use ease_chat_nexus::history::{home_shard, HELD_OVERHEAD};
use easechat_protocol::Message as Wire;
use serde_json::Value;

/// A parsed HTTP response.
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request (extra header lines end in `\r\n`) and reads the
/// whole response: the admin listener closes after each one.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, "", "")
}

fn publish(addr: SocketAddr, headers: &str, sender: &str, channel: &str, text: &str) -> Response {
    let body = serde_json::json!({"sender": sender, "channel": channel, "text": text}).to_string();
    let headers = format!("Content-Type: application/json\r\n{headers}");
    request(addr, "POST", "/api/publish", &headers, &body)
}

/// Polls `/api/channels` until `channel` has `count` subscribers.
fn wait_channel(admin: SocketAddr, channel: &str, count: u64) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = get(admin, &format!("/api/channels?filter={channel}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let json = r.json();
        if let Some(row) = json["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == channel && c["subscribers"] == count)
        {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "channel {channel} never had {count}: {json}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_api_shapes_publish_and_tap() {
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0"]);
    let admin = nexus.metrics_addr();
    let mut sub = Client::named(&nexus, "sub");
    sub.subscribe("c/api");
    let row = wait_channel(admin, "c/api", 1);
    assert_eq!(row["shards"].as_object().unwrap().len(), 1, "{row}");
    assert!(row["cluster"].is_null());

    let stats = get(admin, "/api/stats").json();
    assert_eq!(stats["complete"], true);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);
    assert_eq!(stats["totals"]["connections_open"], 1);
    assert_eq!(stats["totals"]["connections_identified"], 1);
    assert_eq!(stats["totals"]["subscriptions"], 1);
    assert!(stats["time_ms"].as_u64().unwrap() > 0);
    assert!(stats["shards"][0]["publishes"].is_u64());

    let clients = get(admin, "/api/clients?filter=sub").json();
    let list = clients["clients"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{clients}");
    assert_eq!(list[0]["name"], "sub");
    assert_eq!(list[0]["subscriptions"], 1);
    assert!(list[0]["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(list[0]["connection"].as_str().unwrap().starts_with('s'));
    assert!(list[0]["connected_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        get(admin, "/api/clients?filter=nobody").json()["matching"],
        0
    );
    assert_eq!(get(admin, "/api/channels?sort=sideways").status, 400);

    // Publish: like the console's push, with the 1r size limit.
    let r = publish(admin, "", "ops", "c/api", "hello from the api");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sub.recv(), receive("ops", "c/api", "hello from the api"));
    let r = publish(admin, "", "ops", "c/api", &"x".repeat(70_000));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("65536"),
        "{}",
        r.body
    );
    assert_eq!(publish(admin, "", "", "c/api", "x").status, 400);
    let origin = format!("Origin: http://{admin}\r\n");
    assert_eq!(
        publish(admin, &origin, "ops", "c/api", "same origin").status,
        200
    );
    assert_eq!(sub.recv(), receive("ops", "c/api", "same origin"));

    // The tap: an SSE stream of the channel's messages.
    let mut tap = TcpStream::connect(admin).unwrap();
    tap.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        tap,
        "GET /api/tap?channel=c/api HTTP/1.1\r\nHost: {admin}\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut read_until = |needle: &str, seen: &mut String| {
        let mut chunk = [0u8; 4096];
        while !seen.contains(needle) {
            let n = tap.read(&mut chunk).expect("tap stream");
            assert!(n > 0, "tap ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    };
    read_until("event: ready", &mut seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    wait_channel(admin, "c/api", 2);
    thread::sleep(Duration::from_millis(50)); // interest reaches the other shard
    let mut publisher = Client::named(&nexus, "pub");
    publisher.publish("c/api", "seen by the tap");
    read_until("seen by the tap", &mut seen);
    let data = seen
        .lines()
        .find(|l| l.contains("seen by the tap"))
        .unwrap()
        .trim_start_matches("data: ");
    let message: Value = serde_json::from_str(data).unwrap();
    assert_eq!(message["sender"], "pub");
    assert_eq!(message["channel"], "c/api");
    assert!(message["time_ms"].as_u64().unwrap() > 0);
    drop(tap);
    wait_channel(admin, "c/api", 1); // the tap's subscriber is gone with it

    // Prometheus text and the page are still there.
    let metrics = get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .contains("easechat_publishes_total{shard=\"0\"}"));
    let page = get(admin, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("EaseChat Nexus") && page.head.contains("text/html"));
    assert_eq!(get(admin, "/nothing-here").status, 404);
}

/// Polls `/api/channels?filter=FILTER&sort=name` until `channel` is listed.
fn wait_listed(admin: SocketAddr, filter: &str, channel: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let json = get(admin, &format!("/api/channels?filter={filter}&sort=name")).json();
        if json["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == channel)
        {
            return json;
        }
        assert!(Instant::now() < deadline, "{channel} never listed: {json}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// What the history holds for one short message: both frames (each with
/// a 2-byte WebSocket header) and the bookkeeping.
fn held_bytes(sender: &str, channel: &str, text: &str, offset: u64, epoch: &str) -> u64 {
    let positional = Wire::ReceiveAt {
        sender,
        channel,
        text,
        offset,
        epoch,
    }
    .encode();
    (2 + receive(sender, channel, text).len() + 2 + positional.len() + HELD_OVERHEAD) as u64
}

/// With `--history`, `/api/channels` gives each channel with history its
/// `history` object (from its home shard), lists channels that have a
/// history and no subscriber, and leaves other channels' rows as in v1.
#[test]
fn channels_show_each_history() {
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0", "--history", "h/*"]);
    let admin = nexus.metrics_addr();
    let mut sub = Client::named(&nexus, "sub");
    sub.subscribe("h/api");
    sub.subscribe("c/plain");
    let row = wait_channel(admin, "h/api", 1);
    assert!(row.get("history").is_none(), "no history yet: {row}");
    let mut publisher = Client::named(&nexus, "pub");
    for i in 1..=3 {
        publisher.publish("h/api", &format!("m{i}"));
    }
    for i in 1..=3 {
        assert_eq!(sub.recv(), receive("pub", "h/api", &format!("m{i}")));
    }
    // Published on with nobody listening: a history and no subscriber.
    publisher.publish("h/quiet", "nobody hears this");
    let json = wait_listed(admin, "h/", "h/quiet");
    assert_eq!(json["complete"], true);
    // An upper bound: h/api counts on its home shard and on its
    // subscriber's, when they differ.
    let matching = json["matching"].as_u64().unwrap();
    assert!((2..=3).contains(&matching), "{json}");
    let rows = json["channels"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");

    let api = &rows[0];
    assert_eq!(api["name"], "h/api");
    assert_eq!(api["subscribers"], 1);
    assert_eq!(api["shards"].as_object().unwrap().len(), 1, "{api}");
    let history = &api["history"];
    let epoch = history["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(epoch.len(), 12, "{history}");
    assert!(epoch.bytes().all(|b| b.is_ascii_hexdigit()), "{history}");
    let bytes: u64 = (1..=3)
        .map(|i| held_bytes("pub", "h/api", &format!("m{i}"), i, &epoch))
        .sum();
    assert_eq!(
        *history,
        serde_json::json!({
            "position": 3,
            "epoch": epoch,
            "messages": 3,
            "bytes": bytes,
            "shard": home_shard("h/api", 2),
        })
    );

    let quiet = &rows[1];
    assert_eq!(quiet["name"], "h/quiet");
    assert_eq!(quiet["subscribers"], 0);
    assert_eq!(quiet["shards"], serde_json::json!({}));
    assert_eq!(quiet["history"]["position"], 1, "{quiet}");
    assert_eq!(quiet["history"]["messages"], 1, "{quiet}");
    assert_eq!(quiet["history"]["shard"], home_shard("h/quiet", 2));
    assert_ne!(quiet["history"]["epoch"], history["epoch"]);

    // A channel without history: the v1 row, no `history` key.
    let plain = wait_channel(admin, "c/plain", 1);
    assert_eq!(
        plain.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cluster", "name", "shards", "subscribers"]
    );
    // Sorted by subscribers, history-only channels come last.
    let json = get(admin, "/api/channels").json();
    let names: Vec<&str> = json["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c/plain", "h/api", "h/quiet"], "{json}");
}

#[test]
fn foreign_origin_and_rebinding_host_are_refused() {
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0"]);
    let admin = nexus.metrics_addr();
    let r = publish(admin, "Origin: http://evil.example\r\n", "ops", "c/x", "hi");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request(admin, "GET", "/api/tap?channel=c/x", "Origin: null\r\n", "");
    assert_eq!(r.status, 403);
    // A DNS-rebinding page reaches the port under its own name.
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET /api/clients HTTP/1.1\r\nHost: rebind.evil.example:{}\r\n\r\n",
        admin.port()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert_eq!(request(admin, "GET", "/api/stats", "", "").status, 200);
}

#[test]
fn non_loopback_needs_a_token() {
    // No token: refuses to start, with the remedy.
    let output = Command::new(env!("CARGO_BIN_EXE_ease_chat_nexus"))
        .args(["127.0.0.1:0", "--cores", "2", "--admin", "0.0.0.0:0"])
        .env_remove("EASECHAT_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("easechat-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "t0ken-for-tests\n").unwrap();
    let mut nexus = Nexus::start(&[
        "--admin",
        "0.0.0.0:0",
        "--admin-token-file",
        file.to_str().unwrap(),
    ]);
    let admin = nexus.metrics_addr();
    assert!(
        nexus.log.iter().all(|l| !l.contains("t0ken")),
        "token logged"
    );
    let r = get(admin, "/api/stats");
    assert_eq!(r.status, 401);
    assert!(r
        .head
        .to_ascii_lowercase()
        .contains("www-authenticate: bearer"));
    assert_eq!(get(admin, "/metrics").status, 401);
    assert_eq!(get(admin, "/").status, 401);
    let wrong = "Authorization: Bearer t0ken-for-test\r\n";
    assert_eq!(request(admin, "GET", "/api/stats", wrong, "").status, 401);
    let right = "Authorization: Bearer t0ken-for-tests\r\n";
    assert_eq!(request(admin, "GET", "/api/stats", right, "").status, 200);
    assert_eq!(request(admin, "GET", "/metrics", right, "").status, 200);
    assert_eq!(publish(admin, right, "ops", "c/x", "hi").status, 200);
    assert_eq!(publish(admin, "", "ops", "c/x", "hi").status, 401);
    // Health probes need no token.
    assert_eq!(get(admin, "/healthz").status, 200);
    // The page with ?token= sets the cookie its own requests then carry.
    let page = get(admin, "/?token=t0ken-for-tests&tap=c/x");
    assert_eq!(page.status, 200);
    let head = page.head.to_ascii_lowercase();
    assert!(
        head.contains("set-cookie: easechat_admin=t0ken-for-tests; httponly; samesite=strict"),
        "{head}"
    );
    let cookie = "Cookie: easechat_admin=t0ken-for-tests\r\n";
    assert_eq!(
        request(admin, "GET", "/api/clients", cookie, "").status,
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admin_connections_are_capped_and_timed_out() {
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0", "--admin-max-connections", "2"]);
    let admin = nexus.metrics_addr();
    let mut buf = [0u8; 64];
    // Two sockets that never speak fill the cap; a request still gets in,
    // in the place of the oldest of them.
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(admin).unwrap()).collect();
    thread::sleep(Duration::from_millis(200)); // both accepted
    assert_eq!(get(admin, "/healthz").status, 200);
    idle[0].set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(
        idle[0].read(&mut buf).unwrap_or(0),
        0,
        "the oldest idle socket was evicted"
    );
    drop(idle.remove(0));
    thread::sleep(Duration::from_millis(200)); // its slot is back
                                               // Two clients that started a request hold the cap: they are not
                                               // evicted, and a newcomer is closed at once, without an answer.
    let speaking: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(admin).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    drop(idle);
    thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(admin).unwrap();
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let n = third.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection over the cap got an answer");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The unfinished requests are closed by the header read timeout (5 s).
    for mut stream in speaking {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let n = stream.read(&mut buf).unwrap_or(0);
        assert!(n == 0 || buf.starts_with(b"HTTP/1.1 408"), "{n}");
    }
    assert!(started.elapsed() < PATIENCE);
    // Slots are free again.
    assert_eq!(get(admin, "/healthz").status, 200);
}

#[test]
fn a_tap_viewer_that_stops_reading_is_cut_by_the_write_timeout() {
    // An outbox larger than all the test sends: the tap connection itself
    // is never a slow consumer here, even on a loaded machine.
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0", "--max-outbox-bytes", "33554432"]);
    let admin = nexus.metrics_addr();
    // A viewer with a small receive buffer that stops reading after `ready`.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&admin.into()).unwrap();
    let mut viewer: TcpStream = socket.into();
    viewer.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        viewer,
        "GET /api/tap?channel=c/slow HTTP/1.1\r\nHost: {admin}\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("event: ready") {
        let n = viewer.read(&mut chunk).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&chunk[..n]);
    }
    wait_channel(admin, "c/slow", 1);
    thread::sleep(Duration::from_millis(50));
    // Far more than the socket buffers hold; the publisher is never slowed.
    let mut publisher = Client::named(&nexus, "pub");
    let text = "x".repeat(60_000);
    for _ in 0..200 {
        publisher.publish("c/slow", &text);
        thread::sleep(Duration::from_millis(10));
    }
    // The stalled write is cut after 10 s: the tap's subscriber goes away.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = get(admin, "/api/channels?filter=c/slow").json();
        if json["channels"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled tap viewer was never cut: {json}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Cut by the admin listener (the tap connection simply goes away),
    // not by the nexus's slow-consumer rule.
    let lost = nexus.wait_log(|l| l.contains("admin-tap-1") && l.contains("connection lost"));
    eprintln!("{lost}");
    assert!(
        nexus.log.iter().all(|l| !l.contains("slow consumer")),
        "{}",
        nexus.log.join("\n")
    );
    // The publisher was not touched.
    publisher.publish("c/other", "still here");
    assert_eq!(get(admin, "/healthz").status, 200);
    drop(viewer);
}

#[test]
fn taps_are_capped() {
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0"]);
    let admin = nexus.metrics_addr();
    let taps: Vec<TcpStream> = (0..16)
        .map(|i| {
            let mut tap = TcpStream::connect(admin).unwrap();
            tap.set_read_timeout(Some(PATIENCE)).unwrap();
            write!(
                tap,
                "GET /api/tap?channel=c/{i} HTTP/1.1\r\nHost: {admin}\r\n\r\n"
            )
            .unwrap();
            let mut seen = String::new();
            let mut chunk = [0u8; 1024];
            while !seen.contains("event: ready") {
                let n = tap.read(&mut chunk).unwrap();
                assert!(n > 0, "{seen}");
                seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
            tap
        })
        .collect();
    let r = get(admin, "/api/tap?channel=c/one-too-many");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(get(admin, "/api/tap").status, 400);
    drop(taps);
    // Slots come back when viewers leave.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut tap = TcpStream::connect(admin).unwrap();
        tap.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            tap,
            "GET /api/tap?channel=c/again HTTP/1.1\r\nHost: {admin}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        tap.read_exact(&mut head).unwrap();
        if &head == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "tap slots never came back");
        thread::sleep(Duration::from_millis(50));
    }
}

/// What a raw request on its own connection gets back (status line and body).
fn raw(addr: SocketAddr, text: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn health_probes_answer_as_load_balancers_send_them() {
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0", "--lame-duck-grace", "5"]);
    let admin = nexus.metrics_addr();
    // HAProxy's default check: HTTP/1.0, no Host.
    let r = raw(admin, "GET /healthz HTTP/1.0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"),
        "{r}"
    );
    // A Host that is a DNS name (the balancer's view of the service).
    let r = raw(
        admin,
        "GET /healthz HTTP/1.1\r\nHost: nexus.internal.example\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = raw(admin, "GET /readyz HTTP/1.0\r\n\r\n");
    assert!(r.contains(" 200 ") && r.ends_with("ready\n"), "{r}");
    // Everything else still refuses a foreign Host.
    let r = raw(
        admin,
        "GET /api/stats HTTP/1.1\r\nHost: nexus.internal.example\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // Draining: not ready (no new clients), as /healthz says today.
    nexus.console("drain");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = raw(admin, "GET /readyz HTTP/1.0\r\n\r\n");
        if r.contains(" 503 ") {
            assert!(r.ends_with("not ready: draining\n"), "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never turned 503: {r}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /readyz HTTP/1.0` on its own connection: the status and the body,
/// or None while nothing listens on `addr`.
fn readyz(addr: SocketAddr) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Polls `/readyz` until it answers `status`; the body.
fn wait_readyz(admin: SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = readyz(admin);
        if let Some((s, body)) = &answer {
            if *s == status {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}: {answer:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readyz_is_starting_until_every_shard_answers_then_keeps_a_connection_budget() {
    // Probes from before the process exists until the first 200: whatever
    // comes before it must say `starting` (not a stuck shard, not a drain).
    let admin: SocketAddr = common::free_loopback_addr().parse().unwrap();
    let prober = thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        let mut early = Vec::new();
        while Instant::now() < deadline {
            match readyz(admin) {
                Some((200, _)) => return (true, early),
                Some(answer) => early.push(answer),
                None => thread::sleep(Duration::from_millis(2)),
            }
        }
        (false, early)
    });
    let admin_flag = admin.to_string();
    let nexus = Nexus::start(&["--admin", &admin_flag, "--max-connections", "2"]);
    let (ready, early) = prober.join().unwrap();
    assert!(ready, "never ready: {early:?}");
    assert!(
        early
            .iter()
            .all(|(status, body)| *status == 503 && body == "not ready: starting\n"),
        "{early:?}"
    );
    // Over its budget (95 % of --max-connections): not ready, and ready
    // again once below it. The connections themselves are served.
    let a = Client::named(&nexus, "a");
    assert_eq!(wait_readyz(admin, 200), "ready\n");
    let _b = Client::named(&nexus, "b");
    assert_eq!(
        wait_readyz(admin, 503),
        "not ready: near --max-connections\n"
    );
    drop(a);
    assert_eq!(wait_readyz(admin, 200), "ready\n");
}
