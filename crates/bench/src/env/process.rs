//! Processes the bench starts: CPU pinning, stopping a daemon with what it forked,
//! and waiting for a log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use portcullis_daemon::lab;

use crate::procmon;

/// True if `pid` is a zombie or gone.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// CPU daemons are pinned to in floods (`taskset`; the flooder takes the last CPU), so
/// that runs are comparable: the scheduler cannot put attacker and daemon on one core
/// in one run and on two in the next. No pinning on a single-CPU machine.
pub(super) const DAEMON_CPU: &str = "0";

/// Number of CPUs this process may use.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pin the calling thread to the last CPU: the client and attacker side of the lab
/// (the daemons have the first, see [`DAEMON_CPU`]). A client thread sharing the
/// daemon's core would add a scheduler hand-off to every latency figure.
pub fn pin_to_last_cpu() {
    let n = cpus();
    if n > 1 {
        let mut set = nix::sched::CpuSet::new();
        if set.set(n - 1).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    }
}

/// `taskset -c DAEMON_CPU args...` (taskset execs, so the PID is the daemon's).
pub(super) fn pinned<'a>(pin: bool, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::new();
    if pin && cpus() > 1 {
        v.extend(["taskset", "-c", DAEMON_CPU]);
    }
    v.extend_from_slice(args);
    v
}

/// SIGKILL every descendant of `pid` (knockd's forked command children), by PID.
pub(super) fn kill_descendants(pid: u32) {
    for c in procmon::descendants(pid) {
        if let Ok(p) = i32::try_from(c) {
            if p > 1 {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// SIGTERM `pid` and wait up to `limit` for it to exit (the caller reaps it).
pub(super) fn terminate(pid: u32, limit: Duration) {
    // Never signal pid 0 or -1 (the process group / everything) by accident.
    let Some(raw) = i32::try_from(pid).ok().filter(|&p| p > 1) else { return };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGTERM);
    lab::wait_until(limit, || procmon::sample(pid).is_none() || is_zombie(pid));
}

/// Wait up to `limit` for a line of the log file at `path` to contain `needle`.
pub(super) fn wait_for_log(path: &Path, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let logged = || {
        std::fs::File::open(path)
            .is_ok_and(|f| BufReader::new(f).lines().map_while(Result::ok).any(|l| l.contains(needle)))
    };
    if !lab::wait_until(limit, logged) {
        bail!(
            "`{needle}` not in {} after {limit:?}: {}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
    }
    Ok(())
}
