//! `easechat`: the command-line client. `sub` prints channel traffic
//! (with `--recover` and `--resume-file`, without losing what is published
//! while it is away), `pub` publishes, `record` saves traffic to SQLite;
//! each speaks `ws://` or `wss://` (`--ca FILE` for a private CA), `token`
//! mints tokens.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use easechat::record::Recorder;
use easechat::resume::ResumeFile;
use easechat::{Client, ClientError, Event, Options, PositionStatus, RecoveryReport};

/// EaseChat command-line client.
#[derive(FromArgs, Debug)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Sub(Sub),
    Pub(Pub),
    Record(Record),
    Token(Token),
}

/// Mint an access token from the policy's HMAC key or a private key file,
/// and print it on standard output.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "token")]
struct Token {
    /// HMAC secret file (as --auth-key-file) or PEM private key (Ed25519 →
    /// EdDSA, EC P-256 → ES256)
    #[argh(option)]
    key_file: PathBuf,
    /// the 1h name the token allows; may be a pattern (`*` is any run of
    /// characters), e.g. gs-eu-*
    #[argh(option)]
    name: String,
    /// the identity (sub) the token names (default: --name)
    #[argh(option)]
    identity: Option<String>,
    /// channels it may publish on (repeatable, patterns)
    #[argh(option)]
    publish: Vec<String>,
    /// channels it may subscribe to (repeatable, patterns)
    #[argh(option)]
    subscribe: Vec<String>,
    /// channels it may not publish on, even when allowed (repeatable)
    #[argh(option)]
    deny_publish: Vec<String>,
    /// channels it may not subscribe to, even when allowed (repeatable)
    #[argh(option)]
    deny_subscribe: Vec<String>,
    /// seconds until it expires (default 86400; 0: no exp, which the
    /// nexus accepts only where its policy allows it)
    #[argh(option, default = "86400")]
    expires: u64,
    /// key id (kid) to put in the header, naming the key in the policy
    #[argh(option)]
    kid: Option<String>,
    /// token id (jti), for revocation (default: random)
    #[argh(option)]
    id: Option<String>,
    /// leave the channel permissions to the policy (no perm claim)
    #[argh(switch)]
    no_perm: bool,
}

/// Print every message on the channels (sender, channel, text).
///
/// With --recover, on channels where the nexus keeps history (its
/// --history), a reconnect first receives what was missed. With
/// --resume-file, so does the next run: `easechat sub --name NAME --json
/// --recover --resume-file FILE CHANNEL...`, killed and run again with the
/// same FILE, prints exactly what it missed, then live messages. When a
/// channel cannot be recovered (the history no longer holds the gap, or
/// was restarted), one line on standard error says so, and live messages
/// follow.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "sub",
    note = "The resume file is a JSON object mapping each channel to its last position,
{{\"CHANNEL\":{{\"offset\":17,\"epoch\":\"k3x9\"}}}}, replaced (written beside it,
then renamed) after every message is printed and flushed. A missing or empty
file starts without positions; a corrupt one is an error."
)]
struct Sub {
    /// access token (prefer --token-file or EASECHAT_TOKEN: argv is visible)
    #[argh(option)]
    token: Option<String>,
    /// file holding the access token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// name to say 1h with
    #[argh(option)]
    name: String,
    /// nexus URL, ws://host[:port][/path] or wss://host[:port][/path]
    /// (default ws://127.0.0.1:6500)
    #[argh(option, default = "default_url()")]
    url: String,
    /// PEM file of the CA certificates to trust for wss:// (default: the
    /// system's roots)
    #[argh(option, arg_name = "file")]
    ca: Option<PathBuf>,
    /// subscription TTL in seconds, renewed at 90 % (default 600)
    #[argh(option, default = "600")]
    ttl: u64,
    /// one JSON object per line instead of text (sender, channel, text,
    /// and offset and epoch on channels with history under --recover)
    #[argh(switch)]
    json: bool,
    /// reconnect with back-off if the connection is lost
    #[argh(switch)]
    reconnect: bool,
    /// reconnect with back-off and recover what was missed meanwhile on
    /// channels with history (asks the nexus for positions; needs a nexus
    /// with the positions extension)
    #[argh(switch)]
    recover: bool,
    /// keep the position per channel in this file as messages are printed,
    /// and recover from it at start (implies --recover)
    #[argh(option, arg_name = "file")]
    resume_file: Option<PathBuf>,
    /// channels to listen to
    #[argh(positional)]
    channels: Vec<String>,
}

/// Publish TEXT, or each line of standard input, on CHANNEL.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pub")]
struct Pub {
    /// access token (prefer --token-file or EASECHAT_TOKEN: argv is visible)
    #[argh(option)]
    token: Option<String>,
    /// file holding the access token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// name to say 1h with
    #[argh(option)]
    name: String,
    /// nexus URL, ws://host[:port][/path] or wss://host[:port][/path]
    /// (default ws://127.0.0.1:6500)
    #[argh(option, default = "default_url()")]
    url: String,
    /// PEM file of the CA certificates to trust for wss:// (default: the
    /// system's roots)
    #[argh(option, arg_name = "file")]
    ca: Option<PathBuf>,
    /// channel to publish on
    #[argh(positional)]
    channel: String,
    /// text to publish (default: each line of standard input)
    #[argh(positional)]
    text: Option<String>,
}

/// Store every message on the channels in a SQLite database.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "record")]
struct Record {
    /// access token (prefer --token-file or EASECHAT_TOKEN: argv is visible)
    #[argh(option)]
    token: Option<String>,
    /// file holding the access token
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// name to say 1h with
    #[argh(option)]
    name: String,
    /// nexus URL, ws://host[:port][/path] or wss://host[:port][/path]
    /// (default ws://127.0.0.1:6500)
    #[argh(option, default = "default_url()")]
    url: String,
    /// PEM file of the CA certificates to trust for wss:// (default: the
    /// system's roots)
    #[argh(option, arg_name = "file")]
    ca: Option<PathBuf>,
    /// SQLite database file (created if missing)
    #[argh(option)]
    db: PathBuf,
    /// subscription TTL in seconds, renewed at 90 % (default 600)
    #[argh(option, default = "600")]
    ttl: u64,
    /// reconnect with back-off if the connection is lost
    #[argh(switch)]
    reconnect: bool,
    /// longest a received message waits before it is committed, in ms
    /// (default 200; batches of 1,000 are committed at once)
    #[argh(option, default = "200")]
    flush_ms: u64,
    /// channels to record
    #[argh(positional)]
    channels: Vec<String>,
}

fn default_url() -> String {
    "ws://127.0.0.1:6500".to_string()
}

/// How often loops look at the stop flag (SIGINT/SIGTERM).
const TICK: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let result = match args.command {
        Command::Sub(cmd) => sub(cmd),
        Command::Pub(cmd) => publish(cmd),
        Command::Record(cmd) => record(cmd),
        Command::Token(cmd) => mint(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "easechat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set by SIGINT or SIGTERM: finish what is in hand, then exit.
fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone()).map_err(|e| e.to_string())?;
    }
    Ok(flag)
}

/// Options with the token from `file`, else `flag`, else `EASECHAT_TOKEN`
/// (a token on the command line shows in `ps`: prefer the file or the
/// environment), and the CA file for wss://.
fn options(
    token: Option<String>,
    file: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Options, String> {
    let mut options = Options {
        ca,
        ..Options::default()
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        options.token = Some(text.trim().to_string());
    } else if token.is_some() {
        options.token = token;
    }
    Ok(options)
}

fn subscribed(
    name: &str,
    url: &str,
    ttl: u64,
    options: Options,
    channels: &[String],
) -> Result<Client, String> {
    subscribed_from(name, url, ttl, options, channels, None)
}

/// Connects and subscribes, each channel from its position in `resume`
/// when there is one.
fn subscribed_from(
    name: &str,
    url: &str,
    ttl: u64,
    options: Options,
    channels: &[String],
    resume: Option<&ResumeFile>,
) -> Result<Client, String> {
    if channels.is_empty() {
        return Err("name at least one channel".into());
    }
    let mut client = Client::connect(url, name, options).map_err(|e| e.to_string())?;
    for (channel, position) in resume.iter().flat_map(|r| r.positions()) {
        client.set_position(channel, position.clone());
    }
    for channel in channels {
        client
            .subscribe(channel, Duration::from_secs(ttl.max(1)))
            .map_err(|e| e.to_string())?;
    }
    Ok(client)
}

fn sub(cmd: Sub) -> Result<(), String> {
    let stop = stop_flag()?;
    let mut resume = match &cmd.resume_file {
        Some(path) => Some(ResumeFile::open(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let recover = cmd.recover || resume.is_some();
    let options = Options {
        reconnect: cmd.reconnect || recover,
        positions: recover,
        ..options(cmd.token, cmd.token_file, cmd.ca)?
    };
    let mut client = subscribed_from(
        &cmd.name,
        &cmd.url,
        cmd.ttl,
        options,
        &cmd.channels,
        resume.as_ref(),
    )?;
    let stdout = std::io::stdout();
    while !stop.load(Ordering::Relaxed) {
        let channel = match client.recv_event(TICK).map_err(|e| e.to_string())? {
            None => continue,
            Some(Event::Message {
                message: m,
                position,
            }) => {
                let line = if cmd.json {
                    let mut json = serde_json::json!({
                        "sender": m.sender, "channel": m.channel, "text": m.text
                    });
                    if let Some(p) = position {
                        json["offset"] = p.offset.into();
                        json["epoch"] = p.epoch.into();
                    }
                    json.to_string()
                } else {
                    format!("[{}] {}: {}", m.channel, m.sender, m.text)
                };
                // Printed and flushed before the resume file records it: a
                // kill in between costs a duplicate at the next run, never
                // a loss.
                let mut out = stdout.lock();
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    break; // the reader of our output went away
                }
                m.channel
            }
            Some(Event::Report(report)) => {
                if report.status == PositionStatus::NotRecovered {
                    let _ = writeln!(std::io::stderr(), "{}", not_recovered(&report));
                }
                report.channel
            }
            Some(_) => continue,
        };
        if let Some(resume) = resume.as_mut() {
            resume.update(&channel, client.position(&channel));
            resume.save().map_err(|e| e.to_string())?;
        }
    }
    client
        .disconnect("easechat sub done")
        .or_else(ignore_closed)
}

/// The line `sub` prints on standard error when a channel could not be
/// recovered: one line, whatever characters the channel or epochs hold.
fn not_recovered(report: &RecoveryReport) -> String {
    let problem = report
        .problem()
        .unwrap_or_else(|| "the nexus did not recover it".into());
    let line = format!(
        "easechat: could not recover {}: {problem}; continuing with live messages",
        report.channel
    );
    line.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn publish(cmd: Pub) -> Result<(), String> {
    let options = options(cmd.token, cmd.token_file, cmd.ca)?;
    let mut client = Client::connect(&cmd.url, &cmd.name, options).map_err(|e| e.to_string())?;
    match &cmd.text {
        Some(text) => client
            .transmit(&cmd.channel, text)
            .map_err(|e| e.to_string())?,
        None => {
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| e.to_string())?;
                client
                    .transmit(&cmd.channel, &line)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    // `1d` and wait for the close, so every message has reached the nexus.
    client
        .disconnect("easechat pub done")
        .or_else(ignore_closed)
}

fn record(cmd: Record) -> Result<(), String> {
    let stop = stop_flag()?;
    let mut recorder = Recorder::open(&cmd.db, Duration::from_millis(cmd.flush_ms))
        .map_err(|e| format!("{}: {e}", cmd.db.display()))?;
    let options = Options {
        reconnect: cmd.reconnect,
        ..options(cmd.token, cmd.token_file, cmd.ca)?
    };
    let mut client = subscribed(&cmd.name, &cmd.url, cmd.ttl, options, &cmd.channels)?;
    let outcome = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        match client.recv(TICK) {
            Ok(Some(message)) => {
                if let Err(e) = recorder.push(message) {
                    break Err(e.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => break Err(e.to_string()),
        }
        if let Err(e) = recorder.tick() {
            break Err(e.to_string());
        }
    };
    // Whatever ended the loop, keep what was received.
    recorder.flush().map_err(|e| e.to_string())?;
    let _ = writeln!(
        std::io::stderr(),
        "easechat: recorded {} messages",
        recorder.written()
    );
    outcome?;
    client
        .disconnect("easechat record done")
        .or_else(ignore_closed)
}

/// `easechat token`: signs the claims and prints the token.
fn mint(cmd: Token) -> Result<(), String> {
    use easechat_auth::permissions::{PermissionsText, RuleText};
    let bytes = std::fs::read(&cmd.key_file)
        .map_err(|e| format!("--key-file {}: {e}", cmd.key_file.display()))?;
    let key = easechat_auth::SigningKey::from_file_bytes(&bytes, cmd.kid)
        .map_err(|e| format!("--key-file {}: {e}", cmd.key_file.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let perm = (!cmd.no_perm).then_some(PermissionsText {
        publish: RuleText {
            allow: cmd.publish,
            deny: cmd.deny_publish,
        },
        subscribe: RuleText {
            allow: cmd.subscribe,
            deny: cmd.deny_subscribe,
        },
    });
    let identity = cmd.identity.unwrap_or_else(|| cmd.name.clone());
    let claims = easechat_auth::Claims {
        name: (cmd.name != identity || cmd.name.contains('*')).then_some(cmd.name),
        sub: identity,
        perm,
        exp: (cmd.expires > 0).then(|| now + cmd.expires),
        nbf: None,
        iat: Some(now),
        jti: Some(
            cmd.id
                .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..))),
        ),
    };
    let token = key.sign(&claims)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}").map_err(|e| e.to_string())
}

/// A nexus that already closed (it was stopped) is not an error at exit.
fn ignore_closed(e: ClientError) -> Result<(), String> {
    match e {
        // A refusal (1008: a name or channel the token does not allow) is
        // an error; a nexus that stopped or drained is not.
        ClientError::Closed { code, reason } if code == 1008 => {
            Err(format!("closed by the nexus: {code} {reason}"))
        }
        ClientError::Closed { .. } | ClientError::Lost(_) => Ok(()),
        other => Err(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use easechat::Position;

    #[test]
    fn a_failed_recovery_is_one_line_naming_channel_and_positions() {
        let report = RecoveryReport {
            channel: "c/x\nnext".into(),
            status: PositionStatus::NotRecovered,
            offset: 523,
            epoch: "def".into(),
            from: Some(Position {
                offset: 17,
                epoch: "abc".into(),
            }),
        };
        assert_eq!(
            not_recovered(&report),
            "easechat: could not recover c/x\\nnext: resumed from 17 in epoch abc, \
             channel now at 523 in epoch def (the channel's history was restarted or \
             evicted since); continuing with live messages"
        );
    }
}
