//! `--config FILE` through the real binary: precedence (file < flags),
//! errors with the key and the line, `--print-config`, and a nexus started
//! from a file alone.

mod common;

use std::process::Command;

use common::{Client, Nexus};

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
