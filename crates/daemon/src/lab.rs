//! Throwaway network namespaces for the demo, the integration tests and the benchmarks.
//!
//! A [`Lab`] is three hosts: `server` (runs the daemon), `client` (the admin) and
//! `other` (a bystander, or an attacker in floods), each a network namespace joined to
//! the server by its own veth pair. Nothing touches the root namespace: links are
//! created directly inside the namespaces, and everything is removed on drop,
//! processes by PID first. Addresses are from the documentation ranges (RFC 5737,
//! RFC 3849), which are never routed anywhere.
//!
//! Also here, for everything that uses a lab: the server's [`baseline`] host firewall,
//! the [`preflight`] checks of privileged tests, [`packet`] (crafted packets for
//! spoofed floods), and [`wait_until`].

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};

pub mod baseline;
pub mod packet;
pub mod pg;
pub mod preflight;

pub use baseline::Baseline;

/// Server address on the client link.
pub const SERVER4: &str = "192.0.2.1";
/// Client address.
pub const CLIENT4: &str = "192.0.2.2";
/// Server address on the other host's link.
pub const SERVER4_OTHER: &str = "198.51.100.1";
/// Other host's address.
pub const OTHER4: &str = "198.51.100.2";
/// Server IPv6 address on the client link.
pub const SERVER6: &str = "2001:db8:1::1";
/// Client IPv6 address.
pub const CLIENT6: &str = "2001:db8:1::2";
/// Server IPv6 address on the other host's link.
pub const SERVER6_OTHER: &str = "2001:db8:2::1";
/// Other host's IPv6 address.
pub const OTHER6: &str = "2001:db8:2::2";

/// Other host's address in a bridged lab ([`Lab::new_bridged`]), on the client's segment.
pub const BRIDGED_OTHER4: &str = "192.0.2.3";
/// Other host's IPv6 address in a bridged lab ([`Lab::new_bridged`]).
pub const BRIDGED_OTHER6: &str = "2001:db8:1::3";
/// The bridge of a bridged lab, in the client namespace (the client's addresses are on it).
pub const BRIDGE: &str = "br0";

/// What a TCP connection attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Handshake completed.
    Open,
    /// RST: nothing listening, but not filtered.
    Closed,
    /// No answer before the timeout: dropped by a firewall.
    Filtered,
}

/// Three namespaces and the processes started in them.
#[derive(Debug)]
pub struct Lab {
    /// Server namespace name.
    pub server: String,
    /// Client namespace name.
    pub client: String,
    /// Other host's namespace name.
    pub other: String,
    children: Vec<Child>,
}

/// Add the bridge [`BRIDGE`] in namespace `ns`, with no STP and no forwarding delay, so
/// ports forward as soon as they are up.
pub fn add_bridge(ns: &str) -> anyhow::Result<()> {
    sh(&["ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
    Ok(())
}

/// Run a command, failing with its stderr if it fails.
pub fn sh(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

impl Lab {
    /// Create the three hosts. `tag` keeps concurrent labs apart (tests run in parallel).
    pub fn new(tag: &str) -> anyhow::Result<Lab> {
        Lab::build(tag, Lab::setup)
    }

    /// Make the three namespaces (named after `tag` and our PID), then `links` them.
    /// The `Lab` exists before the links are made, so its drop removes whatever part of
    /// the set-up succeeded.
    fn build(tag: &str, links: fn(&Lab) -> anyhow::Result<()>) -> anyhow::Result<Lab> {
        if !nix::unistd::geteuid().is_root() {
            bail!("network namespaces need root");
        }
        let id = format!("{tag}-{}", std::process::id());
        let lab = Lab {
            server: format!("pc-srv-{id}"),
            client: format!("pc-cli-{id}"),
            other: format!("pc-oth-{id}"),
            children: Vec::new(),
        };
        for ns in [&lab.server, &lab.client, &lab.other] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            // No duplicate address detection: addresses are usable at once.
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])?;
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        }
        links(&lab).with_context(|| format!("building lab {id}"))?;
        Ok(lab)
    }

    fn setup(&self) -> anyhow::Result<()> {
        let (s, c, o) = (self.server.as_str(), self.client.as_str(), self.other.as_str());
        let links = [
            (c, "eth0", "vcli", SERVER4, CLIENT4, SERVER6, CLIENT6),
            (o, "eth0", "voth", SERVER4_OTHER, OTHER4, SERVER6_OTHER, OTHER6),
        ];
        for (peer, peer_if, srv_if, srv4, peer4, srv6, peer6) in links {
            sh(&[
                "ip", "link", "add", srv_if, "netns", s, "type", "veth", "peer", "name", peer_if, "netns",
                peer,
            ])?;
            sh(&["ip", "-n", s, "addr", "add", &format!("{srv4}/24"), "dev", srv_if])?;
            sh(&["ip", "-n", s, "addr", "add", &format!("{srv6}/64"), "dev", srv_if, "nodad"])?;
            sh(&["ip", "-n", peer, "addr", "add", &format!("{peer4}/24"), "dev", peer_if])?;
            sh(&["ip", "-n", peer, "addr", "add", &format!("{peer6}/64"), "dev", peer_if, "nodad"])?;
            sh(&["ip", "-n", s, "link", "set", srv_if, "up"])?;
            sh(&["ip", "-n", peer, "link", "set", peer_if, "up"])?;
            sh(&["ip", "-n", peer, "route", "add", "default", "via", srv4])?;
            sh(&["ip", "-n", peer, "-6", "route", "add", "default", "via", srv6])?;
        }
        Ok(())
    }

    /// Like [`Lab::new`], but the three hosts share ONE link segment, as on a LAN: a
    /// bridge [`BRIDGE`] in the client namespace carries the client's own addresses and
    /// has a veth port to the server's `eth0` and one to the other host's `eth0`. The
    /// server has that single interface, so a sniffer on `eth0` (knockd, fwknopd) sees
    /// the client and the other host (an attacker in floods) alike. Addresses, all
    /// on-link in one /24 and /64: server [`SERVER4`]/[`SERVER6`], client
    /// [`CLIENT4`]/[`CLIENT6`], other [`BRIDGED_OTHER4`]/[`BRIDGED_OTHER6`]. No routes.
    pub fn new_bridged(tag: &str) -> anyhow::Result<Lab> {
        Lab::build(tag, Lab::setup_bridged)
    }

    fn setup_bridged(&self) -> anyhow::Result<()> {
        let (s, c, o) = (self.server.as_str(), self.client.as_str(), self.other.as_str());
        add_bridge(c)?;
        for (port, peer) in [("p-srv", s), ("p-oth", o)] {
            sh(&[
                "ip", "link", "add", port, "netns", c, "type", "veth", "peer", "name", "eth0", "netns", peer,
            ])?;
            sh(&["ip", "-n", c, "link", "set", port, "master", BRIDGE])?;
            sh(&["ip", "-n", c, "link", "set", port, "up"])?;
        }
        let hosts = [
            (s, "eth0", SERVER4, SERVER6),
            (c, BRIDGE, CLIENT4, CLIENT6),
            (o, "eth0", BRIDGED_OTHER4, BRIDGED_OTHER6),
        ];
        for (ns, dev, a4, a6) in hosts {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{a4}/24"), "dev", dev])?;
            sh(&["ip", "-n", ns, "addr", "add", &format!("{a6}/64"), "dev", dev, "nodad"])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// `ip netns exec NS args...`, waiting for it.
    pub fn exec(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        let out = Command::new(full[0]).args(&full[1..]).stdin(Stdio::null()).output()?;
        Ok(out)
    }

    /// Start a long-running process in `ns`; it is killed (by PID) when the lab drops.
    /// Returns its PID. Output goes where `stdout`/`stderr` say.
    pub fn spawn(
        &mut self,
        ns: &str,
        args: &[&str],
        stdout: Stdio,
        stderr: Stdio,
    ) -> anyhow::Result<&mut Child> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {args:?} in {ns}"))?;
        self.children.push(child);
        let last = self.children.len() - 1;
        Ok(&mut self.children[last])
    }

    /// Run `f` on a thread that has entered `ns` (sockets it creates live there).
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = PathBuf::from("/run/netns").join(ns);
        std::thread::spawn(move || -> anyhow::Result<T> {
            enter(&path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// Try a TCP connection from `ns` to `addr:port`.
    pub fn probe(&self, ns: &str, addr: IpAddr, port: u16, timeout: Duration) -> anyhow::Result<Probe> {
        self.in_ns(ns, move || probe(SocketAddr::new(addr, port), timeout))
    }

    /// Kill a child started with [`Lab::spawn`] by PID (SIGKILL), and reap it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(pos);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Move the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    setns(f, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {}", path.display()))?;
    Ok(())
}

/// One TCP connection attempt, classified.
pub fn probe(to: SocketAddr, timeout: Duration) -> Probe {
    match TcpStream::connect_timeout(&to, timeout) {
        Ok(_) => Probe::Open,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Probe::Closed,
        Err(_) => Probe::Filtered,
    }
}

/// Poll `f` every 20 ms until it is true or `limit` has passed; one last try at the end.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first so daemons can log their exit, then make sure.
            // Never signal pid 0 or -1 (the process group / everything) by accident.
            if let Ok(pid) = i32::try_from(c.id()) {
                if pid > 1 {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
        for c in &mut self.children {
            for _ in 0..20 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.server, &self.client, &self.other] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}
