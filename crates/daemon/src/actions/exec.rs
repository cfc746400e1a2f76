//! Run one command with a time limit: its own process group (so a hung pipeline's
//! children die with it), stdin and stdout on /dev/null, the first
//! [`STDERR_LIMIT`] bytes of stderr kept for the log.

use std::io::Read;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::subst;
use crate::config::CommandLine;

/// How much of a command's stderr is kept for the log.
pub const STDERR_LIMIT: usize = 2048;

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status (after the kill, if it timed out).
    pub status: ExitStatus,
    /// Whether it was killed for running past the limit.
    pub timed_out: bool,
    /// The start of its stderr, lossily decoded and trimmed.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Outcome {
    /// Finished in time with status 0.
    pub fn ok(&self) -> bool {
        !self.timed_out && self.status.success()
    }
}

/// Run `cmd` for `addr`, killing its process group after `limit`.
pub fn run(cmd: &CommandLine, addr: IpAddr, door: &str, limit: Duration) -> std::io::Result<Outcome> {
    let mut c = subst::command(cmd, addr);
    c.env("PORTCULLIS_DOOR", door)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = c.spawn()?;
    let (tx, rx) = mpsc::channel();
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::with_capacity(256);
            let mut buf = [0u8; 1024];
            // Keep the start, drain the rest so the command never blocks on a full pipe.
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = STDERR_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(kept);
        });
    }
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() >= limit {
            timed_out = true;
            // The group id is the child's PID (process_group(0)); never signal pid <= 1.
            if let Ok(pid) = i32::try_from(child.id()) {
                if pid > 1 {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let _ = child.kill();
            break child.wait()?;
        }
        let nap = if started.elapsed() < Duration::from_secs(1) { 5 } else { 50 };
        std::thread::sleep(Duration::from_millis(nap));
    };
    // A background grandchild may still hold stderr open: do not wait for it long.
    let kept = rx.recv_timeout(Duration::from_millis(500)).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&kept).trim().to_string();
    Ok(Outcome { status, timed_out, stderr, elapsed: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> CommandLine {
        CommandLine::Shell(s.into())
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn reports_status_and_bounded_stderr() {
        let o = run(&sh("echo oops >&2; exit 3"), IP, "d", Duration::from_secs(5)).unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(o.stderr, "oops");
        assert!(!o.ok());
        let o =
            run(&sh("head -c 100000 /dev/zero | tr '\\0' x >&2"), IP, "d", Duration::from_secs(5)).unwrap();
        assert!(o.ok());
        assert_eq!(o.stderr.len(), STDERR_LIMIT);
        let o = run(&sh("/usr/bin/does-not-exist %IP%"), IP, "d", Duration::from_secs(5)).unwrap();
        assert_eq!(o.status.code(), Some(127));
    }

    #[test]
    fn kills_a_hung_command_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let cmd = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let t = Instant::now();
        let o = run(&sh(&cmd), IP, "d", Duration::from_millis(300)).unwrap();
        assert!(o.timed_out);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the background child outlived the kill");
    }
}
