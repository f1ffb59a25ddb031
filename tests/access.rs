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

/// The admin listener's address, from the log of a nexus started with
/// `--admin 127.0.0.1:0`.
fn admin_of(nexus: &mut Nexus) -> std::net::SocketAddr {
    nexus.metrics_addr()
}

/// The sum over shards of a counter in `/metrics` (0 when absent).
fn metric_sum(admin: std::net::SocketAddr, name: &str) -> u64 {
    let (status, body) = common::http_get(admin, "/metrics");
    assert!(status.contains("200"), "{status}: {body}");
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Polls `/metrics` until `name` sums to at least `at_least`; its value.
fn wait_metric(admin: std::net::SocketAddr, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let value = metric_sum(admin, name);
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value}, expected at least {at_least}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_adds_an_identity_and_a_key_that_were_refused_before() {
    let setup = Setup::new("reload-add");
    std::fs::write(
        setup.dir.join("k2027.key"),
        "the-2027-secret-of-this-test-0123456789\n",
    )
    .unwrap();
    let before = r#"
        require_known_identity = true
        [identity."gs-1"]
        publish = { allow = ["*"] }
        subscribe = { allow = ["*"] }
    "#;
    let policy = setup.policy(before);
    let mut nexus = start(
        &setup,
        &["--auth-policy", &policy, "--admin", "127.0.0.1:0"],
    );
    let admin = admin_of(&mut nexus);
    let mut watchers = pair_known(&mut nexus);
    let mut gs1 = open(&nexus, &claims("gs-1", &["*"], &["*"]), "gs-1");
    gs1.subscribe("news");
    nexus.wait_subscribers("news", 1);

    // An identity the policy does not know (403), a key it does not hold (401).
    let newcomer = claims("newcomer", &["news"], &[]);
    let err = connect(&nexus, &sign(&newcomer))
        .err()
        .expect("unknown identity");
    assert!(err.contains("403"), "{err}");
    let new_key = SigningKey::from_file_bytes(
        b"the-2027-secret-of-this-test-0123456789",
        Some("k2027".into()),
    )
    .unwrap();
    let keyed = new_key
        .sign(&Claims {
            name: Some("gs-1-new".into()),
            ..claims("gs-1", &["*"], &["*"])
        })
        .unwrap();
    let err = connect(&nexus, &keyed).err().expect("unknown kid");
    assert!(err.contains("401"), "{err}");

    // The policy gains both; POST /api/reload applies it.
    setup.policy(&format!(
        "{before}
        [identity.\"newcomer\"]
        publish = {{ allow = [\"news\"] }}
        [[key]]
        kid = \"k2027\"
        alg = \"HS256\"
        file = \"k2027.key\"
        "
    ));
    let (status, body) = common::http_post_json(admin, "/api/reload", "{}");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\":true"), "{body}");
    let mut fresh = open(&nexus, &newcomer, "newcomer");
    fresh.publish("news", "made it");
    assert_eq!(gs1.recv(), receive("newcomer", "news", "made it"));
    let mut rotated = connect(&nexus, &keyed).expect("the new kid is accepted");
    rotated.hello("gs-1-new");
    rotated.publish("news", "new key");
    assert_eq!(gs1.recv(), receive("gs-1-new", "news", "new key"));
    still_served(&mut watchers, "after the reload");
}

/// [`pair`] under a policy with `require_known_identity` that knows only
/// `gs-1`: the watchers' tokens are `gs-1`'s, for the names `watcher-*`.
fn pair_known(nexus: &mut Nexus) -> (Client, Client) {
    let token = Claims {
        name: Some("watcher-*".into()),
        ..claims("gs-1", &["watch"], &["watch"])
    };
    let mut sub = open(nexus, &token, "watcher-sub");
    sub.subscribe("watch");
    let publisher = open(nexus, &token, "watcher-pub");
    nexus.wait_subscribers("watch", 1);
    (sub, publisher)
}

/// A PKCS#8 private key PEM and its public key PEM (SPKI).
fn key_pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    (pair.serialize_pem(), pair.public_key_pem())
}

#[test]
fn asymmetric_tokens_are_chosen_by_kid_across_a_rotation() {
    let setup = Setup::new("asym");
    // The nexus holds only the public keys: an ES256 key going out and an
    // EdDSA key coming in, both in force during the rotation.
    let (old_private, old_public) = key_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (new_private, new_public) = key_pair(&rcgen::PKCS_ED25519);
    std::fs::write(setup.dir.join("old.pub"), &old_public).unwrap();
    std::fs::write(setup.dir.join("new.pub"), &new_public).unwrap();
    let keys_new = r#"
        [[key]]
        kid = "ed-2027"
        alg = "EdDSA"
        file = "new.pub"
    "#;
    let keys_both = format!(
        r#"
        [[key]]
        kid = "es-2026"
        alg = "ES256"
        file = "old.pub"
        {keys_new}"#
    );
    let policy = setup.policy(&keys_both);
    // No --auth-key-file: the policy's public keys are the only keys.
    let mut nexus = Nexus::start(&["--auth", "required", "--auth-policy", &policy]);
    let signer = |pem: &str, kid: &str| {
        SigningKey::from_file_bytes(pem.as_bytes(), Some(kid.into())).unwrap()
    };
    let old = signer(&old_private, "es-2026");
    let new = signer(&new_private, "ed-2027");
    assert_eq!(format!("{:?}", old.algorithm()), "ES256");
    assert_eq!(format!("{:?}", new.algorithm()), "EdDSA");

    let mut ear = connect(&nexus, &new.sign(&claims("ear", &[], &["*"])).unwrap())
        .expect("an EdDSA token by its kid");
    ear.hello("ear");
    ear.subscribe("game/chat");
    nexus.wait_subscribers("game/chat", 1);
    let mut gs_old = connect(
        &nexus,
        &old.sign(&claims("gs-1", &["game/*"], &[])).unwrap(),
    )
    .expect("an ES256 token by its kid");
    gs_old.hello("gs-1");
    gs_old.publish("game/chat", "signed ES256");
    assert_eq!(ear.recv(), receive("gs-1", "game/chat", "signed ES256"));

    // Refused at the upgrade: an unknown kid, a token signed by another
    // key under a known kid, and a key presented under the other's kid.
    let token = claims("gs-2", &["*"], &["*"]);
    let (stranger, _) = key_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    for (what, forged) in [
        (
            "unknown kid",
            signer(&old_private, "es-2025").sign(&token).unwrap(),
        ),
        (
            "another key",
            signer(&stranger, "es-2026").sign(&token).unwrap(),
        ),
        (
            "swapped kid",
            signer(&old_private, "ed-2027").sign(&token).unwrap(),
        ),
        (
            "HMAC under an ES256 kid",
            SigningKey::from_file_bytes(SECRET.as_bytes(), Some("es-2026".into()))
                .unwrap()
                .sign(&token)
                .unwrap(),
        ),
    ] {
        let err = connect(&nexus, &forged)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(err.contains("401"), "{what}: {err}");
    }

    // The rotation ends: the old key leaves the policy. Its live
    // connection is closed, its tokens are refused; the new key's stay.
    setup.policy(keys_new);
    nexus.signal("HUP");
    assert_eq!(
        gs_old.expect_close(),
        (1008, "token no longer accepted".into())
    );
    let err = connect(
        &nexus,
        &old.sign(&claims("gs-1", &["game/*"], &[])).unwrap(),
    )
    .err()
    .expect("the retired kid is refused");
    assert!(err.contains("401"), "{err}");
    let mut gs_new = connect(
        &nexus,
        &new.sign(&claims("gs-1", &["game/*"], &[])).unwrap(),
    )
    .expect("the new kid still works");
    gs_new.hello("gs-1");
    gs_new.publish("game/chat", "signed EdDSA");
    assert_eq!(ear.recv(), receive("gs-1", "game/chat", "signed EdDSA"));
}

#[test]
fn the_bytes_per_second_quota_paces_without_losing_anything() {
    let setup = Setup::new("bytes-rate");
    // 20,000 text bytes/s (a burst of one second's worth): 60 messages of
    // 1,000 bytes take at least (60,000 - 20,000) / 20,000 = 2 s.
    let policy = setup.policy(
        r#"
        [identity."bulky"]
        publish_bytes_rate = 20000
        "#,
    );
    let mut nexus = start(
        &setup,
        &["--auth-policy", &policy, "--admin", "127.0.0.1:0"],
    );
    let admin = admin_of(&mut nexus);
    let mut ear = open(&nexus, &claims("ear", &[], &["*"]), "ear");
    ear.subscribe("bulk");
    nexus.wait_subscribers("bulk", 1);
    let mut bulky = open(&nexus, &claims("bulky", &["*"], &[]), "bulky");
    assert_eq!(metric_sum(admin, "easechat_rate_pauses_total"), 0);
    let text = |i: usize| format!("{i:04}{}", "x".repeat(996));
    let started = Instant::now();
    for i in 0..60 {
        bulky.publish("bulk", &text(i));
    }
    for i in 0..60 {
        assert_eq!(
            ear.recv(),
            receive("bulky", "bulk", &text(i)),
            "message {i}"
        );
    }
    let elapsed = started.elapsed();
    eprintln!("60,000 bytes at 20,000 bytes/s: {elapsed:?}");
    // At least half the theoretical 2 s: paced, not merely slow.
    assert!(
        elapsed >= Duration::from_millis(1000),
        "not paced: 60,000 bytes in {elapsed:?}"
    );
    assert!(wait_metric(admin, "easechat_rate_pauses_total", 1) >= 1);
}

#[test]
fn denials_are_counted_clients_show_their_token_and_the_console_is_checked() {
    let setup = Setup::new("denials");
    let policy = setup.policy(
        r#"
        [console]
        publish = { allow = ["ops/*"] }
        subscribe = { allow = ["*"] }
        "#,
    );
    let mut nexus = start(
        &setup,
        &["--auth-policy", &policy, "--admin", "127.0.0.1:0"],
    );
    let admin = admin_of(&mut nexus);
    let listener = Claims {
        name: Some("ear-*".into()),
        ..claims("listener", &[], &["*"])
    };
    let mut ear = open(&nexus, &listener, "ear-1");
    ear.subscribe("game/chat");
    ear.subscribe("ops/news");
    nexus.wait_subscribers("ops/news", 1);

    // /api/clients: who the token says the connection is.
    let (status, body) = common::http_get(admin, "/api/clients?filter=ear-1");
    assert!(status.contains("200"), "{status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let client = &json["clients"][0];
    assert_eq!(client["name"], "ear-1", "{json}");
    assert_eq!(client["identity"], "listener", "{json}");
    assert_eq!(client["token_id"], "jti-listener", "{json}");

    // A denied publish closes its connection and is counted.
    assert_eq!(metric_sum(admin, "easechat_access_denied_total"), 0);
    assert_eq!(metric_sum(admin, "easechat_auth_refused_total"), 0);
    let mut rogue = open(&nexus, &claims("rogue", &["game/*"], &[]), "rogue");
    rogue.publish("ops/news", "fake news");
    assert_eq!(
        rogue.expect_close(),
        (1008, "publish to \"ops/news\" denied".into())
    );
    assert_eq!(wait_metric(admin, "easechat_access_denied_total", 1), 1);
    // A refused upgrade is counted apart.
    assert!(connect(&nexus, "not-a-token")
        .err()
        .unwrap()
        .contains("401"));
    assert_eq!(wait_metric(admin, "easechat_auth_refused_total", 1), 1);
    assert_eq!(metric_sum(admin, "easechat_access_denied_total"), 1);

    // The console identity may publish on ops/* only, through the API too.
    let publish = |channel: &str, text: &str| {
        let body = serde_json::json!({"sender": "ops", "channel": channel, "text": text});
        common::http_post_json(admin, "/api/publish", &body.to_string())
    };
    let (status, body) = publish("game/chat", "from the console");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("denied for the console identity"), "{body}");
    let (status, body) = publish("ops/news", "maintenance at noon");
    assert_eq!(status, 200, "{body}");
    // Only the allowed one arrives.
    assert_eq!(
        ear.recv(),
        receive("ops", "ops/news", "maintenance at noon")
    );
    ear.expect_silence(Duration::from_millis(300));
    // The console's push is held to the same rule.
    nexus.console("push ops game/chat typed at the console");
    let out = nexus.output_until(|l| l.contains("pushed"));
    assert!(
        out.last()
            .unwrap()
            .contains("denied for the console identity"),
        "{out:?}"
    );
    ear.expect_silence(Duration::from_millis(300));
}
