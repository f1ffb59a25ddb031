//! One reload path for SIGHUP, the console's `reload` and `POST /api/reload`:
//! re-read the `--config` file (with the original command line on top),
//! validate all of it (and the access policy it names), then apply at once
//! what can change on a running nexus — the access policy, the limits of
//! [`LiveLimits`](crate::config::LiveLimits), the log filter — and report
//! what changed but needs a restart (addresses, shard count, ring size …).
//! A file with an error changes nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::{info, warn};

use crate::config::{render_toml_with_format, Config, LIVE_KEYS};
use crate::tls::Loaded;

/// Changes the log filter of the running process.
pub type LogFilterHandle = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Keys applied, as `key: old → new`.
    pub applied: Vec<String>,
    /// Keys that changed in the file but need a restart.
    pub needs_restart: Vec<String>,
    /// The access policy's summary, when access control is on.
    pub policy: Option<String>,
    /// The certificate now given to new wss handshakes, when TLS is on.
    pub certificate: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(policy) = &self.policy {
            parts.push(format!("policy: {policy}"));
        }
        if let Some(certificate) = &self.certificate {
            parts.push(format!("tls: {certificate}"));
        }
        if self.applied.is_empty() {
            parts.push("no setting changed".into());
        } else {
            parts.push(format!("applied: {}", self.applied.join(", ")));
        }
        if !self.needs_restart.is_empty() {
            parts.push(format!("needs restart: {}", self.needs_restart.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Where the configuration came from, and what the running nexus applies.
pub struct Reloader {
    argv: Vec<String>,
    available: Vec<usize>,
    log_filter: Option<LogFilterHandle>,
    /// The effective configuration in force, key by key (as
    /// `--print-config` renders it): what the last reload applied, and
    /// what the process started with for keys that need a restart.
    current: Mutex<BTreeMap<String, String>>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("reloads", &self.reloads.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// `key = value` lines of a rendered configuration.
fn keys(rendered: &str) -> BTreeMap<String, String> {
    rendered
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A short hash of a configuration's keys and values, for `/metrics` and
/// `/api/stats`: equal configurations, equal hashes, on every build and
/// every Rust release (std's `DefaultHasher` promises neither), so nodes
/// and restarts can be compared. 64-bit FNV-1a of the effective keys as
/// `key = value` lines in key order (what `--print-config` prints, without
/// its comments), as 16 hex digits. A change detector, not a MAC.
pub fn config_hash(keys: &BTreeMap<String, String>) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for (key, value) in keys {
        for part in [key.as_bytes(), b" = ", value.as_bytes(), b"\n"] {
            for &byte in part {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(PRIME);
            }
        }
    }
    format!("{hash:016x}")
}

impl Reloader {
    /// The process's arguments (`argv`, with `--config` if any), the CPUs it
    /// may use, the configuration it started with and a way to change the
    /// log filter.
    pub fn new(
        argv: Vec<String>,
        available: Vec<usize>,
        started: &Config,
        log: Option<&str>,
        json_logs: bool,
        log_filter: Option<LogFilterHandle>,
    ) -> Reloader {
        Reloader {
            argv,
            available,
            log_filter,
            current: Mutex::new(keys(&render_toml_with_format(started, log, json_logs))),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Successful and refused reloads so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// The hash of the configuration in force.
    pub fn hash(&self) -> String {
        config_hash(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads and applies (see the module doc). `running` is the
    /// configuration the shards share (its live limits are set here).
    pub fn reload(&self, running: &Config) -> Result<Outcome, String> {
        let result = self.try_reload(running);
        match &result {
            Ok(outcome) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                info!(%outcome, "reloaded");
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "reload refused; the configuration in force stays");
            }
        }
        result
    }

    fn try_reload(&self, running: &Config) -> Result<Outcome, String> {
        // The whole file (and the policy it names) is read and checked
        // before anything is applied.
        let loaded = crate::cli::load(&self.argv, &self.available)
            .map_err(|(text, _)| text.trim_start_matches("error: ").to_string())?;
        let json_logs = loaded.log_format == crate::cli::LogFormat::Json;
        let new = keys(&render_toml_with_format(
            &loaded.config,
            loaded.log.as_deref(),
            json_logs,
        ));
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let old = current.clone();
        let mut outcome = Outcome::default();
        let mut in_force = old.clone();
        for (key, value) in &new {
            let before = old.get(key).map(String::as_str).unwrap_or("(default)");
            if before == value {
                continue;
            }
            let live =
                LIVE_KEYS.contains(&key.as_str()) || (key == "log" && self.log_filter.is_some());
            if live {
                outcome.applied.push(format!("{key}: {before} → {value}"));
                in_force.insert(key.clone(), value.clone());
            } else {
                outcome.needs_restart.push(key.clone());
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            outcome.needs_restart.push(key.clone());
        }
        // The certificates to put in force: the files `cli::load` read and
        // checked, with the client CA file in force (naming another one
        // needs a restart).
        let certificates = match (&running.tls, &loaded.config.tls) {
            (Some(in_force), Some(new)) => {
                let mut settings = new.settings();
                settings.client_ca = in_force.settings().client_ca;
                Some(if settings == new.settings() {
                    new.loaded()
                } else {
                    Loaded::read(&settings).map_err(|e| e.to_string())?
                })
            }
            _ => None,
        };
        // Apply: everything was validated above (the file, its values, the
        // log filter, the certificates, the policy and its keys). The
        // policy is swapped first: it is the one step that reads its files
        // again and can still fail, and then nothing else has changed.
        if let Some(access) = &running.access {
            outcome.policy = Some(access.reload()?);
        }
        // New handshakes get the certificates from here on; live
        // connections keep theirs.
        if let (Some(in_force), Some(certificates)) = (&running.tls, certificates) {
            outcome.certificate = Some(in_force.install(certificates));
        }
        if let (Some(filter), Some(set)) = (&loaded.log, &self.log_filter) {
            if old.get("log") != new.get("log") {
                if let Err(e) = set(filter) {
                    // Checked by cli::load; a failure here is logged, the
                    // rest stands.
                    warn!(error = %e, "the log filter could not be changed");
                }
            }
        }
        running.live.apply(&loaded.config);
        *current = in_force;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hash_of_a_rendering() {
        let text = "# comment\nmax-ttl = 5\nlisten = \"1.2.3.4:5\"\n";
        let k = keys(text);
        assert_eq!(k.get("max-ttl").map(String::as_str), Some("5"));
        assert_eq!(k.len(), 2);
        assert_eq!(config_hash(&k), config_hash(&keys(text)));
        assert_ne!(config_hash(&k), config_hash(&keys("max-ttl = 6\n")));
    }

    #[test]
    fn the_hash_is_fnv1a_of_the_sorted_lines_and_never_changes() {
        // Pinned values (computed outside Rust): a new toolchain or build
        // must give the same hash for the same configuration.
        assert_eq!(config_hash(&BTreeMap::new()), "cbf29ce484222325");
        let k = keys("max-ttl = 5\nlisten = \"1.2.3.4:5\"\n");
        assert_eq!(config_hash(&k), "03598ec8f8ecd76d");
        // Keys are hashed in order, whatever order the file had.
        assert_eq!(
            config_hash(&k),
            config_hash(&keys("listen = \"1.2.3.4:5\"\nmax-ttl = 5\n"))
        );
        // A key and its value do not run together.
        assert_ne!(
            config_hash(&keys("ab = c\n")),
            config_hash(&keys("a = bc\n"))
        );
    }
}
