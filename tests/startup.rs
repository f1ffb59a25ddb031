//! Start-up: flags, and hosts where glommio cannot run (io_uring blocked by
//! seccomp as in Docker's default profile, locked-memory limit too low).

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
