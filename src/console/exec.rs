//! Running console commands on shard 0 and printing their answers.

use std::collections::BTreeSet;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use tracing::info;

use super::command::{self, Command};
use super::{Control, DEFAULT_STOP_REASON, POLL_INTERVAL};
use crate::admin::{self, requests::check_publish};
use crate::router::ShardMsg;
use crate::shard::ShardState;
use crate::state::views::{
    Answer, HeldHistory, KeywordReport, Query, ShardSummary, SubscriptionView,
};
use crate::stats::render_console;

/// How long shard 0 waits for the other shards' answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Shard 0's console loop: runs commands until the nexus stops.
pub async fn serve(shard: Rc<ShardState>, control: Receiver<Control>) {
    while shard.shutdown.reason().is_none() {
        match control.try_recv() {
            Ok(Control::Line(line)) => match command::parse(&line) {
                Ok(Some(cmd)) => run(&shard, cmd).await,
                Ok(None) => {}
                Err(message) => print(&format!("error: {message}")),
            },
            Ok(Control::Stop(reason)) => stop(&shard, Arc::from(reason)),
            Ok(Control::Drain) => drain(&shard),
            Ok(Control::Reload) => print_reload(reload(&shard)),
            Ok(Control::Admin(request)) => {
                glommio::spawn_local(admin::requests::answer(shard.clone(), request)).detach();
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                glommio::timer::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

async fn run(shard: &Rc<ShardState>, cmd: Command) {
    match cmd {
        Command::Huaji => print("huaji"),
        Command::Stats => {
            let (snapshots, complete) = shard.gather_stats(ANSWER_TIMEOUT).await;
            warn_if_incomplete(complete);
            print(&render_console(&snapshots));
            if let Some(cluster) = &shard.cluster {
                print(&cluster.stats().render_console());
            }
        }
        Command::List(None) => {
            let answers = gather(shard, Query::Summary).await;
            print(&format_summary(answers.into_iter().filter_map(
                |a| match a {
                    Answer::Summary(s) => Some(s),
                    _ => None,
                },
            )));
        }
        Command::List(Some(keyword)) => {
            let answers = gather(shard, Query::Keyword(keyword.as_str().into())).await;
            let reports = answers.into_iter().filter_map(|a| match a {
                Answer::Keyword(r) => Some(r),
                _ => None,
            });
            let home = shard.history_home(&keyword);
            print(&format_keyword(&keyword, reports, home));
        }
        Command::Push {
            sender,
            channel,
            message,
        } => match check_publish(shard, &sender, &channel, &message) {
            Ok(()) => {
                shard.publish(&sender, &channel, &message);
                print(&format!("pushed to {channel} as {sender}"));
            }
            Err(reason) => print(&format!("error: not pushed: {reason}")),
        },
        Command::Drain => drain(shard),
        Command::Reload => print_reload(reload(shard)),
        Command::Stop(reason) => {
            let reason = reason.unwrap_or_else(|| DEFAULT_STOP_REASON.to_string());
            stop(shard, Arc::from(reason));
        }
    }
}

/// Asks every shard, warning when one did not answer in time.
async fn gather(shard: &ShardState, query: Query) -> Vec<Answer> {
    let (answers, complete) = shard.gather(query, ANSWER_TIMEOUT).await;
    warn_if_incomplete(complete);
    answers
}

fn warn_if_incomplete(complete: bool) {
    if !complete {
        print("warning: not every shard answered in time");
    }
}

/// Tells every shard to close its connections with `reason`, then stops.
fn stop(shard: &ShardState, reason: Arc<str>) {
    info!(reason = &*reason, "stopping: closing every connection");
    print(&format!("stopping: {reason}"));
    for peer in shard.router.links().peers() {
        shard.router.send(peer, ShardMsg::Shutdown(reason.clone()));
    }
    shard.begin_shutdown(reason);
}

/// Reloads (console `reload`, SIGHUP, `POST /api/reload`): the `--config`
/// file and the access policy are re-read and validated whole; on success
/// every shard switches at once (limits are shared atomics, the policy a
/// generation each connection compares) and re-checks its connections
/// within a purge interval; on error nothing changes. A short blocking
/// read of small files on shard 0.
pub fn reload(shard: &ShardState) -> Result<String, String> {
    let config = &shard.config;
    match (&config.reloader, &config.access, &config.tls) {
        (Some(reloader), _, _) => reloader.reload(config).map(|o| o.to_string()),
        (None, None, None) => {
            info!("reload: nothing to reload (no --config, access control and TLS off)");
            Err("nothing to reload: no --config, access control and TLS are off".into())
        }
        // Embedded without a reloader: the policy and certificate files.
        // Both are read and checked before either is put in force.
        (None, access, tls) => {
            let certificates = tls
                .as_ref()
                .map(|t| crate::tls::Loaded::read(&t.settings()))
                .transpose()
                .map_err(|e| e.to_string())?;
            let policy = access.as_ref().map(|a| a.reload()).transpose()?;
            let tls = tls.as_ref().zip(certificates).map(|(t, c)| t.install(c));
            Ok([policy, tls.map(|t| format!("tls: {t}"))]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "))
        }
    }
}

fn print_reload(result: Result<String, String>) {
    match result {
        Ok(summary) => print(&format!("reloaded: {summary}")),
        Err(e) => print(&format!(
            "error: reload refused, the configuration in force stays: {e}"
        )),
    }
}

/// Starts a lame-duck drain on every shard.
fn drain(shard: &ShardState) {
    print(&format!(
        "draining: closing every connection over {:?} after {:?}, then exiting",
        shard.config.live.lame_duck_duration(),
        shard.config.live.lame_duck_grace()
    ));
    crate::drain::start(shard);
}

fn format_summary(summaries: impl Iterator<Item = ShardSummary>) -> String {
    let mut summaries: Vec<_> = summaries.collect();
    summaries.sort_by_key(|s| s.shard);
    let identified: usize = summaries.iter().map(|s| s.identified).sum();
    let connections: usize = summaries.iter().map(|s| s.connections).sum();
    let channels: BTreeSet<&str> = summaries
        .iter()
        .flat_map(|s| s.channels.iter().map(String::as_str))
        .collect();
    let mut out = format!(
        "{identified} clients identified ({connections} connected), {} channels active",
        channels.len()
    );
    for s in &summaries {
        out.push_str(&format!(
            "\n  shard {}: {} identified, {} connected, {} channels, {} subscriptions",
            s.shard,
            s.identified,
            s.connections,
            s.channels.len(),
            s.subscriptions
        ));
    }
    out
}

/// `list KEYWORD`: the v1 lines (endpoint KEYWORD's subscriptions, then
/// channel KEYWORD's subscribers, each header followed by exactly its count
/// of lines), preceded, when KEYWORD is a channel with history (`home`: its
/// home shard), by one `history of …` line. That line comes first so that
/// a reader of the v1 lines that skips to the `endpoint` header still
/// reads them whole.
fn format_keyword(
    keyword: &str,
    reports: impl Iterator<Item = KeywordReport>,
    home: Option<usize>,
) -> String {
    let mut listens = Vec::new();
    let mut subscribers = Vec::new();
    let mut history = None;
    for report in reports {
        listens.extend(report.endpoint_channels);
        subscribers.extend(report.channel_subscribers);
        history = history.or(report.history);
    }
    let mut out = match (history, home) {
        (Some(HeldHistory { shard, view }), _) => format!(
            "history of {keyword:?} on shard {shard}: position {}, epoch {}, {} messages, {} bytes held\n",
            view.top, view.epoch, view.messages, view.bytes
        ),
        (None, Some(home)) => format!(
            "history of {keyword:?} on shard {home}: none held (a new epoch starts with the next publish or positions subscription)\n"
        ),
        (None, None) => String::new(),
    };
    let line = |v: &SubscriptionView, what: &str| {
        format!(
            "\n  {what}  [{}] expires in {:.1}s",
            v.connection,
            v.expires_in.as_secs_f64()
        )
    };
    listens.sort_by(|a, b| (&a.channel, &a.connection).cmp(&(&b.channel, &b.connection)));
    subscribers.sort_by(|a, b| (&a.name, &a.connection).cmp(&(&b.name, &b.connection)));
    out.push_str(&format!(
        "endpoint {keyword:?} listens to {} channels:",
        listens.len()
    ));
    for v in &listens {
        out.push_str(&line(v, &format!("{:?}", v.channel)));
    }
    out.push_str(&format!(
        "\nchannel {keyword:?} has {} subscribers:",
        subscribers.len()
    ));
    for v in &subscribers {
        out.push_str(&line(v, &format!("{:?}", v.name)));
    }
    out
}
