//! Channel history shared through JetStream (`--nats` with `--history`,
//! a real `nats-server -js`): offsets stay contiguous per channel while two
//! nodes publish on it at once, and a node that never saw a channel
//! recovers a client from JetStream's window.
//!
//! Without `nats-server` the tests are skipped with a loud message, except
//! under CI (`CI=true`), where they fail.

mod common;
#[allow(dead_code)]
#[path = "common/nats.rs"]
mod nats;

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::{Client, Nexus};
use easechat_protocol::{parse, Message as Wire, PositionStatus};
use nats::{node_with, Nats};

const TTL: Duration = Duration::from_secs(300);

/// A nats-server with JetStream in a store of its own (removed on drop).
struct JetStream {
    nats: Nats,
    store: PathBuf,
}

impl Drop for JetStream {
    fn drop(&mut self) {
        self.nats.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn jetstream(tag: &str) -> Option<JetStream> {
    let store = std::env::temp_dir().join(format!("easechat-js-{tag}-{}", std::process::id()));
    let nats = Nats::start_with(&["-js", "-sd", &store.display().to_string()])?;
    Some(JetStream { nats, store })
}

/// A node with history on `h/*`, once its history is shared.
fn history_node(js: &JetStream, name: &str) -> Nexus {
    let mut node = node_with(&js.nats, name, &["--history", "h/*"]);
    node.wait_log(|l| l.contains("shared through JetStream"));
    node
}

fn positions_client(node: &Nexus, name: &str) -> Client {
    let mut client = Client::connect(node);
    client.send_wire(Wire::HelloWith {
        name,
        options: "positions",
    });
    client
}

/// Every positional `1r` a client receives until `count` arrived:
/// (offset, epoch, text).
fn receive_at(client: &mut Client, count: usize) -> Vec<(u64, String, String)> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = client.recv();
        match parse(&frame).expect("a valid frame") {
            Wire::ReceiveAt {
                offset,
                epoch,
                text,
                ..
            } => got.push((offset, epoch.to_string(), text.to_string())),
            Wire::Position { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

#[test]
fn offsets_stay_contiguous_while_two_nodes_publish_on_one_channel() {
    let Some(js) = jetstream("contend") else {
        return;
    };
    let a = history_node(&js, "a");
    let b = history_node(&js, "b");
    let mut watcher = positions_client(&a, "watcher");
    watcher.send_wire(Wire::Subscribe {
        channel: "h/race",
        ttl: TTL,
    });
    let _ = watcher.recv(); // 1p
    thread::sleep(Duration::from_millis(200));
    const EACH: usize = 300;
    let publishers: Vec<_> = [&a, &b]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut client = Client::named(node, &format!("pub{i}"));
            thread::spawn(move || {
                for n in 0..EACH {
                    client.publish("h/race", &format!("p{i} {n}"));
                }
                client
            })
        })
        .collect();
    let got = receive_at(&mut watcher, 2 * EACH);
    for p in publishers {
        drop(p.join().unwrap());
    }
    let offsets: Vec<u64> = got.iter().map(|(o, _, _)| *o).collect();
    let first = offsets[0];
    let expected: Vec<u64> = (first..first + 2 * EACH as u64).collect();
    assert_eq!(offsets, expected, "offsets numbered by two nodes at once");
    assert!(got.iter().all(|(_, e, _)| *e == got[0].1), "one epoch");
    // Each publisher's own order holds.
    for i in 0..2 {
        let mine: Vec<usize> = got
            .iter()
            .filter_map(|(_, _, t)| {
                t.strip_prefix(&format!("p{i} "))
                    .map(|n| n.parse().unwrap())
            })
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "publisher {i}'s order");
    }
}

#[test]
fn a_node_that_never_saw_the_channel_recovers_from_jetstream() {
    let Some(js) = jetstream("window") else {
        return;
    };
    let a = history_node(&js, "a");
    let mut first = positions_client(&a, "reader");
    first.send_wire(Wire::Subscribe {
        channel: "h/late",
        ttl: TTL,
    });
    let _ = first.recv(); // 1p
    let mut publisher = Client::named(&a, "pub");
    thread::sleep(Duration::from_millis(200));
    for n in 1..=20 {
        publisher.publish("h/late", &format!("m{n}"));
    }
    let got = receive_at(&mut first, 20);
    let (tenth, epoch) = (got[9].0, got[9].1.clone());
    drop(first);
    // A node started after all of it: its mirror never saw the channel.
    let b = history_node(&js, "b");
    let mut again = positions_client(&b, "reader");
    again.send_wire(Wire::Recover {
        channel: "h/late",
        ttl: TTL,
        offset: tenth,
        epoch: &epoch,
    });
    let top = got[19].0;
    assert_eq!(
        again.recv(),
        Wire::Position {
            channel: "h/late",
            status: PositionStatus::Recovered,
            offset: top,
            epoch: &epoch,
        }
        .encode()
    );
    let replay = receive_at(&mut again, 10);
    let texts: Vec<&str> = replay.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        (11..=20).map(|n| format!("m{n}")).collect::<Vec<_>>()
    );
    assert_eq!(replay[0].0, tenth + 1);
    // Then live ones, numbered on from there, published on either node.
    publisher.publish("h/late", "m21");
    let live = receive_at(&mut again, 1);
    assert_eq!((live[0].0, live[0].2.as_str()), (top + 1, "m21"));
    // A position from another epoch does not recover there either.
    let mut stranger = positions_client(&b, "stranger");
    stranger.send_wire(Wire::Recover {
        channel: "h/late",
        ttl: TTL,
        offset: 3,
        epoch: "000000000000",
    });
    assert_eq!(
        stranger.recv(),
        Wire::Position {
            channel: "h/late",
            status: PositionStatus::NotRecovered,
            offset: top + 1,
            epoch: &epoch,
        }
        .encode()
    );
}
