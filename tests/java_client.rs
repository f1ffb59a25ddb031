//! The production Java client (EaseCation/ease_chat d0f98f2, Netty 4.1.48)
//! against the real nexus: every exchange it has in production, what it
//! does when the nexus closes it, and the limits of its parser. Any exception
//! its pipeline raises outside the limit checks fails the test (protocol
//! drift). Skipped loudly without `javac`/Netty, except on CI (`CI=true`).

mod common;
mod java;

use std::thread;
use std::time::{Duration, Instant};

use common::{Nexus, PATIENCE};
use easechat::{Client, ClientError, Options, Received};
use java::Driver;

/// (name, shard, seconds to expiry) of each subscriber line of `list CHANNEL`.
fn subscribers(nexus: &mut Nexus, channel: &str) -> Vec<(String, String, f64)> {
    let (_, lines) = nexus.list_keyword(channel);
    lines
        .iter()
        .map(|l| {
            // `  "name"  [s1#7] expires in 1.8s`
            let t = l.trim_start();
            let close = t.rfind("\"  [").expect("subscriber line");
            let name = t[1..close].to_string();
            let rest = &t[close + 4..];
            let shard = rest[..rest.find('#').unwrap()].to_string();
            let secs = rest
                .split("expires in ")
                .nth(1)
                .and_then(|s| s.trim_end_matches('s').parse().ok())
                .expect("expiry");
            (name, shard, secs)
        })
        .collect()
}

fn rust_client(nexus: &Nexus, name: &str) -> Client {
    Client::connect(&nexus.url(), name, Options::default()).expect("rust client")
}

fn rust_recv(client: &mut Client) -> Received {
    client
        .recv(PATIENCE)
        .expect("rust client open")
        .expect("a message for the rust client")
}

fn received(sender: &str, channel: &str, text: &str) -> (String, String, String) {
    (sender.into(), channel.into(), text.into())
}

/// Opens Java clients `j0`, `j1`… (each subscribed to `probe`) until one
/// sits on shard 0 and one on shard 1; the others say `1d`. Returns the
/// (id, name) of the one on s0 and the one on s1.
fn java_pair(nexus: &mut Nexus, driver: &mut Driver) -> (String, String) {
    let url = nexus.url();
    let mut on = [None, None];
    for i in 0..40 {
        let id = format!("j{i}");
        driver.cmd(&["open", &id, &id, &url]);
        driver.cmd(&["sub", &id, "probe", "600"]);
        let deadline = Instant::now() + PATIENCE;
        let shard = loop {
            let subs = subscribers(nexus, "probe");
            if let Some((_, shard, _)) = subs.iter().find(|(n, _, _)| *n == id) {
                break shard.clone();
            }
            assert!(Instant::now() < deadline, "{id} never subscribed");
            thread::sleep(Duration::from_millis(20));
        };
        let slot = match shard.as_str() {
            "s0" => 0,
            "s1" => 1,
            other => panic!("unexpected shard {other}"),
        };
        if on[slot].is_none() {
            on[slot] = Some(id);
        } else {
            driver.cmd(&["disconnect", &id, "extra"]);
        }
        if let [Some(a), Some(b)] = &on {
            return (a.clone(), b.clone());
        }
    }
    panic!("40 connections never reached both shards");
}

#[test]
fn java_client_full_cycle() {
    let Some(classpath) = java::available("java_client_full_cycle") else {
        return;
    };
    let mut nexus = Nexus::start(&[]);
    let mut driver = Driver::start(classpath);

    // Connect and hello: two Java clients on different shards.
    let (a, b) = java_pair(&mut nexus, &mut driver);

    // Subscribe with auto-renewal, 2 s TTL: renewed at 90 % (1.8 s), so the
    // time to expiry rises again and the subscription outlives its TTL.
    driver.cmd(&["autosub", &a, "room", "2"]);
    driver.cmd(&["sub", &b, "room", "600"]);
    let mut rust = rust_client(&nexus, "rust");
    rust.subscribe("room", Duration::from_secs(600)).unwrap();
    nexus.wait_subscribers("room", 3);
    let started = Instant::now();
    let mut last = f64::MAX;
    let mut renewals = 0;
    while started.elapsed() < Duration::from_millis(4_500) {
        let subs = subscribers(&mut nexus, "room");
        let (_, _, secs) = subs
            .iter()
            .find(|(n, _, _)| *n == a)
            .unwrap_or_else(|| panic!("{a} lost its subscription after {:?}", started.elapsed()))
            .clone();
        if secs > last + 0.5 {
            renewals += 1;
        }
        last = secs;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        renewals >= 2,
        "expected 2 renewals in 4.5 s, saw {renewals}"
    );

    // Java to Java across shards and to Rust: CJK, emoji and `|` in text.
    let text = "你好|世界 | 🎮 a|b||";
    driver.cmd(&["pub", &a, "room", text]);
    assert_eq!(driver.recv(&b), received(&a, "room", text));
    assert_eq!(
        rust_recv(&mut rust),
        Received {
            sender: a.clone(),
            channel: "room".into(),
            text: text.into()
        }
    );
    driver.cmd(&["pub", &b, "room", "back to a ✓"]);
    assert_eq!(driver.recv(&a), received(&b, "room", "back to a ✓"));
    assert_eq!(rust_recv(&mut rust).text, "back to a ✓");
    // Rust to both Java clients.
    rust.transmit("room", "from rust 中文|").unwrap();
    assert_eq!(driver.recv(&a), received("rust", "room", "from rust 中文|"));
    assert_eq!(driver.recv(&b), received("rust", "room", "from rust 中文|"));

    // 200 messages in order, s0 to s1 and to Rust.
    for i in 0..200 {
        driver.cmd(&["pub", &a, "room", &format!("seq {i} 序")]);
    }
    for i in 0..200 {
        let want = format!("seq {i} 序");
        assert_eq!(driver.recv(&b), received(&a, "room", &want));
        assert_eq!(rust_recv(&mut rust).text, want);
    }

    // Sender exclusion: by name, whichever connection publishes.
    let mut same_name = rust_client(&nexus, &a);
    same_name.transmit("room", "not for a").unwrap();
    assert_eq!(driver.recv(&b), received(&a, "room", "not for a"));
    assert_eq!(rust_recv(&mut rust).text, "not for a");
    // a published 201 messages and one came under its name: it heard none.
    assert_eq!(driver.received_within(&a, Duration::from_millis(300)), None);

    // Unsubscribe: a plain subscription ended with TTL 0.
    driver.cmd(&["sub", &b, "plain", "600"]);
    nexus.wait_subscribers("plain", 1);
    driver.cmd(&["sub", &b, "plain", "0"]);
    nexus.wait_subscribers("plain", 0);
    rust.transmit("plain", "nobody").unwrap();
    rust.transmit("room", "marker").unwrap();
    assert_eq!(driver.recv(&b), received("rust", "room", "marker"));

    // The API's setCloseAutoSub(true) does not stop renewal: the timer task
    // re-sends and re-schedules, so an unsubscribe is undone at 90 % of the
    // TTL. Only stopping the client (or its timer) ends an auto-renewal.
    driver.cmd(&["stopauto", &a, "room"]);
    driver.cmd(&["sub", &a, "room", "0"]);
    let gone = Instant::now();
    let deadline = gone + PATIENCE;
    let mut absent_seen = false;
    loop {
        let present = subscribers(&mut nexus, "room")
            .iter()
            .any(|(n, _, _)| *n == a);
        if !present {
            absent_seen = true;
        } else if absent_seen {
            break;
        }
        assert!(Instant::now() < deadline, "auto-renewal never came back");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(absent_seen);

    // 1d with a reason: the nexus closes with 1000 and that reason.
    driver.cmd(&["disconnect", &b, "game over 再见 |"]);
    let close = driver.event(|e| e[0] == "closeframe" && e[1] == b, PATIENCE);
    assert_eq!(
        close[2..],
        ["1000".to_string(), "game over 再见 |".to_string()]
    );
    driver.event(|e| e[0] == "closed" && e[1] == b, PATIENCE);

    // The nexus closing the client (`stop`): the client closes its socket
    // on the close frame, reports itself inactive and never reconnects; a
    // later send fails.
    nexus.console("stop maintenance");
    let close = driver.event(|e| e[0] == "closeframe" && e[1] == a, PATIENCE);
    assert_eq!(close[2..], ["1000".to_string(), "maintenance".to_string()]);
    driver.event(|e| e[0] == "closed" && e[1] == a, PATIENCE);
    assert!(nexus.wait_exit().success());
    assert!(!driver.active(&a));
    let sent = driver.try_cmd(&["pub", &a, "room", "after close"]);
    assert!(sent.is_err(), "a send on a closed client: {sent:?}");
    // Its renewal timer's next tick (1.8 s) throws into the closed channel.
    assert!(driver.stderr_shows("ClosedChannelException", Duration::from_secs(5)));
    drop(same_name);
}

/// The 1r payload for a sender, channel and text of these byte lengths.
fn receive_len(sender: &str, channel: &str, text_len: usize) -> usize {
    format!(
        "1r|{}|{sender}|{}|{channel}|{text_len}|",
        sender.len(),
        channel.len()
    )
    .len()
        + text_len
}

/// The longest text whose 1r fits `limit`.
fn longest_text(sender: &str, channel: &str, limit: usize) -> usize {
    let mut n = limit;
    while receive_len(sender, channel, n) > limit {
        n -= 1;
    }
    n
}

#[test]
fn java_client_limits() {
    let Some(classpath) = java::available("java_client_limits") else {
        return;
    };
    let mut nexus = Nexus::start(&[]);
    let mut driver = Driver::start(classpath);
    let url = nexus.url();
    driver.cmd(&["open", "j", "j", &url]);
    driver.cmd(&["sub", "j", "big", "600"]);
    driver.cmd(&["sub", "j", "x|y", "600"]);
    nexus.wait_subscribers("big", 1);
    nexus.wait_subscribers("x|y", 1);
    let mut ok = rust_client(&nexus, "ok");

    // At default flags the largest accepted 1t yields a 1r of exactly
    // 65,536 bytes, and the Java client takes it.
    let n = longest_text("ok", "big", 65_536);
    assert_eq!(receive_len("ok", "big", n), 65_536);
    let text = "z".repeat(n);
    ok.transmit("big", &text).unwrap();
    let (sender, channel, got) = driver.recv("j");
    assert_eq!(
        (sender.as_str(), channel.as_str(), got.len()),
        ("ok", "big", n)
    );
    assert_eq!(got, text);

    // `|` in a sender or channel name: the nexus delivers it (the protocol
    // allows it), and the client's 7-field split rejects the 1r. The
    // message is lost; the connection stays open.
    driver.allow_errors = true;
    let mut piped = rust_client(&nexus, "p|q");
    piped.transmit("big", "from p|q").unwrap();
    let e = driver.event(|e| e[0] == "error" && e[1] == "j", PATIENCE);
    assert_eq!(e[2], "java.lang.IllegalArgumentException");
    ok.transmit("x|y", "on x|y").unwrap();
    let e = driver.event(|e| e[0] == "error" && e[1] == "j", PATIENCE);
    assert_eq!(e[2], "java.lang.IllegalArgumentException");
    driver.allow_errors = false;
    ok.transmit("big", "still open").unwrap();
    assert_eq!(driver.recv("j"), received("ok", "big", "still open"));

    // One byte more is refused by the nexus (1009) and never reaches Java.
    let mut refused = rust_client(&nexus, "ok");
    refused.transmit("big", &"z".repeat(n + 1)).unwrap();
    match refused.recv(PATIENCE) {
        Err(ClientError::Closed { code, reason }) => {
            assert_eq!(code, 1009, "{reason}");
        }
        other => panic!("expected 1009, got {other:?}"),
    }
    assert_eq!(
        driver.received_within("j", Duration::from_millis(300)),
        None
    );
    // `shutdown()` says 1d `shutdown` and waits for the close.
    driver.cmd(&["shutdown", "j"]);
    let close = driver.event(|e| e[0] == "closeframe" && e[1] == "j", PATIENCE);
    assert_eq!(close[2..], ["1000".to_string(), "shutdown".to_string()]);
    drop(nexus);

    // A nexus configured past the client's limit (`--max-message-bytes`
    // above 65,536) sends a 1r of 65,537 bytes: the client's WebSocket
    // decoder refuses the frame and the connection ends.
    let mut nexus = Nexus::start(&["--max-message-bytes", "70000"]);
    let url = nexus.url();
    driver.cmd(&["open", "k", "k", &url]);
    driver.cmd(&["sub", "k", "big", "600"]);
    nexus.wait_subscribers("big", 1);
    let mut ok = rust_client(&nexus, "ok");
    driver.allow_errors = true;
    ok.transmit("big", &"z".repeat(longest_text("ok", "big", 65_537)))
        .unwrap();
    let e = driver.event(|e| e[0] == "error" && e[1] == "k", PATIENCE);
    assert!(e[2].ends_with("CorruptedWebSocketFrameException"), "{e:?}");
    assert_eq!(e[3], "Max frame length of 65536 has been exceeded.");
    driver.event(|e| e[0] == "closed" && e[1] == "k", PATIENCE);
    // It drops the TCP connection without a close frame.
    let line = nexus.wait_log(|l| {
        l.contains("endpoint=\"k\"")
            && (l.contains("connection closed") || l.contains("connection lost"))
    });
    assert!(
        line.contains("connection lost") && line.contains("end of stream"),
        "{line}"
    );
    assert!(driver
        .received_within("k", Duration::from_millis(100))
        .is_none());
}

#[test]
fn java_client_on_a_drain() {
    let Some(classpath) = java::available("java_client_on_a_drain") else {
        return;
    };
    let mut old = Nexus::start(&["--lame-duck-duration", "0.5", "--lame-duck-grace", "0.2"]);
    let mut driver = Driver::start(classpath);
    let url = old.url();
    driver.cmd(&["open", "j", "j", &url]);
    driver.cmd(&["autosub", "j", "room", "2"]);
    old.wait_subscribers("room", 1);
    // The successor on the same port, then the old process drains.
    let mut new = Nexus::start_at(&old.addr.to_string(), &[]);
    old.console("drain");
    let close = driver.event(|e| e[0] == "closeframe" && e[1] == "j", PATIENCE);
    assert_eq!(
        close[2..],
        ["1001".to_string(), "server draining".to_string()]
    );
    driver.event(|e| e[0] == "closed" && e[1] == "j", PATIENCE);
    assert!(old.wait_exit().success());
    // It does not reconnect: past its renewal time the successor has never
    // seen it, and the client says it is inactive.
    thread::sleep(Duration::from_secs(2));
    new.console("list");
    let lines = new.output_until(|l| l.starts_with("  shard 1:"));
    assert!(
        lines[0].starts_with("0 clients identified (0 connected)"),
        "{lines:?}"
    );
    assert!(!driver.active("j"));
}

/// Access control (`--auth required`) with the unchanged Java client: its
/// token rides in the URI's query (`ws://host:port/?token=…`), the only way
/// Netty's handshake gives it.
#[test]
fn java_client_with_a_token() {
    use easechat_auth::SigningKey;
    let Some(classpath) = java::available("java_client_with_a_token") else {
        return;
    };
    let secret = "java-test-secret-0123456789abcdef-0123";
    let dir = std::env::temp_dir().join(format!("easechat-java-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("hmac.key");
    std::fs::write(&key_file, secret).unwrap();
    let key = SigningKey::from_file_bytes(secret.as_bytes(), None).unwrap();
    let token = |sub: &str, publish: &[&str], subscribe: &[&str]| {
        key.sign(&common::tokens::claims(sub, publish, subscribe))
            .unwrap()
    };
    let key_path = key_file.display().to_string();
    let mut nexus = Nexus::start(&["--auth", "required", "--auth-key-file", &key_path]);
    let mut driver = Driver::start(classpath);
    let base = nexus.url();
    let base = base.trim_end_matches('/');
    let java_token = token("gs-java", &["room"], &["room"]);
    driver.cmd(&[
        "open",
        "j",
        "gs-java",
        &format!("{base}/?token={java_token}"),
    ]);
    driver.cmd(&["sub", "j", "room", "600"]);
    nexus.wait_subscribers("room", 1);
    let mut rust = Client::connect(
        &nexus.url(),
        "rusty",
        Options {
            token: Some(token("rusty", &["room"], &["room"])),
            ..Options::default()
        },
    )
    .unwrap();
    rust.subscribe("room", Duration::from_secs(600)).unwrap();
    nexus.wait_subscribers("room", 2);
    // Allowed both ways.
    rust.transmit("room", "from rust").unwrap();
    assert_eq!(driver.recv("j"), received("rusty", "room", "from rust"));
    driver.cmd(&["pub", "j", "room", "from java"]);
    let got = rust_recv(&mut rust);
    assert_eq!(
        (got.sender.as_str(), got.text.as_str()),
        ("gs-java", "from java")
    );
    // A denied subscription closes it with the reason.
    driver.cmd(&["sub", "j", "ops/maintenance", "600"]);
    let close = driver.event(|e| e[0] == "closeframe" && e[1] == "j", PATIENCE);
    assert_eq!(
        close[2..],
        [
            "1008".to_string(),
            "subscribe to \"ops/maintenance\" denied".to_string()
        ]
    );
    // A bad token: its connect fails with the status in the exception
    // (Netty's WebSocketHandshakeException, expected here).
    driver.allow_errors = true;
    let bad = driver.try_cmd(&[
        "open",
        "x",
        "gs-java",
        &format!("{base}/?token=forged.token.here"),
    ]);
    assert!(bad.is_err(), "a bad token was accepted");
    let reported = bad.as_ref().err().is_some_and(|e| e.contains("401"))
        || driver
            .try_event(
                |e| e[0] == "error" && e[1] == "x" && e.join(" ").contains("401"),
                PATIENCE,
            )
            .is_some()
        || driver.stderr_shows("401", Duration::from_secs(1));
    assert!(
        reported,
        "no 401 reported: {bad:?}\n{}",
        driver.diagnostics()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
