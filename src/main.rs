//! The `ease_chat_nexus` binary: flags, logging, signals, console, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use ease_chat_nexus::cli;
use ease_chat_nexus::{console, server, signals};
use std::sync::Arc;
use tracing::{error, info, warn};

use ease_chat_nexus::reload::{LogFilterHandle, Reloader};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let available = shards::available_cores();
    let invocation = match cli::load(&args, &available) {
        Ok(invocation) => invocation,
        Err((text, code)) => {
            if code == 0 {
                println!("{text}");
            } else {
                eprintln!("{text}");
            }
            return ExitCode::from(code as u8);
        }
    };
    let json_logs = invocation.log_format == cli::LogFormat::Json;
    if invocation.print_config {
        print!(
            "{}",
            ease_chat_nexus::config::render_toml_with_format(
                &invocation.config,
                invocation.log.as_deref(),
                json_logs
            )
        );
        return ExitCode::SUCCESS;
    }
    let log_filter = init_logging(invocation.log.as_deref(), json_logs);
    install_panic_policy();
    let mut config = invocation.config;
    config.reloader = Some(Arc::new(Reloader::new(
        args.clone(),
        available.clone(),
        &config,
        invocation.log.as_deref(),
        json_logs,
        Some(log_filter),
    )));
    if config.cores.len() > available.len() {
        warn!(
            shards = config.cores.len(),
            cores = available.len(),
            "more shards than cores: some shards share a core"
        );
    }
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    if let Err(e) = signals::spawn_handler(control_tx.clone()) {
        error!(error = %e, "cannot install signal handlers");
        return ExitCode::FAILURE;
    }
    if let Err(e) = console::spawn_stdin_reader(control_tx.clone()) {
        error!(error = %e, "cannot start the console");
        return ExitCode::FAILURE;
    }
    let shards = config.cores.clone();
    let result = server::run(config, (control_tx, control_rx), |addr| {
        info!(%addr, shards = shards.len(), cores = ?shards, "listening");
    });
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code after a panic (EX_SOFTWARE): an internal error, restart me.
const PANIC_EXIT_CODE: i32 = 70;

/// A panic on any thread is a bug: log it with the thread (shard) that
/// panicked and exit at once with code 70, so a supervisor (systemd
/// `Restart=on-failure`, Docker `--restart`) brings the nexus back and clients
/// reconnect. A nexus with a dead shard would silently drop a share of its
/// connections and cross-shard messages; it never keeps running half-alive.
fn install_panic_policy() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        error!(
            thread = name,
            "panic: {info}; exiting with code {PANIC_EXIT_CODE} so a supervisor restarts the nexus"
        );
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

/// Installs the log subscriber (text or JSON lines on standard error) and
/// returns what changes its filter on a reload.
fn init_logging(flag: Option<&str>, json: bool) -> LogFilterHandle {
    let filter = match flag {
        Some(directive) => EnvFilter::new(directive),
        // The NATS client logs every reconnect attempt at info; the cluster
        // bridge logs one line per outage instead.
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn")),
    };
    let (filter, handle) = reload::Layer::new(filter);
    // A log line that cannot be written (standard error closed or its
    // reader gone) is dropped: it must never take the nexus down.
    let text = (!json).then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .log_internal_errors(false)
    });
    let json = json.then(|| {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
    Box::new(move |directive: &str| {
        let filter =
            EnvFilter::try_new(directive).map_err(|e| format!("log filter {directive:?}: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
