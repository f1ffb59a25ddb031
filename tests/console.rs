//! The operator console through the process's standard input, and graceful
//! stops by `stop`, SIGTERM and a double Ctrl-C.

mod common;

use std::thread;
use std::time::Duration;

use common::{receive, Client, Nexus};

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
