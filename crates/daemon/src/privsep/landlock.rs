//! Landlock for the unprivileged part: after the privilege drop it may read and write
//! only inside the state directory (store, replay cache) and read only the paths it is
//! given; every other file access, any `execve`, binding a TCP socket, connecting one
//! to any port but the fleet database's, and signalling a process outside its own
//! domain are refused by the kernel, whatever the
//! file permissions say. A parser bug in the part that reads the network then cannot read
//! `/etc/shadow`-like secrets it could otherwise read as its uid (world-readable keys,
//! other services' state), nor plant files anywhere writable by `portcullis` or `nobody`.
//!
//! Best-effort: a kernel without Landlock (or with an older ABI) applies what it knows
//! and the caller logs how much that was; only an unexpected failure is an error.
//! Must be called with a single thread (Landlock applies to the calling thread and the
//! threads it starts later) and after `no_new_privs`; the seccomp allow-list, installed
//! afterwards, has no Landlock calls.

use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, LandlockStatus, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

/// The ABI these rules were written and tested for. Pinned, so a newer kernel's new
/// restrictions (which could refuse something the daemon does, e.g. reaching the
/// journal's socket) are only taken on after they have been tested here.
const ABI_USED: ABI = ABI::V6;

/// How much of the sandbox the running kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every rule.
    Fully,
    /// Some rules (an older Landlock ABI; e.g. no truncate, network or signal rules).
    Partially,
    /// None: the kernel has no Landlock or it is disabled at boot.
    Not,
}

/// What [`restrict`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    /// How much is enforced.
    pub enforced: Enforced,
    /// The kernel's Landlock ABI version (0: none).
    pub kernel_abi: i32,
    /// Read paths skipped because they do not exist (nothing there to read anyway).
    pub missing: Vec<std::path::PathBuf>,
}

impl std::fmt::Display for Restricted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.enforced {
            Enforced::Fully => write!(f, "landlock (ABI {})", self.kernel_abi),
            Enforced::Partially => write!(f, "landlock partially (kernel ABI {})", self.kernel_abi),
            Enforced::Not => write!(f, "NO landlock (not supported or not enabled by the kernel)"),
        }
    }
}

/// A Landlock call failed for a reason other than missing kernel support.
#[derive(Debug, thiserror::Error)]
#[error("landlock: {0}")]
pub struct Error(String);

/// Confine this process (its calling thread and every thread it starts later): read and
/// write beneath `state_dir`, read (files, and directories' listings) beneath each of
/// `read_paths`, nothing else on the file system; no TCP bind, and TCP connect only to
/// `connect_ports` (the fleet database's); no signal to processes outside the sandbox.
/// Unix sockets already connected or reached by path (sd_notify, the journal, a
/// database's socket) and sockets already open are unaffected.
pub fn restrict(state_dir: &Path, read_paths: &[&Path], connect_ports: &[u16]) -> Result<Restricted, Error> {
    let fs_all = AccessFs::from_all(ABI_USED);
    let mut created = Ruleset::default()
        .handle_access(fs_all)
        .map_err(err("file-system rights"))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(err("network rights"))?
        .scope(Scope::Signal)
        .map_err(err("signal scope"))?
        .create()
        .map_err(err("creating the ruleset"))?;
    let dir = PathFd::new(state_dir).map_err(|e| Error(format!("opening {}: {e}", state_dir.display())))?;
    created = created.add_rule(PathBeneath::new(dir, fs_all)).map_err(err("state directory rule"))?;
    for &port in connect_ports {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| Error(format!("connect rule for port {port}: {e}")))?;
    }
    let mut missing = Vec::new();
    for &p in read_paths {
        let fd = match PathFd::new(p) {
            Ok(fd) => fd,
            Err(_) if !p.exists() => {
                missing.push(p.to_path_buf());
                continue;
            }
            Err(e) => return Err(Error(format!("opening {}: {e}", p.display()))),
        };
        created = created
            .add_rule(PathBeneath::new(fd, read_access(p.is_dir())))
            .map_err(|e| Error(format!("read rule for {}: {e}", p.display())))?;
    }
    let status = created.restrict_self().map_err(err("restricting"))?;
    let kernel_abi = match status.landlock {
        LandlockStatus::Available { effective_abi, kernel_abi } => kernel_abi.unwrap_or(effective_abi as i32),
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => 0,
    };
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Not,
    };
    Ok(Restricted { enforced, kernel_abi, missing })
}

fn err(what: &'static str) -> impl Fn(landlock::RulesetError) -> Error {
    move |e| Error(format!("{what}: {e}"))
}

/// Read rights for a read path: a file's content, or a directory's listing and files.
/// Spelled out: the crate's `from_read` includes `Execute`.
fn read_access(is_dir: bool) -> BitFlags<AccessFs> {
    if is_dir {
        AccessFs::ReadFile | AccessFs::ReadDir
    } else {
        AccessFs::ReadFile.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn read_paths_never_get_write_or_exec_rights() {
        for dir in [false, true] {
            let r = read_access(dir);
            for w in [
                AccessFs::WriteFile,
                AccessFs::Execute,
                AccessFs::RemoveFile,
                AccessFs::MakeReg,
                AccessFs::Truncate,
            ] {
                assert!(!r.contains(w), "{w:?} in read rights (dir {dir})");
            }
            assert!(r.contains(AccessFs::ReadFile));
        }
        assert!(read_access(true).contains(AccessFs::ReadDir));
        assert!(
            !read_access(false).contains(AccessFs::ReadDir),
            "ReadDir on a file is refused by the kernel"
        );
    }

    /// The rules are applied in a child process (a copy of this test binary), so the
    /// test process itself stays unconfined. The child reports what it could do.
    #[test]
    fn the_sandbox_allows_the_state_dir_read_paths_and_the_database_only() {
        let base = tempfile::tempdir().unwrap();
        let state = base.path().join("state");
        let conf = base.path().join("conf");
        std::fs::create_dir(&state).unwrap();
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("readable.toml"), "x = 1").unwrap();
        std::fs::write(base.path().join("secret"), "s").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "privsep::landlock::tests::confined_child", "--nocapture", "--test-threads=1"])
            .env("PORTCULLIS_LANDLOCK_CHILD", base.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{all}");
        if text.contains("enforced: Not") {
            // Not a failure of ours on a developer kernel without Landlock; CI kernels have it.
            assert!(std::env::var_os("CI").is_none(), "CI=true but the kernel enforces no Landlock:\n{all}");
            eprintln!("skipped: the kernel has no Landlock");
            return;
        }
        for line in [
            "enforced: Fully",
            "state dir write: ok",
            "state dir rename+remove: ok",
            "read path: ok",
            "secret beside: denied",
            "write into read path: denied",
            "write outside: denied",
            "/etc/passwd: denied",
            "exec: denied",
            "tcp connect: denied",
            "tcp connect to the allowed port: ok",
            "unix socket outside the state dir: ok",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{all}");
        }
    }

    #[test]
    fn confined_child() {
        let Some(base) = std::env::var_os("PORTCULLIS_LANDLOCK_CHILD") else { return };
        let base = std::path::PathBuf::from(base);
        let state = base.join("state");
        let conf = base.join("conf");
        nix::sys::prctl::set_no_new_privs().unwrap();
        // A database's TCP port and unix socket (outside the state dir), listening
        // before the sandbox as a database server would be.
        let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let db_port = db.local_addr().unwrap().port();
        let sock_dir = base.join("run");
        std::fs::create_dir(&sock_dir).unwrap();
        let _unix = std::os::unix::net::UnixListener::bind(sock_dir.join(".s.PGSQL.5432")).unwrap();
        let r = restrict(&state, &[&conf.join("readable.toml"), &base.join("does-not-exist")], &[db_port])
            .unwrap();
        println!("enforced: {:?}", r.enforced);
        assert_eq!(r.missing, vec![base.join("does-not-exist")]);
        let res = |what: &str, r: std::io::Result<()>| match r {
            Ok(()) => println!("{what}: ok"),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => println!("{what}: denied"),
            Err(e) => println!("{what}: error {e}"),
        };
        res("state dir write", std::fs::write(state.join("grants.db"), b"x"));
        res(
            "state dir rename+remove",
            std::fs::rename(state.join("grants.db"), state.join("g2"))
                .and_then(|_| std::fs::remove_file(state.join("g2"))),
        );
        res("read path", std::fs::read(conf.join("readable.toml")).map(|_| ()));
        res("secret beside", std::fs::read(base.join("secret")).map(|_| ()));
        res("write into read path", std::fs::write(conf.join("readable.toml"), b"y"));
        res("write outside", std::fs::write(base.join("planted"), b"x"));
        res("/etc/passwd", std::fs::read("/etc/passwd").map(|_| ()));
        res("exec", std::process::Command::new("/bin/true").status().map(|_| ()));
        res(
            "tcp connect to the allowed port",
            std::net::TcpStream::connect(("127.0.0.1", db_port)).map(|_| ()),
        );
        res(
            "unix socket outside the state dir",
            std::os::unix::net::UnixStream::connect(sock_dir.join(".s.PGSQL.5432")).map(|_| ()),
        );
        let tcp = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:9".parse().unwrap(),
            std::time::Duration::from_secs(1),
        );
        res(
            "tcp connect",
            tcp.map(|_| ()).map_err(|e| {
                if e.kind() == ErrorKind::ConnectionRefused {
                    std::io::Error::other("refused by nobody listening: not sandboxed")
                } else {
                    e
                }
            }),
        );
    }
}
