//! One function per row of issue 10's table. Each sets up its abusers,
//! starts measuring (bystanders on the abuser's shard and the other one,
//! RSS and `/healthz` samplers), abuses for the configured time and tells
//! what happened to the abusers.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::abusers::{self, Report, Summary};
use crate::client::{self, padded, Conn, Fate};
use crate::nexus::{self, HealthPoller, Sampler, Target};
use crate::probe::{Probe, ProbeResult};

/// Fixed for one run.
pub struct Ctx {
    /// The nexus under test.
    pub target: Target,
    /// Its pid.
    pub pid: u32,
    /// Seconds of abuse.
    pub duration: Duration,
    /// Abusing connections (scenarios with many).
    pub connections: usize,
    /// Connections opened at once.
    pub parallel: usize,
    /// The nexus's `--handshake-timeout`.
    pub handshake_timeout: Duration,
}

/// What the samplers and bystanders measured.
pub struct Measures {
    /// RSS when measuring began, KiB.
    pub rss_base_kib: u64,
    /// Peak RSS, KiB.
    pub rss_peak_kib: u64,
    /// Peak open files of the nexus.
    pub fds_peak: u64,
    /// Bystander on the abuser's shard.
    pub same: ProbeResult,
    /// Bystander on the other shard.
    pub other: ProbeResult,
    /// `/healthz` answers.
    pub health: nexus::Health,
}

/// Measuring in progress.
pub struct Measuring {
    rss_base_kib: u64,
    sampler: Sampler,
    health: HealthPoller,
    same: Probe,
    other: Probe,
}

impl Ctx {
    /// Starts the bystanders (on `shard` and the other one) and samplers.
    pub fn measure(&self, shard: usize) -> Result<Measuring, String> {
        let same = Probe::start(self.target.clone(), shard, &format!("same-{shard}"))?;
        let other = Probe::start(
            self.target.clone(),
            1 - shard,
            &format!("other-{}", 1 - shard),
        )?;
        Ok(Measuring {
            rss_base_kib: nexus::rss_kib(self.pid).unwrap_or(0),
            sampler: Sampler::start(self.pid),
            health: HealthPoller::start(self.target.metrics),
            same,
            other,
        })
    }

    /// When the abuse ends.
    pub fn until(&self) -> Instant {
        Instant::now() + self.duration
    }
}

impl Measuring {
    /// Stops measuring.
    pub fn finish(self) -> Measures {
        let health = self.health.finish();
        let (same, other) = (self.same.finish(), self.other.finish());
        let (rss_peak_kib, fds_peak) = self.sampler.finish();
        Measures {
            rss_base_kib: self.rss_base_kib,
            rss_peak_kib,
            fds_peak,
            same,
            other,
            health,
        }
    }
}

/// A scenario's own result besides the measures.
pub struct Outcome {
    /// What happened to the abusers.
    pub abuser: Summary,
    /// Anything else worth a line (sinks, counts).
    pub notes: String,
}

/// RSS growth over the run in KiB per item (connection, subscription).
fn growth_per(measures: &Measures, items: usize) -> f64 {
    measures.rss_peak_kib.saturating_sub(measures.rss_base_kib) as f64 / items.max(1) as f64
}

impl Outcome {
    /// The abusers' summary from their reports, with `notes`.
    pub fn of_reports(target: &Target, reports: &[Report], notes: String) -> Outcome {
        Outcome {
            abuser: abusers::summarise(target, reports),
            notes,
        }
    }
}

/// Every scenario's name, in table order, with its row in issue 10.
pub const ALL: &[(&str, u32)] = &[
    ("churn", 1),
    ("burst", 2),
    ("cross-shard", 3),
    ("flood", 4),
    ("partial", 5),
    ("partial-fragment", 5),
    ("subscriptions", 6),
    ("fd-limit", 7),
    ("admin-idle", 8),
];

/// Runs scenario `name`.
pub async fn run(ctx: &Ctx, name: &str) -> Result<(Measures, Outcome), String> {
    match name {
        "churn" => churn(ctx).await,
        "burst" => burst(ctx).await,
        "cross-shard" => cross_shard(ctx).await,
        "flood" => flood(ctx).await,
        "partial" => partial(ctx, false).await,
        "partial-fragment" => partial(ctx, true).await,
        "subscriptions" => subscriptions(ctx).await,
        "fd-limit" => fd_limit(ctx).await,
        "admin-idle" => admin_idle(ctx).await,
        token if token.starts_with("token-") => crate::tokens::run(ctx, token).await,
        tls if tls.starts_with("tls-") => crate::tls::run(ctx, tls).await,
        flood if crate::floods::is_flood(flood) => crate::floods::run(ctx, flood).await,
        other => Err(format!("unknown scenario {other:?}")),
    }
}

/// Row 1: subscribe then unsubscribe fresh 1 KiB channels in a loop.
async fn churn(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let (conn, shard) = client::identified(&ctx.target, &padded("abuser-churn-", 1024)).await?;
    let measuring = ctx.measure(shard)?;
    let mut i = 0u64;
    let report = abusers::flood(conn, ctx.until(), |batch| {
        for _ in 0..32 {
            let channel = padded(&format!("churn-{i}-"), 1024);
            batch.extend_from_slice(&client::frame(&client::subscribe(&channel, 600)));
            batch.extend_from_slice(&client::frame(&client::subscribe(&channel, 0)));
            i += 1;
        }
        true
    })
    .await;
    let measures = measuring.finish();
    Ok((
        measures,
        Outcome {
            abuser: abusers::summarise(&ctx.target, std::slice::from_ref(&report)),
            notes: format!("{i} subscribe/unsubscribe pairs sent"),
        },
    ))
}

/// A subscriber on `shard` to `channel` that reads everything; returns it
/// once a probe message from `publisher` has come through.
pub async fn sink_on(
    ctx: &Ctx,
    shard: usize,
    channel: &str,
    publisher: &mut Conn,
) -> Result<Conn, String> {
    let mut sink = client::on_shard(&ctx.target, "abuse-sink", shard).await?;
    abusers::say(&mut sink, &[client::subscribe(channel, 3600)]).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    loop {
        abusers::say(publisher, &[client::publish(channel, "warm")]).await?;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(50), sink.read.read(&mut chunk)).await
        {
            sink.pending.extend_from_slice(&chunk[..n]);
            if let Some((_, used)) = crate::ws::next_frame(&sink.pending) {
                sink.pending.drain(..used);
                return Ok(sink);
            }
        }
        if Instant::now() > deadline {
            return Err("the sink never received the warm-up".into());
        }
    }
}

/// Reads the sink until `until`; (fate, texts).
pub fn drain_sink(sink: Conn, until: Instant) -> tokio::task::JoinHandle<(Fate, u64)> {
    tokio::task::spawn_local(async move {
        // Dropping the write half would end the stream: the nexus would
        // close the sink.
        let _write = sink.write;
        client::drain(sink.read, sink.pending, until).await
    })
}

/// Row 2: 50 connections with 1 KiB names each send one 64 KiB burst of
/// 15-byte `1t` to a channel whose subscriber is on the other shard.
async fn burst(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let name = |i: usize| padded(&format!("abuser-burst-{i}-"), 1024);
    let (first, shard) = client::identified(&ctx.target, &name(0)).await?;
    let mut conns = vec![first];
    for i in 1..ctx.connections {
        conns.push(client::on_shard(&ctx.target, &name(i), shard).await?);
    }
    let sink = sink_on(ctx, 1 - shard, "b", &mut conns[0]).await?;
    let measuring = ctx.measure(shard)?;
    let until = ctx.until();
    let sink = drain_sink(sink, until + Duration::from_secs(2));
    let burst = abusers::small_publishes("b", 64 * 1024);
    let per_conn = (burst.len() / 21) as u64;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            tokio::task::spawn_local(abusers::flood_batches(conn, until, vec![burst.clone()]))
        })
        .collect();
    let reports = join_reports(tasks).await;
    tokio::time::sleep_until(until.into()).await;
    let (sink_fate, got) = sink.await.unwrap_or((Fate::Dropped, 0));
    let measures = measuring.finish();
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    Ok((
        measures,
        Outcome {
            abuser: abusers::summarise(&ctx.target, &reports),
            notes: format!(
                "{} KiB sent ({} messages of {per_conn} per connection); sink on the other shard received {got}, {sink_fate:?}",
                sent / 1024,
                per_conn * reports.len() as u64
            ),
        },
    ))
}

async fn join_reports(tasks: Vec<tokio::task::JoinHandle<Report>>) -> Vec<Report> {
    let mut reports = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            reports.push(r);
        }
    }
    reports
}

/// Row 3: one publisher as fast as it can to a subscriber on the other shard.
async fn cross_shard(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let (mut conn, shard) = client::identified(&ctx.target, "abuser-heavy").await?;
    let sink = sink_on(ctx, 1 - shard, "heavy", &mut conn).await?;
    let measuring = ctx.measure(shard)?;
    let until = ctx.until();
    let sink = drain_sink(sink, until + Duration::from_secs(2));
    let one = client::frame(&client::publish("heavy", &"h".repeat(64)));
    let (report, n) = abusers::flood_repeated(conn, until, &one, 256).await;
    let (sink_fate, got) = sink.await.unwrap_or((Fate::Dropped, 0));
    let measures = measuring.finish();
    let rate = n as f64 / ctx.duration.as_secs_f64();
    Ok((
        measures,
        Outcome {
            abuser: abusers::summarise(&ctx.target, std::slice::from_ref(&report)),
            notes: format!(
                "{n} published ({rate:.0}/s offered); sink received {got}, {sink_fate:?}"
            ),
        },
    ))
}

/// Row 4: one client floods small valid messages to a channel nobody reads.
async fn flood(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let (conn, shard) = client::identified(&ctx.target, "abuser-flood").await?;
    let measuring = ctx.measure(shard)?;
    let one = client::frame(&client::publish("z", "y"));
    let (report, _) = abusers::flood_repeated(conn, ctx.until(), &one, 4096).await;
    let measures = measuring.finish();
    Ok((
        measures,
        Outcome {
            abuser: abusers::summarise(&ctx.target, std::slice::from_ref(&report)),
            notes: format!(
                "{:.2} M messages/s written",
                report.sent as f64 / 12.0 / ctx.duration.as_secs_f64() / 1e6
            ),
        },
    ))
}

/// Opens `n` connections, `parallel` at a time; failures are counted.
async fn open_many(ctx: &Ctx, n: usize) -> (Vec<Conn>, usize) {
    let permits = Rc::new(Semaphore::new(ctx.parallel.max(1)));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let permits = permits.clone();
            let addr = ctx.target.addr;
            tokio::task::spawn_local(async move {
                let _permit = permits.acquire().await;
                client::connect(addr).await
            })
        })
        .collect();
    let (mut conns, mut failed) = (Vec::new(), 0);
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => conns.push(c),
            _ => failed += 1,
        }
    }
    (conns, failed)
}

/// Row 5: each connection sends a frame header declaring 64 KiB, then one
/// byte every 2 s (`fragment`: a complete 32 KiB first fragment, FIN=0,
/// then a continuation header declaring 32 KiB).
async fn partial(ctx: &Ctx, fragment: bool) -> Result<(Measures, Outcome), String> {
    let measuring = ctx.measure(0)?;
    let started = Instant::now();
    let (conns, failed) = open_many(ctx, ctx.connections).await;
    let open_secs = started.elapsed().as_secs_f64();
    let head = if fragment {
        let mut h = abusers::header(0x01, 32 * 1024);
        h.extend(std::iter::repeat_n(b'a', 32 * 1024));
        h.extend(abusers::header(0x80, 32 * 1024));
        h
    } else {
        abusers::header(0x81, 64 * 1024)
    };
    let until = ctx.until();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::task::spawn_local(abusers::trickle(c, until, head.clone())))
        .collect();
    let reports = join_reports(tasks).await;
    let measures = measuring.finish();
    let per_conn = growth_per(&measures, reports.len());
    let notes = format!(
        "{} connections open in {open_secs:.1} s ({failed} failed); RSS growth {per_conn:.1} KiB per connection",
        reports.len(),
    );
    Ok((measures, Outcome::of_reports(&ctx.target, &reports, notes)))
}

/// Row 6: connections each holding 1,024 subscriptions with 1 KiB names.
async fn subscriptions(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let measuring = ctx.measure(0)?;
    let (conns, failed) = open_many(ctx, ctx.connections).await;
    let until = ctx.until();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let mut first =
                client::frame(&client::hello(&padded(&format!("abuser-subs-{i}-"), 1024)));
            for k in 0..1024 {
                let channel = padded(&format!("subs-{i}-{k}-"), 1024);
                first.extend_from_slice(&client::frame(&client::subscribe(&channel, 3600)));
            }
            tokio::task::spawn_local(abusers::flood_batches(conn, until, vec![first]))
        })
        .collect();
    let reports = join_reports(tasks).await;
    tokio::time::sleep_until(until.into()).await;
    let measures = measuring.finish();
    let per_sub = growth_per(&measures, reports.len().max(1) * 1024);
    let notes = format!(
        "{} connections × 1,024 subscriptions × 1 KiB names ({failed} failed to open); RSS growth {per_sub:.2} KiB per subscription",
        reports.len(),
    );
    Ok((measures, Outcome::of_reports(&ctx.target, &reports, notes)))
}

/// How a raw upgrade attempt was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Upgraded,
    Status(u16),
    Silence,
    Dropped,
}

/// Sends an upgrade and reads the status line within 3 s; keeps the stream.
async fn raw_upgrade(addr: std::net::SocketAddr) -> (Answer, Option<TcpStream>) {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(&crate::ws::upgrade_request(&addr.to_string(), "/"))
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let status: u16 = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
        Some((status, stream))
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Err(_) => (Answer::Silence, None),
        Ok(None) => (Answer::Dropped, None),
        Ok(Some((101, s))) => (Answer::Upgraded, Some(s)),
        Ok(Some((status, s))) => (Answer::Status(status), Some(s)),
    }
}

/// Row 7 (the nexus runs with soft RLIMIT_NOFILE 256): 400 connections;
/// every one must be answered, 101 or 503, never silence.
async fn fd_limit(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let measuring = ctx.measure(0)?;
    let permits = Rc::new(Semaphore::new(ctx.parallel.max(1)));
    let tasks: Vec<_> = (0..ctx.connections)
        .map(|_| {
            let permits = permits.clone();
            let addr = ctx.target.addr;
            tokio::task::spawn_local(async move {
                let _permit = permits.acquire().await;
                raw_upgrade(addr).await
            })
        })
        .collect();
    let mut held = Vec::new();
    let (mut upgraded, mut refused, mut other, mut silence, mut dropped) = (0, 0, 0, 0, 0);
    for t in tasks {
        let (answer, stream) = t.await.unwrap_or((Answer::Dropped, None));
        match answer {
            Answer::Upgraded => upgraded += 1,
            Answer::Status(503) => refused += 1,
            Answer::Status(_) => other += 1,
            Answer::Silence => silence += 1,
            Answer::Dropped => dropped += 1,
        }
        held.extend(stream);
    }
    tokio::time::sleep(ctx.duration.saturating_sub(Duration::from_secs(3))).await;
    let measures = measuring.finish();
    drop(held);
    let accept_failed = ctx.target.log.lock().unwrap().accept_failed;
    let n = ctx.connections;
    Ok((
        measures,
        Outcome {
            abuser: Summary {
                text: format!(
                    "{upgraded}/{n} upgraded, {refused} got 503, {other} other status, {silence} no answer in 3 s, {dropped} dropped"
                ),
                handled: silence == 0 && dropped == 0 && other == 0,
            },
            notes: format!("{accept_failed} \"accept failed\" log lines"),
        },
    ))
}

/// Row 8: 2,000 idle sockets on the admin port, then a WebSocket client
/// must still connect and get a message through.
async fn admin_idle(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let measuring = ctx.measure(0)?;
    let until = ctx.until();
    // A fresh client tries to connect and get a message through, again and
    // again while the idle sockets are being opened and held.
    let checker = {
        let target = ctx.target.clone();
        tokio::task::spawn_local(async move {
            let (mut worked, mut failed, mut why) = (0, 0, String::new());
            tokio::time::sleep(Duration::from_millis(100)).await;
            while Instant::now() < until {
                match tokio::time::timeout(Duration::from_secs(3), round_trip(&target)).await {
                    Ok(Ok(())) => worked += 1,
                    Ok(Err(e)) => {
                        failed += 1;
                        why = e;
                    }
                    Err(_) => {
                        failed += 1;
                        why = "timed out (3 s)".into();
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (worked, failed, why)
        })
    };
    let connected = Rc::new(AtomicU64::new(0));
    let permits = Rc::new(Semaphore::new(ctx.parallel.max(1)));
    let tasks: Vec<_> = (0..ctx.connections)
        .map(|_| {
            let (permits, connected) = (permits.clone(), connected.clone());
            let addr = ctx.target.metrics;
            tokio::task::spawn_local(async move {
                let _permit = permits.acquire().await;
                let s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
                    .await
                    .ok()?
                    .ok()?;
                connected.fetch_add(1, Ordering::Relaxed);
                Some(s)
            })
        })
        .collect();
    let mut idle = Vec::new();
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            idle.push(s);
        }
    }
    let (worked, failed, why) = checker.await.unwrap_or((0, 1, "checker failed".into()));
    let handled = worked > 0 && failed == 0;
    let mut verdict =
        format!("new WebSocket clients: {worked} got a message through, {failed} failed");
    if failed > 0 {
        verdict += &format!(" (last: {why})");
    }
    let measures = measuring.finish();
    drop(idle);
    Ok((
        measures,
        Outcome {
            abuser: Summary {
                text: verdict,
                handled,
            },
            notes: format!(
                "{} of {} idle admin sockets connected",
                connected.load(Ordering::Relaxed),
                ctx.connections
            ),
        },
    ))
}

/// A fresh subscriber and publisher connect; the publisher repeats until
/// the subscriber receives (interest may still be on its way across shards).
async fn round_trip(target: &Target) -> Result<(), String> {
    let mut sub = client::connect(target.addr).await?;
    abusers::say(
        &mut sub,
        &[client::hello("late-sub"), client::subscribe("late", 60)],
    )
    .await?;
    let mut publisher = client::connect(target.addr).await?;
    abusers::say(&mut publisher, &[client::hello("late-pub")]).await?;
    let mut chunk = [0u8; 1024];
    let mut pending = std::mem::take(&mut sub.pending);
    loop {
        abusers::say(&mut publisher, &[client::publish("late", "hello")]).await?;
        let mut used = 0;
        while let Some((frame, n)) = crate::ws::next_frame(&pending[used..]) {
            used += n;
            match frame {
                crate::ws::Incoming::Text(_) => return Ok(()),
                crate::ws::Incoming::Close(code) => return Err(format!("closed {code:?}")),
                _ => {}
            }
        }
        pending.drain(..used);
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(100), sub.read.read(&mut chunk)).await
        {
            match read {
                Ok(0) | Err(_) => return Err("dropped".into()),
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
