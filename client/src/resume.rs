//! The resume file of `easechat sub --resume-file`: the last position
//! received per channel, kept on disk so that a later run recovers what was
//! published while no run was listening.
//!
//! # Format
//!
//! One JSON object mapping each channel to its position:
//!
//! ```json
//! {"h/lobby":{"offset":17,"epoch":"k3x9"},"h/a|b\nc":{"offset":4,"epoch":"p2"}}
//! ```
//!
//! JSON because a channel may hold any character (spaces, `|`, newlines).
//! `offset` is an unsigned 64-bit integer and `epoch` a non-empty string;
//! other keys in an entry are ignored (room for later fields). A missing
//! or empty file means "no positions"; anything else that does not parse
//! is an error naming the file, never silently a fresh start.
//!
//! # Writing
//!
//! [`ResumeFile::save`] writes the whole object to `FILE.tmp` beside it and
//! renames that over `FILE`, so a process killed at any moment leaves
//! either the old or the new file, never half of one. It does not `fsync`:
//! the file survives the process being killed, not necessarily the machine
//! losing power (then an older position comes back: duplicates, not
//! losses).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::Position;

/// Why a resume file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// It exists but cannot be read.
    #[error("resume file {}: cannot read it: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It does not hold what [`crate::resume`] describes.
    #[error("resume file {}: {reason} (expected {{\"CHANNEL\":{{\"offset\":N,\"epoch\":\"E\"}},…}}; remove the file to start afresh)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// It cannot be written.
    #[error("resume file {}: cannot write it: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The positions of a resume file, as read at start and as saved since.
#[derive(Debug)]
pub struct ResumeFile {
    /// The file.
    path: PathBuf,
    /// Written first, then renamed over `path`.
    temp: PathBuf,
    /// What the file holds (or will, at the next save).
    positions: BTreeMap<String, Position>,
    /// Whether `positions` changed since the last save.
    dirty: bool,
}

impl ResumeFile {
    /// Reads `path`: a missing or empty file holds no positions.
    pub fn open(path: &Path) -> Result<ResumeFile, ResumeError> {
        let positions = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).map_err(|reason| ResumeError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(ResumeError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        Ok(ResumeFile {
            path: path.to_path_buf(),
            temp: PathBuf::from(temp),
            positions,
            dirty: false,
        })
    }

    /// The file's name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every channel's position.
    pub fn positions(&self) -> &BTreeMap<String, Position> {
        &self.positions
    }

    /// Records `channel`'s position (`None`, or an empty epoch, removes
    /// it); returns whether that changed anything, i.e. whether a
    /// [`ResumeFile::save`] is due.
    pub fn update(&mut self, channel: &str, position: Option<&Position>) -> bool {
        let changed = match position.filter(|p| !p.epoch.is_empty()) {
            Some(p) if self.positions.get(channel) == Some(p) => false,
            Some(p) => {
                self.positions.insert(channel.to_string(), p.clone());
                true
            }
            None => self.positions.remove(channel).is_some(),
        };
        self.dirty |= changed;
        changed
    }

    /// Writes the positions if they changed since the last save (to the
    /// temporary file, then renamed over the file).
    pub fn save(&mut self) -> Result<(), ResumeError> {
        if !self.dirty {
            return Ok(());
        }
        let write_error = |source| ResumeError::Write {
            path: self.path.clone(),
            source,
        };
        std::fs::write(&self.temp, render(&self.positions)).map_err(write_error)?;
        std::fs::rename(&self.temp, &self.path).map_err(write_error)?;
        self.dirty = false;
        Ok(())
    }
}

/// The positions in `text` (see the [module](self) for the format).
pub fn parse(text: &str) -> Result<BTreeMap<String, Position>, String> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(channels) = value else {
        return Err("not a JSON object".into());
    };
    let mut positions = BTreeMap::new();
    for (channel, entry) in channels {
        let offset = entry.get("offset").and_then(Value::as_u64);
        let epoch = entry.get("epoch").and_then(Value::as_str);
        match (offset, epoch) {
            (Some(offset), Some(epoch)) if !epoch.is_empty() => {
                positions.insert(
                    channel,
                    Position {
                        offset,
                        epoch: epoch.to_string(),
                    },
                );
            }
            _ => {
                return Err(format!(
                    "channel {channel:?}: expected {{\"offset\": an unsigned integer, \
                     \"epoch\": a non-empty string}}, found {entry}"
                ))
            }
        }
    }
    Ok(positions)
}

/// `positions` in the file's format, with a final newline.
pub fn render(positions: &BTreeMap<String, Position>) -> String {
    let object: Map<String, Value> = positions
        .iter()
        .map(|(channel, p)| {
            (
                channel.clone(),
                serde_json::json!({ "offset": p.offset, "epoch": p.epoch }),
            )
        })
        .collect();
    let mut text = Value::Object(object).to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "easechat-resume-{test}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn channels_with_any_character_round_trip() {
        let mut positions = BTreeMap::new();
        positions.insert("h/lobby".to_string(), at(17, "k3x9"));
        positions.insert("a b|c\n\"d\" 你好".to_string(), at(u64::MAX, "e|\n"));
        positions.insert(String::new(), at(0, "z"));
        let text = render(&positions);
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        assert_eq!(parse(&text).unwrap(), positions);
        assert_eq!(
            parse(r#"{"h/x":{"offset":3,"epoch":"e","later":true}}"#).unwrap(),
            BTreeMap::from([("h/x".to_string(), at(3, "e"))])
        );
    }

    #[test]
    fn empty_is_nothing_and_anything_else_wrong_is_an_error() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse(" \n").unwrap().is_empty());
        assert!(parse("{}").unwrap().is_empty());
        for bad in [
            "{",
            "[]",
            "17 abc h/x",
            r#"{"h/x":17}"#,
            r#"{"h/x":{"offset":-1,"epoch":"e"}}"#,
            r#"{"h/x":{"offset":1.5,"epoch":"e"}}"#,
            r#"{"h/x":{"offset":"1","epoch":"e"}}"#,
            r#"{"h/x":{"offset":1}}"#,
            r#"{"h/x":{"offset":1,"epoch":""}}"#,
            r#"{"h/x":{"offset":1,"epoch":7}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn saves_atomically_and_only_when_changed() {
        let dir = scratch("save");
        let path = dir.join("positions.json");
        let mut file = ResumeFile::open(&path).unwrap();
        assert!(file.positions().is_empty());
        file.save().unwrap();
        assert!(!path.exists(), "nothing to save yet");

        assert!(file.update("h/x", Some(&at(1, "e"))));
        assert!(!file.update("h/x", Some(&at(1, "e"))));
        assert!(!file.update("plain", None));
        file.save().unwrap();
        assert!(!dir.join("positions.json.tmp").exists());
        assert_eq!(
            ResumeFile::open(&path).unwrap().positions(),
            &BTreeMap::from([("h/x".to_string(), at(1, "e"))])
        );
        // An empty epoch removes the channel, like `None`.
        assert!(file.update("h/x", Some(&at(2, ""))));
        file.save().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");

        std::fs::write(&path, "{\"h/x\": nonsense").unwrap();
        let error = ResumeFile::open(&path).unwrap_err().to_string();
        assert!(
            error.contains("positions.json") && error.contains("not JSON"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
