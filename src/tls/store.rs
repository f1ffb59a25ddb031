//! The server's certificates: read from PEM files, validated whole, and
//! swapped atomically by a reload. A file with an error changes nothing:
//! the nexus keeps serving the certificate it had, and the error names the
//! file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::identity;

/// Most bytes read from a certificate, key or CA file.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Where the certificates come from (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The leaf's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), PEM.
    pub key: PathBuf,
    /// CA certificates a client certificate must chain to; with it, every
    /// wss client must present one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why certificates could not be loaded; the message names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The certificates in force, shared by every shard.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Loaded>,
    /// Successful loads (1 after start-up).
    loads: AtomicU64,
}

/// A validated set of certificates, ready to be put in force.
#[derive(Debug, Clone)]
pub struct Loaded {
    settings: TlsSettings,
    config: Arc<ServerConfig>,
    /// The admin console's (`--admin-tls`): the same certificate, never a
    /// client certificate required (its callers prove themselves with the
    /// admin token).
    admin: Arc<ServerConfig>,
    summary: String,
    /// When the leaf certificate expires (Unix seconds).
    not_after: i64,
}

impl Loaded {
    /// Reads and checks every file of `settings`; nothing is in force yet.
    pub fn read(settings: &TlsSettings) -> Result<Loaded, TlsError> {
        // Each file is read once, so everything built comes from the same
        // bytes even while a renewal is replacing the files.
        let chain = certificates(&settings.cert, "--tls-cert")?;
        let key = private_key(&settings.key)?;
        let client_roots = match &settings.client_ca {
            Some(path) => Some((path.as_path(), certificates(path, "--tls-client-ca")?)),
            None => None,
        };
        let leaf = identity::describe(&chain[0]).map_err(|e| {
            TlsError(format!(
                "--tls-cert {}: the first certificate cannot be parsed: {e}",
                settings.cert.display()
            ))
        })?;
        let not_after = identity::not_after(&chain[0]).unwrap_or(0);
        let summary = format!(
            "{leaf}, chain of {}{}",
            chain.len(),
            if client_roots.is_some() {
                ", client certificates required"
            } else {
                ""
            }
        );
        let config = build(settings, chain.clone(), key.clone_key(), client_roots)?;
        let admin = build(settings, chain, key, None)?;
        Ok(Loaded {
            settings: settings.clone(),
            config: Arc::new(config),
            admin: Arc::new(admin),
            summary,
            not_after,
        })
    }

    /// What was loaded, for logs and reload reports.
    pub fn summary(&self) -> &str {
        &self.summary
    }
}

impl Certificates {
    /// Loads the files; an error refuses to start.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Certificates {
            current: RwLock::new(Loaded::read(settings)?),
            loads: AtomicU64::new(1),
        }))
    }

    fn in_force(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // Poisoning needs a panic while held, which aborts the process.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration for a new handshake. One read lock per handshake;
    /// connections keep the configuration they started with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.in_force().config.clone()
    }

    /// The admin console's configuration for a new connection.
    pub fn current_admin(&self) -> Arc<ServerConfig> {
        self.in_force().admin.clone()
    }

    /// Puts `loaded` in force for new handshakes; live connections keep
    /// theirs. Returns its summary.
    pub fn install(&self, loaded: Loaded) -> String {
        let summary = loaded.summary.clone();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        self.loads.fetch_add(1, Ordering::Relaxed);
        summary
    }

    /// A copy of what is in force (to install it in another store).
    pub fn loaded(&self) -> Loaded {
        self.in_force().clone()
    }

    /// Re-reads the files in force and swaps them in; on error nothing
    /// changes.
    pub fn reload(&self) -> Result<String, TlsError> {
        let loaded = Loaded::read(&self.settings())?;
        Ok(self.install(loaded))
    }

    /// The most bytes a client may send before its handshake completes
    /// (more with mutual TLS: its certificate chain comes too).
    pub fn max_handshake_bytes(&self) -> usize {
        if self.in_force().settings.client_ca.is_some() {
            super::session::MAX_HANDSHAKE_BYTES_MUTUAL
        } else {
            super::session::MAX_HANDSHAKE_BYTES
        }
    }

    /// The files in force.
    pub fn settings(&self) -> TlsSettings {
        self.in_force().settings.clone()
    }

    /// What is in force: the leaf's subject and validity, the chain's
    /// length and whether client certificates are required.
    pub fn summary(&self) -> String {
        self.in_force().summary.clone()
    }

    /// Successful loads since start (1 after start-up).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// When the certificate in force expires (Unix seconds), for an alert
    /// well before it does.
    pub fn not_after(&self) -> i64 {
        self.in_force().not_after
    }

    /// The certificate's expiry and the load count, in Prometheus text.
    pub fn render_prometheus(&self) -> String {
        format!(
            "# HELP easechat_tls_certificate_expiry_timestamp_seconds When the wss certificate in force expires (Unix time).\n\
             # TYPE easechat_tls_certificate_expiry_timestamp_seconds gauge\n\
             easechat_tls_certificate_expiry_timestamp_seconds {}\n\
             # HELP easechat_tls_certificate_loads_total Certificate loads (start-up and reloads).\n\
             # TYPE easechat_tls_certificate_loads_total counter\n\
             easechat_tls_certificate_loads_total {}\n",
            self.not_after(),
            self.loads()
        )
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    easechat_auth::load::read_bounded(path, MAX_PEM_BYTES)
        .map_err(|e| TlsError(format!("{what}: {e}")))
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "--tls-key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsError(format!(
            "--tls-key {}: no private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM): {e}",
            path.display()
        ))
    })
}

/// Builds a server configuration from what the files held.
fn build(
    settings: &TlsSettings,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<(&Path, Vec<CertificateDer<'static>>)>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some((path, certs)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("--tls-client-ca {}: {e}", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(format!("--tls-client-ca {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_string()
            }
            other => other.to_string(),
        };
        TlsError(format!(
            "--tls-cert {} with --tls-key {}: {why}",
            settings.cert.display(),
            settings.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Resumption makes a reconnect storm cheaper (no signature per client).
    // Stateless tickets (keys rotating every 6 hours) instead of rustls's
    // default session cache: no lock shared by the shards, no cache to fill.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsError(format!("session tickets: {e}")))?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}
