//! `--config FILE` through the real binary: precedence (file < flags),
//! errors with the key and the line, `--print-config` of every key, a nexus
//! started from a file alone, the reload counters and configuration hash of
//! `/api/stats`, and `--log-format json`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::{Client, Nexus};
use serde_json::Value;

fn nexus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ease_chat_nexus"))
        .args(args)
        .output()
        .expect("run the nexus binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("easechat-config-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn flags_override_the_file_and_print_config_shows_the_result() {
    let path = file(
        "precedence.toml",
        "# comment\nlisten = \"127.0.0.1:17001\"\ncores = 1\nmax-subscriptions = 7\nlame-duck-grace = 0.5\nnats = [\"nats://127.0.0.1:1\"]\n",
    );
    let (code, out, err) = nexus(&[
        "--config",
        &path,
        "--print-config",
        "--max-subscriptions",
        "9",
    ]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "listen = \"127.0.0.1:17001\"",
        "cores = 1",
        "max-subscriptions = 9",
        "lame-duck-grace = 0.5",
        "nats = [\"nats://127.0.0.1:1\"]",
        "max-ttl = 86400",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    // The printed configuration is itself a valid config file.
    let again = file("printed.toml", &out);
    let (code, out2, err) = nexus(&["--config", &again, "--print-config"]);
    assert_eq!(code, 0, "{err}");
    // Equal but for comments (the default node-id differs per process).
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    assert_eq!(keys(&out), keys(&out2));
    assert!(
        out.contains("# node-id: "),
        "the default node-id is only a comment: {out}"
    );
    // A positional address on the command line wins over listen.
    let (_, out, _) = nexus(&["--config", &path, "--print-config", "127.0.0.1:17002"]);
    assert!(out.contains("listen = \"127.0.0.1:17002\""), "{out}");
}

#[test]
fn errors_name_the_key_and_the_line() {
    for (text, expected) in [
        (
            "cores = 1\n\nmax-subscribtions = 3\n",
            "line 3: unknown key \"max-subscribtions\"",
        ),
        (
            "cores = \"many\"\n",
            "line 1: Error parsing option '--cores'",
        ),
        ("\nmax-ttl = 999999999999\n", "(max-ttl is set in"),
        (
            "plain-sends = \"yes\"\n",
            "line 1: plain-sends must be true or false",
        ),
        ("cores = [\n", "line"),
    ] {
        let path = file("bad.toml", text);
        let (code, _, err) = nexus(&["--config", &path]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
    let (code, _, err) = nexus(&["--config", "/nonexistent/nexus.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/nexus.toml"), "{err}");
}

#[test]
fn a_nexus_runs_from_a_file() {
    let path = file("run.toml", "max-subscriptions = 1\nkeepalive = 60\n");
    let mut nexus = Nexus::start(&["--config", &path]);
    let mut client = Client::named(&nexus, "a");
    client.subscribe("one");
    nexus.wait_subscribers("one", 1);
    client.subscribe("two");
    let (code, reason) = client.expect_close();
    assert_eq!(
        (code, reason.as_str()),
        (1008, "too many subscriptions (limit 1)")
    );
}

#[test]
fn reload_applies_limits_and_the_log_filter_live_and_refuses_a_broken_file() {
    let path = file(
        "reload.toml",
        "max-subscriptions = 1\nlog = \"info\"\nadmin = \"127.0.0.1:0\"\n",
    );
    let mut nexus = Nexus::start(&["--config", &path]);
    let admin = nexus.metrics_addr();
    let mut client = Client::named(&nexus, "live");
    client.subscribe("one");
    nexus.wait_subscribers("one", 1);
    // Live traffic throughout: a publisher and a listener that must not
    // notice the reloads.
    let mut listener = Client::named(&nexus, "ear");
    listener.subscribe("traffic");
    nexus.wait_subscribers("traffic", 1);
    let mut talker = Client::named(&nexus, "mouth");
    let mut said = 0;
    let mut talk = |talker: &mut Client, listener: &mut Client| {
        said += 1;
        talker.publish("traffic", &said.to_string());
        assert_eq!(
            listener.recv(),
            common::receive("mouth", "traffic", &said.to_string())
        );
    };
    talk(&mut talker, &mut listener);
    // Raise the limit, turn on debug logging, and change what needs a restart.
    std::fs::write(
        &path,
        "max-subscriptions = 3\nlog = \"debug\"\nadmin = \"127.0.0.1:1\"\nring-size = 64\n",
    )
    .unwrap();
    nexus.signal("HUP");
    let line = nexus.wait_log(|l| l.contains("reloaded"));
    assert!(line.contains("max-subscriptions: 1 → 3"), "{line}");
    assert!(line.contains("needs restart: admin, ring-size"), "{line}");
    talk(&mut talker, &mut listener);
    // The same connection, never dropped, may now hold three.
    client.subscribe("two");
    client.subscribe("three");
    nexus.wait_subscribers("three", 1);
    nexus.wait_log(|l| l.contains("DEBUG") && l.contains("subscribe") && l.contains("three"));
    // A broken file changes nothing.
    std::fs::write(&path, "max-subscriptions = \"lots\"\n").unwrap();
    nexus.console("reload");
    let out = nexus.output_until(|l| l.contains("reload"));
    assert!(
        out.last()
            .unwrap()
            .starts_with("error: reload refused, the configuration in force stays:")
            && out.last().unwrap().contains("line 1"),
        "{out:?}"
    );
    talk(&mut talker, &mut listener);
    client.subscribe("four");
    let (code, reason) = client.expect_close();
    assert_eq!(
        (code, reason.as_str()),
        (1008, "too many subscriptions (limit 3)")
    );
    let metrics = common::http_get(admin, "/metrics").1;
    assert!(
        metrics.contains("easechat_config_reloads_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("easechat_config_reload_failures_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("easechat_config_info{hash=\""),
        "{metrics}"
    );
}

#[test]
fn odd_values_aliases_and_secrets_in_urls() {
    let path = file(
        "odd.toml",
        "nats = [\"nats://user:pw@127.0.0.1:1\"]\nnode-id = \"--\"\nmetrics = \"127.0.0.1:9\"\n",
    );
    // --admin on the command line wins over the file's metrics (one setting).
    let (code, out, err) = nexus(&[
        "--config",
        &path,
        "--print-config",
        "--admin",
        "127.0.0.1:7",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin = \"127.0.0.1:7\""), "{out}");
    assert!(out.contains("node-id = \"--\""), "{out}");
    assert!(
        out.contains("nats = [\"nats://<redacted>@127.0.0.1:1\"]"),
        "{out}"
    );
    assert!(!out.contains("pw"), "a password was printed: {out}");
    // A bad log filter is refused at once, naming its line.
    let path = file("badlog.toml", "cores = 1\nlog = \"info,foo=verbose\"\n");
    let (code, _, err) = nexus(&["--config", &path]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");
}

/// The settings keys of the binary, from its own `--help` usage line (the
/// text `--config` derives its keys from): `[--name <name>]`,
/// `[--name <name...>]`, `[--name]`, without `config`, `print-config`, `help`.
fn keys_of_help() -> BTreeSet<String> {
    let (code, out, err) = nexus(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let usage = out.lines().next().expect("a usage line");
    assert!(usage.starts_with("Usage: "), "{usage}");
    usage
        .split('[')
        .skip(1)
        .filter_map(|part| part.split(']').next()?.strip_prefix("--"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| !name.is_empty() && !["config", "print-config", "help"].contains(name))
        .map(String::from)
        .collect()
}

#[test]
fn every_key_is_read_from_a_file_and_printed_back_without_secrets() {
    let dir = common::pki::dir("config-every-key");
    let path = |name: &str| dir.join(name).display().to_string();
    // The files the keys name, real enough for every check the binary runs.
    let ca = common::pki::TestCa::new("config test CA");
    let (cert, key) = common::pki::write(&dir, "server", &ca.server("localhost", None));
    std::fs::write(path("client-ca.pem"), &ca.pem).unwrap();
    std::fs::write(path("admin.token"), "admin-token-SECRET-value\n").unwrap();
    std::fs::write(path("hmac.key"), "hmac-SECRET-0123456789-0123456789-abc\n").unwrap();
    std::fs::write(path("nats.user"), "natsuser:nats-SECRET-password\n").unwrap();
    std::fs::write(path("policy.toml"), "leeway = 1\n").unwrap();
    let q = |s: &str| format!("{s:?}");
    // Every key, each set away from its default; the value as printed.
    let settings: Vec<(&str, String)> = vec![
        ("cores", "1".into()),
        ("ring-size", "64".into()),
        ("backlog", "128".into()),
        ("max-message-bytes", "32768".into()),
        ("max-outbox-bytes", "524288".into()),
        ("max-subscriptions", "7".into()),
        ("handshake-timeout", "4".into()),
        ("max-ttl", "3600".into()),
        ("max-connections", "900".into()),
        ("keepalive", "11".into()),
        ("keepalive-timeout", "12".into()),
        ("max-name-bytes", "200".into()),
        ("max-ring-backlog-bytes", "1048576".into()),
        ("message-timeout", "9".into()),
        ("max-partial-bytes", "1000000".into()),
        ("max-subscription-bytes", "2000000".into()),
        ("max-connections-per-ip", "5".into()),
        ("lame-duck-duration", "3".into()),
        ("lame-duck-grace", "0.25".into()),
        ("coalesce-max-us", "700".into()),
        ("plain-sends", "true".into()),
        ("admin", q("127.0.0.1:19650")),
        ("admin-token-file", q(&path("admin.token"))),
        ("admin-max-connections", "9".into()),
        (
            "nats",
            format!("[{}, {}]", q("nats://127.0.0.1:1"), q("nats://127.0.0.1:2")),
        ),
        ("node-id", q("node-a")),
        ("nats-user-file", q(&path("nats.user"))),
        ("auth", q("required")),
        ("auth-key-file", q(&path("hmac.key"))),
        ("auth-policy", q(&path("policy.toml"))),
        ("tls-listen", q("127.0.0.1:17443")),
        ("tls-cert", q(&cert)),
        ("tls-key", q(&key)),
        ("tls-client-ca", q(&path("client-ca.pem"))),
        ("admin-tls", "true".into()),
        ("history", format!("[{}, {}]", q("game/*"), q("chat/*"))),
        ("history-size", "500".into()),
        ("history-bytes", "524288".into()),
        ("history-ttl", "120".into()),
        ("history-channels", "5000".into()),
        ("history-total-bytes", "134217728".into()),
        ("recover-max", "200".into()),
        ("log", q("debug")),
        ("log-format", q("json")),
    ];
    // The list above is every key the binary has (`metrics` is the alias
    // of `admin`, checked in odd_values_aliases_and_secrets_in_urls): a new
    // flag fails here until it is added.
    let listed: BTreeSet<String> = settings.iter().map(|(k, _)| k.to_string()).collect();
    let mut expected = keys_of_help();
    assert!(expected.remove("metrics"), "{expected:?}");
    assert_eq!(listed, expected, "keys of --help vs keys set here");

    let mut text = String::from("listen = \"127.0.0.1:17003\"\n");
    for (key, value) in &settings {
        text.push_str(&format!("{key} = {value}\n"));
    }
    let file = file("every-key.toml", &text);
    let (code, out, err) = nexus(&["--config", &file, "--print-config"]);
    assert_eq!(code, 0, "{err}\n{text}");
    let printed: BTreeMap<&str, &str> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .collect();
    assert_eq!(printed.get("listen"), Some(&"\"127.0.0.1:17003\""), "{out}");
    let wrong: Vec<String> = settings
        .iter()
        .filter(|(key, value)| printed.get(key) != Some(&value.as_str()))
        .map(|(key, value)| format!("{key} = {value} (printed: {:?})", printed.get(key)))
        .collect();
    assert!(
        wrong.is_empty(),
        "not printed back as set:\n{}\nprinted:\n{out}",
        wrong.join("\n")
    );
    // Files are named, never shown.
    for secret in ["SECRET", "natsuser", "PRIVATE KEY", "BEGIN"] {
        assert!(!out.contains(secret), "{secret:?} printed:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The configuration hash as the nexus computes it: 64-bit FNV-1a of the
/// effective keys, `key = value` lines in key order (`--print-config`'s
/// lines without comments). Stable across builds and Rust releases.
fn fnv1a_of_keys(print_config: &str) -> String {
    let keys: BTreeMap<&str, &str> = print_config
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in keys {
        for byte in format!("{key} = {value}\n").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// `/api/stats`'s `config` block, and the hash in `/metrics`.
fn config_block(admin: std::net::SocketAddr) -> (Value, String) {
    let (status, body) = common::http_get(admin, "/api/stats");
    assert!(status.contains("200"), "{status}: {body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    let metrics = common::http_get(admin, "/metrics").1;
    let info = metrics
        .lines()
        .find_map(|l| l.strip_prefix("easechat_config_info{hash=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no easechat_config_info in\n{metrics}"))
        .to_string();
    (stats["config"].clone(), info)
}

#[test]
fn api_stats_shows_reload_counts_and_a_stable_hash_of_the_config() {
    let path = file(
        "hash.toml",
        "max-subscriptions = 4\nadmin = \"127.0.0.1:0\"\n",
    );
    // What the nexus below runs with (Nexus::start's own arguments first).
    let printed = |extra: &[&str]| {
        let mut args = vec!["127.0.0.1:0", "--cores", "2", "--config", &path];
        args.extend_from_slice(extra);
        args.push("--print-config");
        let (code, out, err) = nexus(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let first = fnv1a_of_keys(&printed(&[]));
    let mut nexus = Nexus::start(&["--config", &path]);
    let admin = nexus.metrics_addr();
    let (config, info) = config_block(admin);
    assert_eq!(config["reloads"], 0, "{config}");
    assert_eq!(config["reload_failures"], 0, "{config}");
    assert_eq!(config["hash"], first.as_str(), "{config}");
    assert_eq!(info, first);

    // A reload that changes a live limit: counted, and a new hash.
    std::fs::write(&path, "max-subscriptions = 5\nadmin = \"127.0.0.1:0\"\n").unwrap();
    let (status, body) = common::http_post_json(admin, "/api/reload", "{}");
    assert_eq!(status, 200, "{body}");
    let second = fnv1a_of_keys(&printed(&[]));
    assert_ne!(first, second);
    let (config, info) = config_block(admin);
    assert_eq!(config["reloads"], 1, "{config}");
    assert_eq!(config["reload_failures"], 0, "{config}");
    assert_eq!(config["hash"], second.as_str(), "{config}");
    assert_eq!(info, second);

    // A refused reload: counted, the hash of the configuration in force stays.
    std::fs::write(&path, "max-subscriptions = \"many\"\n").unwrap();
    let (status, body) = common::http_post_json(admin, "/api/reload", "{}");
    assert_eq!(status, 400, "{body}");
    let (config, info) = config_block(admin);
    assert_eq!(config["reloads"], 1, "{config}");
    assert_eq!(config["reload_failures"], 1, "{config}");
    assert_eq!(config["hash"], second.as_str(), "{config}");
    assert_eq!(info, second);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_connection_fields() {
    let mut nexus = Nexus::start_json_logs(&[]);
    let mut client = Client::named(&nexus, "json-client");
    let peer = client.local_addr().to_string();
    client.subscribe("c/json");
    nexus.wait_subscribers("c/json", 1);
    let parse = |line: &str| -> Value {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        value
    };
    let of_peer = |line: &str, message: &str| {
        line.contains(&format!(r#""message":"{message}""#))
            && line.contains(&format!(r#""peer":"{peer}""#))
    };
    let identified = parse(&nexus.wait_log(|l| of_peer(l, "connection identified")));
    assert_eq!(identified["level"], "INFO", "{identified}");
    assert_eq!(identified["fields"]["name"], "json-client", "{identified}");
    assert!(identified["timestamp"].is_string(), "{identified}");
    assert!(identified["target"].is_string(), "{identified}");
    // The connection's span: its id (shard#number) and its peer.
    let span = &identified["span"];
    assert_eq!(span["peer"], peer.as_str(), "{identified}");
    let conn = span["conn"].as_str().expect("conn in the span").to_string();
    assert!(conn.starts_with('s') && conn.contains('#'), "{identified}");
    drop(client);
    let lost = parse(&nexus.wait_log(|l| of_peer(l, "connection lost")));
    assert_eq!(lost["span"]["conn"], conn.as_str(), "{lost}");
    // The endpoint's name is a span field of its own (`name` is the span's).
    assert_eq!(lost["span"]["endpoint"], "json-client", "{lost}");
    assert_eq!(lost["span"]["name"], "session", "{lost}");
    // One object per line, every line: nothing spills onto a second line.
    std::thread::sleep(Duration::from_millis(100));
    nexus.console("stats");
    nexus.output_until(|l| !l.is_empty());
    for line in &nexus.log {
        let value = parse(line);
        assert!(
            value["level"].is_string() && value["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
