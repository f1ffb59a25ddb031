//! Fan-out through a real two-shard nexus: cross-shard delivery, sender
//! exclusion, time to live, and per-publisher order.

mod common;

use std::thread;
use std::time::Duration;

use common::{receive, Client, Nexus};

/// Subscribers on both shards all receive a publish exactly once.
#[test]
fn publishes_reach_subscribers_on_every_shard() {
    let mut nexus = Nexus::start(&[]);
    let mut subscribers: Vec<Client> = (0..50)
        .map(|i| {
            let mut c = Client::named(&nexus, &format!("sub-{i}"));
            c.subscribe("c/lobby");
            c
        })
        .collect();
    let subs = nexus.wait_subscribers("c/lobby", 50);
    // Prove both shards hold subscribers: the console names each one's shard.
    let on_shard_0 = subs.iter().filter(|l| l.contains("[s0#")).count();
    let on_shard_1 = subs.iter().filter(|l| l.contains("[s1#")).count();
    assert!(on_shard_0 > 0 && on_shard_1 > 0, "{subs:#?}");
    assert_eq!(on_shard_0 + on_shard_1, 50);
    nexus.console("list");
    let summary = nexus.output_until(|l| l.starts_with("  shard 1:"));
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("51 clients identified")
                || l.starts_with("50 clients identified")),
        "{summary:?}"
    );

    let mut publisher = Client::named(&nexus, "alice");
    publisher.publish("c/lobby", "helloworld");
    for sub in &mut subscribers {
        assert_eq!(sub.recv(), receive("alice", "c/lobby", "helloworld"));
        sub.expect_silence(Duration::ZERO);
    }
    subscribers[0].expect_silence(Duration::from_millis(100));
}

/// A sender never hears itself, nor any connection with the same name.
#[test]
fn connections_named_like_the_sender_are_skipped() {
    let mut nexus = Nexus::start(&[]);
    let mut alice = Client::named(&nexus, "alice");
    alice.subscribe("c");
    let mut alice_twin = Client::named(&nexus, "alice");
    alice_twin.subscribe("c");
    let mut bob = Client::named(&nexus, "bob");
    bob.subscribe("c");
    nexus.wait_subscribers("c", 3);
    alice.publish("c", "hi");
    assert_eq!(bob.recv(), receive("alice", "c", "hi"));
    alice.expect_silence(Duration::from_millis(200));
    alice_twin.expect_silence(Duration::from_millis(50));
    // Renaming changes who is excluded.
    alice_twin.hello("carol");
    bob.publish("c", "yo");
    assert_eq!(alice.recv(), receive("bob", "c", "yo"));
    assert_eq!(alice_twin.recv(), receive("bob", "c", "yo"));
    alice.publish("c", "again");
    assert_eq!(alice_twin.recv(), receive("alice", "c", "again"));
    assert_eq!(bob.recv(), receive("alice", "c", "again"));
}

/// Strings with `|`, newlines and multi-byte characters arrive verbatim.
#[test]
fn strings_are_delivered_byte_for_byte() {
    let mut nexus = Nexus::start(&[]);
    let mut sub = Client::named(&nexus, "s");
    sub.subscribe("c|你");
    nexus.wait_subscribers("c|你", 1);
    let mut publisher = Client::named(&nexus, "名|字");
    publisher.send("1t|5|c|你|10|你好|x\ny");
    assert_eq!(sub.recv(), "1r|7|名|字|5|c|你|10|你好|x\ny");
    publisher.send("1t|5|c|你|0|");
    assert_eq!(sub.recv(), "1r|7|名|字|5|c|你|0|");
}

/// TTL expiry, renewal replacing the expiry, and `0|0` unsubscribing.
#[test]
fn subscriptions_expire_renew_and_end() {
    let mut nexus = Nexus::start(&[]);
    let mut short = Client::named(&nexus, "short");
    short.subscribe_ttl("c", 1, 0);
    let mut renewed = Client::named(&nexus, "renewed");
    renewed.subscribe_ttl("c", 0, 800_000_000);
    let mut leaver = Client::named(&nexus, "leaver");
    leaver.subscribe("c");
    nexus.wait_subscribers("c", 3);
    let mut publisher = Client::named(&nexus, "pub");

    publisher.publish("c", "one");
    for c in [&mut short, &mut renewed, &mut leaver] {
        assert_eq!(c.recv(), receive("pub", "c", "one"));
    }
    renewed.subscribe_ttl("c", 30, 0);
    leaver.subscribe_ttl("c", 0, 0);
    nexus.wait_subscribers("c", 2);
    thread::sleep(Duration::from_millis(1_300));
    publisher.publish("c", "two");
    assert_eq!(renewed.recv(), receive("pub", "c", "two"));
    short.expect_silence(Duration::from_millis(300));
    leaver.expect_silence(Duration::from_millis(50));
    // Expired entries are purged, not just hidden: the channel lists one.
    let subs = nexus.wait_subscribers("c", 1);
    assert!(subs[0].contains("\"renewed\""), "{subs:?}");
    let (endpoint, _) = nexus.list_keyword("short");
    assert!(endpoint.is_empty(), "{endpoint:?}");
}

/// 1,000 messages to 50 subscribers arrive complete and in order.
#[test]
fn a_burst_keeps_per_publisher_order() {
    burst(&[]);
}

/// The same through one-slot rings: a full ring makes the publisher wait,
/// and nothing is dropped or reordered on the way to the other shard.
#[test]
fn a_burst_through_full_rings_loses_nothing() {
    burst(&["--ring-size", "1"]);
}

fn burst(args: &[&str]) {
    const MESSAGES: usize = 1_000;
    const SUBSCRIBERS: usize = 50;
    let mut nexus = Nexus::start(args);
    let subscribers: Vec<Client> = (0..SUBSCRIBERS)
        .map(|i| {
            let mut c = Client::named(&nexus, &format!("s{i}"));
            c.subscribe("burst");
            c
        })
        .collect();
    nexus.wait_subscribers("burst", SUBSCRIBERS);
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                for seq in 0..MESSAGES {
                    assert_eq!(c.recv(), receive("p", "burst", &format!("m{seq}")));
                }
                c.expect_silence(Duration::from_millis(100));
            })
        })
        .collect();
    let mut publisher = Client::named(&nexus, "p");
    for seq in 0..MESSAGES {
        publisher.publish("burst", &format!("m{seq}"));
    }
    for reader in readers {
        reader
            .join()
            .expect("every subscriber got every message in order");
    }
}

/// Closing a connection removes its subscriptions, and only its own.
#[test]
fn closing_removes_only_own_subscriptions() {
    let mut nexus = Nexus::start(&[]);
    let mut stays = Client::named(&nexus, "stays");
    stays.subscribe("c");
    let mut goes = Client::named(&nexus, "goes");
    goes.subscribe("c");
    goes.subscribe("other");
    nexus.wait_subscribers("c", 2);
    goes.send("1d|3|bye");
    assert_eq!(goes.expect_close(), (1000, "bye".to_string()));
    nexus.wait_subscribers("c", 1);
    nexus.wait_subscribers("other", 0);
    let mut publisher = Client::named(&nexus, "p");
    publisher.publish("c", "still here");
    assert_eq!(stays.recv(), receive("p", "c", "still here"));
}

/// Every write the nexus makes is a whole round's batch for its
/// connection, so Nagle's algorithm could only hold a round back until the
/// previous one is acknowledged (a delayed-ACK timeout on a real network):
/// client connections have TCP_NODELAY (set on the listeners, inherited on
/// accept). Read from the nexus's own sockets, on both shards, so a change
/// to how connections are accepted cannot lose it unnoticed.
#[test]
fn client_connections_have_nodelay() {
    let nexus = Nexus::start(&[]);
    let clients: Vec<Client> = (0..4)
        .map(|i| Client::named(&nexus, &format!("c{i}")))
        .collect();
    for client in &clients {
        let peer = client.local_addr();
        assert_eq!(
            nexus_socket_nodelay(nexus.pid(), peer),
            Some(true),
            "the nexus's socket for {peer}"
        );
    }
}

/// TCP_NODELAY of the socket that process `pid` holds for `peer`, read on
/// a copy of its descriptor (`pidfd_getfd`: the nexus is our child, so we
/// may); `None` if it holds none.
fn nexus_socket_nodelay(pid: u32, peer: std::net::SocketAddr) -> Option<bool> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain system calls; each descriptor they return is owned once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the nexus's descriptors") {
        let entry = entry.expect("descriptor entry");
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let target = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok());
        let (true, Some(target)) = (is_socket, target) else {
            continue;
        };
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        assert!(
            copy >= 0,
            "pidfd_getfd: {}",
            std::io::Error::last_os_error()
        );
        let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
        let socket = socket2::SockRef::from(&copy);
        let holds_peer = socket
            .peer_addr()
            .is_ok_and(|addr| addr.as_socket() == Some(peer));
        if holds_peer {
            return Some(socket.nodelay().expect("getsockopt TCP_NODELAY"));
        }
    }
    None
}
