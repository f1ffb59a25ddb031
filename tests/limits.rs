//! Limits that keep careless and hostile clients from costing anything
//! else: connection cap (HTTP 503), keepalive for dead peers, and a
//! reconnect storm served or refused cleanly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{receive, Client, Event, Nexus, PATIENCE};

const UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: nexus\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends an upgrade request and returns the status line of the answer.
fn raw_upgrade(nexus: &Nexus) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(nexus.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(UPGRADE).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.lines().next().unwrap_or("").to_string();
    (stream, status)
}

#[test]
fn connections_past_the_cap_get_503_and_a_freed_slot_is_reused() {
    let mut nexus = Nexus::start(&["--max-connections", "4"]);
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client::named(&nexus, &format!("c{i}")))
        .collect();
    let (mut refused, status) = raw_upgrade(&nexus);
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    let mut body = String::new();
    let _ = refused.read_to_string(&mut body);
    assert!(body.contains("too many connections"), "{body}");
    nexus.wait_log(|l| l.contains("refusing connection: too many connections"));
    // The connections already open are served as before.
    clients[0].subscribe("c");
    nexus.wait_subscribers("c", 1);
    clients[1].publish("c", "still fine");
    assert_eq!(clients[0].recv(), receive("c1", "c", "still fine"));
    // Closing one frees its slot.
    clients[3].send("1d|0|");
    clients[3].expect_close();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_stream, status) = raw_upgrade(&nexus);
        if status.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {status}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn silent_peers_are_pinged_then_closed_and_live_ones_stay() {
    let mut nexus = Nexus::start(&["--keepalive", "1", "--keepalive-timeout", "1"]);
    // A client that never reads never answers pings (a powered-off host).
    let mut silent = Client::named(&nexus, "silent");
    silent.subscribe("c");
    let mut lively = Client::named(&nexus, "lively");
    lively.subscribe("c");
    nexus.wait_subscribers("c", 2);
    // Reading lets tungstenite answer the nexus's pings.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(lively.next_within(Duration::from_millis(100)), None);
    }
    nexus.wait_log(|l| l.contains("keepalive timeout") && l.contains("endpoint=\"silent\""));
    let subs = nexus.wait_subscribers("c", 1);
    assert!(subs[0].contains("\"lively\""), "{subs:?}");
    assert_eq!(
        silent.expect_close(),
        (1001, "keepalive timeout".to_string())
    );
    let mut publisher = Client::named(&nexus, "p");
    publisher.publish("c", "alive?");
    match lively.next_within(PATIENCE) {
        Some(Event::Text(t)) => assert_eq!(t, receive("p", "c", "alive?")),
        other => panic!("{other:?}"),
    }
}

/// Many connections arriving at once are each served (101) or refused
/// (503), none dropped, and exactly the cap is served.
#[test]
fn a_reconnect_storm_is_served_or_refused_cleanly() {
    const CAP: usize = 150;
    const STORM: usize = 250;
    let nexus = Nexus::start(&["--max-connections", &CAP.to_string()]);
    let addr = nexus.addr;
    let handles: Vec<_> = (0..STORM)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                stream.write_all(UPGRADE).unwrap();
                let mut answer = [0u8; 12];
                stream
                    .read_exact(&mut answer)
                    .expect("every connection gets an answer");
                (stream, String::from_utf8_lossy(&answer[9..12]).to_string())
            })
        })
        .collect();
    let results: Vec<(TcpStream, String)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let served = results.iter().filter(|(_, s)| s == "101").count();
    let refused = results.iter().filter(|(_, s)| s == "503").count();
    assert_eq!((served, refused), (CAP, STORM - CAP));
}

/// A client that floods pings and never reads the pongs is closed as a slow
/// consumer: control frames count against the outbound bound too.
#[test]
fn a_ping_flood_without_reading_is_a_slow_consumer() {
    let mut nexus = Nexus::start(&["--max-outbox-bytes", "65536"]);
    let mut bystander = Client::named(&nexus, "bystander");
    bystander.subscribe("c");
    nexus.wait_subscribers("c", 1);
    let (mut flood, status) = raw_upgrade(&nexus);
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    // Masked (zero key) pings with 125-byte payloads, written in chunks.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'p'; 125]);
    let chunk: Vec<u8> = ping.repeat(512);
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut sent = 0;
    // Up to 200 MB: far more than socket buffers and the bound; the nexus
    // closes long before (the write then fails or times out).
    while sent < 200_000_000 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    nexus.wait_log(|l| l.contains("closing slow consumer"));
    // The connection ends: whatever the nexus could still send (pongs, maybe
    // the close frame, which a client that never reads may not get before
    // the close grace runs out), then end of stream or a reset.
    let mut bytes = Vec::new();
    if let Err(e) = flood.read_to_end(&mut bytes) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection was not closed: {e}"
        );
    }
    nexus.wait_log(|l| {
        l.contains("connection closed by nexus")
            && l.contains("code=1008")
            && l.contains("slow consumer")
    });
    let mut publisher = Client::named(&nexus, "p");
    publisher.publish("c", "unaffected");
    assert_eq!(bystander.recv(), receive("p", "c", "unaffected"));
}
