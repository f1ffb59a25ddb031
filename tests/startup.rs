//! Start-up: flags, and hosts where glommio cannot run (io_uring blocked by
//! seccomp as in Docker's default profile, locked-memory limit too low).

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

fn nexus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ease_chat_nexus"));
    command.stdin(std::process::Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run the nexus")
}

#[test]
fn bad_flags_and_addresses_exit_2_with_one_line() {
    for args in [
        vec!["--frobnicate"],
        vec!["--cores", "lots"],
        vec!["not-an-address"],
        vec!["127.0.0.1:0", "--cores", "0"],
        vec!["127.0.0.1:0", "--ring-size", "0"],
    ] {
        let out = run(nexus().args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let help = run(nexus().arg("--help"));
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--cores",
        "--ring-size",
        "--max-message-bytes",
        "--max-outbox-bytes",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(nexus().args([addr.as_str(), "--cores", "1"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// The filter Docker's default profile amounts to for io_uring.
fn block_io_uring() -> BpfProgram {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    .map(|nr| (nr, vec![]))
    .collect();
    let arch: TargetArch = std::env::consts::ARCH.try_into().expect("supported arch");
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .unwrap()
    .try_into()
    .unwrap()
}

#[test]
fn blocked_io_uring_names_cause_and_remedy() {
    let filter = block_io_uring();
    let mut command = nexus();
    command.args(["127.0.0.1:0", "--cores", "1"]);
    // SAFETY: between fork and exec only the prctl/seccomp system calls run;
    // the filter was built before the fork.
    unsafe {
        command.pre_exec(move || {
            seccompiler::apply_filter(&filter).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let out = run(&mut command);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("io_uring is not available"), "{stderr}");
    assert!(
        stderr.contains("seccomp"),
        "names the likely cause: {stderr}"
    );
    assert!(
        stderr.contains("io_uring_setup"),
        "names the calls to allow: {stderr}"
    );
}

#[test]
fn low_memlock_limit_names_the_remedy() {
    let binary = env!("CARGO_BIN_EXE_ease_chat_nexus");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -l 64 && exec {binary} 127.0.0.1:0 --cores 1"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked-memory limit"), "{stderr}");
    assert!(stderr.contains("--ulimit memlock"), "{stderr}");
}

/// The seccomp profile shipped for Docker (`deploy/seccomp-io-uring.json`)
/// allows everything the nexus needs: run it under exactly that allow list
/// (everything else fails with EPERM) and serve a WebSocket upgrade.
#[test]
fn shipped_seccomp_profile_is_enough_to_serve() {
    let profile: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/seccomp-io-uring.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let names: Vec<&str> = profile["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for needed in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(names.contains(&needed), "{needed} missing");
    }
    // Only the names this architecture knows (the profile covers two).
    let filter: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({ "syscall": n }))
        .collect();
    let arch: TargetArch = std::env::consts::ARCH.try_into().unwrap();
    let json = serde_json::json!({
        "nexus": { "mismatch_action": { "errno": 1 }, "match_action": "allow", "filter": filter }
    });
    let mut programs = seccompiler::compile_from_json(json.to_string().as_bytes(), arch)
        .expect("every name in the profile is a real system call");
    let program = programs.remove("nexus").unwrap();

    let mut command = nexus();
    command
        .args(["127.0.0.1:0", "--cores", "2"])
        .stderr(std::process::Stdio::piped());
    // SAFETY: only prctl/seccomp run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let mut child = command.spawn().unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no listening line; log: {log:#?}"));
        log.push(line.clone());
        if let Some(rest) = line.split("listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    let upgraded = upgrade(stream);
    std::thread::sleep(std::time::Duration::from_millis(200));
    log.extend(lines.try_iter());
    assert!(upgraded.is_ok(), "{upgraded:?}; log: {log:#?}");
    assert_sigterm_exits_0(&mut child);
}

/// Sends a WebSocket upgrade request; Ok with the stream when answered 101.
fn upgrade(mut stream: std::net::TcpStream) -> Result<std::net::TcpStream, String> {
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
    if &answer != b"HTTP/1.1 101" {
        return Err(format!("answered {:?}", String::from_utf8_lossy(&answer)));
    }
    Ok(stream)
}

fn assert_sigterm_exits_0(child: &mut std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Standard error closed under the nexus (a log pipe whose reader died)
/// must cost log lines only, never the process.
#[test]
fn a_closed_log_pipe_does_not_stop_the_nexus() {
    let addr = common::free_loopback_addr();
    let mut child = nexus()
        .args([addr.as_str(), "--cores", "1", "--log", "debug"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // every later log write fails with EPIPE
    let started = std::time::Instant::now();
    let stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("nexus not listening: {e}"),
        }
    };
    let mut stream = upgrade(stream).unwrap();
    // A masked `1h` (zero mask): logged at info, which now fails to write.
    use std::io::Write;
    stream.write_all(&[0x81, 0x86, 0, 0, 0, 0]).unwrap();
    stream.write_all(b"1h|1|a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the nexus died");
    assert_sigterm_exits_0(&mut child);
}

/// Start-up prepares the process for connect storms and large first
/// touches (see `shards::preflight`): the descriptor table already holds
/// `--max-connections` descriptors (growing it under a storm waits an RCU
/// grace period per doubling inside `accept`), and transparent huge pages
/// are off (a 2 MiB first touch is one long fault).
#[test]
fn the_process_is_ready_for_storms_before_the_first_connection() {
    let nexus = common::Nexus::start(&["--max-connections", "5000"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", nexus.pid())).unwrap();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
            .trim()
            .to_string()
    };
    let fd_size: u64 = field("FDSize:").parse().unwrap();
    let open_files_limit = std::fs::read_to_string(format!("/proc/{}/limits", nexus.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .and_then(|soft| soft.parse::<u64>().ok())
        .expect("the soft open-files limit");
    let wanted = open_files_limit.min(5000);
    assert!(
        fd_size >= wanted,
        "descriptor table of {fd_size} before any connection (want {wanted})"
    );
    assert_eq!(field("THP_enabled:"), "0", "transparent huge pages are off");
}
