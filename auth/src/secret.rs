//! Secrets compared in constant time: the admin console's token. It lives
//! here, at the bottom of the house, so configuration can hold it without
//! depending on the admin server.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "EASECHAT_ADMIN_TOKEN";

/// The admin token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token from its text (surrounding whitespace, e.g. the file's final
    /// newline, dropped); `None` when nothing is left.
    pub fn new(text: &str) -> Option<AdminToken> {
        let text = text.trim();
        (!text.is_empty()).then(|| AdminToken(Arc::from(text)))
    }

    /// Whether `candidate` is the token, in time independent of where they
    /// differ (only the length may show).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

/// Reads the token from `file`, else from `env` (the value of
/// [`TOKEN_ENV`]); `Ok(None)` when neither is given.
pub fn load_token(file: Option<&Path>, env: Option<String>) -> Result<Option<AdminToken>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --admin-token-file {}: {e}", path.display()))?;
        return AdminToken::new(&text)
            .map(Some)
            .ok_or_else(|| format!("--admin-token-file {} is empty", path.display()));
    }
    match env {
        Some(text) => AdminToken::new(&text)
            .map(Some)
            .ok_or_else(|| format!("{TOKEN_ENV} is empty")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let token = AdminToken::new("s3cret\n").unwrap();
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret2"));
        assert!(AdminToken::new(" \n").is_none());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn token_sources() {
        assert_eq!(load_token(None, None).unwrap(), None);
        assert!(load_token(None, Some("abc".into())).unwrap().is_some());
        assert!(load_token(None, Some(String::new())).is_err());
        assert!(load_token(Some(Path::new("/nonexistent/token")), None).is_err());
    }
}
