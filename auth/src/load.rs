//! The only I/O of this crate: reading the key and policy files a
//! [`Policy`] is built from (at start-up and on every reload).

use std::path::{Path, PathBuf};

use crate::policy::{Mode, Policy, Sources};

/// Where the policy comes from (`--auth`, `--auth-key-file`, `--auth-policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFiles {
    /// `--auth`.
    pub mode: Mode,
    /// `--auth-key-file`: an HMAC secret.
    pub key_file: Option<PathBuf>,
    /// `--auth-policy`: the TOML policy.
    pub policy_file: Option<PathBuf>,
}

/// Most bytes read from a key or policy file.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads at most `max` bytes of `path`; a larger file is an error (a key,
/// policy or config file is small, and is read again on every reload).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_bounded(path, MAX_FILE_BYTES)
}

impl PolicyFiles {
    /// Reads every file and builds the policy; the error names the file.
    pub fn load(&self) -> Result<Policy, String> {
        let key = match &self.key_file {
            Some(path) => Some(read(path).map_err(|e| format!("--auth-key-file: {e}"))?),
            None => None,
        };
        let policy = match &self.policy_file {
            Some(path) => {
                let bytes = read(path).map_err(|e| format!("--auth-policy: {e}"))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("--auth-policy {}: not UTF-8", path.display()))?;
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                Some((text, dir))
            }
            None => None,
        };
        let sources = Sources {
            mode: self.mode,
            key_file: key.as_deref(),
            policy: policy.as_ref().map(|(t, d)| (t.as_str(), d.as_path())),
        };
        let read_key =
            |path: &Path| read(path).map_err(|e| e.replace(&format!(" {}", path.display()), ""));
        Policy::build(&sources, &read_key).map_err(|e| match &self.policy_file {
            Some(path) => format!("{}: {e}", path.display()),
            None => e,
        })
    }
}
