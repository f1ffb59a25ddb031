//! Start-up checks for what glommio needs from the host.
//!
//! Without them a missing io_uring shows up as a panic deep inside glommio.
//! Docker's default seccomp profile blocks the io_uring system calls, old
//! kernels lack them, `kernel.io_uring_disabled` can switch them off, and
//! glommio refuses to start when the locked-memory limit is below 512 KiB.

use std::fs;
use std::os::fd::AsRawFd;

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

/// Grows the process's descriptor table at once to hold `descriptors`
/// files (at most the soft `RLIMIT_NOFILE`).
///
/// The kernel grows the table by doubling as descriptors are allocated, and
/// in a multi-threaded process each growth waits for an RCU grace period
/// (`expand_files` → `synchronize_rcu`, 10–25 ms on a VM) inside the
/// `accept` that needed it: a shard accepting a storm of 2,000 connections
/// slept in uninterruptible sleep five or six times, and its established
/// connections waited with it. One growth before the storm, to the size
/// the connection limit needs, costs one grace period at start-up and a few
/// hundred KiB of kernel memory; the table never shrinks afterwards.
pub fn reserve_descriptor_table(descriptors: u64) -> std::io::Result<()> {
    let highest = libc::c_int::try_from(descriptors.saturating_sub(1)).unwrap_or(libc::c_int::MAX);
    let probe = std::fs::File::open("/dev/null")?;
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own onto the lowest
    // free number at or above `highest`; the copy is closed right away.
    let copy = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` is the descriptor fcntl just made, closed once.
    unsafe { libc::close(copy) };
    Ok(())
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`,
/// as Redis does by default).
///
/// The allocator asks for huge pages on its arenas (`MADV_HUGEPAGE`), so the
/// first touch of each 2 MiB region is one page fault that zeroes all of it:
/// 1–5 ms in the kernel on a VM, during which the shard runs nothing else.
/// When 1,800 clients each send 32 KiB at once, a shard took dozens of such
/// faults back to back and its other connections waited up to 45 ms. With
/// 4 KiB pages the same zeroing comes in microsecond pieces that the
/// shard's fairness (its work gates) can interleave with everyone else.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_descriptor_table_is_grown_ahead() {
        let limit = super::raise_open_files_limit().expect("RLIMIT_NOFILE");
        let wanted = limit.min(4096);
        super::reserve_descriptor_table(wanted).expect("reserve");
        // The table now holds `wanted` descriptors: a descriptor just below
        // it is allocated without growing (checked through /proc).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let fd_size: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .expect("FDSize in /proc/self/status")
            .trim()
            .parse()
            .unwrap();
        assert!(fd_size >= wanted, "FDSize {fd_size} < {wanted}");
    }

    #[test]
    fn this_host_passes_preflight() {
        // The development and CI machines have io_uring; if this fails the
        // message must say why, which is what the assertion prints.
        if let Err(e) = super::check() {
            panic!("preflight failed on the build host: {e}");
        }
    }
}
