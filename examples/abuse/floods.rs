//! The flood rows (issue 23): one client floods one kind of valid v1
//! command, or a mix, as fast as its socket takes it; the bystanders on its
//! shard must never wait 10 ms (their worst case, not only their p99), as
//! if the flooder were not there.
//!
//! - `flood-hello`: `1h` renames.
//! - `flood-subscribe`: `1c` renewals of one channel.
//! - `flood-resubscribe`: `1c` subscribe and unsubscribe of a few channels
//!   (interest changes that cross to the other shard).
//! - `flood-publish-local`: `1t` to a channel read by a sink on the same shard.
//! - `flood-publish-remote`: `1t` to a channel read by a sink on the other shard.
//! - `flood-ping`: WebSocket pings (each answered with a pong).
//! - `flood-mix`: all of the above, interleaved.

use std::time::Duration;

use crate::abusers;
use crate::client::{self, Conn};
use crate::scenarios::{sink_on, Ctx, Measures, Outcome};

/// Every flood row, with the issue it belongs to.
pub const ALL: &[(&str, u32)] = &[
    ("flood-hello", 23),
    ("flood-subscribe", 23),
    ("flood-resubscribe", 23),
    ("flood-publish-local", 23),
    ("flood-publish-remote", 23),
    ("flood-ping", 23),
    ("flood-mix", 23),
];

/// Whether `scenario` is a flood row, judged on its worst case too.
pub fn is_flood(scenario: &str) -> bool {
    ALL.iter().any(|(name, _)| *name == scenario)
}

/// Frames one copy of the flood carries (batched many per write).
fn frames(kind: &str) -> Vec<u8> {
    let text = |t: String| client::frame(&t);
    match kind {
        "flood-hello" => [
            text(client::hello("flooder-a")),
            text(client::hello("flooder-b")),
        ]
        .concat(),
        "flood-subscribe" => text(client::subscribe("flood/renew", 600)),
        "flood-resubscribe" => (0..4)
            .flat_map(|i| {
                [
                    text(client::subscribe(&format!("flood/churn/{i}"), 600)),
                    text(client::subscribe(&format!("flood/churn/{i}"), 0)),
                ]
            })
            .flatten()
            .collect(),
        "flood-publish-local" => text(client::publish("flood/local", "x")),
        "flood-publish-remote" => text(client::publish("flood/remote", "x")),
        // A masked (zero key) ping with a one-byte payload.
        "flood-ping" => vec![0x89, 0x81, 0, 0, 0, 0, b'p'],
        _ => [
            "flood-hello",
            "flood-subscribe",
            "flood-resubscribe",
            "flood-publish-local",
        ]
        .into_iter()
        .map(frames)
        .chain([frames("flood-publish-remote"), frames("flood-ping")])
        .collect::<Vec<_>>()
        .concat(),
    }
}

/// Runs flood row `name`.
pub async fn run(ctx: &Ctx, name: &str) -> Result<(Measures, Outcome), String> {
    let (mut conn, shard) = client::identified(&ctx.target, "flooder").await?;
    let local = matches!(name, "flood-publish-local" | "flood-mix");
    let remote = matches!(name, "flood-publish-remote" | "flood-mix");
    let mut sinks: Vec<Conn> = Vec::new();
    if local {
        sinks.push(sink_on(ctx, shard, "flood/local", &mut conn).await?);
    }
    if remote {
        sinks.push(sink_on(ctx, 1 - shard, "flood/remote", &mut conn).await?);
    }
    let measuring = ctx.measure(shard)?;
    let until = ctx.until();
    let drains: Vec<_> = sinks
        .into_iter()
        .map(|sink| crate::scenarios::drain_sink(sink, until + Duration::from_secs(2)))
        .collect();
    let one = frames(name);
    let (report, copies) = abusers::flood_repeated(conn, until, &one, 64).await;
    let mut received = Vec::new();
    for drain in drains {
        received.push(
            drain
                .await
                .map(|(fate, got)| format!("{got} ({fate:?})"))
                .unwrap_or_default(),
        );
    }
    let measures = measuring.finish();
    let rate = copies as f64 / ctx.duration.as_secs_f64();
    Ok((
        measures,
        Outcome::of_reports(
            &ctx.target,
            std::slice::from_ref(&report),
            format!(
                "{copies} copies of the flood ({} bytes each, {rate:.0}/s); sinks received {}",
                one.len(),
                if received.is_empty() {
                    "-".into()
                } else {
                    received.join(", ")
                }
            ),
        ),
    ))
}
