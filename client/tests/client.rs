//! The client library and the `easechat` binary against a real nexus.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Nexus, PATIENCE};
use easechat::{Client, ClientError, Options, Received};

fn easechat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_easechat"))
}

fn received(sender: &str, channel: &str, text: &str) -> Received {
    Received {
        sender: sender.into(),
        channel: channel.into(),
        text: text.into(),
    }
}

#[test]
fn library_round_trip_renewal_and_typed_close() {
    let mut nexus = Nexus::start(&[]);
    let url = nexus.url();
    let mut sub = Client::connect(&url, "sub", Options::default()).unwrap();
    // A 2 s TTL renewed at 90 %: still subscribed after 4 s.
    sub.subscribe("c|你", Duration::from_secs(2)).unwrap();
    let mut publisher = Client::connect(&url, "pub", Options::default()).unwrap();
    nexus.wait_subscribers("c|你", 1);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(sub.recv(Duration::from_millis(200)).unwrap(), None);
    }
    publisher.transmit("c|你", "hé |x| \n y").unwrap();
    assert_eq!(
        sub.recv(PATIENCE).unwrap(),
        Some(received("pub", "c|你", "hé |x| \n y"))
    );
    sub.unsubscribe("c|你").unwrap();
    nexus.wait_subscribers("c|你", 0);
    publisher.disconnect("bye").unwrap();

    // The nexus's close arrives as a typed error with code and reason.
    nexus.console("stop maintenance");
    match sub.recv(PATIENCE) {
        Err(ClientError::Closed { code, reason }) => {
            assert_eq!((code, reason.as_str()), (1000, "maintenance"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sub_and_pub_binaries_round_trip() {
    let mut nexus = Nexus::start(&[]);
    let url = nexus.url();
    let mut sub = easechat()
        .args([
            "sub", "--name", "watcher", "--json", "--url", &url, "news", "alerts",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    nexus.wait_subscribers("news", 1);
    nexus.wait_subscribers("alerts", 1);

    let status = easechat()
        .args([
            "pub",
            "--name",
            "editor",
            "--url",
            &url,
            "news",
            "extra | extra \"quoted\"",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let line = lines.recv_timeout(PATIENCE).unwrap();
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["sender"], "editor");
    assert_eq!(json["channel"], "news");
    assert_eq!(json["text"], "extra | extra \"quoted\"");

    // Each line of standard input is one message.
    let mut publisher = easechat()
        .args(["pub", "--name", "pager", "--url", &url, "alerts"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    publisher
        .stdin
        .take()
        .unwrap()
        .write_all("one\ntwo 你好\n".as_bytes())
        .unwrap();
    assert!(publisher.wait().unwrap().success());
    for text in ["one", "two 你好"] {
        let json: serde_json::Value =
            serde_json::from_str(&lines.recv_timeout(PATIENCE).unwrap()).unwrap();
        assert_eq!(
            (json["sender"].as_str(), json["text"].as_str()),
            (Some("pager"), Some(text))
        );
    }
    Command::new("kill")
        .args(["-INT", &sub.id().to_string()])
        .status()
        .unwrap();
    assert!(sub.wait().unwrap().success());
}

/// 10,500 messages with multi-byte text and `|`: the first 10,000 are
/// committed in batches of 1,000, the last 500 only when SIGTERM makes the
/// recorder flush (age-based commits are turned off), so none may be lost.
#[test]
fn record_keeps_a_burst_exactly_and_flushes_on_sigterm() {
    const MESSAGES: usize = 10_500;
    let mut nexus = Nexus::start(&[]);
    let url = nexus.url();
    let dir = std::env::temp_dir().join(format!("easechat-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("traffic.db");
    let _ = std::fs::remove_file(&db);
    let mut recorder = easechat()
        .args([
            "record",
            "--name",
            "archivist",
            "--url",
            &url,
            "--flush-ms",
            "3600000",
            "--db",
        ])
        .arg(&db)
        .arg("log|main")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nexus.wait_subscribers("log|main", 1);
    let mut publisher = Client::connect(&url, "game-7", Options::default()).unwrap();
    let text = |i: usize| format!("{i:05}|你好|{}", "é".repeat(i % 7));
    for i in 0..MESSAGES {
        publisher.transmit("log|main", &text(i)).unwrap();
    }
    publisher.disconnect("done").unwrap();
    // Wait for the full batches, give the last 500 time to arrive, then
    // stop the recorder the way an operator would.
    let count = || -> usize {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0) as usize
    };
    let deadline = Instant::now() + PATIENCE * 3;
    while count() < 10_000 {
        assert!(Instant::now() < deadline, "only {} rows", count());
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    assert_eq!(count(), 10_000, "the last 500 wait for the flush at exit");
    Command::new("kill")
        .args(["-TERM", &recorder.id().to_string()])
        .status()
        .unwrap();
    assert!(recorder.wait().unwrap().success());

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let mut rows = conn
        .prepare("SELECT sender, channel, text, received_at FROM messages ORDER BY id")
        .unwrap();
    let rows: Vec<(String, String, String, i64)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), MESSAGES);
    let mut last_time = 0;
    for (i, (sender, channel, body, at)) in rows.iter().enumerate() {
        assert_eq!((sender.as_str(), channel.as_str()), ("game-7", "log|main"));
        assert_eq!(body, &text(i), "row {i}");
        assert!(*at >= last_time, "receive times in order");
        last_time = *at;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reconnecting_client_resubscribes_after_the_nexus_restarts() {
    let listen = common::free_loopback_addr();
    let mut nexus = Nexus::start_at(&listen, &[]);
    let url = nexus.url();
    let options = Options {
        reconnect: true,
        ..Options::default()
    };
    let mut sub = Client::connect(&url, "survivor", options).unwrap();
    sub.subscribe("c", Duration::from_secs(600)).unwrap();
    nexus.wait_subscribers("c", 1);

    nexus.console("stop restarting");
    assert_eq!(nexus.wait_exit().code(), Some(0));
    let (tx, rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        // recv reconnects with back-off while the nexus is down.
        let deadline = Instant::now() + PATIENCE * 2;
        while Instant::now() < deadline {
            if let Some(m) = sub.recv(Duration::from_millis(100)).unwrap() {
                tx.send(m).unwrap();
                return;
            }
        }
    });
    thread::sleep(Duration::from_millis(300));
    let mut nexus = Nexus::start_at(&listen, &[]);
    nexus.wait_subscribers("c", 1);
    let mut publisher = Client::connect(&url, "p", Options::default()).unwrap();
    publisher.transmit("c", "welcome back").unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        received("p", "c", "welcome back")
    );
    receiver.join().unwrap();
}
