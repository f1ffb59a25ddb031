//! The production Java client (`../shared/java-client`, compiled with
//! `javac` against Debian's Netty) driven through `tests/java/InteropDriver.java`:
//! the test writes commands on the driver's standard input and reads the
//! client's events from its standard output.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `libnetty-java` puts its jars.
const NETTY_DIR: &str = "/usr/share/java";

/// The compiled client and driver: a Java class path.
fn classpath() -> &'static Result<String, String> {
    static CLASSPATH: OnceLock<Result<String, String>> = OnceLock::new();
    CLASSPATH.get_or_init(compile)
}

/// The client's source: `EASECHAT_JAVA_CLIENT_DIR`, or `shared/java-client`
/// beside the repository (where CI puts it).
fn client_dir() -> PathBuf {
    match std::env::var_os("EASECHAT_JAVA_CLIENT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/java-client"),
    }
}

fn netty_jars() -> Vec<PathBuf> {
    let mut jars: Vec<PathBuf> = std::fs::read_dir(NETTY_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with("netty-") && name.ends_with(".jar")
                })
                .collect()
        })
        .unwrap_or_default();
    jars.sort();
    jars
}

fn java_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            java_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "java")
            && path.file_name().is_some_and(|n| n != "Main.java")
        {
            out.push(path);
        }
    }
}

fn compile() -> Result<String, String> {
    match Command::new("javac").arg("-version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("javac -version failed: {out:?}")),
        Err(e) => {
            return Err(format!(
                "javac not found ({e}): apt-get install default-jdk-headless"
            ))
        }
    }
    let jars = netty_jars();
    if !jars
        .iter()
        .any(|j| j.to_string_lossy().contains("codec-http"))
    {
        return Err(format!(
            "no Netty jars in {NETTY_DIR}: apt-get install libnetty-java"
        ));
    }
    let client = client_dir();
    let mut sources = Vec::new();
    java_sources(&client.join("src"), &mut sources);
    if sources.is_empty() {
        return Err(format!(
            "no Java client source in {} (set EASECHAT_JAVA_CLIENT_DIR)",
            client.display()
        ));
    }
    sources.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/InteropDriver.java"));
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("java-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    // Classes of earlier runs whose process is gone.
    let tmp = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR"));
    for entry in tmp.into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("java-interop-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let jars: Vec<String> = jars.iter().map(|j| j.display().to_string()).collect();
    let jars = jars.join(":");
    let status = Command::new("javac")
        .args(["-encoding", "UTF-8", "-nowarn", "-d"])
        .arg(&out)
        .args(["-cp", &jars])
        .args(&sources)
        .status()
        .map_err(|e| format!("javac: {e}"))?;
    // Sources exist and javac runs: a failed compile is a real failure.
    assert!(status.success(), "javac failed on the client and driver");
    Ok(format!("{}:{jars}", out.display()))
}

/// The class path, or None after saying loudly why the Java test is skipped.
/// With `CI=true` a missing toolchain fails the test instead.
pub fn available(test: &str) -> Option<&'static str> {
    match classpath() {
        Ok(cp) => Some(cp),
        Err(reason) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: the Java client cannot be built on CI: {reason}");
            }
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
    }
}

/// Percent-encodes every byte but unreserved ASCII.
pub fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses Java's `URLEncoder` (`+` is a space).
pub fn dec(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("driver output is UTF-8")
}

/// One running driver JVM.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Vec<String>>,
    pending: VecDeque<Vec<String>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Every event seen, for failure messages.
    pub seen: Vec<Vec<String>>,
    /// Client-side exceptions expected now (the limit tests); otherwise one
    /// is protocol drift and fails the test.
    pub allow_errors: bool,
}

impl Driver {
    /// Starts the driver on the compiled class path.
    pub fn start(classpath: &str) -> Driver {
        let mut child = Command::new("java")
            .args([
                "-Dfile.encoding=UTF-8",
                "-Xss512k",
                "-cp",
                classpath,
                "InteropDriver",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start java");
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let fields = line.split(' ').map(dec).collect();
                if tx.send(fields).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut driver = Driver {
            child,
            stdin,
            events,
            pending: VecDeque::new(),
            stderr,
            seen: Vec::new(),
            allow_errors: false,
        };
        driver.event(|e| e[0] == "started", Duration::from_secs(30));
        driver
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "driver events:\n{}\ndriver stderr:\n{}",
            self.seen
                .iter()
                .filter(|e| e[0] != "log")
                .map(|e| {
                    let line = e.join(" | ");
                    match line.char_indices().nth(300) {
                        Some((cut, _)) => format!("{}…", &line[..cut]),
                        None => line,
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    fn next_raw(&mut self, deadline: Instant) -> Option<Vec<String>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = self.events.recv_timeout(left).ok()?;
        self.seen.push(event.clone());
        if event[0] == "error" && !self.allow_errors {
            panic!(
                "protocol drift: the Java client raised {:?}\n{}",
                event,
                self.diagnostics()
            );
        }
        Some(event)
    }

    /// Waits for the first event matching `pred` (earlier unmatched events
    /// stay pending for later calls).
    pub fn event(&mut self, pred: impl Fn(&[String]) -> bool, wait: Duration) -> Vec<String> {
        self.try_event(pred, wait)
            .unwrap_or_else(|| panic!("driver event not seen\n{}", self.diagnostics()))
    }

    /// Like [`Driver::event`], None on timeout.
    pub fn try_event(
        &mut self,
        pred: impl Fn(&[String]) -> bool,
        wait: Duration,
    ) -> Option<Vec<String>> {
        if let Some(i) = self.pending.iter().position(|e| pred(e)) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + wait;
        loop {
            let event = self.next_raw(deadline)?;
            if pred(&event) {
                return Some(event);
            }
            if event[0] != "log" {
                self.pending.push_back(event);
            }
        }
    }

    /// Sends a command and waits for its answer: Ok on `done`, Err with the
    /// exception on `fail`.
    pub fn try_cmd(&mut self, words: &[&str]) -> Result<(), String> {
        let line: Vec<String> = words.iter().map(|w| enc(w)).collect();
        writeln!(self.stdin, "{}", line.join(" ")).expect("driver stdin");
        self.stdin.flush().unwrap();
        let (verb, id) = (
            words[0].to_string(),
            words.get(1).unwrap_or(&"").to_string(),
        );
        let answer = self.event(
            |e| (e[0] == "done" || e[0] == "fail") && e[1] == verb && e[2] == id,
            Duration::from_secs(20),
        );
        if answer[0] == "done" {
            Ok(())
        } else {
            Err(answer[3..].join(": "))
        }
    }

    /// Sends a command that must succeed.
    pub fn cmd(&mut self, words: &[&str]) {
        if let Err(e) = self.try_cmd(words) {
            panic!(
                "driver command {words:?} failed: {e}\n{}",
                self.diagnostics()
            );
        }
    }

    /// The next `recv` event for client `id`: (sender, channel, text).
    pub fn recv(&mut self, id: &str) -> (String, String, String) {
        let e = self.event(|e| e[0] == "recv" && e[1] == id, Duration::from_secs(10));
        (e[2].clone(), e[3].clone(), e[4].clone())
    }

    /// True if a `recv` for `id` is pending or arrives within `wait`.
    pub fn received_within(&mut self, id: &str, wait: Duration) -> Option<Vec<String>> {
        self.try_event(|e| e[0] == "recv" && e[1] == id, wait)
    }

    /// Waits up to `wait` for a line of the driver's standard error (Java's
    /// uncaught exceptions) containing `needle`.
    pub fn stderr_shows(&self, needle: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the client's channel is open, as the client says.
    pub fn active(&mut self, id: &str) -> bool {
        self.cmd(&["active", id]);
        let e = self.event(|e| e[0] == "active" && e[1] == id, Duration::from_secs(5));
        e[2] == "true"
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
