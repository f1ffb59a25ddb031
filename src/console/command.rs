//! Parsing one console line into a [`Command`]: pure, no I/O.

/// An operator command, as typed on the nexus's standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `list` / `l`: counts; `list KEYWORD`: an endpoint's channels and a
    /// channel's subscribers.
    List(Option<String>),
    /// `push SENDER CHANNEL MESSAGE…` (`msg`, `say`, `send`, `p`).
    Push {
        /// The name receivers see (and which is excluded from delivery).
        sender: String,
        /// Where to publish.
        channel: String,
        /// The rest of the line, spaces kept.
        message: String,
    },
    /// `stop [REASON…]` (`quit`, `exit`, `q`).
    Stop(Option<String>),
    /// `drain`: lame-duck drain (leave the listen group, close every
    /// connection with 1001 over `--lame-duck-duration`, exit).
    Drain,
    /// `huaji`: prints `huaji`.
    Huaji,
    /// `stats`: traffic counters of every shard.
    Stats,
    /// `reload`: re-read the access policy (as SIGHUP does).
    Reload,
}

const PUSH_USAGE: &str = "usage: push SENDER CHANNEL MESSAGE…";

/// Every command, as the console and `--help` list them.
pub const COMMANDS: &str =
    "list [KEYWORD], push SENDER CHANNEL MESSAGE…, stats, reload, stop [REASON…], drain, huaji";

/// Parses a line; `Ok(None)` for a blank line, `Err` with the message to print.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    let Some((word, rest)) = split_word(line) else {
        return Ok(None);
    };
    let command = match word {
        "list" | "l" => match split_word(rest) {
            None => Command::List(None),
            Some((keyword, "")) => Command::List(Some(keyword.to_string())),
            Some(_) => return Err("usage: list [KEYWORD]".into()),
        },
        "push" | "msg" | "say" | "send" | "p" => {
            let (sender, rest) = split_word(rest).ok_or(PUSH_USAGE)?;
            let (channel, message) = split_word(rest).ok_or(PUSH_USAGE)?;
            if message.is_empty() {
                return Err(PUSH_USAGE.into());
            }
            Command::Push {
                sender: sender.to_string(),
                channel: channel.to_string(),
                message: message.to_string(),
            }
        }
        "stop" | "quit" | "exit" | "q" => {
            Command::Stop((!rest.is_empty()).then(|| rest.to_string()))
        }
        "huaji" => Command::Huaji,
        "drain" if rest.is_empty() => Command::Drain,
        "drain" => return Err("usage: drain".into()),
        "stats" => Command::Stats,
        "reload" if rest.is_empty() => Command::Reload,
        "reload" => return Err("usage: reload".into()),
        other => return Err(format!("unknown command {other:?}; commands: {COMMANDS}")),
    };
    Ok(Some(command))
}

/// Splits off the first whitespace-separated word; the rest keeps its inner
/// spacing (leading whitespace trimmed).
fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    match s.find(char::is_whitespace) {
        Some(i) => Some((&s[..i], s[i..].trim_start())),
        None => Some((s, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alias_parses() {
        assert_eq!(parse("list"), Ok(Some(Command::List(None))));
        assert_eq!(parse("l"), Ok(Some(Command::List(None))));
        assert_eq!(
            parse("list c/lobby"),
            Ok(Some(Command::List(Some("c/lobby".into()))))
        );
        for alias in ["push", "msg", "say", "send", "p"] {
            assert_eq!(
                parse(&format!("{alias} ops c/lobby hello  there |x|")),
                Ok(Some(Command::Push {
                    sender: "ops".into(),
                    channel: "c/lobby".into(),
                    message: "hello  there |x|".into()
                }))
            );
        }
        for alias in ["stop", "quit", "exit", "q"] {
            assert_eq!(parse(alias), Ok(Some(Command::Stop(None))));
        }
        assert_eq!(
            parse("stop maintenance at noon"),
            Ok(Some(Command::Stop(Some("maintenance at noon".into()))))
        );
        assert_eq!(parse("huaji"), Ok(Some(Command::Huaji)));
        assert_eq!(parse("stats"), Ok(Some(Command::Stats)));
        assert_eq!(parse("drain"), Ok(Some(Command::Drain)));
        assert_eq!(parse("reload"), Ok(Some(Command::Reload)));
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn malformed_commands_are_errors() {
        assert!(parse("push ops c/lobby").is_err());
        assert!(parse("push ops").is_err());
        assert!(parse("list a b").is_err());
        assert!(parse("drain now").is_err());
        assert!(parse("frobnicate").unwrap_err().contains("unknown command"));
    }
}
