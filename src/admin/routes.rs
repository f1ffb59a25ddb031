//! The admin router: the page, Prometheus text, health, and the JSON API.
//! Every handler asks shard 0 through [`App::ask`] and renders the answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use crossbeam_channel::Sender;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, Semaphore};

use super::auth::{self, AdminToken};
use super::requests::{AdminRequest, StatsReply};
use super::{tap, MAX_TAPS};
use crate::access::Access;
use crate::cluster::Directory;
use crate::console::Control;
use crate::reload::Reloader;
use crate::state::listing::{ChannelQuery, ChannelSort, ClientQuery, MAX_LIMIT};
use crate::stats::{render_prometheus, Metric, StatsSnapshot};

/// The page, embedded: no build step, no CDN, works offline.
const PAGE: &str = include_str!("page.html");
/// How long a scrape or API call waits for the other shards.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/healthz` waits for every shard before answering 503.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Extra time the admin thread gives shard 0 beyond its gather timeout
/// (shard 0 looks at its control channel every 10 ms).
const REPLY_SLACK: Duration = Duration::from_millis(500);
/// Channels or clients listed when the request names no limit.
const DEFAULT_LIMIT: usize = 100;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    /// The channel shard 0 polls.
    pub control: Sender<Control>,
    /// Required on non-loopback binds.
    pub token: Option<AdminToken>,
    /// Where taps connect: the nexus's own listener.
    pub nexus: SocketAddr,
    /// Open taps, at most [`MAX_TAPS`].
    pub taps: Arc<Semaphore>,
    /// Numbers the taps' endpoint names.
    pub tap_ids: Arc<AtomicU64>,
    /// With `--nats`: which other nodes listen to which channels.
    pub directory: Option<Directory>,
    /// Access control, when on: taps prove themselves with its console
    /// secret, and `/metrics` shows its reloads.
    pub access: Option<Arc<Access>>,
    /// `--max-connections` as the shards apply it (`/readyz` turns 503 near it).
    pub max_connections: Option<usize>,
    /// The reload path: its counts and the configuration's hash are shown.
    pub reloader: Option<Arc<Reloader>>,
    /// The wss certificates, when on: `/metrics` shows their expiry.
    pub tls: Option<Arc<crate::tls::Certificates>>,
    /// Set the first time every shard answered (see [`readiness`]); until
    /// then `/readyz` says `starting`.
    pub started: Arc<AtomicBool>,
}

impl App {
    /// The shared state; `nexus` is the client listener's address (an
    /// unspecified address is reached over loopback).
    pub fn new(
        control: Sender<Control>,
        token: Option<AdminToken>,
        nexus: SocketAddr,
        directory: Option<Directory>,
        access: Option<Arc<Access>>,
    ) -> App {
        let mut nexus = nexus;
        if nexus.ip().is_unspecified() {
            nexus.set_ip(match nexus {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        App {
            control,
            token,
            nexus,
            taps: Arc::new(Semaphore::new(MAX_TAPS)),
            tap_ids: Arc::new(AtomicU64::new(0)),
            directory,
            access,
            max_connections: None,
            reloader: None,
            tls: None,
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends a request to shard 0 and waits up to `wait` for the answer;
    /// `None` when the nexus did not answer (stopping or stuck).
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
        wait: Duration,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Admin(make(reply))).ok()?;
        tokio::time::timeout(wait + REPLY_SLACK, answer)
            .await
            .ok()?
            .ok()
    }

    async fn stats(&self, timeout: Duration) -> Option<StatsReply> {
        let reply = self
            .ask(|reply| AdminRequest::Stats { timeout, reply }, timeout)
            .await;
        if reply.as_ref().is_some_and(|r| r.complete) {
            self.started.store(true, Ordering::Relaxed);
        }
        reply
    }
}

/// Every route, behind the [`auth::guard`].
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/stats", get(stats))
        .route("/api/channels", get(channels))
        .route("/api/clients", get(clients))
        .route("/api/publish", post(publish))
        .route("/api/reload", post(reload))
        .route("/api/tap", get(tap::tap))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth::guard))
        .with_state(app)
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "the nexus did not answer in time"})),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn now_ms() -> u64 {
    millis(SystemTime::now())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "try /, /metrics, /healthz or /api/stats\n",
    )
        .into_response()
}

async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    match app.stats(SCRAPE_TIMEOUT).await {
        Some(reply) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render_prometheus(&reply.shards)
                + &render_shards(reply.nr_shards, reply.shards.len())
                + reply.cluster.as_deref().unwrap_or("")
                + &render_access(app.access.as_deref())
                + &render_reloads(app.reloader.as_deref())
                + &app
                    .tls
                    .as_ref()
                    .map(|t| t.render_prometheus())
                    .unwrap_or_default(),
        )
            .into_response(),
        None => unavailable(),
    }
}

/// The access policy's reload counters in Prometheus text (empty with
/// access control off).
fn render_access(access: Option<&Access>) -> String {
    let Some(access) = access else {
        return String::new();
    };
    let (reloads, failures) = access.reload_counts();
    format!(
        "# HELP easechat_policy_reloads_total Access policy reloads applied.\n\
         # TYPE easechat_policy_reloads_total counter\n\
         easechat_policy_reloads_total {reloads}\n\
         # HELP easechat_policy_reload_failures_total Access policy reloads refused (the previous policy stayed).\n\
         # TYPE easechat_policy_reload_failures_total counter\n\
         easechat_policy_reload_failures_total {failures}\n"
    )
}

/// How many shards the nexus has and how many answered this scrape: a
/// shard that stopped answering shows as a difference (alert rule
/// `EaseChatShardNotAnswering`).
fn render_shards(configured: usize, answered: usize) -> String {
    format!(
        "# HELP easechat_shards Shards the nexus runs.\n\
         # TYPE easechat_shards gauge\n\
         easechat_shards {configured}\n\
         # HELP easechat_shards_answered Shards that answered this scrape in time.\n\
         # TYPE easechat_shards_answered gauge\n\
         easechat_shards_answered {answered}\n"
    )
}

/// The configuration's reload counters and hash in Prometheus text.
fn render_reloads(reloader: Option<&Reloader>) -> String {
    let Some(reloader) = reloader else {
        return String::new();
    };
    let (reloads, failures) = reloader.counts();
    format!(
        "# HELP easechat_config_reloads_total Reloads applied (SIGHUP, console reload, POST /api/reload).\n\
         # TYPE easechat_config_reloads_total counter\n\
         easechat_config_reloads_total {reloads}\n\
         # HELP easechat_config_reload_failures_total Reloads refused (the configuration in force stayed).\n\
         # TYPE easechat_config_reload_failures_total counter\n\
         easechat_config_reload_failures_total {failures}\n\
         # HELP easechat_config_info The configuration in force (hash of its effective keys).\n\
         # TYPE easechat_config_info gauge\n\
         easechat_config_info{{hash=\"{}\"}} 1\n",
        reloader.hash()
    )
}

/// `POST /api/reload`: reloads as SIGHUP does; 200 with what was applied
/// and what needs a restart, or 400 with why it was refused (the
/// configuration in force stays).
async fn reload(State(app): State<App>) -> Response {
    match app
        .ask(|reply| AdminRequest::Reload { reply }, SCRAPE_TIMEOUT)
        .await
    {
        Some(Ok(summary)) => Json(json!({"ok": true, "reloaded": summary})).into_response(),
        Some(Err(message)) => bad_request(message),
        None => unavailable(),
    }
}

/// Within this share of `--max-connections` the nexus is not ready.
const READY_CONNECTIONS_SHARE: f64 = 0.95;

/// `GET /readyz`: 200 `ready` when the nexus should be sent new clients
/// (Kubernetes readiness, a load balancer's pool membership); 503 `not
/// ready: WHY` otherwise. Says nothing else. See [`readiness`].
async fn readyz(State(app): State<App>) -> Response {
    let reply = app.stats(HEALTH_TIMEOUT).await;
    match readiness(
        reply.as_ref(),
        app.started.load(Ordering::Relaxed),
        app.max_connections,
    ) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Why the nexus is not ready, from shard 0's answer (`None`: no answer
/// in time), whether every shard has ever answered (`started`), and
/// `--max-connections` as the shards apply it. In order:
///
/// - `starting`: not every shard has answered yet since the process
///   started. The admin listener is bound before the shards start, and a
///   shard answers from the executor that runs its accept loop, so once
///   all have answered, all are listening.
/// - `no answer` / `a shard did not answer`: shard 0, or another shard,
///   did not answer within [`HEALTH_TIMEOUT`] (stuck or stopping).
/// - `stopping`, `draining`: a stop or a lame-duck drain is under way
///   (clients are being moved off; new ones should go elsewhere).
/// - `near --max-connections`: over its budget. The budget is the
///   connection cap of all shards together (`--max-connections`, lowered
///   at start to what the open-files limit allows): at or above 95 % of
///   it, new upgrades would soon be refused with 503, so a balancer should
///   send clients elsewhere first. The memory budgets
///   (`--max-subscription-bytes`, `--max-partial-bytes`, the ring backlog)
///   are per shard and answered per request (a refusal, a pause), not
///   here.
pub fn readiness(
    reply: Option<&StatsReply>,
    started: bool,
    max_connections: Option<usize>,
) -> Result<(), &'static str> {
    let complete = reply.is_some_and(|r| r.complete);
    if !started && !complete {
        return Err("starting");
    }
    let Some(reply) = reply else {
        return Err("no answer");
    };
    let open: u64 = reply
        .shards
        .iter()
        .map(|s| s.get(crate::stats::Metric::ConnectionsOpen))
        .sum();
    let near_cap =
        max_connections.is_some_and(|max| open as f64 >= max as f64 * READY_CONNECTIONS_SHARE);
    if !reply.complete {
        Err("a shard did not answer")
    } else if reply.stopping {
        Err("stopping")
    } else if reply.draining {
        Err("draining")
    } else if near_cap {
        Err("near --max-connections")
    } else {
        Ok(())
    }
}

async fn healthz(State(app): State<App>) -> Response {
    match app.stats(HEALTH_TIMEOUT).await {
        Some(reply) if reply.complete && !reply.stopping && !reply.draining => (
            StatusCode::OK,
            format!("ok: {} shards\n", reply.shards.len()),
        )
            .into_response(),
        Some(reply) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: {} of {} shards answered{}\n",
                reply.shards.len(),
                reply.nr_shards,
                if reply.stopping {
                    ", stopping"
                } else if reply.draining {
                    ", draining"
                } else {
                    ""
                }
            ),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy: no answer\n").into_response(),
    }
}

/// One shard's figures as JSON: every series of the metric table, named
/// like its Prometheus series without `easechat_` and `_total`.
fn snapshot_json(s: &StatsSnapshot) -> Map<String, Value> {
    Metric::ALL
        .iter()
        .map(|&m| (m.json_key().to_string(), Value::from(s.get(m))))
        .collect()
}

async fn stats(State(app): State<App>) -> Response {
    let Some(reply) = app.stats(SCRAPE_TIMEOUT).await else {
        return unavailable();
    };
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let shards: Vec<Value> = reply
        .shards
        .iter()
        .map(|s| {
            let mut fields = snapshot_json(s);
            for (k, v) in &fields {
                *totals.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
            fields.insert("shard".into(), Value::from(s.shard));
            Value::Object(fields)
        })
        .collect();
    // A channel with subscribers on two shards counts once per shard.
    totals.remove("channels");
    Json(json!({
        "time_ms": now_ms(),
        "complete": reply.complete,
        "stopping": reply.stopping,
        "draining": reply.draining,
        "totals": totals,
        "shards": shards,
        "config": app.reloader.as_ref().map(|r| {
            let (reloads, failures) = r.counts();
            json!({"hash": r.hash(), "reloads": reloads, "reload_failures": failures})
        }),
    }))
    .into_response()
}

/// `/api/channels` parameters.
#[derive(Debug, Deserialize)]
pub struct ChannelParams {
    filter: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
}

fn limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

async fn channels(State(app): State<App>, Query(params): Query<ChannelParams>) -> Response {
    let sort = match params.sort.as_deref() {
        None | Some("") | Some("subscribers") => ChannelSort::Subscribers,
        Some("name") => ChannelSort::Name,
        Some(other) => {
            return bad_request(format!("sort must be subscribers or name, got {other:?}"))
        }
    };
    let filter = params.filter.unwrap_or_default();
    // Other nodes are asked while the shards answer.
    let other_nodes = async {
        match &app.directory {
            Some(directory) => Some(directory.other_nodes(&filter).await.unwrap_or_default()),
            None => None,
        }
    };
    let query = ChannelQuery {
        filter: filter.as_str().into(),
        sort,
        limit: limit(params.limit),
    };
    let (reply, other_nodes) = tokio::join!(
        app.ask(
            |reply| AdminRequest::Channels { query, reply },
            SCRAPE_TIMEOUT,
        ),
        other_nodes
    );
    let Some(reply) = reply else {
        return unavailable();
    };
    let channels: Vec<Value> = reply
        .channels
        .iter()
        .map(|row| {
            let per_shard: Map<String, Value> = row
                .per_shard
                .iter()
                .map(|(shard, n)| (shard.to_string(), Value::from(*n)))
                .collect();
            let mut channel = json!({
                "name": row.name,
                "subscribers": row.subscribers,
                "shards": per_shard,
                // Other nodes with subscribers there (null without --nats).
                "cluster": other_nodes
                    .as_ref()
                    .map(|counts| Value::from(counts.get(&row.name).copied().unwrap_or(0))),
            });
            // Only on channels with history (`--history`): no key otherwise.
            if let Some(held) = &row.history {
                channel["history"] = json!({
                    "position": held.view.top,
                    "epoch": held.view.epoch,
                    "messages": held.view.messages,
                    "bytes": held.view.bytes,
                    "shard": held.shard,
                });
            }
            channel
        })
        .collect();
    Json(json!({
        "complete": reply.complete,
        "matching": reply.matching,
        "channels": channels,
    }))
    .into_response()
}

/// `/api/clients` parameters.
#[derive(Debug, Deserialize)]
pub struct ClientParams {
    filter: Option<String>,
    limit: Option<usize>,
}

async fn clients(State(app): State<App>, Query(params): Query<ClientParams>) -> Response {
    let query = ClientQuery {
        filter: params.filter.unwrap_or_default().into(),
        limit: limit(params.limit),
    };
    let Some(reply) = app
        .ask(
            |reply| AdminRequest::Clients { query, reply },
            SCRAPE_TIMEOUT,
        )
        .await
    else {
        return unavailable();
    };
    let clients: Vec<Value> = reply
        .clients
        .iter()
        .map(|c| {
            let mut client = json!({
                "connection": c.connection,
                "shard": c.shard,
                "name": c.name,
                "address": c.peer.to_string(),
                "subscriptions": c.subscriptions,
                "connected_at_ms": millis(c.connected_at),
            });
            // With access control on: who the token says it is.
            if let (Some(identity), Some(map)) = (&c.identity, client.as_object_mut()) {
                map.insert("identity".into(), json!(identity));
                map.insert("token_id".into(), json!(c.token_id));
            }
            client
        })
        .collect();
    Json(json!({
        "complete": reply.complete,
        "matching": reply.matching,
        "clients": clients,
    }))
    .into_response()
}

/// `POST /api/publish` body.
#[derive(Debug, Deserialize)]
pub struct PublishBody {
    sender: String,
    channel: String,
    text: String,
}

async fn publish(State(app): State<App>, Json(body): Json<PublishBody>) -> Response {
    let PublishBody {
        sender,
        channel,
        text,
    } = body;
    let answer = app
        .ask(
            |reply| AdminRequest::Publish {
                sender,
                channel,
                text,
                reply,
            },
            SCRAPE_TIMEOUT,
        )
        .await;
    match answer {
        Some(Ok(())) => Json(json!({"ok": true})).into_response(),
        Some(Err(message)) => bad_request(message),
        None => unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Metric;

    fn reply(complete: bool, open: u64) -> StatsReply {
        let mut shard = StatsSnapshot::empty(0);
        shard.set(Metric::ConnectionsOpen, open);
        StatsReply {
            shards: vec![shard],
            complete,
            stopping: false,
            draining: false,
            cluster: None,
            nr_shards: 2,
        }
    }

    #[test]
    fn readiness_starts_not_ready_and_counts_the_connection_budget() {
        // Before every shard has answered once: starting, not "stuck".
        assert_eq!(readiness(None, false, Some(100)), Err("starting"));
        assert_eq!(
            readiness(Some(&reply(false, 0)), false, Some(100)),
            Err("starting")
        );
        // The first complete answer is ready at once.
        assert_eq!(readiness(Some(&reply(true, 0)), false, Some(100)), Ok(()));
        // Later, a silent shard is a shard that stopped answering.
        assert_eq!(
            readiness(Some(&reply(false, 0)), true, Some(100)),
            Err("a shard did not answer")
        );
        assert_eq!(readiness(None, true, Some(100)), Err("no answer"));
        // The budget: 95 % of --max-connections.
        assert_eq!(readiness(Some(&reply(true, 94)), true, Some(100)), Ok(()));
        assert_eq!(
            readiness(Some(&reply(true, 95)), true, Some(100)),
            Err("near --max-connections")
        );
        assert_eq!(readiness(Some(&reply(true, 10_000)), true, None), Ok(()));
        let mut draining = reply(true, 0);
        draining.draining = true;
        assert_eq!(readiness(Some(&draining), true, None), Err("draining"));
        let mut stopping = reply(true, 0);
        stopping.stopping = true;
        assert_eq!(readiness(Some(&stopping), true, None), Err("stopping"));
    }
}
