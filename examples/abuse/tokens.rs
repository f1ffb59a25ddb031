//! Issue 20's token abuse rows, against a nexus with `--auth required`:
//! a flood of bad-token handshakes, huge and malformed tokens, and a token
//! that expires on a live, busy connection. The bystanders present a good
//! token (see [`setup`]); the abusers' handshakes are counted by status.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use easechat_auth::claims::Claims;
use easechat_auth::permissions::{PermissionsText, RuleText};
use easechat_auth::SigningKey;

use crate::abusers::{self, Summary};
use crate::client;
use crate::scenarios::{Ctx, Measures, Outcome};

/// The scenarios of this file, with the issue they come from.
pub const ALL: &[(&str, u32)] = &[
    ("token-bad", 20),
    ("token-malformed", 20),
    ("token-expiry", 20),
];

/// The HMAC secret the nexus verifies with (a test secret).
const SECRET: &str = "abuse-suite-secret-0123456789abcdef-0123";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sign(key: &SigningKey, sub: &str, exp: u64) -> String {
    let everything = RuleText {
        allow: vec!["*".into()],
        deny: vec![],
    };
    let claims = Claims {
        sub: sub.into(),
        name: Some("*".into()),
        perm: Some(PermissionsText {
            publish: everything.clone(),
            subscribe: everything,
        }),
        exp: Some(exp),
        iat: Some(now()),
        jti: Some(format!("abuse-{sub}")),
        nbf: None,
    };
    key.sign(&claims).expect("sign")
}

/// Writes the key file, returns the nexus flags for it and makes every
/// bystander connection present a good token.
pub fn setup() -> Result<Vec<String>, String> {
    let dir = std::env::temp_dir().join(format!("easechat-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("hmac.key");
    std::fs::write(&path, SECRET).map_err(|e| e.to_string())?;
    let key = SigningKey::from_file_bytes(SECRET.as_bytes(), None)?;
    client::use_token(sign(&key, "bystander", now() + 3600));
    Ok(vec![
        "--auth".into(),
        "required".into(),
        "--auth-key-file".into(),
        path.display().to_string(),
    ])
}

/// Runs scenario `name`.
pub async fn run(ctx: &Ctx, name: &str) -> Result<(Measures, Outcome), String> {
    match name {
        "token-bad" => bad(ctx).await,
        "token-malformed" => malformed(ctx).await,
        "token-expiry" => expiry(ctx).await,
        other => Err(format!("unknown scenario {other:?}")),
    }
}

/// Handshakes with `requests` (path, header lines), `ctx.parallel` at once,
/// until `total` are done or the time is up; status code → count.
async fn handshakes(
    ctx: &Ctx,
    requests: Vec<(String, String)>,
    total: usize,
) -> (BTreeMap<String, usize>, usize, Duration) {
    let counts: Rc<RefCell<BTreeMap<String, usize>>> = Rc::default();
    let next = Rc::new(RefCell::new(0usize));
    let requests = Rc::new(requests);
    let started = Instant::now();
    let deadline = started + ctx.duration.max(Duration::from_secs(60));
    let mut workers = Vec::new();
    for _ in 0..ctx.parallel.max(1) {
        let (counts, next, requests, addr) = (
            counts.clone(),
            next.clone(),
            requests.clone(),
            ctx.target.addr,
        );
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = {
                    let mut n = next.borrow_mut();
                    if *n >= total || Instant::now() > deadline {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let (path, headers) = &requests[i % requests.len()];
                let key = match client::upgrade_status(addr, path, headers).await {
                    Ok(code) => code.to_string(),
                    Err(e) => e,
                };
                *counts.borrow_mut().entry(key).or_default() += 1;
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let done = *next.borrow();
    let counts = counts.borrow().clone();
    (counts, done, started.elapsed())
}

fn refused_summary(counts: &BTreeMap<String, usize>, done: usize, allowed: &[&str]) -> Summary {
    let text = counts
        .iter()
        .map(|(code, n)| format!("{n}/{done} answered {code}"))
        .collect::<Vec<_>>()
        .join(", ");
    Summary {
        text,
        handled: done > 0 && counts.keys().all(|code| allowed.contains(&code.as_str())),
    }
}

/// 10,000 handshakes with tokens signed by another key (and some without
/// any): every one 401, the bystanders unaffected.
async fn bad(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let forger = SigningKey::from_file_bytes(b"not the nexus's secret, long enough!", None)?;
    let forged = sign(&forger, "intruder", now() + 3600);
    let requests = vec![
        (format!("/?token={forged}"), String::new()),
        (
            "/".to_string(),
            format!("Authorization: Bearer {forged}\r\n"),
        ),
        ("/".to_string(), String::new()),
    ];
    let measuring = ctx.measure(0)?;
    let total = ctx.connections;
    let (counts, done, took) = handshakes(ctx, requests, total).await;
    let measures = measuring.finish();
    let notes = format!(
        "{done} bad-token handshakes in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64().max(1e-9)
    );
    let mut abuser = refused_summary(&counts, done, &["401"]);
    abuser.handled &= done == total;
    Ok((measures, Outcome { abuser, notes }))
}

/// Huge, malformed and hostile tokens: none gets a 101.
async fn malformed(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let key = SigningKey::from_file_bytes(SECRET.as_bytes(), None)?;
    let many: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    let too_many_patterns = key.sign(&Claims {
        sub: "x".into(),
        exp: Some(now() + 60),
        perm: Some(PermissionsText {
            publish: RuleText {
                allow: many,
                deny: vec![],
            },
            subscribe: RuleText::default(),
        }),
        ..Default::default()
    })?;
    let tokens = vec![
        "x".repeat(5000), // past 4 KiB
        "a.b.c".to_string(),
        "...".to_string(),
        "%00%ff%fe".to_string(),
        format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"root"}"#)), // alg none
        format!(
            "{}.{}.sig",
            b64(r#"{"alg":"HS256","kid":"../../etc/passwd"}"#),
            b64("{}")
        ),
        format!("{}.{}.x", b64(&"[".repeat(2000)), b64("{}")), // deep nesting
        too_many_patterns,                                     // valid signature, bad claim
        sign(&key, "", now() + 60),                            // empty sub
    ];
    let mut requests: Vec<(String, String)> = tokens
        .iter()
        .map(|t| (format!("/?token={t}"), String::new()))
        .collect();
    // Past the 8 KiB request bound: 431 before any token is looked at.
    requests.push((format!("/?token={}", "y".repeat(9000)), String::new()));
    requests.push((
        "/".into(),
        format!("Authorization: Bearer {}\r\n", "z".repeat(7000)),
    ));
    requests.push(("/".into(), "Authorization: Basic dXNlcjpwYXNz\r\n".into()));
    let measuring = ctx.measure(0)?;
    let total = ctx.connections;
    let (counts, done, took) = handshakes(ctx, requests, total).await;
    let measures = measuring.finish();
    let notes = format!(
        "{done} malformed-token handshakes in {:.1} s",
        took.as_secs_f64()
    );
    let abuser = refused_summary(&counts, done, &["401", "400", "431"]);
    Ok((measures, Outcome { abuser, notes }))
}

/// A busy connection (publishing and subscribed) whose token expires: it is
/// closed with 1008 `token expired`, nobody else notices.
async fn expiry(ctx: &Ctx) -> Result<(Measures, Outcome), String> {
    let key = SigningKey::from_file_bytes(SECRET.as_bytes(), None)?;
    let token = sign(&key, "short-lived", now() + 2);
    let conn = client::connect_path(ctx.target.addr, &format!("/?token={token}")).await?;
    let (mut conn, shard) = client::identify(&ctx.target, conn, "short-lived").await?;
    abusers::say(&mut conn, &[client::subscribe("expiring", 600)]).await?;
    let measuring = ctx.measure(shard)?;
    let publish = client::frame(&client::publish("expiring", "tick"));
    let until = Instant::now() + ctx.duration.max(Duration::from_secs(8));
    let (report, sent) = abusers::flood_repeated(conn, until, &publish, 16).await;
    let measures = measuring.finish();
    let mut abuser = abusers::summarise(&ctx.target, std::slice::from_ref(&report));
    let closed_for_expiry = ctx
        .target
        .closed(report.local)
        .is_some_and(|line| line.contains("token expired"));
    abuser.handled &= closed_for_expiry;
    Ok((
        measures,
        Outcome {
            abuser,
            notes: format!("{sent} publishes offered before the close"),
        },
    ))
}
