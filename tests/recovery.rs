//! History and recovery (`--history`, the positions extension of
//! docs/protocol.md) through a real nexus with two shards: the exact reply
//! for every row of the recovery table, v1 clients' bytes unchanged, and a
//! storm of reconnecting clients that sees no gap and no duplicate.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{receive, Client, Event, Nexus, PATIENCE};
use easechat_protocol::{parse, Message as Wire, PositionStatus};

const TTL: Duration = Duration::from_secs(300);

/// A client that asked for positions, named `name`, on `shard`.
fn positions_client(nexus: &mut Nexus, name: &str, shard: usize) -> Client {
    for _ in 0..64 {
        let mut client = Client::connect(nexus);
        client.send_wire(Wire::HelloWith {
            name,
            options: "positions",
        });
        if nexus.shard_of(client.local_addr()) == shard {
            return client;
        }
    }
    panic!("never landed on shard {shard}");
}

/// `1p` as the nexus must send it.
fn position(channel: &str, status: PositionStatus, offset: u64, epoch: &str) -> String {
    Wire::Position {
        channel,
        status,
        offset,
        epoch,
    }
    .encode()
}

/// A positional `1r` as the nexus must send it.
fn receive_at(sender: &str, channel: &str, text: &str, offset: u64, epoch: &str) -> String {
    Wire::ReceiveAt {
        sender,
        channel,
        text,
        offset,
        epoch,
    }
    .encode()
}

/// Subscribes from `(offset, epoch)`.
fn recover(client: &mut Client, channel: &str, offset: u64, epoch: &str) {
    client.send_wire(Wire::Recover {
        channel,
        ttl: TTL,
        offset,
        epoch,
    });
}

/// The epoch of a `1p` frame.
fn epoch_of(frame: &str) -> String {
    match parse(frame) {
        Ok(Wire::Position { epoch, .. }) => epoch.to_string(),
        other => panic!("expected 1p, got {other:?} from {frame:?}"),
    }
}

#[test]
fn every_row_of_the_recovery_table_gets_its_exact_reply() {
    let mut nexus = Nexus::start(&[
        "--history",
        "h/*",
        "--history-size",
        "3",
        "--recover-max",
        "4",
    ]);
    for shard in 0..2 {
        let channel = format!("h/table{shard}");
        let channel = channel.as_str();
        let mut first = positions_client(&mut nexus, "first", shard);
        let mut v1 = Client::named(&nexus, "v1");
        v1.subscribe(channel);
        first.subscribe(channel);
        // Empty history: a new epoch at offset 0.
        let reply = first.recv();
        let epoch = epoch_of(&reply);
        assert_eq!(
            reply,
            position(channel, PositionStatus::Subscribed, 0, &epoch)
        );
        nexus.wait_subscribers(channel, 2);
        let mut publisher = Client::named(&nexus, "pub");
        for i in 1..=10 {
            publisher.publish(channel, &format!("m{i}"));
        }
        for i in 1..=10 {
            let text = format!("m{i}");
            assert_eq!(first.recv(), receive_at("pub", channel, &text, i, &epoch));
            // A v1 subscriber of the same channel: v1 bytes, unchanged.
            assert_eq!(v1.recv(), receive("pub", channel, &text));
        }
        // History holds 8..=10; one recovery may replay 4.
        let rows: [(&str, u64, &str, PositionStatus, &[u64]); 7] = [
            ("same position", 10, &epoch, PositionStatus::Recovered, &[]),
            (
                "from a position",
                7,
                &epoch,
                PositionStatus::Recovered,
                &[8, 9, 10],
            ),
            ("evicted", 6, &epoch, PositionStatus::NotRecovered, &[]),
            (
                "limit exceeded",
                5,
                &epoch,
                PositionStatus::NotRecovered,
                &[],
            ),
            ("future", 11, &epoch, PositionStatus::NotRecovered, &[]),
            (
                "wrong epoch",
                9,
                "0000feedbeef",
                PositionStatus::NotRecovered,
                &[],
            ),
            ("empty offset", 0, &epoch, PositionStatus::NotRecovered, &[]),
        ];
        for (row, offset, asked_epoch, status, replay) in rows {
            for home_or_not in 0..2 {
                let mut client = positions_client(&mut nexus, "late", home_or_not);
                recover(&mut client, channel, offset, asked_epoch);
                assert_eq!(
                    client.recv(),
                    position(channel, status, 10, &epoch),
                    "{row}, client on shard {home_or_not}"
                );
                for &i in replay {
                    let text = format!("m{i}");
                    assert_eq!(
                        client.recv(),
                        receive_at("pub", channel, &text, i, &epoch),
                        "{row}"
                    );
                }
                // Then live ones, nothing in between.
                publisher.publish("h/other", "elsewhere");
                client.expect_silence(Duration::from_millis(50));
            }
        }
        // Live messages follow a recovery at the next offset.
        let mut client = positions_client(&mut nexus, "live", 1 - shard);
        recover(&mut client, channel, 9, &epoch);
        assert_eq!(
            client.recv(),
            position(channel, PositionStatus::Recovered, 10, &epoch)
        );
        assert_eq!(client.recv(), receive_at("pub", channel, "m10", 10, &epoch));
        nexus.wait_subscribers(channel, 3);
        publisher.publish(channel, "m11");
        assert_eq!(client.recv(), receive_at("pub", channel, "m11", 11, &epoch));
        assert_eq!(v1.recv(), receive("pub", channel, "m11"));
    }
    // Empty history: a recovery from where the channel stands (offset 0
    // of its epoch) recovers nothing, and the first message is offset 1.
    let mut watcher = positions_client(&mut nexus, "watcher", 0);
    watcher.subscribe("h/empty");
    let reply = watcher.recv();
    let empty_epoch = epoch_of(&reply);
    assert_eq!(
        reply,
        position("h/empty", PositionStatus::Subscribed, 0, &empty_epoch)
    );
    for shard in 0..2 {
        let mut client = positions_client(&mut nexus, "empty", shard);
        recover(&mut client, "h/empty", 0, &empty_epoch);
        assert_eq!(
            client.recv(),
            position("h/empty", PositionStatus::Recovered, 0, &empty_epoch),
            "empty history, client on shard {shard}"
        );
        client.expect_silence(Duration::from_millis(50));
    }
    // A channel without history: not recovered, epoch "", offset 0.
    let mut client = positions_client(&mut nexus, "plain", 0);
    recover(&mut client, "x/none", 3, "abc");
    assert_eq!(
        client.recv(),
        position("x/none", PositionStatus::NotRecovered, 0, "")
    );
    // And its messages are plain v1 frames.
    nexus.wait_subscribers("x/none", 1);
    Client::named(&nexus, "pub").publish("x/none", "hello");
    assert_eq!(client.recv(), receive("pub", "x/none", "hello"));
}

#[test]
fn v1_clients_see_no_extension_and_get_v1_errors_for_its_messages() {
    let mut nexus = Nexus::start(&["--history", "*"]);
    // A v1 client on a channel with history: v1 frames, no 1p.
    let mut v1 = Client::named(&nexus, "v1");
    v1.subscribe("h/a");
    nexus.wait_subscribers("h/a", 1);
    let mut publisher = Client::named(&nexus, "pub");
    publisher.publish("h/a", "one");
    assert_eq!(v1.recv(), "1r|3|pub|3|h/a|3|one");
    v1.expect_silence(Duration::from_millis(50));
    // The extension's 1c from a client that did not ask for positions is
    // what it was in v1: bytes after the last field.
    v1.send("1c|3|h/a|300|0|5|2|ep");
    assert_eq!(
        v1.expect_close(),
        (
            1002,
            "malformed message: bytes left after the last field".into()
        )
    );
    let mut other = Client::named(&nexus, "other");
    other.send("1p|3|h/a|0|0|0|");
    assert_eq!(other.expect_close(), (1002, "unknown message kind".into()));
    let mut third = Client::named(&nexus, "third");
    third.send("1r|1|a|1|b|1|c|4|2|ep");
    assert_eq!(
        third.expect_close(),
        (
            1002,
            "malformed message: bytes left after the last field".into()
        )
    );
}

/// What one storm client saw: every offset, in order, across its reconnects.
struct Seen {
    offsets: Vec<u64>,
    epoch: String,
}

#[test]
fn a_recovery_storm_has_no_gap_and_no_duplicate_at_any_seam() {
    const CLIENTS: usize = 200;
    const CHANNELS: usize = 4;
    let nexus = Nexus::start(&[
        "--history",
        "storm/*",
        "--history-size",
        "100000",
        "--recover-max",
        "100000",
    ]);
    let url = nexus.url();
    let publishing = Arc::new(AtomicBool::new(true));
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (url, start, publishing) = (url.clone(), start.clone(), publishing.clone());
        clients.push(thread::spawn(move || {
            let channel = format!("storm/{}", i % CHANNELS);
            storm_client(&url, &format!("c{i}"), &channel, i, &start, &publishing)
        }));
    }
    // Two publishers on every channel, in turn, while the clients come and go.
    let mut publishers: Vec<Client> = (0..2)
        .map(|p| Client::named(&nexus, &format!("pub{p}")))
        .collect();
    start.wait();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            for c in 0..CHANNELS {
                publisher.publish(&format!("storm/{c}"), &format!("p{p} {sent}"));
            }
        }
        sent += 1;
        thread::sleep(Duration::from_micros(500));
    }
    // Each publisher's last message on every channel is "end": a client
    // finishes after both (the home shard may number them either way).
    for publisher in &mut publishers {
        for c in 0..CHANNELS {
            publisher.publish(&format!("storm/{c}"), "end");
        }
    }
    publishing.store(false, Ordering::Relaxed);
    let mut recovered_seams = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let (seen, seams) = client.join().expect("storm client");
        recovered_seams += seams;
        let first = seen.offsets[0];
        let expected: Vec<u64> = (first..first + seen.offsets.len() as u64).collect();
        assert_eq!(
            seen.offsets, expected,
            "client {i} (epoch {}): a gap or a duplicate",
            seen.epoch
        );
        // Every channel carried 2 × sent + 2 messages.
        assert_eq!(
            *seen.offsets.last().unwrap(),
            2 * sent + 2,
            "client {i} missed the end"
        );
    }
    assert!(
        recovered_seams >= CLIENTS,
        "every client recovered at least once"
    );
}

/// Subscribes, reads a while, drops the connection, waits (messages go on),
/// reconnects from its last position — three times — then reads to the end.
fn storm_client(
    url: &str,
    name: &str,
    channel: &str,
    seed: usize,
    start: &Barrier,
    publishing: &AtomicBool,
) -> (Seen, usize) {
    let mut seen = Seen {
        offsets: Vec::new(),
        epoch: String::new(),
    };
    let mut seams = 0;
    let mut ends = 0;
    start.wait();
    for round in 0..4 {
        let mut client = Client::connect_addr(
            url.trim_start_matches("ws://")
                .trim_end_matches('/')
                .parse()
                .unwrap(),
        );
        client.send_wire(Wire::HelloWith {
            name,
            options: "positions",
        });
        match seen.offsets.last() {
            None => client.send_wire(Wire::Subscribe { channel, ttl: TTL }),
            Some(&last) => recover(&mut client, channel, last, &seen.epoch.clone()),
        }
        let until =
            Instant::now() + Duration::from_millis(100 + (seed * 37 + round * 101) as u64 % 400);
        let last_round = round == 3;
        loop {
            let wait = if last_round {
                PATIENCE
            } else {
                until.saturating_duration_since(Instant::now())
            };
            if !last_round && wait.is_zero() {
                break;
            }
            let Some(event) = client.next_within(wait) else {
                if last_round {
                    panic!("{name}: nothing within {PATIENCE:?} before the end");
                }
                break;
            };
            let Event::Text(frame) = event else {
                panic!("{name}: closed: {event:?}");
            };
            match parse(&frame).expect("a valid frame") {
                Wire::Position {
                    status,
                    offset,
                    epoch,
                    ..
                } => match status {
                    PositionStatus::Subscribed => {
                        seen.epoch = epoch.to_string();
                        seen.offsets.push(offset);
                    }
                    PositionStatus::Recovered => {
                        assert_eq!(epoch, seen.epoch, "{name}: epoch changed");
                        seams += 1;
                    }
                    PositionStatus::NotRecovered => panic!(
                        "{name}: not recovered from {:?}, channel at {offset}",
                        seen.offsets.last()
                    ),
                },
                Wire::ReceiveAt {
                    offset,
                    epoch,
                    text,
                    ..
                } => {
                    assert_eq!(epoch, seen.epoch);
                    seen.offsets.push(offset);
                    ends += usize::from(text == "end");
                    if ends == 2 {
                        // The first entry was the 1p's starting point.
                        seen.offsets.remove(0);
                        return (seen, seams);
                    }
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        drop(client);
        if publishing.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(
                (seed as u64 * 13 + round as u64 * 7) % 120,
            ));
        }
    }
    unreachable!()
}
