//! wss through the real nexus (two shards): wss and ws clients exchange
//! messages across shards; a certificate reload under live wss connections
//! keeps them open while new handshakes get the new certificate, and a bad
//! file changes nothing; mutual TLS admits a certificate's identity and
//! refuses a wrong or expired one; garbage and half-open handshakes are
//! closed at their deadline while a bystander keeps being served.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::pki::{self, TestCa};
use common::{http_get, receive, Bystander, Client, Event, Nexus, PATIENCE};

/// A nexus serving wss with a certificate from `ca`, its files in `dir`.
fn start_tls(tag: &str, ca: &TestCa, extra: &[&str]) -> (Nexus, std::path::PathBuf) {
    let dir = pki::dir(tag);
    let (cert, key) = pki::write(&dir, "server", &ca.server("localhost", None));
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    (Nexus::start(&args), dir)
}

#[test]
fn wss_and_ws_clients_exchange_messages_across_shards() {
    let ca = TestCa::new("Test CA");
    let (mut nexus, _dir) = start_tls("exchange", &ca, &[]);
    let wss = nexus.tls_addr();
    let trust = ca.client_config(None);
    // wss subscribers until both shards have one.
    let mut subscribers = Vec::new();
    let mut shards = HashSet::new();
    for i in 0..64 {
        let name = format!("wss-{i}");
        let mut client = Client::try_connect_tls(wss, trust.clone()).expect("wss upgrade");
        client.hello(&name);
        shards.insert(nexus.shard_of(client.local_addr()));
        client.subscribe("room");
        subscribers.push((name, client));
        if shards.len() == 2 && subscribers.len() >= 3 {
            break;
        }
    }
    assert_eq!(shards.len(), 2, "wss connections landed on both shards");
    let mut ws = [
        nexus.client_on_shard("ws-0", 0),
        nexus.client_on_shard("ws-1", 1),
    ];
    for client in &mut ws {
        client.subscribe("room");
    }
    nexus.wait_subscribers("room", subscribers.len() + 2);

    // ws → every wss subscriber and the other ws one, on both shards (a
    // sender never hears itself).
    ws[0].publish("room", "from ws");
    for (_, client) in &mut subscribers {
        assert_eq!(client.recv(), receive("ws-0", "room", "from ws"));
    }
    assert_eq!(ws[1].recv(), receive("ws-0", "room", "from ws"));
    // wss → everyone else, including a message larger than one TLS record.
    let big = "x".repeat(60_000);
    let (name, publisher) = &mut subscribers[0];
    let name = name.clone();
    publisher.publish("room", "from wss");
    publisher.publish("room", &big);
    for (_, client) in subscribers.iter_mut().skip(1) {
        assert_eq!(client.recv(), receive(&name, "room", "from wss"));
        assert_eq!(client.recv(), receive(&name, "room", &big));
    }
    for client in &mut ws {
        assert_eq!(client.recv(), receive(&name, "room", "from wss"));
        assert_eq!(client.recv(), receive(&name, "room", &big));
    }
    // A plain WebSocket upgrade on the wss port is not served.
    let plain = Client::try_connect_target(wss, "/");
    assert!(plain.is_err(), "plaintext on the wss port was upgraded");
}

#[test]
fn a_certificate_reload_keeps_live_connections_and_serves_new_handshakes() {
    let first = TestCa::new("First CA");
    let second = TestCa::new("Second CA");
    let (mut nexus, dir) = start_tls("reload", &first, &[]);
    let wss = nexus.tls_addr();
    let mut live = Client::try_connect_tls(wss, first.client_config(None)).unwrap();
    live.hello("live");
    live.subscribe("room");
    let mut publisher = Client::named(&nexus, "pub");
    nexus.wait_subscribers("room", 1);

    // New files (an Ed25519 key this time), then SIGHUP.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    pki::write(&dir, "server", &second.server("localhost", Some(key)));
    nexus.signal("HUP");
    nexus.wait_log(|l| l.contains("reloaded") && l.contains("Second CA"));

    publisher.publish("room", "after reload");
    assert_eq!(live.recv(), receive("pub", "room", "after reload"));
    let old_trust = Client::try_connect_tls(wss, first.client_config(None));
    let err = old_trust
        .err()
        .expect("the old certificate is no longer served");
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    let mut fresh =
        Client::try_connect_tls(wss, second.client_config(None)).expect("new certificate");
    fresh.hello("fresh");
    fresh.subscribe("room");
    nexus.wait_subscribers("room", 2);

    // A broken file is refused; the certificate in force stays.
    std::fs::write(dir.join("server.pem"), "not a certificate\n").unwrap();
    nexus.signal("HUP");
    let refused = nexus.wait_log(|l| l.contains("reload refused"));
    assert!(
        refused.contains("server.pem"),
        "the error names the file: {refused}"
    );
    let mut again = Client::try_connect_tls(wss, second.client_config(None)).expect("still served");
    again.hello("again");
    publisher.publish("room", "after refusal");
    assert_eq!(live.recv(), receive("pub", "room", "after refusal"));
    assert_eq!(fresh.recv(), receive("pub", "room", "after refusal"));
}

/// `--tls-client-ca`: a client certificate's subject stands in for a
/// token's identity; none, another CA's or an expired one is refused.
#[test]
fn mutual_tls_admits_certificate_identities_and_refuses_bad_certificates() {
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let stranger_ca = TestCa::new("Stranger CA");
    let dir = pki::dir("mutual-setup");
    let client_ca_file = dir.join("clients.pem");
    std::fs::write(&client_ca_file, &client_ca.pem).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[identity.\"gs-1\"]\n\
         publish = { allow = [\"game/*\"] }\n\
         subscribe = { allow = [\"game/*\"] }\n\
         [identity.\"tool\"]\n\
         names = [\"tool-*\"]\n\
         subscribe = { allow = [\"*\"] }\n",
    )
    .unwrap();
    let key_file = dir.join("hmac.key");
    std::fs::write(&key_file, "mutual-tls-test-secret-0123456789abcdef\n").unwrap();
    let (client_ca_file, policy, key_file) = (
        client_ca_file.display().to_string(),
        policy.display().to_string(),
        key_file.display().to_string(),
    );
    let (mut nexus, _dir) = start_tls(
        "mutual",
        &server_ca,
        &[
            "--tls-client-ca",
            &client_ca_file,
            "--auth",
            "required",
            "--auth-key-file",
            &key_file,
            "--auth-policy",
            &policy,
        ],
    );
    let wss = nexus.tls_addr();

    let good = client_ca.client("gs-1", false);
    let mut client = Client::try_connect_tls(wss, server_ca.client_config(Some(&good)))
        .expect("a valid client certificate is admitted without a token");
    client.hello("gs-1");
    let tool = client_ca.client("tool", false);
    let mut listener = Client::try_connect_tls(wss, server_ca.client_config(Some(&tool))).unwrap();
    listener.hello("tool-7");
    listener.subscribe("game/1");
    nexus.wait_subscribers("game/1", 1);
    client.publish("game/1", "hi");
    assert_eq!(listener.recv(), receive("gs-1", "game/1", "hi"));
    nexus.wait_log(|l| l.contains("identity=\"tool\"") && l.contains("name=\"tool-7\""));
    // The identity's policy applies: another name, another channel.
    client.publish("ops/restart", "no");
    match client.next_within(PATIENCE) {
        Some(Event::Closed(1008, reason)) => assert!(reason.contains("ops/restart"), "{reason}"),
        other => panic!("expected 1008, got {other:?}"),
    }

    let refusals = [
        ("no certificate", server_ca.client_config(None)),
        (
            "another CA's certificate",
            server_ca.client_config(Some(&stranger_ca.client("gs-1", false))),
        ),
        (
            "an expired certificate",
            server_ca.client_config(Some(&client_ca.client("gs-1", true))),
        ),
    ];
    for (what, config) in refusals {
        let result = Client::try_connect_tls(wss, config).and_then(|mut c| {
            // TLS 1.3 clients learn of a refused certificate on their
            // first read.
            c.hello("gs-1");
            match c.next_within(PATIENCE) {
                Some(Event::Text(t)) => Ok(t),
                other => Err(format!("{other:?}")),
            }
        });
        assert!(result.is_err(), "{what} was admitted");
    }
    // A certificate that expires while connected: closed then, as a token.
    let short = client_ca.client_expiring("gs-1", 2);
    let mut expiring = Client::try_connect_tls(wss, server_ca.client_config(Some(&short))).unwrap();
    expiring.hello("gs-1");
    match expiring.next_within(PATIENCE) {
        Some(Event::Closed(1008, reason)) => assert_eq!(reason, "certificate expired"),
        other => panic!("expected 1008 certificate expired, got {other:?}"),
    }
    // A certificate of the right CA whose identity the policy does not know.
    let unknown = client_ca.client("intruder", false);
    let result = Client::try_connect_tls(wss, server_ca.client_config(Some(&unknown)));
    let err = result.err().expect("an unknown identity is refused");
    assert!(err.contains("403"), "{err}");
    nexus.wait_log(|l| l.contains("intruder") && l.contains("no entry in the policy"));
}

/// Garbage instead of a ClientHello is closed at once; a handshake that
/// never finishes is closed at `--handshake-timeout`; a bystander on the
/// same nexus is served throughout.
#[test]
fn garbage_and_half_open_handshakes_are_closed_and_touch_no_bystander() {
    let ca = TestCa::new("Test CA");
    let (mut nexus, _dir) = start_tls(
        "abuse",
        &ca,
        &["--handshake-timeout", "1", "--admin", "127.0.0.1:0"],
    );
    let wss = nexus.tls_addr();
    let mut bystander = Bystander::new(&mut nexus);

    let mut garbage = TcpStream::connect(wss).unwrap();
    garbage.set_read_timeout(Some(PATIENCE)).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\xff\xff garbage")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    while let Ok(n) = garbage.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "garbage was not closed at once"
    );

    let half_open: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(wss).unwrap();
            // The first bytes of a ClientHello, and nothing more.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            s
        })
        .collect();
    bystander.still_served();
    let started = Instant::now();
    for mut socket in half_open {
        let end = socket.read(&mut buf);
        assert!(
            matches!(end, Ok(0) | Err(_)),
            "half-open handshake got {end:?}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "half-open handshakes closed after {waited:?}, not at the 1 s deadline"
    );
    bystander.still_served();
    let (_, metrics) = http_get(nexus.metrics_addr(), "/metrics");
    let failures: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("easechat_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(failures >= 51, "failures counted: {failures}\n{metrics}");
}

/// The TLS keys in a `--config` file: `--print-config` shows them, and a
/// reload that names other certificate files puts them in force, while a
/// new `tls-listen` is reported as needing a restart.
#[test]
fn tls_settings_in_a_config_file_reload_with_new_paths() {
    let first = TestCa::new("File CA one");
    let second = TestCa::new("File CA two");
    let dir = pki::dir("config");
    let (cert1, key1) = pki::write(&dir, "one", &first.server("localhost", None));
    let (cert2, key2) = pki::write(&dir, "two", &second.server("localhost", None));
    let config = dir.join("nexus.toml");
    let write_config = |cert: &str, key: &str, listen: &str| {
        std::fs::write(
            &config,
            format!("tls-listen = \"{listen}\"\ntls-cert = \"{cert}\"\ntls-key = \"{key}\"\n"),
        )
        .unwrap();
    };
    write_config(&cert1, &key1, "127.0.0.1:0");
    let config_path = config.display().to_string();
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_ease_chat_nexus"))
        .args(["--config", &config_path, "--print-config"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout).to_string();
    assert!(
        printed.contains(&format!("tls-cert = \"{cert1}\"")),
        "{printed}"
    );
    assert!(
        printed.contains("tls-listen = \"127.0.0.1:0\""),
        "{printed}"
    );

    let mut nexus = Nexus::start(&["--config", &config_path]);
    let wss = nexus.tls_addr();
    let mut live = Client::try_connect_tls(wss, first.client_config(None)).unwrap();
    live.hello("live");
    write_config(&cert2, &key2, "127.0.0.1:1");
    nexus.console("reload");
    let reloaded = nexus.output_until(|l| l.starts_with("reloaded") || l.starts_with("error"));
    let line = reloaded.last().unwrap();
    assert!(line.contains("File CA two"), "{line}");
    assert!(line.contains("needs restart: tls-listen"), "{line}");
    Client::try_connect_tls(wss, second.client_config(None)).expect("the new file is served");
    live.subscribe("room");
    nexus.wait_subscribers("room", 1);
}

/// The Rust client library (`easechat`) over wss, trusting a private CA
/// (`Options::ca`, the CLI's `--ca`), exchanges messages with a ws client;
/// and the `easechat pub --url wss://… --ca FILE` command reaches a ws
/// subscriber.
#[test]
fn the_rust_client_and_the_cli_speak_wss_with_a_private_ca() {
    let ca = TestCa::new("Client test CA");
    let (mut nexus, dir) = start_tls("rust-client", &ca, &[]);
    let wss = nexus.tls_addr();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = format!("wss://localhost:{}/", wss.port());
    let options = easechat::Options {
        ca: Some(ca_file.clone()),
        ..easechat::Options::default()
    };
    let mut rust = easechat::Client::connect(&url, "rusty", options).expect("wss connect");
    rust.subscribe("room", Duration::from_secs(60)).unwrap();
    let mut plain = Client::named(&nexus, "plain");
    plain.subscribe("room");
    nexus.wait_subscribers("room", 2);
    plain.publish("room", "to rust");
    let got = rust.recv(PATIENCE).unwrap().expect("a message over wss");
    assert_eq!(
        (got.sender.as_str(), got.text.as_str()),
        ("plain", "to rust")
    );
    rust.transmit("room", "from rust").unwrap();
    assert_eq!(plain.recv(), receive("rusty", "room", "from rust"));

    let cli =
        std::path::Path::new(env!("CARGO_BIN_EXE_ease_chat_nexus")).with_file_name("easechat");
    // `cargo test --workspace` (CI) builds the easechat binary; `cargo test
    // -p ease_chat_nexus` alone does not.
    if !cli.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} missing",
            cli.display()
        );
        eprintln!("SKIPPED the CLI half: {} is not built", cli.display());
    } else {
        let status = std::process::Command::new(&cli)
            .args(["pub", "--url", &url, "--ca"])
            .arg(&ca_file)
            .args(["--name", "cli", "room", "from the cli"])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(plain.recv(), receive("cli", "room", "from the cli"));
    }
}

/// RSA keys, as PKCS#8 and as PKCS#1 (`BEGIN RSA PRIVATE KEY`), made by
/// the openssl command (rcgen cannot make RSA keys), and an EC key in SEC1
/// form (`BEGIN EC PRIVATE KEY`): each is served.
#[test]
fn rsa_and_ec_keys_in_every_pem_form_are_served() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no openssl"
        );
        eprintln!("SKIPPED: no openssl");
        return;
    }
    let ca = TestCa::new("Key form CA");
    let dir = pki::dir("key-forms");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
    };
    let forms: [(&str, Vec<&str>, Vec<&str>); 3] = [
        (
            "rsa-pkcs8",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            vec![],
        ),
        (
            "rsa-pkcs1",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            vec!["rsa", "-traditional"],
        ),
        (
            "ec-sec1",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            vec!["ec"],
        ),
    ];
    for (form, generate, convert) in forms {
        let pkcs8 = String::from_utf8(openssl(&generate)).unwrap();
        let key = rcgen::KeyPair::from_pem(&pkcs8).unwrap();
        let mut issued = ca.server("localhost", Some(key));
        let pkcs8_path = dir.join(format!("{form}.pkcs8"));
        std::fs::write(&pkcs8_path, &pkcs8).unwrap();
        issued.key_pem = if convert.is_empty() {
            pkcs8
        } else {
            let mut args = convert.clone();
            let input = pkcs8_path.display().to_string();
            args.extend(["-in", &input]);
            String::from_utf8(openssl(&args)).unwrap()
        };
        let expected = match form {
            "rsa-pkcs1" => "BEGIN RSA PRIVATE KEY",
            "ec-sec1" => "BEGIN EC PRIVATE KEY",
            _ => "BEGIN PRIVATE KEY",
        };
        assert!(
            issued.key_pem.contains(expected),
            "{form}: {}",
            issued.key_pem
        );
        let (cert, key) = pki::write(&dir, form, &issued);
        let mut nexus = Nexus::start(&[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ]);
        let mut client = Client::try_connect_tls(nexus.tls_addr(), ca.client_config(None))
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        client.hello(form);
        nexus.shard_of(client.local_addr());
    }
}
