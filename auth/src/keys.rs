//! Keys that verify tokens, and keys that sign them (`easechat token`).
//!
//! HMAC (HS256/384/512) for simple set-ups: the nexus and the minter share
//! the secret. ES256 and EdDSA (Ed25519) so game servers can hold tokens the
//! nexus cannot mint: the nexus has only the public key.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

use crate::claims::Claims;

/// Shortest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the
/// hash's output size for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

/// Algorithms the nexus verifies, by the name a policy file uses.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!(
            "unsupported algorithm {other:?} (HS256, HS384, HS512, ES256 or EdDSA)"
        )),
    }
}

/// A key that verifies tokens of its algorithms.
#[derive(Clone)]
pub struct VerifyKey {
    /// Algorithms accepted with this key (one family).
    pub algorithms: Vec<Algorithm>,
    /// The key material.
    pub key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({:?}, <redacted>)", self.algorithms)
    }
}

impl VerifyKey {
    /// An HMAC secret, accepted with HS256, HS384 and HS512.
    pub fn hmac(secret: &[u8]) -> Result<VerifyKey, String> {
        check_secret(secret)?;
        Ok(VerifyKey {
            algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            key: DecodingKey::from_secret(secret).map_err(|e| e.to_string())?,
        })
    }

    /// A key for `algorithm` from a file's bytes: the secret for HMAC, a PEM
    /// public key (SPKI) for ES256 and EdDSA.
    pub fn from_file_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<VerifyKey, String> {
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = trim_newline(bytes);
                check_secret(secret)?;
                DecodingKey::from_secret(secret).map_err(|e| e.to_string())?
            }
            Algorithm::ES256 => DecodingKey::from_ec_pem(bytes)
                .map_err(|e| format!("not a PEM EC (P-256) public key: {e}"))?,
            Algorithm::EdDSA => DecodingKey::from_ed_pem(bytes)
                .map_err(|e| format!("not a PEM Ed25519 public key: {e}"))?,
            other => return Err(format!("unsupported algorithm {other:?}")),
        };
        Ok(VerifyKey {
            algorithms: vec![algorithm],
            key,
        })
    }
}

/// A key that signs tokens.
pub struct SigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({:?}, kid {:?}, <redacted>)",
            self.algorithm, self.kid
        )
    }
}

impl SigningKey {
    /// From a key file's bytes: a PEM private key (EC P-256 → ES256,
    /// Ed25519 → EdDSA, PKCS#8), or else an HMAC secret (HS256).
    pub fn from_file_bytes(bytes: &[u8], kid: Option<String>) -> Result<SigningKey, String> {
        if bytes.starts_with(b"-----BEGIN") {
            if let Ok(key) = EncodingKey::from_ec_pem(bytes) {
                return Ok(SigningKey {
                    algorithm: Algorithm::ES256,
                    key,
                    kid,
                });
            }
            if let Ok(key) = EncodingKey::from_ed_pem(bytes) {
                return Ok(SigningKey {
                    algorithm: Algorithm::EdDSA,
                    key,
                    kid,
                });
            }
            return Err(
                "a PEM file, but not a PKCS#8 EC P-256 or Ed25519 private key \
                 (make one with: openssl genpkey -algorithm ed25519)"
                    .into(),
            );
        }
        let secret = trim_newline(bytes);
        check_secret(secret)?;
        Ok(SigningKey {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret).map_err(|e| e.to_string())?,
            kid,
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| e.to_string())
    }
}

/// A secret file's bytes without its final newline (what `echo` and
/// editors add).
pub fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn check_secret(secret: &[u8]) -> Result<(), String> {
    if secret.starts_with(b"-----BEGIN") {
        // A public key used as an HMAC secret would let anyone holding the
        // public key mint tokens.
        return Err("a PEM file is not an HMAC secret (give a PEM public key \
                    with alg = \"ES256\" or \"EdDSA\" in the policy)"
            .into());
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "HMAC secret too short: {} bytes, at least {MIN_SECRET_BYTES} \
             (make one with: head -c 48 /dev/urandom | base64 > FILE)",
            secret.len()
        ));
    }
    Ok(())
}
