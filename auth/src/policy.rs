//! The access policy: mode, keys by `kid`, identities, the anonymous and
//! console identities, revocations and quotas; and [`Policy::authenticate`],
//! which turns a credential and the time into a [`Grant`] or a [`Refusal`].
//!
//! The policy file is TOML (see `docs/access-control.md` for every key).
//! Parsing takes the file's text and a reader for the key files it names,
//! so it is tested without a file system; [`crate::load`] does the I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::claims::Claims;
use crate::grant::{Grant, Quotas, ANONYMOUS, CONSOLE};
use crate::keys::{parse_algorithm, VerifyKey};
use crate::pattern::{Pattern, PatternSet};
use crate::permissions::{Permissions, PermissionsText, Rule, RuleText, MAX_PATTERNS};

/// Longest token accepted, in bytes: a token rides in the upgrade request,
/// which is bounded anyway, and is kept per connection for re-checks.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Default clock leeway on `exp` and `nbf`, seconds: none, so a token
/// expires when its `exp` says (set `leeway` where minting hosts' clocks
/// drift).
pub const DEFAULT_LEEWAY_SECS: u64 = 0;
/// The `kid` of the key given by `--auth-key-file` (also used for tokens
/// without a `kid`).
pub const DEFAULT_KID: &str = "default";

/// How strictly connections are checked (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everybody is trusted, as before access control (the default).
    #[default]
    Off,
    /// A token is checked when given; connections without one act as the
    /// anonymous identity.
    Optional,
    /// Every connection needs a valid token.
    Required,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "off" => Ok(Mode::Off),
            "optional" => Ok(Mode::Optional),
            "required" => Ok(Mode::Required),
            other => Err(format!(
                "--auth must be off, optional or required, got {other:?}"
            )),
        }
    }
}

impl Mode {
    /// The flag's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Optional => "optional",
            Mode::Required => "required",
        }
    }
}

/// Which HTTP answer a refused upgrade gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 401: no token, or a token that does not verify.
    Unauthorized,
    /// 403: a valid token that is not allowed (revoked, unknown identity,
    /// identity over its connection quota).
    Forbidden,
}

/// Which refusals a live connection is told apart (its 1008 reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// `exp` has passed.
    Expired,
    /// Revoked by id or by "issued before".
    Revoked,
    /// Anything else (bad signature, unknown key, identity …).
    Other,
}

/// Why a credential was refused: the status for the client, the reason for
/// the operator's log (never sent to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// What the client is told.
    pub status: Status,
    /// What the log says.
    pub reason: String,
    /// What a live connection refused on a re-check is told.
    pub kind: RefusalKind,
}

fn unauthorized(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: Status::Unauthorized,
        reason: reason.into(),
        kind: RefusalKind::Other,
    }
}

fn forbidden(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: Status::Forbidden,
        reason: reason.into(),
        kind: RefusalKind::Other,
    }
}

fn of_kind(refusal: Refusal, kind: RefusalKind) -> Refusal {
    Refusal { kind, ..refusal }
}

/// What a connection presents.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// Nothing.
    None,
    /// A token (from `?token=` or `Authorization: Bearer`).
    Token(&'a str),
    /// The admin console's own tap (proved by a per-process secret).
    Console,
    /// A client certificate the TLS layer verified (mutual TLS): its
    /// subject names an identity of the policy, whose entry grants its
    /// names and permissions (a certificate carries no permissions); the
    /// connection closes when the certificate expires.
    Certificate {
        /// The subject's common name.
        identity: &'a str,
        /// The certificate's expiry (Unix seconds).
        expires: Option<u64>,
    },
}

/// One identity's entry, compiled.
#[derive(Debug, Clone, Default)]
struct IdentityRules {
    names: Option<Arc<PatternSet>>,
    rules: [Option<Arc<Rule>>; 2],
    quotas: Quotas,
    allow_no_expiry: Option<bool>,
}

/// A loaded, validated policy. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: Mode,
    leeway: u64,
    require_known_identity: bool,
    allow_no_expiry: bool,
    keys: HashMap<String, VerifyKey>,
    default_quotas: Quotas,
    identities: HashMap<String, IdentityRules>,
    anonymous: IdentityRules,
    console: IdentityRules,
    revoked_ids: HashSet<String>,
    revoked_before: HashMap<String, u64>,
    /// A short digest of what was loaded, for logs and `/api/stats`.
    pub summary: String,
}

// ---- the file ----------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    leeway: Option<u64>,
    #[serde(default)]
    require_known_identity: bool,
    #[serde(default)]
    allow_no_expiry: bool,
    #[serde(default)]
    key: Vec<KeyEntry>,
    #[serde(default)]
    quotas: QuotaText,
    anonymous: Option<IdentityText>,
    console: Option<IdentityText>,
    #[serde(default)]
    identity: BTreeMap<String, IdentityText>,
    #[serde(default)]
    revoke: Vec<RevokeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    kid: String,
    alg: String,
    file: PathBuf,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaText {
    max_connections: Option<usize>,
    max_subscriptions: Option<usize>,
    publish_rate: Option<f64>,
    publish_burst: Option<f64>,
    publish_bytes_rate: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityText {
    names: Option<Vec<String>>,
    publish: Option<RuleText>,
    subscribe: Option<RuleText>,
    allow_no_expiry: Option<bool>,
    max_connections: Option<usize>,
    max_subscriptions: Option<usize>,
    publish_rate: Option<f64>,
    publish_burst: Option<f64>,
    publish_bytes_rate: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeEntry {
    jti: Option<String>,
    identity: Option<String>,
    issued_before: Option<u64>,
}

/// What a policy is built from.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    /// `--auth`.
    pub mode: Mode,
    /// The bytes of `--auth-key-file`: an HMAC secret, the key of
    /// [`DEFAULT_KID`] and of tokens without a `kid`.
    pub key_file: Option<&'a [u8]>,
    /// The text of `--auth-policy`, with the directory its relative paths
    /// start from.
    pub policy: Option<(&'a str, &'a Path)>,
}

impl Policy {
    /// Builds and validates a policy; `read` reads the key files the policy
    /// names. The error names what is wrong and where.
    pub fn build(
        sources: &Sources<'_>,
        read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
    ) -> Result<Policy, String> {
        let file: PolicyFile = match sources.policy {
            Some((text, _)) => toml::from_str(text).map_err(|e| e.to_string())?,
            None => PolicyFile::default(),
        };
        let base = sources.policy.map(|(_, dir)| dir);
        let mut keys = HashMap::new();
        if let Some(bytes) = sources.key_file {
            let key = VerifyKey::hmac(crate::keys::trim_newline(bytes))
                .map_err(|e| format!("--auth-key-file: {e}"))?;
            keys.insert(DEFAULT_KID.to_string(), key);
        }
        for entry in &file.key {
            let algorithm =
                parse_algorithm(&entry.alg).map_err(|e| format!("key {:?}: {e}", entry.kid))?;
            let path = match base {
                Some(dir) if entry.file.is_relative() => dir.join(&entry.file),
                _ => entry.file.clone(),
            };
            let bytes = read(&path)
                .map_err(|e| format!("key {:?} ({}): {e}", entry.kid, path.display()))?;
            let key = VerifyKey::from_file_bytes(algorithm, &bytes)
                .map_err(|e| format!("key {:?} ({}): {e}", entry.kid, path.display()))?;
            if keys.insert(entry.kid.clone(), key).is_some() {
                return Err(format!("key {:?} is given twice", entry.kid));
            }
        }
        if sources.mode != Mode::Off && keys.is_empty() {
            return Err(
                "--auth optional/required needs a key: --auth-key-file FILE, or [[key]] \
                 entries in --auth-policy"
                    .into(),
            );
        }
        let default_quotas = quotas(&file.quotas, "quotas")?;
        let mut identities = HashMap::new();
        for (name, text) in &file.identity {
            let rules = identity(text, &default_quotas, &format!("identity {name:?}"))?;
            identities.insert(name.clone(), rules);
        }
        let anonymous = match &file.anonymous {
            Some(text) => identity(text, &default_quotas, "anonymous")?,
            None => IdentityRules {
                // Read-only by default: any name, subscribe anywhere,
                // publish nowhere.
                names: Some(Arc::new(PatternSet::new(&["*"]).expect("valid"))),
                rules: [None, Some(Arc::new(Rule::everything()))],
                quotas: default_quotas.clone(),
                allow_no_expiry: None,
            },
        };
        let console = match &file.console {
            Some(text) => identity(text, &Quotas::default(), "console")?,
            None => IdentityRules {
                names: None,
                rules: [
                    Some(Arc::new(Rule::everything())),
                    Some(Arc::new(Rule::everything())),
                ],
                ..Default::default()
            },
        };
        let mut revoked_ids = HashSet::new();
        let mut revoked_before = HashMap::new();
        for (i, entry) in file.revoke.iter().enumerate() {
            match (&entry.jti, &entry.identity, entry.issued_before) {
                (Some(jti), None, None) => {
                    revoked_ids.insert(jti.clone());
                }
                (None, Some(identity), Some(before)) => {
                    let t = revoked_before.entry(identity.clone()).or_insert(before);
                    *t = (*t).max(before);
                }
                _ => {
                    return Err(format!(
                        "revoke entry {}: give either jti = \"…\", or identity = \"…\" \
                         with issued_before = UNIX-SECONDS",
                        i + 1
                    ))
                }
            }
        }
        let summary = format!(
            "mode {}, {} keys, {} identities, {} revocations",
            sources.mode.as_str(),
            keys.len(),
            identities.len(),
            revoked_ids.len() + revoked_before.len()
        );
        Ok(Policy {
            mode: sources.mode,
            leeway: file.leeway.unwrap_or(DEFAULT_LEEWAY_SECS),
            require_known_identity: file.require_known_identity,
            allow_no_expiry: file.allow_no_expiry,
            keys,
            default_quotas,
            identities,
            anonymous,
            console,
            revoked_ids,
            revoked_before,
            summary,
        })
    }

    /// A policy that lets everybody do everything (mode `off`).
    pub fn off() -> Policy {
        Policy::build(&Sources::default(), &|_| Err("no files".into())).expect("empty policy")
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The clock leeway on `exp` and `nbf`, seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Checks a credential at `now` (Unix seconds): a [`Grant`] for the
    /// connection, or why not. In mode `off` everybody gets every right.
    pub fn authenticate(&self, credential: Credential<'_>, now: u64) -> Result<Grant, Refusal> {
        match (self.mode, credential) {
            (Mode::Off, _) => Ok(open_grant()),
            (_, Credential::Console) => Ok(self.fixed_grant(CONSOLE, &self.console)),
            (Mode::Optional, Credential::None) => Ok(self.fixed_grant(ANONYMOUS, &self.anonymous)),
            (Mode::Required, Credential::None) => Err(unauthorized("no token")),
            (_, Credential::Token(token)) => self.verify(token, now),
            (_, Credential::Certificate { identity, expires }) => {
                self.certificate_grant(identity, expires)
            }
        }
    }

    /// A verified client certificate's identity: it must have an entry in
    /// the policy (it says what the identity may do); without `names` the
    /// identity's own name is the only `1h` name allowed.
    fn certificate_grant(&self, subject: &str, expires: Option<u64>) -> Result<Grant, Refusal> {
        if subject == ANONYMOUS || subject == CONSOLE {
            return Err(forbidden(format!(
                "certificate claims the reserved identity {subject:?}"
            )));
        }
        let rules = self.identities.get(subject).ok_or_else(|| {
            forbidden(format!(
                "certificate identity {subject:?} has no entry in the policy"
            ))
        })?;
        let mut grant = self.fixed_grant(subject, rules);
        if rules.names.is_none() {
            grant.token_names = PatternSet::exact(subject);
        }
        grant.closes_at = expires;
        Ok(grant)
    }

    fn fixed_grant(&self, identity: &str, rules: &IdentityRules) -> Grant {
        Grant {
            identity: Arc::from(identity),
            token_id: None,
            closes_at: None,
            quotas: rules.quotas.clone(),
            token_names: PatternSet::new(&["*"]).expect("valid"),
            policy_names: rules.names.clone(),
            token_rules: None,
            policy_rules: rules.rules.clone(),
        }
    }

    fn verify(&self, token: &str, now: u64) -> Result<Grant, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized(format!(
                "token too long ({} bytes, at most {MAX_TOKEN_BYTES})",
                token.len()
            )));
        }
        // The errors' own text can quote the token's bytes: not logged.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("malformed token (not a JWT with a valid header)"))?;
        let kid = header.kid.as_deref().unwrap_or(DEFAULT_KID);
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| unauthorized(format!("unknown key id {kid:?}")))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(unauthorized(format!(
                "algorithm {:?} does not match key {kid:?}",
                header.alg
            )));
        }
        let claims = decode(token, key, header.alg)?;
        let entry = self.identities.get(&claims.sub);
        if entry.is_none() && self.require_known_identity {
            return Err(forbidden(format!("unknown identity {:?}", claims.sub)));
        }
        let rules = entry.cloned().unwrap_or_else(|| IdentityRules {
            quotas: self.default_quotas.clone(),
            ..Default::default()
        });
        let closes_at = match claims.exp {
            Some(exp) if now >= exp.saturating_add(self.leeway) => {
                return Err(of_kind(unauthorized("token expired"), RefusalKind::Expired));
            }
            Some(exp) => Some(exp.saturating_add(self.leeway)),
            None if rules.allow_no_expiry.unwrap_or(self.allow_no_expiry) => None,
            None => {
                return Err(unauthorized(format!(
                    "token of {:?} has no exp and the policy requires one",
                    claims.sub
                )))
            }
        };
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(self.leeway) < nbf)
        {
            return Err(unauthorized("token not yet valid (nbf)"));
        }
        if claims.sub.is_empty() {
            return Err(unauthorized("token has an empty sub"));
        }
        if claims.sub == ANONYMOUS || claims.sub == CONSOLE {
            return Err(unauthorized(format!(
                "token claims the reserved identity {:?}",
                claims.sub
            )));
        }
        if let Some(jti) = &claims.jti {
            if self.revoked_ids.contains(jti) {
                return Err(of_kind(
                    forbidden(format!("token {jti:?} is revoked")),
                    RefusalKind::Revoked,
                ));
            }
        }
        if let Some(&before) = self.revoked_before.get(&claims.sub) {
            if claims.iat.is_none_or(|iat| iat < before) {
                return Err(of_kind(
                    forbidden(format!(
                        "tokens of {:?} issued before {before} are revoked",
                        claims.sub
                    )),
                    RefusalKind::Revoked,
                ));
            }
        }
        let token_names = match &claims.name {
            Some(pattern) => PatternSet::new(&[pattern]),
            None => Ok(PatternSet::from(Pattern::exact(&claims.sub))),
        }
        .map_err(|e| unauthorized(format!("bad name claim: {e}")))?;
        let token_rules = match &claims.perm {
            Some(text) => {
                let p = Permissions::compile(text)
                    .map_err(|e| unauthorized(format!("bad perm claim: {e}")))?;
                Some(Arc::new([p.publish, p.subscribe]))
            }
            None => None,
        };
        Ok(Grant {
            identity: Arc::from(claims.sub.as_str()),
            token_id: claims.jti.as_deref().map(Arc::from),
            closes_at,
            quotas: rules.quotas,
            token_names,
            policy_names: rules.names,
            token_rules,
            policy_rules: rules.rules,
        })
    }
}

/// Every right, no identity (mode `off`).
fn open_grant() -> Grant {
    let all = Rule::everything();
    Grant {
        identity: Arc::from(""),
        token_id: None,
        closes_at: None,
        quotas: Quotas::default(),
        token_names: PatternSet::new(&["*"]).expect("valid"),
        policy_names: None,
        token_rules: Some(Arc::new([all.clone(), all])),
        policy_rules: [None, None],
    }
}

fn decode(token: &str, key: &VerifyKey, alg: Algorithm) -> Result<Claims, Refusal> {
    let mut validation = Validation::new(alg);
    // Times are checked by the caller against the clock it was given.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => unauthorized("bad signature"),
                ErrorKind::Json(_) | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    unauthorized("malformed claims (not EaseChat's claims as JSON)")
                }
                kind => unauthorized(format!("token refused: {kind:?}")),
            }
        })
}

fn quotas(text: &QuotaText, what: &str) -> Result<Quotas, String> {
    for (key, rate) in [
        ("publish_rate", text.publish_rate),
        ("publish_burst", text.publish_burst),
        ("publish_bytes_rate", text.publish_bytes_rate),
    ] {
        if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(format!("{what}: {key} must be a positive number"));
        }
    }
    Ok(Quotas {
        max_connections: text.max_connections,
        max_subscriptions: text.max_subscriptions,
        publish_rate: text.publish_rate,
        publish_burst: text.publish_burst,
        publish_bytes_rate: text.publish_bytes_rate,
    })
}

fn identity(text: &IdentityText, defaults: &Quotas, what: &str) -> Result<IdentityRules, String> {
    let names = match &text.names {
        Some(list) if list.len() > MAX_PATTERNS => {
            return Err(format!("{what}: names: at most {MAX_PATTERNS} patterns"))
        }
        Some(list) => Some(Arc::new(
            PatternSet::new(list).map_err(|e| format!("{what}: names: {e}"))?,
        )),
        None => None,
    };
    let compiled = Permissions::compile(&PermissionsText {
        publish: text.publish.clone().unwrap_or_default(),
        subscribe: text.subscribe.clone().unwrap_or_default(),
    })
    .map_err(|e| format!("{what}: {e}"))?;
    let q = text;
    let merged = QuotaText {
        max_connections: q.max_connections.or(defaults.max_connections),
        max_subscriptions: q.max_subscriptions.or(defaults.max_subscriptions),
        publish_rate: q.publish_rate.or(defaults.publish_rate),
        publish_burst: q.publish_burst.or(defaults.publish_burst),
        publish_bytes_rate: q.publish_bytes_rate.or(defaults.publish_bytes_rate),
    };
    Ok(IdentityRules {
        names,
        rules: [
            text.publish.as_ref().map(|_| Arc::new(compiled.publish)),
            text.subscribe
                .as_ref()
                .map(|_| Arc::new(compiled.subscribe)),
        ],
        quotas: quotas(&merged, what)?,
        allow_no_expiry: text.allow_no_expiry,
    })
}
