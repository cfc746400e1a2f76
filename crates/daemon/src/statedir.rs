//! The state directory, held for the daemon's lifetime: created 0700 (an existing one is
//! tightened to 0700), refused if someone else owns it or group/others may write it or
//! the stop commands it holds, and locked (`flock` on `state_dir/lock`) so that a second
//! daemon on the same directory refuses to start instead of fighting over one firewall
//! table. The lock file holds the PID of the daemon that holds the lock; the PID file
//! (if configured) is written only once the lock is held and removed when it is let go.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::actions::pending;
use crate::fsperm::{self, DIR_MODE, FILE_MODE};

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "lock";
/// Mode of a state directory handed to the unprivileged part of a split daemon: owned by
/// that user, group root, so that the privileged part (root without `CAP_DAC_OVERRIDE`
/// under the shipped unit) can still write its own files there (`pending-stops.toml`).
pub const HANDED_OVER_MODE: u32 = 0o770;
/// How long a start waits for the state dir lock before refusing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Another daemon holds it.
    #[error(
        "state dir {dir} is in use by another portcullisd{}; stop it first (two daemons would \
         fight over one firewall table)",
        .pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's PID, if it wrote one.
        pid: Option<u32>,
    },
    /// Its ownership or mode is unsafe (the operator must fix it).
    #[error("{0}")]
    Unsafe(String),
    /// An I/O error.
    #[error("state dir {}: {what}: {err}", .dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        err: std::io::Error,
    },
}

/// The state directory, locked. Dropping it removes the PID file and lets the lock go.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<File>,
    pid_file: Option<PathBuf>,
}

impl StateDir {
    /// Prepare and lock `dir`, then write our PID to `pid_file` if given. The directory
    /// may be owned by root, by us, or by `unprivileged` (the account the unprivileged
    /// part of a split daemon runs as, which owns the store's files).
    pub fn open(
        dir: &Path,
        pid_file: Option<&Path>,
        unprivileged: Option<u32>,
    ) -> Result<StateDir, StateDirError> {
        let io = |what: &'static str| move |err| StateDirError::Io { dir: dir.to_owned(), what, err };
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(io("creating"))?;
            }
            Err(e) => return Err(io("reading")(e)),
            Ok(_) => {}
        }
        let md = std::fs::symlink_metadata(dir).map_err(io("reading"))?;
        if !md.is_dir() {
            return Err(StateDirError::Unsafe(format!("state dir {} is not a directory", dir.display())));
        }
        let handed_over = unprivileged == Some(md.uid());
        if !handed_over {
            fsperm::check_trusted(dir, &md).map_err(|e| StateDirError::Unsafe(format!("state dir {e}")))?;
        } else if md.mode() & 0o002 != 0 || (md.mode() & 0o020 != 0 && md.gid() != 0) {
            return Err(StateDirError::Unsafe(format!(
                "state dir {}: group/others may write it; refusing to start",
                dir.display()
            )));
        }
        // A directory handed to the unprivileged part is HANDED_OVER_MODE, set by the
        // hand-over itself (root may not chmod another user's directory under the unit).
        if !handed_over && md.mode() & 0o7777 != DIR_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                .map_err(io("chmod 700"))?;
        }
        check_pending(dir)?;
        let lock = lock(dir)?;
        if let Some(p) = pid_file {
            fsperm::replace(p, format!("{}\n", std::process::id()).as_bytes())
                .map_err(|e| StateDirError::Unsafe(format!("writing pid file {}: {e}", p.display())))?;
        }
        Ok(StateDir { dir: dir.to_owned(), _lock: lock, pid_file: pid_file.map(Path::to_owned) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(p) = &self.pid_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Refuse a stop-command file that someone else could have written: its commands run
/// as root at start.
fn check_pending(dir: &Path) -> Result<(), StateDirError> {
    let p = dir.join(pending::FILE_NAME);
    match std::fs::symlink_metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateDirError::Io { dir: dir.to_owned(), what: "reading pending stops", err: e }),
        Ok(md) if !md.file_type().is_file() => {
            Err(StateDirError::Unsafe(format!("{} is not a regular file; refusing to start", p.display())))
        }
        Ok(md) => fsperm::check_trusted(&p, &md)
            .map_err(|e| StateDirError::Unsafe(format!("{e}: its commands run as root; refusing to start"))),
    }
}

fn lock(dir: &Path) -> Result<nix::fcntl::Flock<File>, StateDirError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|err| StateDirError::Io { dir: dir.to_owned(), what: "opening the lock file", err })?;
    let md = f.metadata().map_err(|err| StateDirError::Io { dir: dir.to_owned(), what: "lock file", err })?;
    if !md.is_file() || md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(StateDirError::Unsafe(format!("{} is not our regular file", path.display())));
    }
    // A predecessor killed a moment ago may still have a part alive that is on its way
    // out (a split daemon's unprivileged part notices within a fraction of a second):
    // wait briefly before calling the state dir busy.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut f = f;
    let mut f = loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                f = back;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((mut back, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = (&mut back).take(32).read_to_string(&mut text);
                return Err(StateDirError::Locked { dir: dir.to_owned(), pid: text.trim().parse().ok() });
            }
            Err((_, e)) => {
                return Err(StateDirError::Io { dir: dir.to_owned(), what: "locking", err: e.into() });
            }
        }
    };
    let write = |f: &mut File| -> std::io::Result<()> {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())
    };
    write(&mut f).map_err(|err| StateDirError::Io {
        dir: dir.to_owned(),
        what: "writing the lock file",
        err,
    })?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_0700_tightens_and_refuses_what_others_may_write() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/state");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o000));
        let s = StateDir::open(&dir, None, None);
        nix::sys::stat::umask(old);
        let s = s.unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        drop(s);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        drop(StateDir::open(&dir, None, None).unwrap());
        assert_eq!(mode(&dir), 0o700, "tightened");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&dir, None, None).unwrap_err().to_string();
        assert!(e.contains("group/others may write it"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let pending = dir.join(pending::FILE_NAME);
        std::fs::write(&pending, "version = 1\n").unwrap();
        std::fs::set_permissions(&pending, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = StateDir::open(&dir, None, None).unwrap_err().to_string();
        assert!(e.contains("pending-stops.toml") && e.contains("refusing to start"), "{e}");
        std::fs::set_permissions(&pending, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(StateDir::open(&dir, None, None).is_ok());
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&pending, Some(65534), None).unwrap();
            let e = StateDir::open(&dir, None, None).unwrap_err().to_string();
            assert!(e.contains("not owned by root"), "{e}");
        }
        let file = d.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(StateDir::open(&file, None, None).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn a_directory_handed_over_may_be_group_writable_by_root_only() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "needs root (chown) under CI");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(HANDED_OVER_MODE)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(0)).unwrap();
        drop(StateDir::open(&dir, None, Some(65534)).unwrap());
        assert_eq!(mode(&dir), HANDED_OVER_MODE, "left as the hand-over set it");
        let e = StateDir::open(&dir, None, None).unwrap_err().to_string();
        assert!(e.contains("not owned by root"), "not handed over in this run: {e}");
        std::os::unix::fs::chown(&dir, None, Some(65534)).unwrap();
        let e = StateDir::open(&dir, None, Some(65534)).unwrap_err().to_string();
        assert!(e.contains("group/others may write it"), "group other than root: {e}");
        std::os::unix::fs::chown(&dir, None, Some(0)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&dir, None, Some(65534)).unwrap_err().to_string();
        assert!(e.contains("group/others may write it"), "world-writable: {e}");
    }

    #[test]
    fn a_second_holder_is_refused_with_the_pid_and_the_pid_file_follows_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let pid_file = d.path().join("portcullisd.pid");
        let s = StateDir::open(d.path(), Some(&pid_file), None).unwrap();
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), format!("{}\n", std::process::id()));
        assert_eq!(mode(&pid_file), 0o600);
        // flock locks belong to the open file: a second open in this process conflicts too.
        let other_pid = d.path().join("other.pid");
        match StateDir::open(d.path(), Some(&other_pid), None) {
            Err(StateDirError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second holder not refused: {other:?}"),
        }
        assert!(!other_pid.exists(), "the refused one writes no PID file");
        drop(s);
        assert!(!pid_file.exists());
        drop(StateDir::open(d.path(), None, None).unwrap());
    }

    #[test]
    fn another_process_holding_the_lock_is_named() {
        if Command::new("flock").arg("--version").output().is_err() {
            panic!("flock(1) (util-linux) is needed for this test");
        }
        let d = tempfile::tempdir().unwrap();
        drop(StateDir::open(d.path(), None, None).unwrap());
        let lock = d.path().join(LOCK_FILE);
        // Another process (flock(1), in its own process group) takes the lock, then
        // writes its PID into the lock file, as a daemon does.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sh", "-c", "echo $PPID > \"$0\"; exec sleep 20"])
            .arg(&lock)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = Instant::now();
        let err = loop {
            match StateDir::open(d.path(), None, None) {
                // Until the child has written its PID, the file may hold none, or ours.
                Err(e @ StateDirError::Locked { pid: Some(p), .. }) if p == pid => break e,
                Err(StateDirError::Locked { .. }) => {}
                Ok(s) => drop(s),
                Err(e) => panic!("{e}"),
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the child never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        };
        let pgid = nix::unistd::Pid::from_raw(-i32::try_from(pid).unwrap());
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("PID {pid}")) && msg.contains("in use by another portcullisd"),
            "{msg}"
        );
        // The lock goes with the last process holding it (the killed group's exit is
        // asynchronous).
        let start = Instant::now();
        while StateDir::open(d.path(), None, None).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "never free again after the holder died");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
