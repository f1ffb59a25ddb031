//! Shared by the recovery tests: `easechat sub --recover --resume-file` as
//! a child process, scratch directories, and a scripted stand-in nexus
//! ([`fake_nexus`]).

#![allow(dead_code)] // each test binary uses its part

pub mod fake_nexus;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any step may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long "nothing more arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(500);

/// A position, for expectations.
pub fn at(offset: u64, epoch: &str) -> easechat::Position {
    easechat::Position {
        offset,
        epoch: epoch.into(),
    }
}

/// A client that asks for positions and reconnects (and so recovers),
/// first retrying after `backoff`.
pub fn recovering(backoff: Duration) -> easechat::Options {
    easechat::Options {
        positions: true,
        reconnect: true,
        backoff_initial: backoff,
        ..easechat::Options::default()
    }
}

/// A fresh directory for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "easechat-recovery-{test}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `easechat sub --name NAME --json --recover --resume-file FILE
/// CHANNEL…`, exactly as an outside check runs it (plus `--url`).
pub struct Sub {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Sub {
    pub fn start(url: &str, name: &str, file: &Path, channels: &[&str]) -> Sub {
        let mut child = Command::new(env!("CARGO_BIN_EXE_easechat"))
            .args([
                "sub",
                "--name",
                name,
                "--json",
                "--recover",
                "--resume-file",
            ])
            .arg(file)
            .args(["--url", url])
            .args(channels)
            .env_remove("EASECHAT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Sub {
            child,
            stdout,
            stderr,
        }
    }

    /// The next message printed, as JSON.
    pub fn message(&self) -> serde_json::Value {
        let line = self
            .stdout
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no output within {PATIENCE:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// The next message printed: (text, offset, epoch), the last two
    /// `None` when absent.
    pub fn next(&self) -> (String, Option<u64>, Option<String>) {
        let m = self.message();
        (
            m["text"].as_str().unwrap().to_string(),
            m["offset"].as_u64(),
            m["epoch"].as_str().map(str::to_string),
        )
    }

    /// Asserts nothing more is printed for a while.
    pub fn assert_quiet(&self) {
        if let Ok(line) = self.stdout.recv_timeout(QUIET) {
            panic!("unexpected output {line:?}");
        }
    }

    /// The next line on standard error.
    pub fn error_line(&self) -> String {
        self.stderr
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("nothing on stderr within {PATIENCE:?}"))
    }

    /// Every standard error line so far.
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// SIGKILL: no chance to save or say anything.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGINT, and its exit status.
    pub fn interrupt(&mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        wait(&mut self.child)
    }

    /// Its exit status, when it exits by itself.
    pub fn exit(&mut self) -> ExitStatus {
        wait(&mut self.child)
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits at most PATIENCE for `child` to exit.
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "easechat did not exit within {PATIENCE:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the resume file records `offset` in `epoch` for `channel`.
pub fn wait_saved(file: &Path, channel: &str, offset: u64, epoch: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let saved = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| easechat::resume::parse(&text).ok())
            .and_then(|positions| positions.get(channel).cloned());
        if saved
            .as_ref()
            .is_some_and(|p| p.offset == offset && p.epoch == epoch)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {channel} at {saved:?}, expected {offset} in {epoch}",
            file.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}
