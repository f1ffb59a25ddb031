//! `--config FILE`: a TOML file whose keys are the flags' long names
//! without the dashes (`max-subscriptions = 2`, `admin = "127.0.0.1:9650"`,
//! `listen = "0.0.0.0:6500"` for the address), turned into arguments that
//! go before the command line's, so a flag given on the command line wins.
//! Pure: the file's text in, arguments (and where each came from) out.

use std::collections::{BTreeMap, HashMap};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--name VALUE`.
    Option,
    /// `--name VALUE`, repeatable (an array in the file).
    Repeated,
    /// `--name` alone (a boolean in the file).
    Switch,
}

/// The key for the positional listen address.
pub const LISTEN_KEY: &str = "listen";

/// Keys that are not settings (they act on the file or the process).
const NOT_KEYS: &[&str] = &["config", "print-config", "help"];

/// The flags of argh's usage line (`[--name <name>]`, `[--name <name...>]`,
/// `[--name]`), by name without the dashes.
pub fn flags_of_usage(usage: &str) -> HashMap<String, Kind> {
    let mut flags = HashMap::new();
    for part in usage.split('[').skip(1) {
        let Some(body) = part.split(']').next() else {
            continue;
        };
        let Some(rest) = body.strip_prefix("--") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(name) = words.next() else { continue };
        let kind = match words.next() {
            None => Kind::Switch,
            Some(value) if value.contains("...") => Kind::Repeated,
            Some(_) => Kind::Option,
        };
        flags.insert(name.to_string(), kind);
    }
    flags
}

/// Arguments from a config file, and the line each flag was set on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileArgs {
    /// Arguments to put before the command line's.
    pub argv: Vec<String>,
    /// `--flag` → the line of its key (`--listen` for the address).
    pub lines: BTreeMap<String, usize>,
    /// The address (`listen`), unless the command line gives one.
    pub listen: Option<String>,
}

/// The line (1-based) on which `key` is set in `text`, if it can be found.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let line = line.trim_start_matches('"');
            line.strip_prefix(key)
                .map(|rest| rest.trim_start_matches('"').trim_start().starts_with('='))
                .unwrap_or(false)
        })
        .map_or(0, |i| i + 1)
}

/// Turns the file's text into arguments; keys the command line already
/// gives (`given`, flags without dashes) are left out, so the command line
/// wins. `path` names the file in errors.
pub fn file_args(
    path: &str,
    text: &str,
    known: &HashMap<String, Kind>,
    given: &[String],
) -> Result<FileArgs, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let message = e.to_string();
        format!("{path}: {}", message.trim_end())
    })?;
    let mut out = FileArgs::default();
    for (key, value) in &table {
        let line = line_of(text, key);
        let at = |what: String| format!("{path} line {line}: {what}");
        if key == LISTEN_KEY {
            let toml::Value::String(addr) = value else {
                return Err(at(format!(
                    "{key} must be a string such as \"0.0.0.0:6500\""
                )));
            };
            if !given.iter().any(|g| g == LISTEN_KEY) {
                out.listen = Some(addr.clone());
                out.lines.insert("--listen".into(), line);
            }
            continue;
        }
        let Some(kind) = known.get(key).filter(|_| !NOT_KEYS.contains(&key.as_str())) else {
            return Err(at(format!(
                "unknown key {key:?} (keys are the flags' long names without the dashes; see --help)"
            )));
        };
        // --admin and --metrics are one setting: the command line's wins.
        let alias = match key.as_str() {
            "admin" => "metrics",
            "metrics" => "admin",
            other => other,
        };
        if given.iter().any(|g| g == key || g == alias) {
            continue;
        }
        let flag = format!("--{key}");
        out.lines.insert(flag.clone(), line);
        match (kind, value) {
            (Kind::Switch, toml::Value::Boolean(true)) => out.argv.push(flag),
            (Kind::Switch, toml::Value::Boolean(false)) => {}
            (Kind::Switch, _) => return Err(at(format!("{key} must be true or false"))),
            (Kind::Repeated, toml::Value::Array(items)) => {
                for item in items {
                    out.argv.push(flag.clone());
                    out.argv
                        .push(scalar(item).map_err(|e| at(format!("{key}: {e}")))?);
                }
            }
            (_, value) => {
                out.argv.push(flag);
                out.argv
                    .push(scalar(value).map_err(|e| at(format!("{key}: {e}")))?);
            }
        }
    }
    Ok(out)
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expected a string or a number, got {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = "Usage: nexus [--cores <cores>] [--plain-sends] [--nats <nats...>] \
                         [--max-subscriptions <max-subscriptions>] [--config <config>] [--] [<addr>]";

    fn known() -> HashMap<String, Kind> {
        flags_of_usage(USAGE)
    }

    #[test]
    fn the_usage_line_names_every_flag() {
        let k = known();
        assert_eq!(k.get("cores"), Some(&Kind::Option));
        assert_eq!(k.get("plain-sends"), Some(&Kind::Switch));
        assert_eq!(k.get("nats"), Some(&Kind::Repeated));
        assert_eq!(k.get("config"), Some(&Kind::Option));
        let err = file_args("f.toml", "config = \"x\"\n", &k, &[]).unwrap_err();
        assert!(err.contains("unknown key \"config\""), "{err}");
    }

    #[test]
    fn keys_become_flags_before_the_command_line() {
        let text = "cores = 2\nplain-sends = true\nnats = [\"nats://a:1\", \"nats://b:2\"]\nlisten = \"127.0.0.1:7000\"\n";
        let args = file_args("f.toml", text, &known(), &[]).unwrap();
        assert_eq!(
            args.argv,
            [
                "--cores",
                "2",
                "--nats",
                "nats://a:1",
                "--nats",
                "nats://b:2",
                "--plain-sends",
            ]
        );
        assert_eq!(args.listen.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(args.lines.get("--nats"), Some(&3));
        // A flag on the command line wins: the file's key is left out.
        let args = file_args("f.toml", text, &known(), &["cores".into(), "listen".into()]).unwrap();
        assert!(!args.argv.contains(&"--cores".to_string()));
        assert_eq!(args.listen, None);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let err = file_args(
            "f.toml",
            "cores = 2\n\nmax-subscribtions = 3\n",
            &known(),
            &[],
        )
        .unwrap_err();
        assert!(
            err.starts_with("f.toml line 3: unknown key \"max-subscribtions\""),
            "{err}"
        );
        let err = file_args("f.toml", "plain-sends = 1\n", &known(), &[]).unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("true or false"),
            "{err}"
        );
        let err = file_args("f.toml", "cores = [\n", &known(), &[]).unwrap_err();
        assert!(err.contains("line"), "{err}");
        let err = file_args("f.toml", "cores = { a = 1 }\n", &known(), &[]).unwrap_err();
        assert!(err.contains("line 1: cores"), "{err}");
    }
}
