//! Write coalescing through a real two-shard nexus: however the flusher
//! groups frames into sends (at once, or after its adaptive delay), every
//! subscriber gets every message, once, in each publisher's order, and a
//! subscriber that stops reading holds up nobody else.

mod common;

use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{http_get, receive, Client, Nexus};

/// The load of the order tests: small enough for a debug build.
const LIGHT: Load = Load {
    publishers: 4,
    messages: 400,
    subscribers: 40,
};

/// Publishers, messages each, subscribers.
#[derive(Clone, Copy)]
struct Load {
    publishers: usize,
    messages: usize,
    subscribers: usize,
}

/// Concurrent publishers, so frames pile up and sends carry many of them.
#[test]
fn concurrent_publishers_keep_order_with_the_default_delay() {
    fan_in(&[], LIGHT);
}

/// The same with the delay at its largest bound.
#[test]
fn concurrent_publishers_keep_order_with_the_largest_delay() {
    fan_in(&["--coalesce-max-us", "100000"], LIGHT);
}

/// Enough sustained fan-out that the shards' flushers are busy and frames
/// pile up: rounds wait and are written in paced slices, and still every
/// subscriber gets every message, once, in order.
#[test]
fn a_busy_shard_paces_its_rounds_and_keeps_order() {
    let load = Load {
        publishers: 8,
        messages: 1500,
        subscribers: 300,
    };
    let paced = fan_in(&[], load);
    assert!(paced > 0, "no round waited under sustained fan-out");
}

/// Without the io_uring batches (`--plain-sends`) outboxes are copied into
/// one buffer and written with one `send()` each, instead of their ranges
/// being gathered straight from the shard's chunks: the same order.
#[test]
fn concurrent_publishers_keep_order_with_plain_sends() {
    fan_in(&["--plain-sends"], LIGHT);
}

/// The same with the delay off: rounds are still written once each.
#[test]
fn concurrent_publishers_keep_order_without_delay() {
    assert_eq!(
        fan_in(&["--coalesce-max-us", "0"], LIGHT),
        0,
        "with no delay no round waits"
    );
}

/// Returns how many write rounds waited to coalesce (paced rounds).
fn fan_in(args: &[&str], load: Load) -> u64 {
    let Load {
        publishers,
        messages,
        subscribers,
    } = load;
    let mut nexus = Nexus::start(&[args, &["--metrics", "127.0.0.1:0"]].concat());
    let clients: Vec<Client> = (0..subscribers)
        .map(|i| {
            let mut c = Client::named(&nexus, &format!("s{i}"));
            c.subscribe("fan");
            c
        })
        .collect();
    nexus.wait_subscribers("fan", subscribers);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                let mut next = vec![0usize; publishers];
                for _ in 0..publishers * messages {
                    let text = c.recv();
                    let (p, seq) = parse(&text);
                    assert_eq!(seq, next[p], "publisher {p} out of order: {text}");
                    next[p] += 1;
                }
                c.expect_silence(Duration::from_millis(100));
            })
        })
        .collect();
    let publishers: Vec<_> = (0..publishers)
        .map(|p| {
            let mut publisher = Client::named(&nexus, &format!("p{p}"));
            thread::spawn(move || {
                for seq in 0..messages {
                    publisher.publish("fan", &format!("{p}:{seq}"));
                }
                // Keep the connection until the readers are done.
                publisher
            })
        })
        .collect();
    let _publishers: Vec<Client> = publishers.into_iter().map(|p| p.join().unwrap()).collect();
    for reader in readers {
        reader
            .join()
            .expect("every subscriber got every message, once, in order");
    }
    let (_, body) = http_get(nexus.metrics_addr(), "/metrics");
    body.lines()
        .filter(|l| l.starts_with("easechat_coalesced_rounds_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `1r|2|p0|3|fan|<len>|<p>:<seq>` → (p, seq).
fn parse(text: &str) -> (usize, usize) {
    let body = text.rsplit('|').next().expect("a text field");
    let (p, seq) = body.split_once(':').expect("p:seq");
    (p.parse().unwrap(), seq.parse().unwrap())
}

/// A subscriber that stops reading fills its socket: its writes wait on
/// their own (the flusher moves on) while the other subscriber gets every
/// message in order; once it reads again it gets everything, in order.
#[test]
fn a_subscriber_that_stops_reading_delays_nobody() {
    const COUNT: usize = 6_000;
    // A large outbox bound: the paused subscriber is not closed as slow.
    let mut nexus = Nexus::start(&["--max-outbox-bytes", "67108864"]);
    let mut paused = Client::named(&nexus, "paused");
    paused.subscribe("big");
    let mut reader = Client::named(&nexus, "reader");
    reader.subscribe("big");
    nexus.wait_subscribers("big", 2);
    let text = "x".repeat(1000);
    let expected = move |seq: usize| receive("p", "big", &format!("{seq}:{}", "x".repeat(1000)));
    let mut publisher = Client::named(&nexus, "p");
    let reading = thread::spawn(move || {
        for seq in 0..COUNT {
            assert_eq!(reader.recv(), expected(seq), "message {seq}");
        }
    });
    for seq in 0..COUNT {
        publisher.publish("big", &format!("{seq}:{text}"));
    }
    reading
        .join()
        .expect("the reading subscriber got everything in order");
    // 6 MB is more than loopback socket buffers hold: the paused
    // subscriber's writes had to wait for room.
    for seq in 0..COUNT {
        assert_eq!(
            paused.recv(),
            expected(seq),
            "paused subscriber, message {seq}"
        );
    }
    paused.expect_silence(Duration::from_millis(50));
}

/// A delay bound past the cap is refused with a clear error.
#[test]
fn a_delay_bound_past_the_cap_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_ease_chat_nexus"))
        .args(["127.0.0.1:0", "--coalesce-max-us", "100001"])
        .output()
        .expect("run the nexus");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--coalesce-max-us must be at most 100000"),
        "{stderr}"
    );
}
