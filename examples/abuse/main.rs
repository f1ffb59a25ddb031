//! `abuse`: reproduces one row of issue 10's table (a client that speaks
//! valid protocol but tries to exhaust the nexus or stall its neighbours)
//! against a real nexus binary, and measures what the issue's bounds are
//! about: nexus RSS peak, a bystander's publish → receive latency on the
//! abuser's shard and on the other shard, `/healthz` during the abuse, lost
//! messages, and what happened to the abuser.
//!
//! The tool starts the nexus itself (`--nexus`, `--cores 2`, `--metrics` on
//! an ephemeral port, under `prlimit` when the scenario needs a low file
//! limit) so that it knows the pid and reads the log, which tells on which
//! shard each connection landed.
//!
//! ```sh
//! cargo run --release --example abuse -- --scenario churn --duration 8
//! ```
//!
//! It prints one `ABUSE {json}` line and one markdown table row; exit code
//! 0 when every bound held, 1 when one failed, 2 on a setup error.
//!
//! The `tls-*` rows run the nexus with wss on (`--tls-listen`, a test
//! certificate made by the tool); `--wss` does so for every row.
//!
//! With `ABUSE_TRACE_SLOW=1` in the environment, every bystander delivery
//! slower than 5 ms is printed with its CLOCK_MONOTONIC arrival time, to
//! find the moment in `perf record --clockid=monotonic -a -g -e
//! sched:sched_switch,sched:sched_wakeup` (then `perf sched timehist`).

mod abusers;
mod client;
mod floods;
#[path = "../../tests/common/http.rs"]
mod http;
mod nexus;
#[path = "../stress/payload.rs"]
mod payload;
mod probe;
mod scenarios;
mod summary;
mod tls;
mod tokens;
// Shared with the load generator; the pong half is not needed here.
#[allow(dead_code)]
#[path = "../stress/ws.rs"]
mod ws;

use std::time::Duration;

use argh::FromArgs;

use scenarios::Ctx;

/// Abuse suite for EaseChat Nexus (issue 10; see the module docs).
#[derive(FromArgs, Debug)]
struct Args {
    /// scenario: churn, burst, cross-shard, flood, partial,
    /// partial-fragment, subscriptions, fd-limit, admin-idle, token-bad,
    /// token-malformed, token-expiry, tls-garbage, tls-slow-handshake,
    /// tls-half-open
    #[argh(option)]
    scenario: String,
    /// serve wss too (--tls-listen with a test certificate) in any
    /// scenario; the tls-* scenarios always do
    #[argh(switch)]
    wss: bool,
    /// nexus binary (default target/release/ease_chat_nexus)
    #[argh(option, default = "String::from(\"target/release/ease_chat_nexus\")")]
    nexus: String,
    /// extra nexus flag (repeatable), e.g. --nexus-arg=--max-partial-bytes
    #[argh(option)]
    nexus_arg: Vec<String>,
    /// flag that opens the admin listener (default --metrics; the fixes
    /// may rename it --admin)
    #[argh(option, default = "String::from(\"--metrics\")")]
    admin_flag: String,
    /// nexus shards (default 2)
    #[argh(option, default = "2")]
    cores: usize,
    /// seconds of abuse (default 8)
    #[argh(option, default = "8.0")]
    duration: f64,
    /// abusing connections (default per scenario: burst 50, partial 1800,
    /// subscriptions 20, fd-limit 400, admin-idle 2000, token-bad 10000,
    /// token-malformed 2000, tls-garbage 10000, tls-half-open 2000, else 1)
    #[argh(option)]
    connections: Option<usize>,
    /// connections opened at once (default 64)
    #[argh(option, default = "64")]
    parallel: usize,
    /// the nexus's soft RLIMIT_NOFILE (default fd-limit 256, admin-idle
    /// 512, else inherited)
    #[argh(option)]
    nofile: Option<u64>,
    /// run label for the table: before or after (default before)
    #[argh(option, default = "String::from(\"before\")")]
    label: String,
    /// append the summary JSON line to this file
    #[argh(option)]
    json: Option<String>,
    /// copy the nexus's log here
    #[argh(option)]
    log_file: Option<String>,
}

fn main() {
    let args: Args = argh::from_env();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("abuse: {}: {e}", args.scenario);
            std::process::exit(2);
        }
    }
}

/// Lets this process hold thousands of sockets.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let row = scenarios::ALL
        .iter()
        .chain(tokens::ALL)
        .chain(tls::ALL)
        .chain(floods::ALL)
        .find(|(name, _)| *name == args.scenario)
        .map(|(_, row)| *row)
        .ok_or_else(|| {
            let names: Vec<&str> = scenarios::ALL
                .iter()
                .chain(tokens::ALL)
                .chain(tls::ALL)
                .chain(floods::ALL)
                .map(|(n, _)| *n)
                .collect();
            format!("unknown scenario; one of {}", names.join(", "))
        })?;
    if args.cores < 2 {
        return Err("--cores must be at least 2 (bystanders on two shards)".into());
    }
    raise_nofile();
    let connections = args.connections.unwrap_or(match args.scenario.as_str() {
        "burst" => 50,
        "partial" | "partial-fragment" => 1800,
        "subscriptions" => 20,
        "fd-limit" => 400,
        "admin-idle" => 2000,
        "token-bad" => 10_000,
        "token-malformed" => 2_000,
        "tls-garbage" => 10_000,
        "tls-half-open" => 2_000,
        _ => 1,
    });
    let nofile = args.nofile.or(match args.scenario.as_str() {
        "fd-limit" => Some(256),
        "admin-idle" => Some(512),
        _ => None,
    });
    let mut extra = args.nexus_arg.clone();
    if args.scenario.starts_with("token-") {
        extra.extend(tokens::setup()?);
    }
    if args.wss || args.scenario.starts_with("tls-") {
        extra.extend(tls::setup()?);
    }
    if args.scenario == "fd-limit" && !extra.iter().any(|a| a == "--max-connections") {
        extra.extend(["--max-connections".to_string(), "20000".to_string()]);
    }
    let nexus = nexus::Nexus::start(
        &args.nexus,
        args.cores,
        &args.admin_flag,
        &extra,
        nofile,
        args.log_file.as_deref(),
    )?;
    let ctx = Ctx {
        target: nexus.target.clone(),
        pid: nexus.pid,
        duration: Duration::from_secs_f64(args.duration),
        connections,
        parallel: args.parallel,
        handshake_timeout: tls::handshake_timeout(&extra),
    };
    eprintln!(
        "abuse: {} (row {row}) against pid {} at {}{}, {connections} connection(s), {:.0} s",
        args.scenario,
        nexus.pid,
        ctx.target.addr,
        ctx.target
            .tls_addr
            .map(|a| format!(" (wss {a})"))
            .unwrap_or_default(),
        args.duration
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, scenarios::run(&ctx, &args.scenario));
    // Abusers' sockets close with the runtime, before the nexus is stopped.
    drop(local);
    drop(runtime);
    let accept_failed = ctx.target.log.lock().unwrap().accept_failed;
    let stopped = nexus.stop();
    tls::cleanup();
    let (measures, outcome) = result?;
    let line = summary::Line {
        scenario: &args.scenario,
        row,
        label: &args.label,
        settings: format!(
            "{connections} conn, {:.0} s{}{}",
            args.duration,
            nofile.map(|n| format!(", nofile {n}")).unwrap_or_default(),
            if extra.is_empty() {
                String::new()
            } else {
                format!(", {}", extra.join(" "))
            }
        ),
        measures: &measures,
        outcome: &outcome,
        accept_failed,
        stopped,
    };
    let json = line.json();
    println!("ABUSE {json}");
    println!("{}", line.markdown());
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?;
        writeln!(file, "{json}").map_err(|e| e.to_string())?;
    }
    Ok(line.passed())
}
