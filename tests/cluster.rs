//! The cluster bridge (`--nats`) through a real `nats-server` on a free
//! loopback port and two or three real nexus processes (`--cores 2` each):
//! cross-node delivery, exclusion, exactly once, order, awkward channel
//! names, interest-driven subscriptions, and NATS going away and coming back.
//!
//! Without `nats-server` the tests are skipped with a loud message, except
//! under CI (`CI=true`), where they fail.

mod common;
/// The NATS server harness; it names the nexus crate, so only the nexus's
/// own tests include it.
#[path = "common/nats.rs"]
mod nats;

use std::thread;
use std::time::{Duration, Instant};

use common::{receive, Client, Event, Nexus, PATIENCE};
use ease_chat_nexus::cluster::directory::DIRECTORY_SUBJECT;
use ease_chat_nexus::cluster::subject::subject_for;
use nats::{cluster_stats, http_get, node, node_with, stat, Nats};

/// A publish on one node reaches subscribers on the other exactly once,
/// both ways, and sender exclusion by name holds across nodes.
#[test]
fn publishes_cross_nodes_and_exclusion_holds_across_them() {
    let Some(nats) = Nats::start() else { return };
    let mut a = node_with(&nats, "a", &["--metrics", "127.0.0.1:0"]);
    let mut b = node(&nats, "b");

    let mut carol_a = Client::named(&a, "carol");
    carol_a.subscribe("c");
    let mut bob_b = Client::named(&b, "bob");
    bob_b.subscribe("c");
    let mut alice_twin_b = Client::named(&b, "alice");
    alice_twin_b.subscribe("c");
    a.wait_subscribers("c", 1);
    b.wait_subscribers("c", 2);
    nats.wait_subscriptions("c", 2);

    let mut alice_a = Client::named(&a, "alice");
    alice_a.publish("c", "hi");
    assert_eq!(carol_a.recv(), receive("alice", "c", "hi"));
    assert_eq!(bob_b.recv(), receive("alice", "c", "hi"));
    alice_twin_b.expect_silence(Duration::from_millis(300));

    bob_b.publish("c", "back");
    assert_eq!(carol_a.recv(), receive("bob", "c", "back"));
    assert_eq!(alice_twin_b.recv(), receive("bob", "c", "back"));
    bob_b.expect_silence(Duration::from_millis(200));

    // Any sender name crosses intact, the empty one and a newline included.
    for name in ["", "two\nlines"] {
        let mut odd = Client::named(&b, name);
        odd.publish("c", "odd");
        assert_eq!(carol_a.recv(), receive(name, "c", "odd"));
    }
    carol_a.expect_silence(Duration::from_millis(100));

    let stats_a = cluster_stats(&mut a);
    assert_eq!(stat(&stats_a, "cluster_connected"), 1, "{stats_a:?}");
    assert_eq!(stat(&stats_a, "cluster_published_total"), 1, "{stats_a:?}");
    assert_eq!(stat(&stats_a, "cluster_received_total"), 3, "{stats_a:?}");
    assert_eq!(stat(&stats_a, "cluster_dropped_total"), 0, "{stats_a:?}");
    let metrics = http_get(&a.metrics_addr().to_string(), "/metrics");
    for series in [
        "easechat_cluster_connected 1\n",
        "easechat_cluster_reconnects_total 0\n",
        "easechat_cluster_published_total 1\n",
        "easechat_cluster_received_total 3\n",
        "easechat_cluster_dropped_total 0\n",
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
}

/// With three nodes, every subscriber on every node gets every message
/// once, in order, and nothing more.
#[test]
fn three_nodes_deliver_exactly_once() {
    let Some(nats) = Nats::start() else { return };
    let mut nodes: Vec<Nexus> = ["a", "b", "c"].iter().map(|n| node(&nats, n)).collect();
    let mut subscribers: Vec<Client> = Vec::new();
    for nexus in &mut nodes {
        for i in 0..4 {
            let mut client = Client::named(nexus, &format!("sub-{i}"));
            client.subscribe("room");
            subscribers.push(client);
        }
        nexus.wait_subscribers("room", 4);
    }
    nats.wait_subscriptions("room", 3);
    let mut publisher = Client::named(&nodes[0], "pub");
    for i in 0..100 {
        publisher.publish("room", &format!("m{i}"));
    }
    for sub in &mut subscribers {
        for i in 0..100 {
            assert_eq!(sub.recv(), receive("pub", "room", &format!("m{i}")));
        }
    }
    for sub in &mut subscribers {
        sub.expect_silence(Duration::from_millis(50));
    }
    subscribers[0].expect_silence(Duration::from_millis(300));
}

/// One publisher's 10,000 messages arrive in order on the other node.
#[test]
fn order_holds_over_ten_thousand_messages() {
    let Some(nats) = Nats::start() else { return };
    let a = node(&nats, "a");
    let mut b = node(&nats, "b");
    let mut subscriber = Client::named(&b, "sub");
    subscriber.subscribe("seq");
    b.wait_subscribers("seq", 1);
    nats.wait_subscriptions("seq", 1);
    let mut publisher = Client::named(&a, "pub");
    let reader = thread::spawn(move || {
        for i in 0..10_000 {
            assert_eq!(subscriber.recv(), receive("pub", "seq", &i.to_string()));
        }
        subscriber.expect_silence(Duration::from_millis(200));
    });
    for i in 0..10_000 {
        publisher.publish("seq", &i.to_string());
    }
    reader.join().expect("every message, in order");
}

/// Channel names with subject syntax, spaces, `|`, 1 KiB of UTF-8 and the
/// empty name each reach their own subscribers and no one else's.
#[test]
fn awkward_channel_names_do_not_leak_into_each_other() {
    let Some(nats) = Nats::start() else { return };
    let a = node(&nats, "a");
    let b = node(&nats, "b");
    let long = "é".repeat(512);
    let names = ["a.b", "*", ">", "a b", "x|y", long.as_str(), "", "a"];
    let mut subscribers: Vec<Client> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut client = Client::named(&b, &format!("s{i}"));
            client.subscribe(name);
            client
        })
        .collect();
    // (The console cannot name some of these channels: NATS shows them.)
    for name in &names {
        nats.wait_subscriptions(name, 1);
    }
    let mut publisher = Client::named(&a, "pub");
    for (i, name) in names.iter().enumerate() {
        publisher.publish(name, &format!("for {i}"));
    }
    for (i, sub) in subscribers.iter_mut().enumerate() {
        assert_eq!(sub.recv(), receive("pub", names[i], &format!("for {i}")));
    }
    for sub in &mut subscribers {
        sub.expect_silence(Duration::from_millis(100));
    }
}

/// A node subscribes to a channel's subject only while it has local
/// subscribers, and lets go after a short linger.
#[test]
fn the_nats_subscription_follows_local_interest() {
    let Some(nats) = Nats::start() else { return };
    let mut a = node(&nats, "a");
    let subject = subject_for("room");
    assert_eq!(nats.subscriptions_of(&subject), 0);
    assert!(
        nats.subjects()
            .iter()
            .all(|s| !s.contains('>') || !s.starts_with("easechat")),
        "no wildcard firehose"
    );

    let mut first = Client::named(&a, "first");
    first.subscribe("room");
    let mut second = Client::named(&a, "second");
    second.subscribe("room");
    a.wait_subscribers("room", 2);
    nats.wait_subscriptions("room", 1);

    // One subscriber left: still subscribed.
    first.subscribe_ttl("room", 0, 0);
    a.wait_subscribers("room", 1);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(nats.subscriptions_of(&subject), 1);

    // The last one goes (its connection closes): unsubscribed after the linger.
    drop(second);
    a.wait_subscribers("room", 0);
    nats.wait_subscriptions("room", 0);

    // Interest comes back: subscribed again.
    first.subscribe("room");
    nats.wait_subscriptions("room", 1);
    // No firehose: besides the console's directory, only this channel.
    assert!(nats
        .subjects()
        .iter()
        .filter(|s| s.starts_with("easechat.") && *s != DIRECTORY_SUBJECT)
        .all(|s| *s == subject));
}

/// NATS killed: local delivery goes on with nothing lost. NATS restarted on
/// the same port: the nodes reconnect and re-subscribe (including interest
/// that changed while it was down), and cross-node delivery is back within
/// 5 seconds.
#[test]
fn nats_outage_spares_local_delivery_and_recovers() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let mut a = node(&nats, "a");
    let mut b = node(&nats, "b");
    let mut local = Client::named(&a, "local");
    local.subscribe("c");
    let mut remote = Client::named(&b, "remote");
    remote.subscribe("c");
    let mut leaving = Client::named(&b, "leaving");
    leaving.subscribe("e");
    a.wait_subscribers("c", 1);
    b.wait_subscribers("c", 1);
    nats.wait_subscriptions("c", 2);
    nats.wait_subscriptions("e", 1);
    let mut publisher = Client::named(&a, "pub");
    publisher.publish("c", "before");
    assert_eq!(local.recv(), receive("pub", "c", "before"));
    assert_eq!(remote.recv(), receive("pub", "c", "before"));

    nats.kill();
    a.wait_log(|l| l.contains("NATS connection lost"));
    for i in 0..1000 {
        publisher.publish("c", &format!("down {i}"));
    }
    for i in 0..1000 {
        assert_eq!(local.recv(), receive("pub", "c", &format!("down {i}")));
    }
    // Interest that appears, and interest that goes (past the linger),
    // while NATS is down.
    let mut late = Client::named(&b, "late");
    late.subscribe("d");
    b.wait_subscribers("d", 1);
    leaving.subscribe_ttl("e", 0, 0);
    b.wait_subscribers("e", 0);
    thread::sleep(Duration::from_millis(3000));

    nats.restart();
    let restarted = Instant::now();
    let mut probe = 0;
    'back: loop {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "cross-node delivery not back within 5 s of the restart"
        );
        publisher.publish("c", &format!("probe {probe}"));
        probe += 1;
        while let Some(event) = remote.next_within(Duration::from_millis(100)) {
            match event {
                Event::Text(t) if t.contains("probe") => break 'back,
                Event::Text(_) => {} // sent just before the loss was noticed
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    nats.wait_subscriptions("d", 1);
    publisher.publish("d", "after");
    assert_eq!(late.recv(), receive("pub", "d", "after"));
    assert_eq!(nats.subscriptions_of(&subject_for("e")), 0);

    let stats_a = cluster_stats(&mut a);
    assert_eq!(stat(&stats_a, "cluster_connected"), 1, "{stats_a:?}");
    assert!(
        stat(&stats_a, "cluster_reconnects_total") >= 1,
        "{stats_a:?}"
    );
    assert!(stat(&stats_a, "cluster_dropped_total") >= 1, "{stats_a:?}");
    // One log line per outage, not per message.
    a.wait_log(|l| l.contains("NATS connection back"));
    let lost_lines = a
        .log
        .iter()
        .filter(|l| l.contains("NATS connection lost"))
        .count();
    assert_eq!(lost_lines, 1);
    assert!(!a.log.iter().any(|l| l.contains("cannot reach NATS")));
}

/// A node started while NATS is not up yet serves local clients at once,
/// says once that it cannot reach NATS, and joins when NATS comes up.
#[test]
fn a_node_started_before_nats_joins_when_it_comes_up() {
    let Some(mut nats) = Nats::stopped() else {
        return;
    };
    let mut a = Nexus::start(&["--nats", &nats.url(), "--node-id", "a"]);
    a.wait_log(|l| l.contains("cannot reach NATS"));
    let mut local = Client::named(&a, "local");
    local.subscribe("c");
    a.wait_subscribers("c", 1);
    let mut publisher = Client::named(&a, "pub");
    publisher.publish("c", "alone");
    assert_eq!(local.recv(), receive("pub", "c", "alone"));

    nats.restart();
    a.wait_log(|l| l.contains("connected to NATS"));
    let b = node(&nats, "b");
    let mut remote = Client::named(&b, "remote");
    remote.subscribe("c");
    nats.wait_subscriptions("c", 2);
    publisher.publish("c", "together");
    assert_eq!(local.recv(), receive("pub", "c", "together"));
    assert_eq!(remote.recv(), receive("pub", "c", "together"));
    let lines = a
        .log
        .iter()
        .filter(|l| l.contains("cannot reach NATS"))
        .count();
    assert_eq!(lines, 1, "one line for the wait, not one per retry");
}

/// What a node published just before it stopped still reaches the others:
/// the bridge flushes to NATS before the process exits.
#[test]
fn publishes_just_before_a_stop_still_cross() {
    let Some(nats) = Nats::start() else { return };
    let mut a = node(&nats, "a");
    let b = node(&nats, "b");
    let mut remote = Client::named(&b, "remote");
    remote.subscribe("c");
    nats.wait_subscriptions("c", 1);
    for i in 0..100 {
        a.console(&format!("push alice c m{i}"));
    }
    a.console("stop");
    assert!(a.wait_exit().success());
    for i in 0..100 {
        assert_eq!(remote.recv(), receive("alice", "c", &format!("m{i}")));
    }
}

/// The admin console's channel list counts, per channel, the other nodes
/// with subscribers there (the cluster directory over NATS).
#[test]
fn the_channel_list_counts_other_nodes() {
    let Some(nats) = Nats::start() else { return };
    let mut a = node_with(&nats, "a", &["--admin", "127.0.0.1:0"]);
    let mut b = node(&nats, "b");
    let mut c = node(&nats, "c");
    let mut on_a = Client::named(&a, "on-a");
    on_a.subscribe("dir/all");
    on_a.subscribe("dir/a-only");
    let mut on_b = Client::named(&b, "on-b");
    on_b.subscribe("dir/all");
    let mut on_c = Client::named(&c, "on-c");
    on_c.subscribe("dir/all");
    a.wait_subscribers("dir/all", 1);
    b.wait_subscribers("dir/all", 1);
    c.wait_subscribers("dir/all", 1);
    nats.wait_subscriptions("dir/all", 3);
    let admin = a.metrics_addr().to_string();
    let deadline = Instant::now() + PATIENCE;
    let rows = loop {
        let response = http_get(&admin, "/api/channels?filter=dir%2F&sort=name");
        // The JSON object, whatever framing the body has.
        let body = match (response.find('{'), response.rfind('}')) {
            (Some(start), Some(end)) => &response[start..=end],
            _ => "",
        };
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let rows: Vec<(String, serde_json::Value)> = json["channels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["name"].as_str().unwrap_or("").to_string(),
                            r["cluster"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let all = rows
            .iter()
            .find(|(n, _)| n == "dir/all")
            .map(|(_, c)| c.clone());
        if all == Some(serde_json::Value::from(2)) || Instant::now() > deadline {
            break rows;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        rows,
        vec![
            ("dir/a-only".to_string(), serde_json::Value::from(0)),
            ("dir/all".to_string(), serde_json::Value::from(2)),
        ]
    );
}

/// The NATS leg with a user and password (`--nats-user-file`, never argv):
/// nodes with the credentials exchange messages; a node without them is
/// refused by NATS and says so, while it keeps serving its own clients.
#[test]
fn nodes_authenticate_to_nats_with_a_user_file() {
    let Some(nats) = Nats::start_with(&["--user", "nexus", "--pass", "s3cret-nats-pass"]) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("easechat-nats-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nats.user");
    std::fs::write(&file, "nexus:s3cret-nats-pass\n").unwrap();
    let file = file.display().to_string();
    let a = node_with(&nats, "a", &["--nats-user-file", &file]);
    let mut b = node_with(&nats, "b", &["--nats-user-file", &file]);
    let mut bob_b = Client::named(&b, "bob");
    bob_b.subscribe("c");
    b.wait_subscribers("c", 1);
    nats.wait_subscriptions("c", 1);
    let mut alice_a = Client::named(&a, "alice");
    alice_a.publish("c", "over an authenticated link");
    assert_eq!(
        bob_b.recv(),
        receive("alice", "c", "over an authenticated link")
    );
    // Without the file, NATS refuses the node; local delivery goes on.
    let url = nats.url();
    let mut lone = Nexus::start(&["--nats", &url, "--node-id", "lone"]);
    lone.wait_log(|l| l.to_ascii_lowercase().contains("authorization"));
    let mut x = Client::named(&lone, "x");
    x.subscribe("local");
    lone.wait_subscribers("local", 1);
    let mut y = Client::named(&lone, "y");
    y.publish("local", "still here");
    assert_eq!(x.recv(), receive("y", "local", "still here"));
    let _ = std::fs::remove_dir_all(&dir);
}
