//! Bad input ends only the connection that sent it, with the close code the
//! protocol gives; a bystander on the same nexus is served afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{receive, Bystander, Client, Nexus};
use ease_chat_nexus::protocol::Message as Wire;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

fn assert_closed_with(nexus: &Nexus, send: impl FnOnce(&mut Client), code: u16, reason_part: &str) {
    let mut client = Client::connect(nexus);
    send(&mut client);
    let (got_code, reason) = client.expect_close();
    assert_eq!(got_code, code, "reason was {reason:?}");
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} lacks {reason_part:?}"
    );
}

#[test]
fn every_error_row_closes_only_the_offender() {
    let mut nexus = Nexus::start(&[]);
    let mut bystander = Bystander::new(&mut nexus);
    let protocol_errors = [
        ("2h|1|a", "version"),
        ("1x|1|a", "unknown message kind"),
        ("1h12|abcdef123456", "expected '|'"),
        ("1h|1a|a", "non-digit"),
        ("1h|99999999999999999999|a", "overflows"),
        ("1h|5|abc", "past the end"),
        ("1h|1|你", "splits a UTF-8 character"),
        ("1h|2|abc", "left after the last field"),
        ("", "empty message"),
    ];
    for (text, reason) in protocol_errors {
        assert_closed_with(&nexus, |c| c.send(text), 1002, reason);
        bystander.still_served();
    }
    // 1c and 1t before 1h.
    assert_closed_with(
        &nexus,
        |c| c.subscribe("watch"),
        1008,
        "connection unidentified",
    );
    bystander.still_served();
    assert_closed_with(
        &nexus,
        |c| c.publish("watch", "x"),
        1008,
        "connection unidentified",
    );
    bystander.still_served();
    // A binary frame.
    assert_closed_with(&nexus, |c| c.send_binary(b"1h|1|a"), 1003, "binary");
    bystander.still_served();
    // Invalid UTF-8 in a text frame (a raw frame: the client API would refuse).
    assert_closed_with(
        &nexus,
        |c| {
            c.send_frame(Frame::message(
                vec![b'1', b'h', 0xff, 0xfe],
                OpCode::Data(Data::Text),
                true,
            ))
        },
        1007,
        "UTF-8",
    );
    bystander.still_served();
    // A 1r from a client is ignored; the connection carries on.
    let mut odd = Client::named(&nexus, "odd");
    odd.send("1r|1|a|1|b|1|c");
    odd.subscribe("watch");
    nexus.wait_subscribers("watch", 2);
    bystander.still_served();
    let last = format!("round {}", bystander.round);
    assert_eq!(odd.recv(), receive("watcher", "watch", &last));
    // The errors are logged with their close codes.
    nexus.wait_log(|l| l.contains("connection closed by nexus") && l.contains("code=1007"));
}

#[test]
fn disconnect_closes_with_1000_and_the_reason() {
    let nexus = Nexus::start(&[]);
    assert_closed_with(&nexus, |c| c.send("1d|11|just logout"), 1000, "just logout");
    // The close-reason limit is 123 bytes, cut at a character boundary.
    let long = "é".repeat(100);
    let mut client = Client::connect(&nexus);
    client.send_wire(Wire::Disconnect { reason: &long });
    let (code, reason) = client.expect_close();
    assert_eq!(code, 1000);
    assert_eq!(reason, "é".repeat(61));
}

#[test]
fn size_and_count_limits_close_with_clear_codes() {
    let mut nexus = Nexus::start(&[
        "--max-message-bytes",
        "1024",
        "--max-subscriptions",
        "2",
        "--max-name-bytes",
        "16",
    ]);
    let mut bystander = Bystander::new(&mut nexus);
    let big = "x".repeat(2_000);
    assert_closed_with(&nexus, |c| c.hello(&big), 1009, "too big");
    bystander.still_served();
    // A 1t that fits but whose 1r (with the sender's name) would not.
    let text = "y".repeat(1_000);
    assert_closed_with(
        &nexus,
        |c| {
            c.hello(&"n".repeat(16));
            c.publish("watch", &text);
        },
        1009,
        "would exceed 1024",
    );
    bystander.still_served();
    assert_closed_with(
        &nexus,
        |c| {
            c.hello("greedy");
            c.subscribe("a");
            c.subscribe("b");
            c.subscribe("a"); // renewal does not count
            c.subscribe("c");
        },
        1008,
        "too many subscriptions",
    );
    bystander.still_served();
    assert_closed_with(
        &nexus,
        |c| c.hello(&"n".repeat(17)),
        1008,
        "name too long: 17 bytes, limit 16",
    );
    bystander.still_served();
    assert_closed_with(
        &nexus,
        |c| {
            c.hello("ok");
            c.subscribe(&"c".repeat(17));
        },
        1008,
        "channel name too long",
    );
    bystander.still_served();
}

#[test]
fn bad_upgrades_get_an_http_error_and_slow_ones_time_out() {
    let mut nexus = Nexus::start(&["--handshake-timeout", "1"]);
    let mut bystander = Bystander::new(&mut nexus);
    let mut plain = TcpStream::connect(nexus.addr).unwrap();
    plain.set_read_timeout(Some(common::PATIENCE)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    bystander.still_served();

    let started = Instant::now();
    let mut idle = TcpStream::connect(nexus.addr).unwrap();
    idle.set_read_timeout(Some(common::PATIENCE)).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() < common::PATIENCE);
    nexus.wait_log(|l| l.contains("handshake timed out"));
    bystander.still_served();
}

/// A subscriber that stops reading is closed with 1008 "slow consumer";
/// the other subscribers receive every message.
#[test]
fn slow_consumer_is_closed_and_others_are_whole() {
    // 40 MB: more than the kernel's socket buffers (a few MB each way) plus
    // the default 1 MiB outbox bound, so the subscriber that never reads
    // overflows while the one that reads keeps up.
    const MESSAGES: usize = 5_000;
    let mut nexus = Nexus::start(&[]);
    let mut slow = Client::named(&nexus, "slow");
    slow.subscribe("firehose");
    let mut good = Client::named(&nexus, "good");
    good.subscribe("firehose");
    nexus.wait_subscribers("firehose", 2);
    // The publisher stays at most WINDOW messages ahead of the reading
    // subscriber, so only the one that never reads can overflow, however
    // slow the machine.
    const WINDOW: usize = 32;
    let received = Arc::new(AtomicUsize::new(0));
    let progress = received.clone();
    let reader = thread::spawn(move || {
        for seq in 0..MESSAGES {
            let text = good.recv();
            assert!(
                text.ends_with(&format!("|{seq:06}{}", "z".repeat(8_000))),
                "message {seq} out of order or missing"
            );
            progress.store(seq + 1, Ordering::Release);
        }
        good
    });
    let mut publisher = Client::named(&nexus, "p");
    for seq in 0..MESSAGES {
        while seq >= received.load(Ordering::Acquire) + WINDOW {
            assert!(!reader.is_finished(), "reader stopped early");
            thread::sleep(Duration::from_micros(200));
        }
        publisher.publish("firehose", &format!("{seq:06}{}", "z".repeat(8_000)));
    }
    let mut good = reader.join().expect("the good subscriber got everything");
    nexus.wait_log(|l| l.contains("closing slow consumer"));
    let (code, reason) = slow.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    // The nexus and the good subscriber carry on.
    publisher.publish("firehose", "after");
    assert_eq!(good.recv(), receive("p", "firehose", "after"));
    nexus.wait_subscribers("firehose", 1);
}

trait RawFrames {
    fn send_frame(&mut self, frame: Frame);
}

impl RawFrames for Client {
    fn send_frame(&mut self, frame: Frame) {
        self.send_message(Message::Frame(frame));
    }
}
