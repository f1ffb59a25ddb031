//! Recovery (positions extension) in the client library and in `easechat
//! sub --recover --resume-file`, against a scripted stand-in nexus
//! (`support/fake_nexus.rs`) that cuts connections and publishes into the
//! gap atomically. The same scenarios against the real nexus are in
//! `recovery_nexus.rs`.

mod support;

use std::time::{Duration, Instant};

use easechat::{Client, Event, Options, Position, PositionStatus, Received, RecoveryReport};
use easechat_protocol::{parse, Message};
use support::fake_nexus::FakeNexus;
use support::{at, recovering, scratch, wait_saved, Sub, PATIENCE, QUIET};

const TTL: Duration = Duration::from_secs(600);

fn recovering_options() -> Options {
    recovering(Duration::from_millis(20))
}

/// The next event, within PATIENCE.
fn next(client: &mut Client) -> Event {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(event) = client.recv_event(Duration::from_millis(100)).unwrap() {
            return event;
        }
    }
    panic!("no event within {PATIENCE:?}");
}

/// The next event, which must be a message: (channel, text, position).
fn message(client: &mut Client) -> (String, String, Option<Position>) {
    match next(client) {
        Event::Message { message, position } => (message.channel, message.text, position),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next event, which must be a report.
fn report(client: &mut Client) -> RecoveryReport {
    match next(client) {
        Event::Report(report) => report,
        other => panic!("expected a report, got {other:?}"),
    }
}

fn assert_quiet(client: &mut Client) {
    if let Some(event) = client.recv_event(QUIET).unwrap() {
        panic!("unexpected {event:?}");
    }
}

/// The frames connection `conn` sent, parsed.
fn sent_by(nexus: &FakeNexus, conn: u64) -> Vec<String> {
    nexus
        .frames()
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, f)| f)
        .collect()
}

fn last_conn(nexus: &FakeNexus) -> u64 {
    nexus.frames().last().unwrap().0
}

#[test]
fn the_library_recovers_exactly_the_gap_after_a_drain() {
    let nexus = FakeNexus::start(100);
    let mut client = Client::connect(&nexus.url(), "sub", recovering_options()).unwrap();
    client.subscribe("h/a", TTL).unwrap();
    client.subscribe("plain|x", TTL).unwrap();
    let e = nexus.head("h/a").1;
    // A first subscription on a history channel reports where it starts.
    assert_eq!(
        report(&mut client),
        RecoveryReport {
            channel: "h/a".into(),
            status: PositionStatus::Subscribed,
            offset: 0,
            epoch: e.clone(),
            from: None,
        }
    );
    assert_eq!(client.position("h/a"), Some(&at(0, &e)));
    nexus.wait_subscribers("plain|x", 1);
    let first = last_conn(&nexus);
    assert_eq!(
        sent_by(&nexus, first),
        [
            "1h|3|sub|9|positions",
            "1c|3|h/a|600|0",
            "1c|7|plain|x|600|0"
        ]
    );

    nexus.publish("h/a", "p", "m1");
    nexus.publish("plain|x", "p", "x1");
    nexus.publish("h/a", "p", "m2");
    assert_eq!(
        message(&mut client),
        ("h/a".into(), "m1".into(), Some(at(1, &e)))
    );
    assert_eq!(message(&mut client), ("plain|x".into(), "x1".into(), None));
    assert_eq!(
        message(&mut client),
        ("h/a".into(), "m2".into(), Some(at(2, &e)))
    );
    assert_eq!(client.position("h/a"), Some(&at(2, &e)));
    assert_eq!(client.position("plain|x"), None);

    // Drained; two messages on each channel while the client is away.
    {
        let mut state = nexus.state();
        state.drop_all();
        for text in ["m3", "m4"] {
            state.publish("h/a", "p", text);
        }
        state.publish("plain|x", "p", "lost: no history");
    }
    assert_eq!(
        report(&mut client),
        RecoveryReport {
            channel: "h/a".into(),
            status: PositionStatus::Recovered,
            offset: 4,
            epoch: e.clone(),
            from: Some(at(2, &e)),
        }
    );
    // Until the replay arrives, the position stays where the client was.
    assert_eq!(client.position("h/a"), Some(&at(2, &e)));
    for (offset, text) in [(3, "m3"), (4, "m4")] {
        assert_eq!(
            message(&mut client),
            ("h/a".into(), text.into(), Some(at(offset, &e)))
        );
    }
    nexus.wait_subscribers("plain|x", 1);
    nexus.publish("h/a", "p", "m5");
    nexus.publish("plain|x", "p", "x2");
    assert_eq!(
        message(&mut client),
        ("h/a".into(), "m5".into(), Some(at(5, &e)))
    );
    assert_eq!(message(&mut client), ("plain|x".into(), "x2".into(), None));
    assert_quiet(&mut client);
    assert_eq!(client.reconnects(), 1);
    // The new connection recovered h/a from its position and subscribed the
    // channel without history plainly.
    let second = last_conn(&nexus);
    assert_ne!(first, second);
    assert_eq!(
        sent_by(&nexus, second),
        [
            "1h|3|sub|9|positions",
            &format!("1c|3|h/a|600|0|2|{}|{e}", e.len()),
            "1c|7|plain|x|600|0"
        ]
    );
    assert!(client.take_reports().is_empty(), "recv_event returns them");
}

#[test]
fn a_reconnect_during_a_replay_recovers_the_rest() {
    let nexus = FakeNexus::start(100);
    let mut client = Client::connect(&nexus.url(), "sub", recovering_options()).unwrap();
    client.subscribe("h/a", TTL).unwrap();
    let e = report(&mut client).epoch;
    {
        let mut state = nexus.state();
        state.drop_all();
        for i in 1..=3 {
            state.publish("h/a", "p", &format!("m{i}"));
        }
        // The next connection breaks right after the 1p, the one after
        // that after the first replayed message.
        state.cut_replays_after.extend([0, 1]);
    }
    // The 1p said the channel was at 3, but nothing after 0 arrived: the
    // next recovery is from 0 again, not from 3.
    for _ in 0..2 {
        let r = report(&mut client);
        assert_eq!(
            (r.status, r.offset, r.from),
            (PositionStatus::Recovered, 3, Some(at(0, &e)))
        );
    }
    assert_eq!(
        message(&mut client),
        ("h/a".into(), "m1".into(), Some(at(1, &e)))
    );
    let r = report(&mut client);
    assert_eq!(
        (r.status, r.from),
        (PositionStatus::Recovered, Some(at(1, &e)))
    );
    for (offset, text) in [(2, "m2"), (3, "m3")] {
        assert_eq!(
            message(&mut client),
            ("h/a".into(), text.into(), Some(at(offset, &e)))
        );
    }
    assert_quiet(&mut client);
    assert_eq!(client.reconnects(), 3);
}

#[test]
fn a_failed_recovery_is_reported_and_live_messages_follow() {
    let nexus = FakeNexus::start(3);
    let mut client = Client::connect(&nexus.url(), "sub", recovering_options()).unwrap();
    client.subscribe("h/a", TTL).unwrap();
    let e1 = report(&mut client).epoch;
    nexus.publish("h/a", "p", "m1");
    assert_eq!(message(&mut client).2, Some(at(1, &e1)));

    // The history restarted (a new epoch) while the client was away.
    let e2 = {
        let mut state = nexus.state();
        state.drop_all();
        let e2 = state.restart_history("h/a");
        state.publish("h/a", "p", "not replayed");
        e2
    };
    let failed = report(&mut client);
    assert_eq!(
        failed,
        RecoveryReport {
            channel: "h/a".into(),
            status: PositionStatus::NotRecovered,
            offset: 1,
            epoch: e2.clone(),
            from: Some(at(1, &e1)),
        }
    );
    assert_eq!(
        failed.problem().unwrap(),
        format!(
            "resumed from 1 in epoch {e1}, channel now at 1 in epoch {e2} \
             (the channel's history was restarted or evicted since)"
        )
    );
    assert_eq!(client.position("h/a"), Some(&at(1, &e2)));
    nexus.publish("h/a", "p", "live");
    assert_eq!(
        message(&mut client),
        ("h/a".into(), "live".into(), Some(at(2, &e2)))
    );

    // More than the history holds (3) was missed: nothing is replayed.
    {
        let mut state = nexus.state();
        state.drop_all();
        for i in 0..5 {
            state.publish("h/a", "p", &format!("gone {i}"));
        }
    }
    let failed = report(&mut client);
    assert_eq!(
        (failed.status, failed.offset, failed.from.clone()),
        (PositionStatus::NotRecovered, 7, Some(at(2, &e2)))
    );
    assert!(
        failed.problem().unwrap().contains("no longer all held"),
        "{failed:?}"
    );
    nexus.publish("h/a", "p", "live again");
    assert_eq!(
        message(&mut client),
        ("h/a".into(), "live again".into(), Some(at(8, &e2)))
    );
    assert_quiet(&mut client);
}

#[test]
fn a_set_position_is_recovered_at_the_first_subscribe_and_renewals_stay_plain() {
    let nexus = FakeNexus::start(100);
    for i in 1..=3 {
        nexus.publish("h/a", "p", &format!("m{i}"));
    }
    let e = nexus.head("h/a").1;
    let options = Options {
        renew_at: 0.5,
        ..recovering_options()
    };
    let mut client = Client::connect(&nexus.url(), "sub", options).unwrap();
    client.set_position("h/a", at(1, &e));
    client.subscribe("h/a", Duration::from_millis(400)).unwrap();
    assert_eq!(
        report(&mut client),
        RecoveryReport {
            channel: "h/a".into(),
            status: PositionStatus::Recovered,
            offset: 3,
            epoch: e.clone(),
            from: Some(at(1, &e)),
        }
    );
    assert_eq!(message(&mut client).1, "m2");
    assert_eq!(message(&mut client).1, "m3");
    // Renewed every 200 ms: plain 1c, never a recovery.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        assert_eq!(client.recv_event(Duration::from_millis(50)).unwrap(), None);
    }
    let frames = sent_by(&nexus, last_conn(&nexus));
    assert_eq!(frames[1], format!("1c|3|h/a|0|400000000|1|{}|{e}", e.len()));
    assert!(frames.len() >= 4, "{frames:?}");
    for renewal in &frames[2..] {
        assert_eq!(renewal, "1c|3|h/a|0|400000000");
    }
    // Subscribing again renews; unsubscribing forgets the position.
    client.subscribe("h/a", TTL).unwrap();
    client.unsubscribe("h/a").unwrap();
    assert_eq!(client.position("h/a"), None);
    client.subscribe("h/a", TTL).unwrap();
    let plain = report(&mut client);
    assert_eq!(
        (plain.status, plain.offset),
        (PositionStatus::Subscribed, 3)
    );
    let frames = sent_by(&nexus, last_conn(&nexus));
    assert_eq!(
        frames[frames.len() - 3..],
        ["1c|3|h/a|600|0", "1c|3|h/a|0|0", "1c|3|h/a|600|0"]
    );
}

#[test]
fn without_positions_the_client_speaks_v1_and_recv_keeps_reports() {
    let nexus = FakeNexus::start(100);
    // v1: plain 1h, plain 1r even on a history channel, no recovery.
    let mut v1 = Client::connect(
        &nexus.url(),
        "old",
        Options {
            reconnect: true,
            backoff_initial: Duration::from_millis(20),
            ..Options::default()
        },
    )
    .unwrap();
    v1.set_position("h/a", at(0, "ignored without positions"));
    v1.subscribe("h/a", TTL).unwrap();
    nexus.wait_subscribers("h/a", 1);
    nexus.publish("h/a", "p", "m1");
    assert_eq!(message(&mut v1), ("h/a".into(), "m1".into(), None));
    nexus.state().drop_all();
    assert_quiet(&mut v1); // reconnects meanwhile
    nexus.wait_subscribers("h/a", 1);
    for conn in [1, 2] {
        assert_eq!(sent_by(&nexus, conn), ["1h|3|old", "1c|3|h/a|600|0"]);
    }

    // recv returns messages only; the reports wait for take_reports.
    let mut client = Client::connect(&nexus.url(), "new", recovering_options()).unwrap();
    client.subscribe("h/a", TTL).unwrap();
    nexus.wait_subscribers("h/a", 2);
    nexus.publish("h/a", "p", "m2");
    assert_eq!(
        client.recv(PATIENCE).unwrap(),
        Some(Received {
            sender: "p".into(),
            channel: "h/a".into(),
            text: "m2".into()
        })
    );
    let reports = client.take_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (reports[0].status, reports[0].offset),
        (PositionStatus::Subscribed, 1)
    );
    assert!(client.take_reports().is_empty());
    assert_eq!(client.position("h/a").unwrap().offset, 2);
}

#[test]
fn the_fake_nexus_frames_are_the_codec_s() {
    // The stand-in's replies are what the codec writes: a guard against
    // the fake drifting from the protocol.
    let nexus = FakeNexus::start(100);
    nexus.publish("h/a", "p", "m1");
    let mut client = Client::connect(&nexus.url(), "sub", recovering_options()).unwrap();
    client.subscribe("h/a", TTL).unwrap();
    let r = report(&mut client);
    let frame = Message::Position {
        channel: "h/a",
        status: r.status,
        offset: r.offset,
        epoch: &r.epoch,
    }
    .encode();
    assert_eq!(
        parse(&frame),
        Ok(Message::Position {
            channel: "h/a",
            status: PositionStatus::Subscribed,
            offset: 1,
            epoch: &nexus.head("h/a").1,
        })
    );
}

#[test]
fn sub_with_a_resume_file_prints_exactly_what_it_missed_after_a_kill() {
    let nexus = FakeNexus::start(100);
    let dir = scratch("kill");
    let file = dir.join("positions.json");
    let url = nexus.url();
    let odd = "h/odd name|with\nnewline";
    let mut sub = Sub::start(&url, "watcher", &file, &["h/a", odd, "plain"]);
    nexus.wait_subscribers("plain", 1);
    let e = nexus.head("h/a").1;
    let eo = nexus.head(odd).1;
    nexus.publish("h/a", "p", "m1");
    nexus.publish("plain", "p", "x1");
    nexus.publish(odd, "p", "o1");
    nexus.publish("h/a", "p", "m2");
    assert_eq!(sub.next(), ("m1".into(), Some(1), Some(e.clone())));
    assert_eq!(sub.next(), ("x1".into(), None, None));
    let o1 = sub.message();
    assert_eq!(
        (o1["channel"].as_str(), o1["offset"].as_u64()),
        (Some(odd), Some(1))
    );
    assert_eq!(sub.next(), ("m2".into(), Some(2), Some(e.clone())));
    wait_saved(&file, "h/a", 2, &e);
    wait_saved(&file, odd, 1, &eo);
    sub.kill();

    for text in ["m3", "m4"] {
        nexus.publish("h/a", "p", text);
    }
    nexus.publish(odd, "p", "o2");
    nexus.publish("plain", "p", "lost: no history");
    let mut sub = Sub::start(&url, "watcher", &file, &["h/a", odd, "plain"]);
    // Channels are subscribed in the order given: h/a's replay first.
    assert_eq!(sub.next(), ("m3".into(), Some(3), Some(e.clone())));
    assert_eq!(sub.next(), ("m4".into(), Some(4), Some(e.clone())));
    assert_eq!(sub.next(), ("o2".into(), Some(2), Some(eo.clone())));
    nexus.wait_subscribers("plain", 1);
    nexus.publish("h/a", "p", "m5");
    assert_eq!(sub.next(), ("m5".into(), Some(5), Some(e.clone())));
    sub.assert_quiet();
    wait_saved(&file, "h/a", 5, &e);
    assert!(sub.interrupt().success());
    assert_eq!(sub.error_lines(), Vec::<String>::new());
    let saved = std::fs::read_to_string(&file).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        saved,
        serde_json::json!({
            "h/a": {"offset": 5, "epoch": e},
            odd: {"offset": 2, "epoch": eo},
        })
    );
    assert!(!dir.join("positions.json.tmp").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sub_says_on_stderr_when_it_cannot_recover_then_prints_live_messages() {
    let nexus = FakeNexus::start(100);
    for i in 1..=4 {
        nexus.publish("h/a", "p", &format!("old {i}"));
    }
    let e = nexus.head("h/a").1;
    let dir = scratch("epoch");
    let file = dir.join("positions.json");
    std::fs::write(&file, r#"{"h/a":{"offset":2,"epoch":"from-before"}}"#).unwrap();
    let sub = Sub::start(&nexus.url(), "watcher", &file, &["h/a"]);
    assert_eq!(
        sub.error_line(),
        format!(
            "easechat: could not recover h/a: resumed from 2 in epoch from-before, channel now \
             at 4 in epoch {e} (the channel's history was restarted or evicted since); \
             continuing with live messages"
        )
    );
    // The file moves to the channel's position at once.
    wait_saved(&file, "h/a", 4, &e);
    nexus.publish("h/a", "p", "live");
    assert_eq!(sub.next(), ("live".into(), Some(5), Some(e.clone())));
    sub.assert_quiet();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sub_refuses_a_corrupt_resume_file_and_accepts_a_missing_or_empty_one() {
    let nexus = FakeNexus::start(100);
    let dir = scratch("corrupt");
    let file = dir.join("positions.json");
    for corrupt in ["17 e1 h/a\n", r#"{"h/a":{"offset":"x","epoch":"e"}}"#] {
        std::fs::write(&file, corrupt).unwrap();
        let mut sub = Sub::start(&nexus.url(), "watcher", &file, &["h/a"]);
        assert!(!sub.exit().success());
        let error = sub.error_line();
        assert!(
            error.starts_with("easechat: resume file ") && error.contains("positions.json"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            corrupt,
            "left as is"
        );
    }
    // Empty (as `mktemp` makes it) and missing: no positions, a plain start.
    for empty in [true, false] {
        if empty {
            std::fs::write(&file, "").unwrap();
        } else {
            std::fs::remove_file(&file).unwrap();
        }
        let mut sub = Sub::start(&nexus.url(), "watcher", &file, &["h/a"]);
        nexus.wait_subscribers("h/a", 1);
        let (offset, e) = nexus.head("h/a");
        wait_saved(&file, "h/a", offset, &e);
        nexus.publish("h/a", "p", "hello");
        assert_eq!(sub.next(), ("hello".into(), Some(offset + 1), Some(e)));
        assert!(sub.interrupt().success());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
