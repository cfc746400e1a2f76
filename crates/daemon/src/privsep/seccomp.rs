//! In-process seccomp allow-lists, one per part, built with `seccompiler` (pure Rust,
//! no libseccomp C library to link, and its BPF is what Firecracker ships). A system
//! call not on the list fails with `EPERM` instead of killing the process: a rare path
//! we missed degrades (logged error) rather than crash-looping, while everything an
//! attacker would reach for (`execve`, `ptrace`, `mount`, `bpf`, `setuid`, `unshare`,
//! `process_vm_writev`, `io_uring_*`, `perf_event_open`, `keyctl`, ...) is refused.
//!
//! The lists were taken from `strace -f` of the whole end-to-end suite (knocks, SPA,
//! API, store, iptables and nftables backends, the fleet's PostgreSQL client over a unix
//! socket and over TCP with TLS) plus the calls of rare paths (errors, panics, log
//! reconnects). Filters are inherited by threads started later and by
//! anything exec'd, so the privileged part only gets one when it runs no commands.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Calls both parts make (threads, memory, time, signals, files already open, sockets).
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_prlimit64,
    libc::SYS_uname,
    libc::SYS_ppoll,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
];

/// x86_64's legacy calls that glibc and std still use there.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[i64] = &[libc::SYS_poll, libc::SYS_rename, libc::SYS_unlink, libc::SYS_stat, libc::SYS_lstat];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[i64] = &[];

/// The unprivileged part: capture, API (epoll, accept), store (files in the state dir).
const UNPRIVILEGED: &[i64] = &[
    libc::SYS_recvmmsg,
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_shutdown,
    libc::SYS_getpeername,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_pipe2,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    // Store and replay files are forced to 0600 whatever the umask (fsperm::make_private).
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_mkdirat,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_getcwd,
    libc::SYS_fstatfs,
    libc::SYS_membarrier,
];

#[cfg(target_arch = "x86_64")]
const UNPRIVILEGED_LEGACY: &[i64] =
    &[libc::SYS_epoll_wait, libc::SYS_mkdir, libc::SYS_readlink, libc::SYS_chmod];
#[cfg(not(target_arch = "x86_64"))]
const UNPRIVILEGED_LEGACY: &[i64] = &[];

/// The privileged part without commands: netlink to the kernel, the child's status,
/// one-time sequence files, and reading the config again on SIGHUP (include
/// directories, canonical paths).
/// `flock`: the privileged part holds the state-dir lock and releases it at exit.
/// `bind`: the firewall watcher's ruleset check opens a netlink query socket each time.
const PRIVILEGED: &[i64] = &[
    libc::SYS_bind,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_flock,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_getcwd,
];

#[cfg(target_arch = "x86_64")]
const PRIVILEGED_LEGACY: &[i64] = &[libc::SYS_readlink];
#[cfg(not(target_arch = "x86_64"))]
const PRIVILEGED_LEGACY: &[i64] = &[];

fn install(lists: &[&[i64]]) -> io::Result<()> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        lists.iter().flat_map(|l| l.iter()).map(|&n| (n, Vec::new())).collect();
    let filter =
        SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
            .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    let prog: BpfProgram = filter.try_into().map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| io::Error::other(format!("seccomp: {e}")))
}

/// Confine the unprivileged part (after the privilege drop, before its threads start).
pub fn confine_unprivileged() -> io::Result<()> {
    install(&[COMMON, LEGACY, UNPRIVILEGED, UNPRIVILEGED_LEGACY])
}

/// Confine the privileged part (only when it runs no commands and no iptables).
pub fn confine_privileged() -> io::Result<()> {
    install(&[COMMON, LEGACY, PRIVILEGED, PRIVILEGED_LEGACY])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_for_this_architecture() {
        for lists in [
            &[COMMON, LEGACY, UNPRIVILEGED, UNPRIVILEGED_LEGACY][..],
            &[COMMON, LEGACY, PRIVILEGED, PRIVILEGED_LEGACY][..],
        ] {
            let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
            let rules = lists.iter().flat_map(|l| l.iter()).map(|&n| (n, Vec::new())).collect();
            let f = SeccompFilter::new(rules, SeccompAction::Errno(1), SeccompAction::Allow, arch).unwrap();
            let _: BpfProgram = f.try_into().unwrap();
        }
    }

    #[test]
    fn the_unprivileged_filter_refuses_exec_and_keeps_the_rest_working() {
        // In a child process, so the test binary itself stays unconfined.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "privsep::seccomp::tests::confined_child", "--nocapture", "--test-threads=1"])
            .env("PORTCULLIS_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("exec refused"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn confined_child() {
        if std::env::var_os("PORTCULLIS_SECCOMP_CHILD").is_none() {
            return;
        }
        confine_unprivileged().unwrap();
        let dir = std::env::temp_dir().join(format!("pc-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        std::fs::rename(dir.join("f"), dir.join("g")).unwrap();
        assert_eq!(std::fs::read(dir.join("g")).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).ok();
        let t = std::thread::spawn(|| 7).join().unwrap();
        assert_eq!(t, 7);
        match std::process::Command::new("/bin/true").status() {
            Err(e) => println!("exec refused: {e}"),
            Ok(s) => println!("exec ALLOWED: {s}"),
        }
    }
}
