//! The fleet bench's world: a throwaway PostgreSQL cluster ([`Pg`], unix socket only),
//! three gateway namespaces running portcullisd with `[fleet]`, and one client
//! namespace, all on one link segment.
//!
//! ```text
//!   client ns: br0 192.0.2.2/24 + trial sources 198.19.4.1… /16
//!     br0 ──┬── p-gw1 ═══ eth0  gw1 ns (192.0.2.11, 198.19.0.11/16)
//!           ├── p-gw2 ═══ eth0  gw2 ns (192.0.2.12, 198.19.0.12/16)
//!           └── p-gw3 ═══ eth0  gw3 ns (192.0.2.13, 198.19.0.13/16)
//! ```
//!
//! Every gateway has a listener on [`PROTECTED`] (so a granted SYN completes a
//! handshake), the same server key and two native SPA users opening it: `alice`
//! (`scope = "fleet"`) and `bob` (local). The database is also a member's name,
//! [`OPS`]: rows the bench writes as `ops` (as an API or CLI node would) are applied by
//! all three gateways. Nothing touches the root namespace; the daemons are stopped by
//! PID, then the namespaces, the cluster and the scratch directory are removed.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use portcullis_daemon::firewall::nft::NftDriver;
use portcullis_daemon::firewall::{FirewallDriver, LiveGrant};
use portcullis_daemon::lab::pg::Pg;
use portcullis_daemon::lab::{self, BRIDGE};
use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey};
use portcullis_proto::{Proto, Service};

use crate::env::urandom;

/// The protected port on every gateway.
pub const PROTECTED: u16 = 22;
/// The native SPA port.
pub const SPA_PORT: u16 = 62201;
/// The member name the bench writes rows as (no daemon runs under it).
pub const OPS: &str = "ops";
/// Client's own address.
const CLIENT: &str = "192.0.2.2";
/// Trial sources on the client: 198.19.4.1 onwards.
const POOL_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 4, 1);
/// Longest grant a user may ask for, seconds.
const MAX_OPEN_FOR: u32 = 120;

/// The SPA users every gateway knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// `scope = "fleet"`: replay-claimed in the database and shared.
    Fleet,
    /// Local scope: never waits for the database.
    Local,
}

impl User {
    fn name(self) -> &'static str {
        match self {
            User::Fleet => "alice",
            User::Local => "bob",
        }
    }
}

/// One gateway: its namespace, address, log and daemon.
pub struct Gateway {
    /// Node name (`gw1`…).
    pub node: String,
    /// Namespace name.
    pub ns: String,
    /// Its address on the segment.
    pub addr: IpAddr,
    /// portcullisd's stderr.
    pub log: PathBuf,
    child: Option<Child>,
}

/// The whole fleet lab.
pub struct FleetLab {
    /// Client namespace name.
    pub client: String,
    /// gw1, gw2, gw3.
    pub gws: Vec<Gateway>,
    /// The database.
    pub pg: Pg,
    dir: PathBuf,
    server: ServerKey,
    users: [UserKey; 2],
    pool: u32,
    next: u32,
}

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

/// Run `f` on a thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let path = ns_path(ns);
    std::thread::spawn(move || -> anyhow::Result<T> {
        lab::enter(&path)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

impl FleetLab {
    /// Build everything and start the three daemons with `pool` trial sources.
    pub fn new(portcullisd: &Path, pool: u32) -> anyhow::Result<FleetLab> {
        let pg = Pg::start("bench")?;
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("pc-fleet-bench-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let gws = (1..=3u8)
            .map(|i| Gateway {
                node: format!("gw{i}"),
                ns: format!("pc-fgw{i}-{id}"),
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i)),
                log: dir.join(format!("gw{i}.log")),
                child: None,
            })
            .collect();
        let mut lab = FleetLab {
            client: format!("pc-fcli-{id}"),
            gws,
            pg,
            dir,
            server: ServerKey::generate(&mut urandom),
            users: [UserKey::generate(&mut urandom), UserKey::generate(&mut urandom)],
            pool,
            next: 0,
        };
        lab.links()?;
        lab.files()?;
        for i in 0..lab.gws.len() {
            lab.start(i, portcullisd)?;
        }
        Ok(lab)
    }

    fn namespaces(&self) -> Vec<&str> {
        std::iter::once(self.client.as_str()).chain(self.gws.iter().map(|g| g.ns.as_str())).collect()
    }

    fn links(&self) -> anyhow::Result<()> {
        for ns in self.namespaces() {
            lab::sh(&["ip", "netns", "add", ns])?;
            lab::sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let c = self.client.as_str();
        lab::add_bridge(c)?;
        for (i, g) in self.gws.iter().enumerate() {
            let port = format!("p-gw{}", i + 1);
            lab::sh(&[
                "ip", "link", "add", &port, "netns", c, "type", "veth", "peer", "name", "eth0", "netns",
                &g.ns,
            ])?;
            lab::sh(&["ip", "-n", c, "link", "set", &port, "master", BRIDGE])?;
            lab::sh(&["ip", "-n", c, "link", "set", &port, "up"])?;
            lab::sh(&["ip", "-n", &g.ns, "addr", "add", &format!("{}/24", g.addr), "dev", "eth0"])?;
            lab::sh(&["ip", "-n", &g.ns, "addr", "add", &format!("198.19.0.{}/16", 11 + i), "dev", "eth0"])?;
            lab::sh(&["ip", "-n", &g.ns, "link", "set", "eth0", "up"])?;
        }
        lab::sh(&["ip", "-n", c, "addr", "add", &format!("{CLIENT}/24"), "dev", BRIDGE])?;
        lab::sh(&["ip", "-n", c, "link", "set", BRIDGE, "up"])?;
        // Trial sources on the client, and permanent neighbour entries for them on every
        // gateway, so no trial waits for ARP.
        let mac = String::from_utf8_lossy(
            &lab::sh(&["ip", "netns", "exec", c, "cat", &format!("/sys/class/net/{BRIDGE}/address")])?.stdout,
        )
        .trim()
        .to_string();
        let (mut cli, mut gw) = (String::new(), String::new());
        for i in 0..self.pool {
            let a = Ipv4Addr::from(u32::from(POOL_BASE) + i);
            let _ = writeln!(cli, "addr add {a}/16 dev {BRIDGE}");
            let _ = writeln!(gw, "neigh replace {a} lladdr {mac} dev eth0 nud permanent");
        }
        let (fc, fg) = (self.dir.join("cli.batch"), self.dir.join("gw.batch"));
        std::fs::write(&fc, cli)?;
        std::fs::write(&fg, gw)?;
        lab::sh(&["ip", "-n", c, "-batch", &fc.display().to_string()])?;
        for g in &self.gws {
            lab::sh(&["ip", "-n", &g.ns, "-batch", &fg.display().to_string()])?;
            let l = in_ns(&g.ns, || TcpListener::bind(("0.0.0.0", PROTECTED)))??;
            // Accept and close every connection so probes never fill the listen queue.
            std::thread::spawn(move || l.incoming().for_each(drop));
        }
        Ok(())
    }

    fn files(&self) -> anyhow::Result<()> {
        self.pg.write_url_file(&self.dir.join("fleet.url"))?;
        crate::env::write_private(&self.dir.join("server.key"), self.server.to_text().as_bytes())?;
        for g in &self.gws {
            let conf = format!(
                "[daemon]\nstate_dir = \"{state}\"\ninterfaces = [\"eth0\"]\n\n\
                 [fleet]\ndatabase_url_file = \"{url}\"\nnode = \"{node}\"\n\
                 nodes = [\"gw1\", \"gw2\", \"gw3\", \"{OPS}\"]\n\n\
                 [spa]\nports = [{SPA_PORT}]\nserver_key_file = \"{key}\"\n\n\
                 [[spa.user]]\nname = \"alice\"\nkey = \"{alice}\"\nopen = [\"tcp/{PROTECTED}\"]\n\
                 max_open_for = {MAX_OPEN_FOR}\nscope = \"fleet\"\n\n\
                 [[spa.user]]\nname = \"bob\"\nkey = \"{bob}\"\nopen = [\"tcp/{PROTECTED}\"]\n\
                 max_open_for = {MAX_OPEN_FOR}\n",
                state = self.dir.join(format!("{}-state", g.node)).display(),
                url = self.dir.join("fleet.url").display(),
                node = g.node,
                key = self.dir.join("server.key").display(),
                alice = self.users[0].public(),
                bob = self.users[1].public(),
            );
            crate::env::write_private(&self.dir.join(format!("{}.toml", g.node)), conf.as_bytes())?;
        }
        Ok(())
    }

    fn start(&mut self, i: usize, portcullisd: &Path) -> anyhow::Result<()> {
        let conf = self.dir.join(format!("{}.toml", self.gws[i].node));
        let g = &mut self.gws[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&g.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &g.ns])
            .arg(portcullisd)
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting portcullisd in {}", g.ns))?;
        g.child = Some(child);
        // Ready, and its fleet listener connected (it logs the reconcile).
        for needle in ["ready:", "live fleet grant(s) applied"] {
            let seen = lab::wait_until(Duration::from_secs(15), || g.log_text().contains(needle));
            if !seen {
                bail!("{}: no {needle:?} in its log:\n{}", g.node, g.log_text());
            }
        }
        Ok(())
    }

    /// A trial source no trial has used yet.
    pub fn fresh_source(&mut self) -> anyhow::Result<IpAddr> {
        if self.next >= self.pool {
            bail!("out of trial sources ({})", self.pool);
        }
        self.next += 1;
        Ok(IpAddr::V4(Ipv4Addr::from(u32::from(POOL_BASE) + self.next - 1)))
    }

    /// A native SPA packet from `user` opening [`PROTECTED`] for `allow` for `secs`.
    pub fn packet(&self, user: User, allow: IpAddr, secs: u32) -> anyhow::Result<Vec<u8>> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let IpAddr::V4(a) = allow else { bail!("IPv4 sources only") };
        let svc = Service { proto: Proto::Tcp, port: PROTECTED };
        let req = Request::new(user.name(), now, AllowAddr::V4(a), [svc], secs, &mut urandom)
            .map_err(|e| anyhow::anyhow!("native request: {e}"))?;
        let key = &self.users[usize::from(user == User::Local)];
        native::seal(&req, self.server.public(), key, &mut urandom)
            .map_err(|e| anyhow::anyhow!("native seal: {e}"))
    }

    /// The grants gateway `i`'s kernel holds now (its nftables sets, over netlink).
    pub fn kernel_grants(&self, i: usize) -> anyhow::Result<Vec<LiveGrant>> {
        Ok(in_ns(&self.gws[i].ns, || NftDriver::new().and_then(|mut d| d.list()))??)
    }

    /// Stop every daemon by PID (SIGTERM, then SIGKILL).
    fn stop_all(&mut self) {
        for g in &mut self.gws {
            if let Some(mut c) = g.child.take() {
                if let Some(pid) = i32::try_from(c.id()).ok().filter(|&p| p > 1) {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                let gone = lab::wait_until(Duration::from_secs(3), || matches!(c.try_wait(), Ok(Some(_))));
                if !gone {
                    let _ = c.kill();
                }
                let _ = c.wait();
            }
        }
    }
}

impl Gateway {
    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether its daemon is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        self.stop_all();
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The cluster stops and its directory goes when `pg` drops.
    }
}
