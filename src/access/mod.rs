//! Access control, live: the policy every shard reads, each identity's
//! usage (connections, subscriptions, publish budget) shared by all shards,
//! and each connection's [`ConnectionAccess`]. The rules themselves are the
//! pure `easechat_auth` crate; this module holds state and the clock.
//!
//! Nothing here takes a lock per message: the policy sits behind an
//! `RwLock` read only at upgrades and reloads, identity usage behind a
//! mutex taken only when a connection opens, and a connection's checks read
//! one atomic (the policy generation) and its own cache.

mod connection;
mod usage;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use easechat_auth::{Credential, Mode, Policy, PolicyFiles, Refusal, Status};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

pub use connection::{revoked_reason, ConnectionAccess, Denied};
pub use easechat_auth::rate::Taken;
pub use usage::IdentityUsage;
use usage::UsageTable;

/// What a connection presented at its upgrade (owned: it outlives the
/// request buffer, and is kept for re-checks on reload). Its `Debug` never
/// shows the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// A token from `?token=` or `Authorization: Bearer`.
    pub token: Option<String>,
    /// The admin console's tap proved itself with the process secret.
    pub console: bool,
    /// The identity of a client certificate verified by mutual TLS; a
    /// token, when one is given too, wins.
    pub certificate: Option<CertificateIdentity>,
}

/// What a verified client certificate says: the identity it stands for and
/// when it stops being valid (the connection closes then, as at a token's
/// `exp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The subject's common name.
    pub name: String,
    /// The certificate's expiry (Unix seconds).
    pub not_after: Option<u64>,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("console", &self.console)
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// The access control every shard shares. Its `Debug` never shows the
/// console secret.
pub struct Access {
    files: PolicyFiles,
    policy: RwLock<Arc<Policy>>,
    /// Bumped by every successful reload; connections compare it with the
    /// one their grant was made under.
    generation: AtomicU64,
    usage: UsageTable,
    /// Proves the admin console's own tap connections (never leaves the process).
    console_secret: String,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("files", &self.files)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// Nanoseconds since the first call, on one scale for every shard (the
/// identities' publish budgets are shared).
pub fn monotonic_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Seconds since the Unix epoch now (tokens' clock).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Access {
    /// Loads the policy files; the error says which file and what is wrong.
    pub fn load(files: PolicyFiles) -> Result<Arc<Access>, String> {
        let policy = files.load()?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| format!("cannot read the system's random source: {e}"))?;
        let console_secret = secret.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Arc::new(Access {
            files,
            policy: RwLock::new(Arc::new(policy)),
            generation: AtomicU64::new(1),
            usage: UsageTable::default(),
            console_secret,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// Where the policy is read from (`--auth`, `--auth-key-file`, `--auth-policy`).
    pub fn files(&self) -> &PolicyFiles {
        &self.files
    }

    /// `--auth`.
    pub fn mode(&self) -> Mode {
        self.files.mode
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of the policy in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Successful and failed reloads so far (metrics).
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }

    /// Re-reads every file; on success the new policy is in force for every
    /// shard at once (each connection re-checks on its next command, and
    /// the shards sweep idle ones), on failure the old one stays. Blocking
    /// file reads: call it where a short block is acceptable.
    pub fn reload(&self) -> Result<String, String> {
        match self.files.load() {
            Ok(policy) => {
                let summary = policy.summary.clone();
                *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                info!(policy = %summary, "access policy reloaded");
                Ok(summary)
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "access policy reload refused; the previous policy stays in force");
                Err(e)
            }
        }
    }

    /// The bearer value the admin console's tap presents.
    pub fn console_bearer(&self) -> String {
        format!("easechat-console.{}", self.console_secret)
    }

    /// Whether `bearer` is the console's secret (constant time).
    pub fn is_console_bearer(&self, bearer: &str) -> bool {
        let expected = self.console_bearer();
        bearer.len() == expected.len() && bool::from(bearer.as_bytes().ct_eq(expected.as_bytes()))
    }

    /// Checks what a connection presented at `now` and takes a connection
    /// slot of its identity: the connection's access, or the refusal.
    pub fn admit(
        self: &Arc<Self>,
        presented: Presented,
        now: u64,
    ) -> Result<ConnectionAccess, Refusal> {
        let credential = credential_of(&presented);
        let generation = self.generation();
        let grant = self.policy().authenticate(credential, now)?;
        let usage = self
            .usage
            .connect(&grant.identity, grant.quotas.max_connections)
            .map_err(|quota| Refusal {
                status: Status::Forbidden,
                reason: format!(
                    "identity {:?} is at its connection quota ({quota})",
                    grant.identity
                ),
                kind: easechat_auth::RefusalKind::Other,
            })?;
        Ok(ConnectionAccess::new(
            self.clone(),
            presented,
            grant,
            generation,
            usage,
        ))
    }
}

fn credential_of(presented: &Presented) -> Credential<'_> {
    match (&presented.token, presented.console, &presented.certificate) {
        (_, true, _) => Credential::Console,
        (Some(token), false, _) => Credential::Token(token),
        (None, false, Some(certificate)) => Credential::Certificate {
            identity: &certificate.name,
            expires: certificate.not_after,
        },
        (None, false, None) => Credential::None,
    }
}
