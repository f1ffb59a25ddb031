//! Start-up checks for what glommio needs from the host.
//!
//! Without them a missing io_uring shows up as a panic deep inside glommio.
//! Docker's default seccomp profile blocks the io_uring system calls, old
//! kernels lack them, `kernel.io_uring_disabled` can switch them off, and
//! glommio refuses to start when the locked-memory limit is below 512 KiB.

use std::fs;

/// glommio's minimum `RLIMIT_MEMLOCK` (its `MemLockLimit` error).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Why the host cannot run glommio executors, with the remedy in the message.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// `io_uring_setup` failed: kernel too old, seccomp filter, or sysctl.
    #[error(
        "io_uring is not available ({cause}). this server runs its shards on io_uring (Linux 5.8 or newer). \
         Remedy: {remedy}"
    )]
    IoUringUnavailable {
        /// What the kernel answered.
        cause: String,
        /// What the operator can do about it.
        remedy: &'static str,
    },
    /// The locked-memory limit is too small for glommio's ring buffers.
    #[error(
        "the locked-memory limit (ulimit -l) is {current} bytes; glommio needs at least {MIN_MEMLOCK_BYTES}. \
         Remedy: raise it (ulimit -l 1024, docker run --ulimit memlock=-1, systemd LimitMEMLOCK=infinity)"
    )]
    MemlockTooLow {
        /// The soft limit in force.
        current: u64,
    },
}

/// Checks io_uring and the locked-memory limit; `Ok` means executors can start.
pub fn check() -> Result<(), PreflightError> {
    check_io_uring()?;
    check_memlock()
}

fn check_io_uring() -> Result<(), PreflightError> {
    let disabled = fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // `struct io_uring_params` is 120 bytes; the kernel fills it in.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(entries, params) writes at most
    // sizeof(struct io_uring_params) bytes into `params`; the returned fd is
    // closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned to us by the kernel and is not shared.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let remedy = match (err.raw_os_error(), disabled) {
        (_, 2) | (Some(libc::EPERM), 1) => {
            "the sysctl kernel.io_uring_disabled is set; run `sysctl kernel.io_uring_disabled=0`"
        }
        (Some(libc::ENOSYS), _) => {
            "upgrade the kernel, or if this runs in a container, allow the io_uring_setup, \
             io_uring_enter and io_uring_register system calls (docker run --security-opt \
             seccomp=deploy/seccomp-io-uring.json)"
        }
        _ => {
            "if this runs in a container, its seccomp profile blocks io_uring: allow the \
             io_uring_setup, io_uring_enter and io_uring_register system calls (docker run \
             --security-opt seccomp=deploy/seccomp-io-uring.json)"
        }
    };
    Err(PreflightError::IoUringUnavailable {
        cause: err.to_string(),
        remedy,
    })
}

fn check_memlock() -> Result<(), PreflightError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // cannot tell; glommio will report it if it matters
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < MIN_MEMLOCK_BYTES {
        return Err(PreflightError::MemlockTooLow {
            current: limit.rlim_cur,
        });
    }
    Ok(())
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit
/// and returns the soft limit now in force. Every connection is one file;
/// systemd's default soft limit of 1,024 would otherwise cap the shards long
/// before any connection limit does. `None` when the limit cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` we own; raising the soft
        // limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_host_passes_preflight() {
        // The development and CI machines have io_uring; if this fails the
        // message must say why, which is what the assertion prints.
        if let Err(e) = super::check() {
            panic!("preflight failed on the build host: {e}");
        }
    }
}
