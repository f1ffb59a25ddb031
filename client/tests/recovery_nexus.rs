//! Recovery through the real nexus with `--history 'h/*'`: the client
//! library and `easechat sub --recover --resume-file` (the names an outside
//! check relies on). The same scenarios, with cuts a real nexus cannot be
//! made to do on cue, run against a scripted stand-in in `recovery.rs`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Nexus;
use easechat::{Client, Event, Options, Position, PositionStatus, RecoveryReport};
use support::{at, recovering, scratch, wait_saved, Sub, PATIENCE, QUIET};

const TTL: Duration = Duration::from_secs(600);

fn history_nexus() -> Nexus {
    Nexus::start(&["--history", "h/*"])
}

/// Publishes `texts` on `channel` and waits until the nexus has read them
/// all (`1d` is answered after every frame before it).
fn publish(url: &str, channel: &str, texts: &[&str]) {
    let mut publisher = Client::connect(url, "p", Options::default()).unwrap();
    for text in texts {
        publisher.transmit(channel, text).unwrap();
    }
    publisher.disconnect("published").unwrap();
}

/// The position the resume file holds for `channel`, once it holds one.
fn saved(file: &std::path::Path, channel: &str) -> Position {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let position = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| easechat::resume::parse(&text).ok())
            .and_then(|positions| positions.get(channel).cloned());
        if let Some(position) = position {
            return position;
        }
        assert!(Instant::now() < deadline, "{channel} never saved");
        thread::sleep(Duration::from_millis(10));
    }
}

fn next(client: &mut Client) -> Event {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(event) = client.recv_event(Duration::from_millis(100)).unwrap() {
            return event;
        }
    }
    panic!("no event within {PATIENCE:?}");
}

fn message(client: &mut Client) -> (String, Option<Position>) {
    match next(client) {
        Event::Message { message, position } => (message.text, position),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn report(client: &mut Client) -> RecoveryReport {
    match next(client) {
        Event::Report(report) => report,
        other => panic!("expected a report, got {other:?}"),
    }
}

/// A TCP relay in front of the nexus whose connections the test can cut
/// (as a network failure would), while the nexus and its history stay.
struct Relay {
    port: u16,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let kept = streams.clone();
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let mut kept = kept.lock().unwrap();
                kept.push(inbound.try_clone().unwrap());
                kept.push(outbound.try_clone().unwrap());
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        Relay { port, streams }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Breaks every relayed connection, without a close frame.
    fn cut(&self) {
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buffer = [0; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buffer) {
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn sub_resumes_after_a_kill_with_exactly_what_it_missed() {
    let mut nexus = history_nexus();
    let url = nexus.url();
    let dir = scratch("nexus-kill");
    let file = dir.join("positions.json");
    let channels = ["h/kill", "plain"];
    let mut sub = Sub::start(&url, "watcher", &file, &channels);
    nexus.wait_subscribers("h/kill", 1);
    nexus.wait_subscribers("plain", 1);
    // The first subscription's 1p is saved at once: offset 0 in the epoch.
    let epoch = saved(&file, "h/kill").epoch;
    assert_eq!(saved(&file, "h/kill"), at(0, &epoch));

    publish(&url, "h/kill", &["m1", "m2 |x|\nsecond line"]);
    assert_eq!(sub.next(), ("m1".into(), Some(1), Some(epoch.clone())));
    assert_eq!(
        sub.next(),
        ("m2 |x|\nsecond line".into(), Some(2), Some(epoch.clone()))
    );
    publish(&url, "plain", &["x1"]);
    assert_eq!(sub.next(), ("x1".into(), None, None));
    wait_saved(&file, "h/kill", 2, &epoch);
    sub.kill();

    // Published while no sub runs.
    publish(&url, "h/kill", &["m3", "m4", "m5"]);
    publish(&url, "plain", &["lost: no history"]);
    let mut sub = Sub::start(&url, "watcher", &file, &channels);
    for (offset, text) in [(3, "m3"), (4, "m4"), (5, "m5")] {
        assert_eq!(sub.next(), (text.into(), Some(offset), Some(epoch.clone())));
    }
    nexus.wait_subscribers("plain", 1);
    publish(&url, "h/kill", &["m6"]);
    assert_eq!(sub.next(), ("m6".into(), Some(6), Some(epoch.clone())));
    sub.assert_quiet();
    wait_saved(&file, "h/kill", 6, &epoch);
    assert!(sub.interrupt().success());
    assert_eq!(sub.error_lines(), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sub_says_when_it_cannot_recover_then_prints_live_messages() {
    let mut nexus = history_nexus();
    let url = nexus.url();
    publish(&url, "h/epoch", &["old 1", "old 2", "old 3"]);
    let dir = scratch("nexus-epoch");
    let file = dir.join("positions.json");

    // A position from another epoch (another nexus, or before a restart).
    std::fs::write(
        &file,
        r#"{"h/epoch":{"offset":2,"epoch":"not-this-nexus"}}"#,
    )
    .unwrap();
    let mut sub = Sub::start(&url, "watcher", &file, &["h/epoch"]);
    let line = sub.error_line();
    assert!(
        line.starts_with(
            "easechat: could not recover h/epoch: resumed from 2 in epoch not-this-nexus, \
             channel now at 3 in epoch "
        ) && line.ends_with("; continuing with live messages"),
        "{line}"
    );
    // "… in epoch E (why); continuing …": the line names the epoch, and the
    // file moves to that position.
    let epoch = line
        .split_once("channel now at 3 in epoch ")
        .and_then(|(_, rest)| rest.split_once(" ("))
        .map(|(epoch, _)| epoch.to_string())
        .unwrap_or_else(|| panic!("no epoch in {line:?}"));
    assert_ne!(epoch, "not-this-nexus");
    wait_saved(&file, "h/epoch", 3, &epoch);
    nexus.wait_subscribers("h/epoch", 1);
    publish(&url, "h/epoch", &["live"]);
    // Nothing replayed: the live message comes first.
    assert_eq!(sub.next(), ("live".into(), Some(4), Some(epoch.clone())));
    sub.assert_quiet();
    sub.kill();

    // A position from the future of this epoch.
    std::fs::write(
        &file,
        format!(r#"{{"h/epoch":{{"offset":99,"epoch":"{epoch}"}}}}"#),
    )
    .unwrap();
    let sub = Sub::start(&url, "watcher", &file, &["h/epoch"]);
    assert_eq!(
        sub.error_line(),
        format!(
            "easechat: could not recover h/epoch: resumed from 99 in epoch {epoch}, channel \
             now at 4 in epoch {epoch} (the position is ahead of the channel); continuing \
             with live messages"
        )
    );
    wait_saved(&file, "h/epoch", 4, &epoch);
    publish(&url, "h/epoch", &["live 2"]);
    assert_eq!(sub.next(), ("live 2".into(), Some(5), Some(epoch.clone())));
    sub.assert_quiet();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_library_recovers_a_cut_connection_exactly() {
    let mut nexus = history_nexus();
    let url = nexus.url();
    let relay = Relay::start(nexus.addr);
    let mut client =
        Client::connect(&relay.url(), "sub", recovering(Duration::from_millis(50))).unwrap();
    client.subscribe("h/lib", TTL).unwrap();
    client.subscribe("plain", TTL).unwrap();
    let first = report(&mut client);
    assert_eq!(
        (first.channel.as_str(), first.status, first.offset),
        ("h/lib", PositionStatus::Subscribed, 0)
    );
    let e = first.epoch;
    assert!(!e.is_empty());
    nexus.wait_subscribers("plain", 1);
    publish(&url, "h/lib", &["m1", "m2"]);
    assert_eq!(message(&mut client), ("m1".into(), Some(at(1, &e))));
    assert_eq!(message(&mut client), ("m2".into(), Some(at(2, &e))));
    publish(&url, "plain", &["x1"]);
    assert_eq!(message(&mut client), ("x1".into(), None));

    // The connection breaks; the client notices at its next recv, after
    // these were published.
    relay.cut();
    publish(&url, "h/lib", &["m3", "m4"]);
    assert_eq!(
        report(&mut client),
        RecoveryReport {
            channel: "h/lib".into(),
            status: PositionStatus::Recovered,
            offset: 4,
            epoch: e.clone(),
            from: Some(at(2, &e)),
        }
    );
    assert_eq!(message(&mut client), ("m3".into(), Some(at(3, &e))));
    assert_eq!(message(&mut client), ("m4".into(), Some(at(4, &e))));
    nexus.wait_subscribers("plain", 1);
    publish(&url, "h/lib", &["m5"]);
    assert_eq!(message(&mut client), ("m5".into(), Some(at(5, &e))));
    assert_eq!(client.recv_event(QUIET).unwrap(), None);
    assert_eq!(client.reconnects(), 1);
}

#[test]
fn the_library_reports_a_restart_it_cannot_recover_from() {
    let listen = common::free_loopback_addr();
    let mut nexus = Nexus::start_at(&listen, &["--history", "h/*"]);
    let url = nexus.url();
    let mut client = Client::connect(&url, "sub", recovering(Duration::from_millis(50))).unwrap();
    client.subscribe("h/restart", TTL).unwrap();
    let e1 = report(&mut client).epoch;
    publish(&url, "h/restart", &["before"]);
    assert_eq!(message(&mut client), ("before".into(), Some(at(1, &e1))));

    // A restart loses the history: a new epoch, never a silent recovery.
    nexus.console("stop restarting");
    assert_eq!(nexus.wait_exit().code(), Some(0));
    let mut nexus = Nexus::start_at(&listen, &["--history", "h/*"]);
    let failed = report(&mut client);
    assert_eq!(
        (failed.status, failed.from.clone()),
        (PositionStatus::NotRecovered, Some(at(1, &e1)))
    );
    assert_ne!(failed.epoch, e1);
    assert!(
        failed.problem().unwrap().contains("restarted"),
        "{failed:?}"
    );
    nexus.wait_subscribers("h/restart", 1);
    publish(&url, "h/restart", &["after"]);
    assert_eq!(
        message(&mut client),
        ("after".into(), Some(at(failed.offset + 1, &failed.epoch)))
    );
}
