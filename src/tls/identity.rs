//! What a certificate says about its holder: the identity a verified client
//! certificate stands for (mutual TLS), and a one-line description of the
//! server's own certificate for logs and reload reports.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The identity a verified client certificate stands for: its subject's
/// common name, else its first DNS name. `None` when it has neither (such
/// a client is treated as one without a certificate identity).
pub fn of_client(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_string));
    common_name
        .or_else(|| {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
        })
        .filter(|name| !name.is_empty())
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
