//! The console in a real headless Chromium, driven over the DevTools
//! protocol (raw CDP over a WebSocket): open `/?tap=c/test`, publish from a
//! WebSocket client and see the message in the page's DOM; publish from
//! the page's form and see a WebSocket subscriber receive it; take a
//! screenshot. And wss plus the HTTPS console in a Chromium that trusts a
//! test CA through its NSS database.
//!
//! Without a Chromium binary the tests are skipped loudly, except in CI
//! (`CI=true`), where they fail. Set `UPDATE_SCREENSHOT=1` to write the
//! screenshot to `docs/console.png` (otherwise it goes to the target dir).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{pki, receive, Client, Nexus, PATIENCE};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The longest a message may take from a publisher to the page's DOM.
const TAP_LATENCY_BOUND: Duration = Duration::from_millis(500);

fn find_chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A headless Chromium in a process group of its own, killed with all its
/// helper processes (and its profile removed) on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: String,
}

impl Browser {
    fn start(binary: &Path) -> Browser {
        Browser::start_with(binary, "console", None)
    }

    /// Like [`Browser::start`], with a profile of its own named by `tag`
    /// (the tests run at once, and two Chromiums cannot share a profile).
    /// With `trusted_ca` (a PEM file), Chromium runs with a private `HOME`
    /// inside the profile whose NSS database (`~/.pki/nssdb`, where
    /// Chromium on Linux keeps the user's certificate trust) trusts that
    /// CA to identify TLS servers.
    fn start_with(binary: &Path, tag: &str, trusted_ca: Option<&Path>) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("easechat-chromium-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut command = Command::new(binary);
        if let Some(ca) = trusted_ca {
            let home = profile.join("home");
            let nssdb = home.join(".pki/nssdb");
            std::fs::create_dir_all(&nssdb).unwrap();
            let db = format!("sql:{}", nssdb.display());
            certutil(&["-d", &db, "-N", "--empty-password"]);
            certutil(&[
                "-d",
                &db,
                "-A",
                "-t",
                "C,,",
                "-n",
                "easechat-test-ca",
                "-i",
                &ca.display().to_string(),
            ]);
            command.env("HOME", &home);
        }
        let mut child = command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--window-size=1280,1300",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed its DevTools address");
        Browser {
            child,
            profile,
            devtools,
        }
    }

    /// `host:port` of the DevTools endpoint.
    fn endpoint(&self) -> String {
        self.devtools
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: helpers left alive would write into the profile
        // while it is being removed.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Runs NSS's `certutil` (Debian's libnss3-tools) with `args`.
fn certutil(args: &[&str]) {
    let output = Command::new("certutil")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run certutil (Debian package libnss3-tools)");
    assert!(
        output.status.success(),
        "certutil {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One DevTools protocol connection (browser or page).
struct Cdp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let host = url.trim_start_matches("ws://").split('/').next().unwrap();
        let stream = TcpStream::connect(host).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(url, MaybeTlsStream::Plain(stream)).expect("CDP upgrade");
        Cdp { ws, next_id: 0 }
    }

    /// Calls `method` and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(request.to_string()))
            .expect("CDP send");
        loop {
            let Message::Text(text) = self.ws.read().expect("CDP read") else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method} failed: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is true; returns how long it took.
    fn wait_true(&mut self, expression: &str, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(expression) == Value::Bool(true) {
                return started.elapsed();
            }
            assert!(started.elapsed() < PATIENCE, "{what}: not seen in the page");
            thread::sleep(Duration::from_millis(2));
        }
    }
}

fn tap_rows_contain(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#tap-messages tr.msg')].some(r => r.textContent.includes({}))",
        json!(text)
    )
}

/// Chromium, or `None` when there is none and the test `test` should be
/// skipped (loudly); in CI (`CI=true`) a missing Chromium fails the test.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_chromium().filter(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but no Chromium found: install Debian's chromium (.ci/run does)");
        }
        eprintln!("SKIPPED {test}: no Chromium (install `chromium` or set CHROMIUM)");
    }
    found
}

#[test]
fn console_in_a_real_browser() {
    let Some(chromium) = chromium_or_skip("console_in_a_real_browser") else {
        return;
    };
    let mut nexus = Nexus::start(&["--admin", "127.0.0.1:0"]);
    let admin = nexus.metrics_addr();
    let mut watcher = Client::named(&nexus, "watcher");
    watcher.subscribe("c/test");
    // Some company for the screenshot.
    let mut others: Vec<Client> = ["lobby-1", "lobby-2", "ops-bot", "game-7"]
        .iter()
        .map(|name| Client::named(&nexus, name))
        .collect();
    for (i, client) in others.iter_mut().enumerate() {
        client.subscribe("c/lobby");
        if i % 2 == 0 {
            client.subscribe("game/7/chat");
        }
    }
    others[2].subscribe("c/ops");

    let browser = Browser::start(&chromium);
    let mut control = Cdp::connect(&browser.devtools);
    let target = control.call(
        "Target.createTarget",
        json!({"url": format!("http://{admin}/?tap=c/test")}),
    );
    let target_id = target["targetId"].as_str().unwrap();
    let mut page = Cdp::connect(&format!(
        "ws://{}/devtools/page/{target_id}",
        browser.endpoint()
    ));
    page.wait_true(
        "document.getElementById('tap-status')?.textContent.startsWith('tapping c/test')",
        "the tap's ready event",
    );
    // The tap's subscription is in place once the channel counts it.
    nexus.wait_subscribers("c/test", 2);
    thread::sleep(Duration::from_millis(50)); // interest reaches the other shard

    // A WebSocket client publishes; the page shows it.
    let mut publisher = Client::named(&nexus, "game-server-3");
    publisher.publish("c/test", "hello from a websocket client");
    let published = Instant::now();
    page.wait_true(
        &tap_rows_contain("hello from a websocket client"),
        "the published message",
    );
    let latency = published.elapsed();
    eprintln!("publish -> seen in the page's DOM: {latency:?}");
    assert!(
        latency <= TAP_LATENCY_BOUND,
        "the tap took {latency:?} (bound {TAP_LATENCY_BOUND:?})"
    );
    assert_eq!(
        watcher.recv(),
        receive("game-server-3", "c/test", "hello from a websocket client")
    );

    // The page publishes; a WebSocket subscriber receives it.
    page.eval(
        "(() => { const $ = (id) => document.getElementById(id);
           $('pub-sender').value = 'browser'; $('pub-channel').value = 'c/test';
           $('pub-text').value = 'hello from the page'; $('pub-send').click(); return true; })()",
    );
    assert_eq!(
        watcher.recv(),
        receive("browser", "c/test", "hello from the page")
    );
    page.wait_true(
        "document.getElementById('pub-status').textContent.startsWith('published on c/test')",
        "the publish confirmation",
    );
    page.wait_true(
        &tap_rows_contain("hello from the page"),
        "the page's own message",
    );

    // A little traffic so the chart has a shape, then the screenshot.
    for i in 0..16 {
        for client in others.iter_mut().take(1 + i % 4) {
            client.publish("c/lobby", &format!("round {i}"));
        }
        publisher.publish("c/test", &format!("score update {i}: 3-{}", i % 4));
        thread::sleep(Duration::from_millis(500));
    }
    page.wait_true(&tap_rows_contain("score update 15"), "the last update");
    page.wait_true(
        "document.querySelectorAll('#ch-table tbody tr').length >= 4",
        "the channel list",
    );
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console.png")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png")
    };
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// wss and `--admin-tls` in a real browser that trusts a test CA, the
/// way a deployment's browsers trust its certificate: a CA made here
/// (rcgen) is added to an NSS database in a private `HOME` for Chromium
/// (`certutil -A -t "C,,"`), which Chromium on Linux reads for the user's
/// certificate trust; no `--ignore-certificate-errors*` flag. The page
/// loads `https://localhost:<admin>/healthz`, then opens
/// `wss://localhost:<wss>/` and exchanges messages both ways with a plain
/// `ws://` client on the same nexus.
///
/// Needs NSS's `certutil` (Debian's libnss3-tools; `.ci/run` installs it)
/// as well as Chromium; skipped loudly without them, except in CI.
#[test]
fn wss_in_a_real_browser_trusting_a_test_ca() {
    const TEST: &str = "wss_in_a_real_browser_trusting_a_test_ca";
    let Some(chromium) = chromium_or_skip(TEST) else {
        return;
    };
    let has_certutil = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("certutil").is_file()));
    if !has_certutil {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but no certutil found: install Debian's libnss3-tools (.ci/run does)");
        }
        eprintln!("SKIPPED {TEST}: no certutil (install `libnss3-tools`)");
        return;
    }
    let started = Instant::now();

    let ca = pki::TestCa::new("EaseChat browser test CA");
    let dir = pki::dir("browser");
    let (cert, key) = pki::write(&dir, "server", &ca.server("localhost", None));
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, &ca.pem).unwrap();
    let mut nexus = Nexus::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--admin",
        "127.0.0.1:0",
        "--admin-tls",
    ]);
    let wss_port = nexus.tls_addr().port();
    let admin_port = nexus.metrics_addr().port();

    let browser = Browser::start_with(&chromium, "wss", Some(&ca_pem));
    let _ = std::fs::remove_dir_all(&dir); // Chromium's copy is in its NSS db
    let mut control = Cdp::connect(&browser.devtools);
    let target = control.call("Target.createTarget", json!({"url": "about:blank"}));
    let target_id = target["targetId"].as_str().unwrap();
    let mut page = Cdp::connect(&format!(
        "ws://{}/devtools/page/{target_id}",
        browser.endpoint()
    ));

    // The admin console over HTTPS: an untrusted certificate would fail the
    // navigation (errorText net::ERR_CERT_AUTHORITY_INVALID).
    let healthz = format!("https://localhost:{admin_port}/healthz");
    let navigated = page.call("Page.navigate", json!({"url": healthz}));
    assert!(
        navigated.get("errorText").is_none(),
        "{healthz} did not load: {navigated}"
    );
    page.wait_true(
        &format!(
            "location.href === {} && document.body?.innerText.startsWith('ok')",
            json!(healthz)
        ),
        "/healthz over https",
    );

    // From that page, a WebSocket to the wss listener.
    page.eval(&format!(
        "(() => {{
           window.got = []; window.wsState = 'connecting';
           const ws = new WebSocket({});
           window.ws = ws;
           ws.onopen = () => {{
             ws.send('1h|7|browser'); ws.send('1c|4|room|300|0'); window.wsState = 'open';
           }};
           ws.onmessage = (e) => window.got.push(e.data);
           ws.onclose = (e) => {{ window.wsState = `closed ${{e.code}} ${{e.reason}}`; }};
           return true; }})()",
        json!(format!("wss://localhost:{wss_port}/"))
    ));
    page.wait_true(
        "(() => { if (window.wsState.startsWith('closed')) throw new Error(window.wsState);
                  return window.wsState === 'open'; })()",
        "the wss connection",
    );
    let mut plain = Client::named(&nexus, "plain");
    plain.subscribe("room");
    nexus.wait_subscribers("room", 2);

    // ws -> the browser over wss.
    plain.publish("room", "to the browser");
    let expected = receive("plain", "room", "to the browser");
    assert_eq!(expected, "1r|5|plain|4|room|14|to the browser");
    page.wait_true(
        &format!("window.got.includes({})", json!(expected)),
        "the plain client's message",
    );

    // The browser over wss -> ws.
    let text = "from the browser";
    page.eval(&format!(
        "(() => {{ window.ws.send({}); return true; }})()",
        json!(format!("1t|4|room|{}|{text}", text.len()))
    ));
    assert_eq!(plain.recv(), receive("browser", "room", text));
    assert_eq!(
        page.eval("window.got"),
        json!([expected]),
        "the page heard only the plain client (never itself)"
    );
    eprintln!("{TEST}: {:?}", started.elapsed());
}
