//! Operations: `/metrics` and `/healthz` over real HTTP, and the console's
//! `stats`, after a known load.

mod common;

use std::collections::HashMap;

use common::{http_get, receive, Client, Nexus};

/// Sums each metric over its shard labels (other labels kept).
fn totals(exposition: &str) -> HashMap<String, u64> {
    let mut sums = HashMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let others: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.starts_with("shard="))
                    .collect();
                if others.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}{{{}}}", others.join(","))
                }
            }
            None => series.to_string(),
        };
        *sums.entry(name).or_insert(0) += value.parse::<u64>().expect("integer value");
    }
    sums
}

#[test]
fn metrics_health_and_stats_match_the_load() {
    let mut nexus = Nexus::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = nexus.metrics_addr();

    let (status, body) = http_get(metrics, "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "ok: 2 shards\n");

    let mut subscribers: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = Client::named(&nexus, &format!("s{i}"));
            c.subscribe("c");
            c
        })
        .collect();
    nexus.wait_subscribers("c", 4);
    let mut publisher = Client::named(&nexus, "p");
    for i in 0..25 {
        publisher.publish("c", &format!("m{i}"));
    }
    for sub in &mut subscribers {
        for i in 0..25 {
            assert_eq!(sub.recv(), receive("p", "c", &format!("m{i}")));
        }
    }
    let mut broken = Client::connect(&nexus);
    broken.send("2h|1|x");
    assert_eq!(broken.expect_close().0, 1002);
    nexus.wait_log(|l| l.contains("code=1002"));

    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE easechat_deliveries_total counter"));
    assert!(body.contains("easechat_deliveries_total{shard=\"0\"}"));
    assert!(body.contains("easechat_deliveries_total{shard=\"1\"}"));
    let t = totals(&body);
    assert_eq!(t["easechat_deliveries_total"], 100);
    assert_eq!(t["easechat_publishes_total"], 25);
    assert_eq!(t["easechat_connections_open"], 5);
    assert_eq!(t["easechat_connections_identified"], 5);
    assert_eq!(t["easechat_subscriptions"], 4);
    assert_eq!(t["easechat_protocol_errors_total{kind=\"version\"}"], 1);
    assert_eq!(t["easechat_protocol_errors_total{kind=\"binary\"}"], 0);
    // 5 hellos + 4 subscribes + 25 publishes + the broken one.
    assert_eq!(t["easechat_messages_received_total"], 35);
    assert!(t["easechat_bytes_sent_total"] >= 100 * receive("p", "c", "m0").len() as u64);
    assert_eq!(t["easechat_slow_consumer_closures_total"], 0);

    let (status, _) = http_get(metrics, "/nothing-here");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    nexus.console("stats");
    let lines = nexus.output_until(|l| l.contains("protocol_errors{websocket}"));
    let deliveries = lines
        .iter()
        .find(|l| l.trim_start().starts_with("deliveries_total"))
        .expect("deliveries line");
    assert_eq!(
        deliveries.split_whitespace().nth(1),
        Some("100"),
        "{deliveries}"
    );
    assert!(deliveries.contains("per shard:"));
}
