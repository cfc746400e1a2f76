//! The system calls of the split: the socket pair, fork, and dropping privileges.
//! `fork` is the only `unsafe` here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use caps::{CapSet, Capability, CapsHashSet};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::{Gid, Pid, Uid, User};

/// A connected `SOCK_SEQPACKET` pair (close-on-exec: commands never inherit it).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(io::Error::from)
}

/// Send one message.
pub fn send_msg(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    loop {
        match send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a receive got.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// A message of this many bytes (more than the buffer's usable size: oversized).
    Message(usize),
    /// Nothing within the timeout.
    Timeout,
    /// The other end is gone.
    Closed,
}

/// Wait up to `timeout` (`None`: forever) for one message into `buf`. A message longer
/// than `buf.len() - 1` is reported with length `buf.len()` (truncated): the caller
/// refuses it.
pub fn recv_msg(fd: &OwnedFd, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<Recv> {
    if let Some(t) = timeout {
        let ms = u16::try_from(t.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(Recv::Timeout),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Recv::Timeout),
            Err(e) => return Err(e.into()),
        }
    }
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(0) => return Ok(Recv::Closed),
            Ok(n) => return Ok(Recv::Message(n)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECONNRESET) => return Ok(Recv::Closed),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the other end hung up, waiting up to `timeout` to find out. Does not read.
pub fn hung_up(fd: &OwnedFd, timeout: Duration) -> bool {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) | Err(_) => false,
        Ok(_) => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
    }
}

/// Which side of the fork we are on.
pub enum Forked {
    /// The original process; the child's pid.
    Parent(Pid),
    /// The new process.
    Child,
}

/// Fork. Must be called while the process has a single thread (before any runtime,
/// scheduler or monitor thread starts), which [`super::run`] guarantees by forking
/// first.
#[allow(unsafe_code)]
pub fn fork() -> io::Result<Forked> {
    // SAFETY: called before the daemon starts any thread (the caller forks before
    // starting the store, scheduler, monitor, API runtime or command runner), so the
    // child's single thread owns every lock and allocator state it inherits.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Die with `SIGTERM` when the parent does (and check it has not already died).
pub fn die_with_parent(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(io::Error::from)?;
    if nix::unistd::getppid() != parent {
        return Err(io::Error::other("the privileged part exited during start-up"));
    }
    Ok(())
}

/// The account the unprivileged part runs as.
#[derive(Debug, Clone)]
pub struct Account {
    /// Name, for logs.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
}

/// The dedicated `portcullis` account, else `nobody` (logged by the caller).
pub fn account() -> io::Result<(Account, bool)> {
    for (name, dedicated) in [("portcullis", true), ("nobody", false)] {
        if let Some(u) = User::from_name(name).map_err(io::Error::from)? {
            if u.uid.is_root() {
                continue;
            }
            return Ok((Account { name: u.name, uid: u.uid, gid: u.gid }, dedicated));
        }
    }
    Err(io::Error::other("neither a `portcullis` nor a `nobody` account exists"))
}

/// Capabilities the split needs at start and lacks in the effective set (a unit that
/// bounds them away, say).
pub fn missing_for_split() -> Vec<Capability> {
    let need =
        [Capability::CAP_SETUID, Capability::CAP_SETGID, Capability::CAP_SETPCAP, Capability::CAP_CHOWN];
    need.into_iter().filter(|&c| !caps::has_cap(None, CapSet::Effective, c).unwrap_or(false)).collect()
}

/// Become `account` with no capabilities in any set (bounding and ambient too) and
/// `no_new_privs`: nothing this process or anything it could exec can regain root.
pub fn drop_all(account: &Account) -> io::Result<()> {
    // The bounding set can only be shrunk while CAP_SETPCAP is still held: first.
    caps::clear(None, CapSet::Bounding).map_err(caps_err)?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err)?;
    nix::unistd::setgroups(&[]).map_err(io::Error::from)?;
    nix::unistd::setresgid(account.gid, account.gid, account.gid).map_err(io::Error::from)?;
    nix::unistd::setresuid(account.uid, account.uid, account.uid).map_err(io::Error::from)?;
    // Leaving uid 0 cleared permitted and effective already; make sure.
    caps::clear(None, CapSet::Effective).map_err(caps_err)?;
    caps::clear(None, CapSet::Permitted).map_err(caps_err)?;
    nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
    if nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(io::Error::other("could regain uid 0 after dropping it"));
    }
    Ok(())
}

/// Stay uid 0 but keep only `keep` in every capability set, and set `no_new_privs`.
pub fn keep_only(keep: &[Capability]) -> io::Result<()> {
    let set: CapsHashSet = keep.iter().copied().collect();
    for c in caps::all() {
        if !set.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(caps_err)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(caps_err)?;
    caps::set(None, CapSet::Effective, &set).map_err(caps_err)?;
    caps::set(None, CapSet::Permitted, &set).map_err(caps_err)?;
    nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(format!("capabilities: {e}"))
}

/// Hand `path` (and, for a directory, what it holds directly) to `account`, without
/// following symlinks, skipping `except`.
pub fn chown_tree(path: &std::path::Path, account: &Account, except: &[&str]) -> io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::unistd::fchownat;
    let own = |p: &std::path::Path| {
        fchownat(nix::fcntl::AT_FDCWD, p, Some(account.uid), Some(account.gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io::Error::other(format!("chown {}: {e}", p.display())))
    };
    for e in std::fs::read_dir(path)? {
        let e = e?;
        let name = e.file_name();
        if except.iter().any(|x| name.to_string_lossy().starts_with(x)) {
            continue;
        }
        if e.file_type()?.is_file() {
            own(&e.path())?;
        }
    }
    // Last: a root without CAP_DAC_OVERRIDE (the systemd unit's) cannot list the 0700
    // directory once it is the other user's. Group root with write access keeps the
    // privileged part able to write its pending stop commands there; the mode is set
    // while root still owns the directory (after the chown it would need CAP_FOWNER).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(crate::statedir::HANDED_OVER_MODE))?;
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(account.uid),
        Some(nix::unistd::Gid::from_raw(0)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io::Error::other(format!("chown {}: {e}", path.display())))
}

/// Refuse, with a message an operator can act on, a state directory the unprivileged
/// part could not reach: every directory above it must be searchable by `account`
/// (otherwise the part dies at start with a bare "Permission denied").
pub fn check_reachable(state_dir: &std::path::Path, account: &Account) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for dir in state_dir.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
        let md = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let search = if md.uid() == account.uid.as_raw() {
            md.mode() & 0o100 != 0
        } else if md.gid() == account.gid.as_raw() {
            md.mode() & 0o010 != 0
        } else {
            md.mode() & 0o001 != 0
        };
        if !search {
            return Err(format!(
                "the state directory {} is below {} (mode {:o}), which user {} cannot enter: \
                 allow it (chmod o+x {}) or put state_dir elsewhere, or run with --no-privsep",
                state_dir.display(),
                dir.display(),
                md.mode() & 0o7777,
                account.name,
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_state_dir_below_a_closed_directory_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let nobody = Account { name: "nobody".into(), uid: Uid::from_raw(65534), gid: Gid::from_raw(65534) };
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_reachable(&state, &nobody).unwrap_err();
        assert!(e.contains("cannot enter") && e.contains(&d.path().display().to_string()), "{e}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&state, &nobody).unwrap();
    }
}
