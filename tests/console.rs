//! The operator console through the process's standard input, and graceful
//! stops by `stop`, SIGTERM and a double Ctrl-C.

mod common;

use std::thread;
use std::time::Duration;

use common::{receive, Client, Nexus};
use ease_chat_nexus::history::{home_shard, HELD_OVERHEAD};
use easechat_protocol::{parse, Message as Wire, PositionStatus};

#[test]
fn huaji_list_push_and_errors() {
    let mut nexus = Nexus::start(&[]);
    nexus.console("huaji");
    assert_eq!(nexus.output_line(), "huaji");

    nexus.console("frobnicate now");
    assert!(nexus
        .output_line()
        .starts_with("error: unknown command \"frobnicate\""));
    nexus.console("push onlysender");
    assert!(nexus.output_line().starts_with("error: usage: push"));

    let mut sub = Client::named(&nexus, "sub");
    sub.subscribe("c/ops");
    let mut ops = Client::named(&nexus, "ops");
    ops.subscribe("c/ops");
    let _idle = Client::connect(&nexus);
    nexus.wait_subscribers("c/ops", 2);

    nexus.console("list");
    let lines = nexus.output_until(|l| l.starts_with("  shard 1:"));
    assert_eq!(
        lines[0],
        "2 clients identified (3 connected), 1 channels active"
    );
    nexus.console("l");
    assert_eq!(nexus.output_line(), lines[0]);
    nexus.output_until(|l| l.starts_with("  shard 1:"));

    // Without --history, `list KEYWORD` is the v1 output, line for line.
    nexus.console("list c/ops");
    assert_eq!(
        nexus.output_line(),
        "endpoint \"c/ops\" listens to 0 channels:"
    );
    assert_eq!(nexus.output_line(), "channel \"c/ops\" has 2 subscribers:");
    for name in ["ops", "sub"] {
        let line = nexus.output_line();
        assert!(line.starts_with(&format!("  \"{name}\"  [s")), "{line}");
    }

    let (endpoint, _) = nexus.list_keyword("sub");
    assert_eq!(endpoint.len(), 1);
    assert!(endpoint[0].contains("\"c/ops\""), "{endpoint:?}");
    let seconds: f64 = endpoint[0]
        .split("expires in ")
        .nth(1)
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("time to expiry");
    assert!((590.0..=600.0).contains(&seconds), "{endpoint:?}");

    nexus.console("push ops c/ops hello  there | pipes");
    assert_eq!(nexus.output_line(), "pushed to c/ops as ops");
    assert_eq!(sub.recv(), receive("ops", "c/ops", "hello  there | pipes"));
    ops.expect_silence(Duration::from_millis(200));
    for alias in ["msg", "say", "send", "p"] {
        nexus.console(&format!("{alias} console c/ops via {alias}"));
        nexus.output_line();
        assert_eq!(
            sub.recv(),
            receive("console", "c/ops", &format!("via {alias}"))
        );
        assert_eq!(
            ops.recv(),
            receive("console", "c/ops", &format!("via {alias}"))
        );
    }
    // A push whose 1r would pass --max-message-bytes is refused like a 1t.
    let huge = "x".repeat(70_000);
    nexus.console(&format!("push ops c/ops {huge}"));
    let line = nexus.output_line();
    assert!(
        line.starts_with("error: not pushed: message too big"),
        "{line}"
    );
    sub.expect_silence(Duration::from_millis(200));
}

/// Every client is closed with 1000 and `reason`, then the nexus exits 0.
fn assert_graceful_stop(nexus: &mut Nexus, clients: &mut [Client], reason: &str) {
    for client in clients {
        assert_eq!(client.expect_close(), (1000, reason.to_string()));
    }
    assert_eq!(nexus.wait_exit().code(), Some(0));
}

#[test]
fn stop_closes_everyone_with_the_reason_and_exits_0() {
    let mut nexus = Nexus::start(&[]);
    let mut clients = nexus.identified_clients(8);
    nexus.console("stop maintenance window");
    assert_graceful_stop(&mut nexus, &mut clients, "maintenance window");
}

#[test]
fn quit_alias_uses_the_default_reason() {
    let mut nexus = Nexus::start(&[]);
    let mut clients = nexus.identified_clients(1);
    nexus.console("q");
    assert_graceful_stop(&mut nexus, &mut clients, "server shutdown");
}

#[test]
fn sigterm_stops_gracefully() {
    let mut nexus = Nexus::start(&[]);
    let mut clients = nexus.identified_clients(8);
    nexus.signal("TERM");
    assert_graceful_stop(&mut nexus, &mut clients, "server shutdown");
}

#[test]
fn one_ctrl_c_warns_and_two_stop() {
    let mut nexus = Nexus::start(&[]);
    let mut sub = Client::named(&nexus, "sub");
    sub.subscribe("c");
    nexus.wait_subscribers("c", 1);
    nexus.signal("INT");
    nexus.wait_log(|l| l.contains("press Ctrl-C again within 5 s, or type stop"));
    thread::sleep(Duration::from_millis(200));
    assert!(nexus.is_running(), "one Ctrl-C must not stop the nexus");
    let mut publisher = Client::named(&nexus, "p");
    publisher.publish("c", "still serving");
    assert_eq!(sub.recv(), receive("p", "c", "still serving"));
    nexus.signal("INT");
    assert_eq!(sub.expect_close(), (1000, "server shutdown".to_string()));
    assert_eq!(nexus.wait_exit().code(), Some(0));
}

/// In a container without a terminal standard input ends at once: the
/// nexus keeps serving and does not spin.
#[test]
fn end_of_stdin_is_not_a_shutdown() {
    let mut nexus = Nexus::start(&[]);
    nexus.close_stdin();
    nexus.wait_log(|l| l.contains("standard input closed"));
    let cpu_before = nexus.cpu_ticks();
    thread::sleep(Duration::from_secs(1));
    let cpu_used = nexus.cpu_ticks() - cpu_before;
    // Clock ticks are 1/100 s: a spinning core would use about 100.
    assert!(cpu_used < 50, "idle nexus used {cpu_used} ticks in 1 s");
    let mut sub = Client::named(&nexus, "sub");
    sub.subscribe("c");
    let mut publisher = Client::named(&nexus, "p");
    // Without the console, wait for the subscription by retrying.
    let mut got = None;
    for _ in 0..100 {
        publisher.publish("c", "hello");
        if let Some(common::Event::Text(t)) = sub.next_within(Duration::from_millis(50)) {
            got = Some(t);
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(receive("p", "c", "hello").as_str()));
    assert!(nexus.is_running());
    nexus.signal("TERM");
    assert_eq!(nexus.wait_exit().code(), Some(0));
}

/// Bytes the history holds for one short message (both frames under 126
/// bytes: a 2-byte WebSocket header each) plus its bookkeeping.
fn held_bytes(sender: &str, channel: &str, text: &str, offset: u64, epoch: &str) -> usize {
    let v1 = receive(sender, channel, text).len();
    let positional = Wire::ReceiveAt {
        sender,
        channel,
        text,
        offset,
        epoch,
    }
    .encode()
    .len();
    assert!(v1 < 126 && positional < 126);
    2 + v1 + 2 + positional + HELD_OVERHEAD
}

/// Console lines until the `channel "KEYWORD" has N subscribers:` header
/// and its N lines.
fn list_lines(nexus: &mut Nexus, keyword: &str) -> Vec<String> {
    nexus.console(&format!("list {keyword}"));
    let header = format!("channel {keyword:?} has ");
    let mut lines = nexus.output_until(|l| l.starts_with(&header));
    let count: usize = lines.last().unwrap()[header.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("subscriber count");
    lines.extend((0..count).map(|_| nexus.output_line()));
    lines
}

/// With `--history`, `list CHANNEL` of a channel with history starts with
/// where its history stands, from its home shard; every other line, and
/// the output for names without history, is the v1 output.
#[test]
fn list_keyword_shows_a_channel_history() {
    let mut nexus = Nexus::start(&["--history", "h/*"]);
    let home = home_shard("h/x", 2);
    let mut sub = Client::named(&nexus, "sub");
    sub.subscribe("h/x");
    nexus.wait_subscribers("h/x", 1);
    // A v1 subscription does not start a history: none held yet.
    let lines = list_lines(&mut nexus, "h/x");
    assert_eq!(
        lines[..3],
        [
            format!(
                "history of \"h/x\" on shard {home}: none held \
                 (a new epoch starts with the next publish or positions subscription)"
            ),
            "endpoint \"h/x\" listens to 0 channels:".to_string(),
            "channel \"h/x\" has 1 subscribers:".to_string(),
        ],
        "{lines:?}"
    );
    assert_eq!(lines.len(), 4, "{lines:?}");

    let mut publisher = Client::named(&nexus, "pub");
    for i in 1..=3 {
        publisher.publish("h/x", &format!("m{i}"));
    }
    for i in 1..=3 {
        assert_eq!(sub.recv(), receive("pub", "h/x", &format!("m{i}")));
    }
    // A positions client learns the epoch (and that the position is 3).
    let mut positions = Client::connect(&nexus);
    positions.send_wire(Wire::HelloWith {
        name: "pos",
        options: "positions",
    });
    positions.subscribe("h/x");
    let reply = positions.recv();
    let epoch = match parse(&reply) {
        Ok(Wire::Position {
            channel: "h/x",
            status: PositionStatus::Subscribed,
            offset: 3,
            epoch,
        }) => epoch.to_string(),
        other => panic!("expected 1p at 3, got {other:?} from {reply:?}"),
    };
    assert_eq!(epoch.len(), 12, "{epoch}");
    let bytes: usize = (1..=3)
        .map(|i| held_bytes("pub", "h/x", &format!("m{i}"), i, &epoch))
        .sum();
    nexus.wait_subscribers("h/x", 2);
    let lines = list_lines(&mut nexus, "h/x");
    assert_eq!(
        lines[..3],
        [
            format!(
                "history of \"h/x\" on shard {home}: position 3, epoch {epoch}, \
                 3 messages, {bytes} bytes held"
            ),
            "endpoint \"h/x\" listens to 0 channels:".to_string(),
            "channel \"h/x\" has 2 subscribers:".to_string(),
        ],
        "{lines:?}"
    );
    assert_eq!(lines.len(), 5, "{lines:?}");

    // An endpoint name, and a channel without history: the v1 lines only.
    let lines = list_lines(&mut nexus, "sub");
    assert_eq!(lines[0], "endpoint \"sub\" listens to 1 channels:");
    assert!(lines[1].starts_with("  \"h/x\"  [s"), "{lines:?}");
    assert_eq!(lines[2], "channel \"sub\" has 0 subscribers:");
    let lines = list_lines(&mut nexus, "c/plain");
    assert_eq!(
        lines,
        [
            "endpoint \"c/plain\" listens to 0 channels:",
            "channel \"c/plain\" has 0 subscribers:"
        ]
    );
    // `list` is unchanged.
    nexus.console("list");
    let lines = nexus.output_until(|l| l.starts_with("  shard 1:"));
    assert_eq!(
        lines[0],
        "3 clients identified (3 connected), 1 channels active"
    );
}
