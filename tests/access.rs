//! Access control through the real nexus (two shards) and real WebSocket
//! clients: every refusal at the upgrade, names, channel permissions, quotas,
//! live expiry, and reloads under live connections.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::tokens::{claims, list, now};
use common::{receive, Client, Event, Nexus};
use easechat_auth::claims::Claims;
use easechat_auth::permissions::{PermissionsText, RuleText};
use easechat_auth::SigningKey;

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

/// A directory with the HMAC key file (and room for a policy).
struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir =
            std::env::temp_dir().join(format!("easechat-access-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hmac.key"), format!("{SECRET}\n")).unwrap();
        Setup { dir }
    }

    fn key(&self) -> String {
        self.dir.join("hmac.key").display().to_string()
    }

    fn policy(&self, text: &str) -> String {
        let path = self.dir.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sign(claims: &Claims) -> String {
    SigningKey::from_file_bytes(SECRET.as_bytes(), None)
        .unwrap()
        .sign(claims)
        .unwrap()
}

fn connect(nexus: &Nexus, token: &str) -> Result<Client, String> {
    Client::try_connect_target(nexus.addr, &format!("/?token={token}"))
}

fn open(nexus: &Nexus, claims: &Claims, name: &str) -> Client {
    let mut client = connect(nexus, &sign(claims)).expect("a valid token is accepted");
    client.hello(name);
    client
}

fn start(setup: &Setup, extra: &[&str]) -> Nexus {
    let key = setup.key();
    let mut args = vec!["--auth", "required", "--auth-key-file", key.as_str()];
    args.extend_from_slice(extra);
    Nexus::start(&args)
}

/// A subscriber and a publisher with good tokens: they must keep working
/// whatever else happens on the nexus.
fn pair(nexus: &mut Nexus) -> (Client, Client) {
    let mut sub = open(
        nexus,
        &claims("watcher-sub", &[], &["watch"]),
        "watcher-sub",
    );
    sub.subscribe("watch");
    let publisher = open(
        nexus,
        &claims("watcher-pub", &["watch"], &[]),
        "watcher-pub",
    );
    nexus.wait_subscribers("watch", 1);
    (sub, publisher)
}

fn still_served(pair: &mut (Client, Client), text: &str) {
    pair.1.publish("watch", text);
    assert_eq!(pair.0.recv(), receive("watcher-pub", "watch", text));
}

#[test]
fn bad_credentials_get_401_and_touch_nobody_else() {
    let setup = Setup::new("401");
    let mut nexus = start(&setup, &[]);
    let mut watchers = pair(&mut nexus);
    let other_key =
        SigningKey::from_file_bytes(b"a completely different secret key!!", None).unwrap();
    let good = claims("gs-1", &["*"], &["*"]);
    let cases = [
        ("no token", String::new()),
        ("bad signature", other_key.sign(&good).unwrap()),
        (
            "expired",
            sign(&Claims {
                exp: Some(now() - 3600),
                ..good.clone()
            }),
        ),
        (
            "not yet valid",
            sign(&Claims {
                nbf: Some(now() + 3600),
                ..good.clone()
            }),
        ),
        (
            "wrong kid",
            SigningKey::from_file_bytes(SECRET.as_bytes(), Some("nope".into()))
                .unwrap()
                .sign(&good)
                .unwrap(),
        ),
        ("garbage", "a.b.c".into()),
        ("huge", "x".repeat(6000)),
    ];
    for (what, token) in &cases {
        let target = if token.is_empty() {
            "/".to_string()
        } else {
            format!("/?token={token}")
        };
        let err = Client::try_connect_target(nexus.addr, &target)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        if what == &"huge" {
            // Past the 8 KiB request bound or the 4 KiB token bound: refused.
            assert!(err.contains("401") || err.contains("431"), "{what}: {err}");
        } else {
            assert!(err.contains("401"), "{what}: {err}");
        }
        still_served(&mut watchers, what);
    }
    // The log says why; the client was told nothing more than 401.
    nexus.wait_log(|l| l.contains("upgrade refused") && l.contains("bad signature"));
    nexus.wait_log(|l| l.contains("upgrade refused") && l.contains("token expired"));
    // The bearer header works as well as the query.
    let token = sign(&good);
    let stream = std::net::TcpStream::connect(nexus.addr).unwrap();
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(nexus.url()).unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tungstenite::client(request, stream).expect("bearer accepted");
    ws.send(tungstenite::Message::text("1h|4|gs-1")).unwrap();
}

#[test]
fn names_and_channels_are_checked_deny_winning() {
    let setup = Setup::new("perm");
    let mut nexus = start(&setup, &[]);
    let mut watchers = pair(&mut nexus);

    // A 1h name the token does not allow: 1008.
    let mut wrong = connect(&nexus, &sign(&claims("gs-1", &["*"], &["*"]))).unwrap();
    wrong.hello("gs-2");
    assert_eq!(
        wrong.expect_close(),
        (1008, "name \"gs-2\" not allowed for this token".into())
    );

    // A fleet token: any name matching its pattern.
    let fleet = Claims {
        name: Some("gs-eu-*".into()),
        ..claims("fleet-eu", &["game/*"], &["game/*"])
    };
    let mut a = open(&nexus, &fleet, "gs-eu-1");
    let mut b = open(&nexus, &fleet, "gs-eu-2");
    b.subscribe("game/lobby");
    nexus.wait_subscribers("game/lobby", 1);
    a.publish("game/lobby", "hi");
    assert_eq!(b.recv(), receive("gs-eu-1", "game/lobby", "hi"));

    // Subscribe outside the allow list: 1008 naming the command and channel.
    a.subscribe("ops/maintenance");
    assert_eq!(
        a.expect_close(),
        (1008, "subscribe to \"ops/maintenance\" denied".into())
    );
    // Publish denied although allowed: deny wins.
    let denied = Claims {
        perm: Some(PermissionsText {
            publish: RuleText {
                allow: list(&["game/*"]),
                deny: list(&["game/admin/*"]),
            },
            subscribe: RuleText::default(),
        }),
        ..claims("gs-9", &[], &[])
    };
    let mut c = open(&nexus, &denied, "gs-9");
    c.publish("game/lobby", "allowed");
    assert_eq!(b.recv(), receive("gs-9", "game/lobby", "allowed"));
    c.publish("game/admin/restart", "now");
    assert_eq!(
        c.expect_close(),
        (1008, "publish to \"game/admin/restart\" denied".into())
    );
    b.expect_silence(Duration::from_millis(300));
    still_served(&mut watchers, "after denials");
    // The console shows who is who.
    let (listens, _) = nexus.list_keyword("gs-eu-2");
    assert!(
        listens
            .iter()
            .any(|l| l.contains("as fleet-eu token jti-fleet-eu")),
        "{listens:?}"
    );
}

#[test]
fn identity_quotas_hold() {
    let setup = Setup::new("quota");
    let policy = setup.policy(
        r#"
        [identity."gs-1"]
        max_connections = 2
        max_subscriptions = 3
        [identity."chatty"]
        publish_rate = 10
        publish_burst = 1
        "#,
    );
    let mut nexus = start(&setup, &["--auth-policy", &policy]);
    let token = claims("gs-1", &["*"], &["*"]);
    let mut first = open(&nexus, &token, "gs-1");
    let _second = open(&nexus, &token, "gs-1");
    let err = connect(&nexus, &sign(&token))
        .err()
        .expect("third connection refused");
    assert!(err.contains("403"), "{err}");
    // Subscriptions count over the identity's connections.
    for channel in ["a", "b", "c"] {
        first.subscribe(channel);
    }
    first.subscribe("a"); // a renewal takes no more quota
    nexus.wait_subscribers("c", 1);
    first.subscribe("d");
    assert_eq!(
        first.expect_close(),
        (
            1008,
            "subscription quota of this identity reached (3)".into()
        )
    );
    // Its subscriptions were given back: a new connection may take three.
    let mut again = open(&nexus, &token, "gs-1");
    for channel in ["x", "y", "z"] {
        again.subscribe(channel);
    }
    nexus.wait_subscribers("z", 1);

    // Publish rate: 10/s with a burst of 1 paces 21 messages over ≥ 2 s,
    // and every one of them arrives, in order.
    let mut listener = open(&nexus, &claims("ear", &[], &["*"]), "ear");
    listener.subscribe("talk");
    nexus.wait_subscribers("talk", 1);
    let mut chatty = open(&nexus, &claims("chatty", &["*"], &[]), "chatty");
    let started = Instant::now();
    for i in 0..21 {
        chatty.publish("talk", &i.to_string());
    }
    for i in 0..21 {
        assert_eq!(listener.recv(), receive("chatty", "talk", &i.to_string()));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "not paced: {:?}",
        started.elapsed()
    );
}

#[test]
fn optional_mode_gives_the_anonymous_identity_read_only() {
    let setup = Setup::new("optional");
    let key = setup.key();
    let mut nexus = Nexus::start(&["--auth", "optional", "--auth-key-file", &key]);
    let mut anon = Client::connect(&nexus);
    anon.hello("any-name");
    anon.subscribe("news");
    nexus.wait_subscribers("news", 1);
    let mut writer = open(&nexus, &claims("editor", &["news"], &[]), "editor");
    writer.publish("news", "extra");
    assert_eq!(anon.recv(), receive("editor", "news", "extra"));
    anon.publish("news", "spam");
    assert_eq!(
        anon.expect_close(),
        (1008, "publish to \"news\" denied".into())
    );
    // A bad token is not anonymous: it is refused.
    assert!(connect(&nexus, "bad").err().unwrap().contains("401"));
}

#[test]
fn off_mode_ignores_tokens_and_keeps_v1_bytes() {
    let mut nexus = Nexus::start(&[]);
    let mut a = Client::try_connect_target(nexus.addr, "/?token=whatever").unwrap();
    a.hello("a");
    a.subscribe("c");
    nexus.wait_subscribers("c", 1);
    let mut b = Client::named(&nexus, "b");
    b.publish("c", "x|y");
    assert_eq!(a.recv(), "1r|1|b|1|c|3|x|y");
}

#[test]
fn a_token_that_expires_closes_its_live_connection() {
    let setup = Setup::new("expiry");
    let policy = setup.policy("leeway = 0\n");
    let mut nexus = start(&setup, &["--auth-policy", &policy]);
    let mut watchers = pair(&mut nexus);
    let short = Claims {
        exp: Some(now() + 2),
        ..claims("brief", &["*"], &["*"])
    };
    let mut brief = open(&nexus, &short, "brief");
    brief.subscribe("watch");
    let (code, reason) = brief.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    still_served(&mut watchers, "after expiry");
}

#[test]
fn reload_adds_revokes_and_narrows_live_connections() {
    let setup = Setup::new("reload");
    let first = r#"
        [identity."gs-1"]
        subscribe = { allow = ["*"] }
        publish = { allow = ["*"] }
    "#;
    let policy = setup.policy(first);
    let mut nexus = start(&setup, &["--auth-policy", &policy]);
    let mut watchers = pair(&mut nexus);
    let mut gs1 = open(&nexus, &claims("gs-1", &["*"], &["*"]), "gs-1");
    gs1.subscribe("game/chat");
    gs1.subscribe("ops/maintenance");
    let mut doomed = open(
        &nexus,
        &Claims {
            jti: Some("leaked".into()),
            ..claims("gs-2", &["*"], &["*"])
        },
        "gs-2",
    );
    doomed.subscribe("game/chat");
    nexus.wait_subscribers("ops/maintenance", 1);
    nexus.wait_subscribers("game/chat", 2);
    let mut ops = open(&nexus, &claims("ops", &["*"], &[]), "ops");

    // A broken file is refused; the old policy stays.
    setup.policy("[identity.\"gs-1\"\nbroken");
    nexus.console("reload");
    let line = nexus.output_until(|l| l.contains("reload"));
    assert!(
        line.last().unwrap().contains("error: reload refused"),
        "{line:?}"
    );
    ops.publish("ops/maintenance", "still there");
    assert_eq!(gs1.recv(), receive("ops", "ops/maintenance", "still there"));

    // Revoke one token, deny gs-1 the maintenance channel; by SIGHUP.
    setup.policy(
        r#"
        [identity."gs-1"]
        subscribe = { allow = ["*"], deny = ["ops/*"] }
        publish = { allow = ["*"] }
        [[revoke]]
        jti = "leaked"
        "#,
    );
    nexus.signal("HUP");
    assert_eq!(doomed.expect_close(), (1008, "token revoked".into()));
    nexus.wait_log(|l| l.contains("subscription dropped") && l.contains("ops/maintenance"));
    ops.publish("ops/maintenance", "restart");
    ops.publish("game/chat", "hello");
    // gs-1 stays connected, hears game/chat, no longer ops/maintenance.
    assert_eq!(gs1.recv(), receive("ops", "game/chat", "hello"));
    gs1.expect_silence(Duration::from_millis(300));
    // Its client's periodic renewal of the dropped channel is ignored (the
    // Java client renews by itself), not a reason to close it.
    gs1.subscribe("ops/maintenance");
    ops.publish("ops/maintenance", "still restarting");
    gs1.expect_silence(Duration::from_millis(300));
    // A new subscription outside its rights closes it.
    gs1.subscribe("ops/again");
    assert_eq!(
        gs1.expect_close(),
        (1008, "subscribe to \"ops/again\" denied".into())
    );
    // A revoked token cannot come back.
    let again = Claims {
        jti: Some("leaked".into()),
        ..claims("gs-2", &["*"], &["*"])
    };
    assert!(connect(&nexus, &sign(&again))
        .err()
        .unwrap()
        .contains("403"));
    still_served(&mut watchers, "after reloads");
    assert!(matches!(
        watchers.0.next_within(Duration::from_millis(50)),
        None | Some(Event::Text(_))
    ));
}

/// A CI-sized form of the abuse suite's `token-bad` row: a burst of
/// bad-token handshakes leaves the bystanders served and memory flat.
#[test]
fn a_flood_of_bad_tokens_costs_nothing_else() {
    let setup = Setup::new("flood");
    let mut nexus = start(&setup, &[]);
    let mut watchers = pair(&mut nexus);
    let base = nexus.rss_kib();
    let forged = SigningKey::from_file_bytes(b"a forger's secret that is long enough", None)
        .unwrap()
        .sign(&claims("intruder", &["*"], &["*"]))
        .unwrap();
    let addr = nexus.addr;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let forged = forged.clone();
            std::thread::spawn(move || {
                (0..250)
                    .filter(|_| {
                        Client::try_connect_target(addr, &format!("/?token={forged}"))
                            .err()
                            .is_some_and(|e| e.contains("401"))
                    })
                    .count()
            })
        })
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        assert_eq!(
            worker.join().unwrap(),
            250,
            "worker {i}: not every handshake was 401"
        );
        still_served(&mut watchers, &format!("during the flood {i}"));
    }
    let grown = nexus.rss_kib().saturating_sub(base);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB over 2,000 refused handshakes"
    );
    // The log was not flooded: at most 10 refusal lines a second per shard.
    nexus.wait_log(|l| l.contains("not logged"));
}
