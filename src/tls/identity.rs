//! What a certificate says about its holder: the identity a verified client
//! certificate stands for (mutual TLS), and a one-line description of the
//! server's own certificate for logs and reload reports.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity a verified client certificate stands for: the common name
/// of its subject, when it has exactly one, non-empty. No fallback to a DNS
/// name: a server certificate that also allows client use must not log in
/// as its host name. `None` makes the client one without a certificate
/// identity.
pub fn of_client(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let mut names = cert.subject().iter_common_name();
    let name = names.next()?.as_str().ok()?.to_string();
    if names.next().is_some() || name.is_empty() {
        return None;
    }
    Some(name)
}

/// `certificate "CN=…" issued by "CN=…" valid until …` for the logs; an error when the
/// certificate cannot be parsed.
pub fn describe(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    let expired = if validity.is_valid() {
        ""
    } else {
        " (NOT VALID NOW)"
    };
    Ok(format!(
        "certificate \"{}\" issued by \"{}\" valid until {}{expired}",
        cert.subject(),
        cert.issuer(),
        validity.not_after
    ))
}

/// When the certificate stops being valid (Unix seconds).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}
