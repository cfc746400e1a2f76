//! The bench's world: a bridged [`Lab`] (server, client, attacker on one segment), a
//! pool of fresh client source addresses, a baseline firewall, a service on the
//! protected port, and the daemons (portcullisd as knock and as SPA daemon, knockd,
//! fwknopd; one module each) started and stopped by PID.
//!
//! Addresses: the segment is 192.0.2.0/24 (server .1, client .2, attacker .3). Trial
//! sources are in 198.19.4.0–198.19.203.255 (RFC 2544 benchmark range), all on the
//! client's bridge; the server has 198.19.0.1/16 and a permanent neighbour entry for
//! each, so no ARP exchange is timed. Consecutive sources lie in different /24s
//! ([`pool_addr`]): each trial is a new client, and a row of trials must not look like
//! one /24 to portcullisd's per-prefix open budget (`opens_per_prefix`, 30 a minute per
//! /24 by default), which would refuse the 31st open of a row. Spoofed floods use 198.18.0.0/17 and 2001:db8:ff00::/40,
//! which nothing in the lab owns; replies to them are not routable and never leave.
//!
//! Baseline firewall in the server (the anchors' "input policy drop"): `inet bench`,
//! priority 10, drops everything but established traffic, ICMP and tcp/22. Knocks and
//! SPA datagrams are captured before netfilter, so every daemon still sees them, and
//! the server answers no knock with a RST. Each daemon then adds its own gate on
//! tcp/22: portcullis' own table; the lab's iptables [`Baseline`] (established
//! accepted, tcp/22 dropped) with knockd's ACCEPT rules in front of it; iptables INPUT
//! policy DROP with fwknopd's (or portcullisd-as-fwknopd's) ACCEPT chain in front of
//! it; or an nft set for knockd-nft.

use std::cell::Cell;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
#[cfg(doc)]
use portcullis_daemon::lab::Baseline;
use portcullis_daemon::lab::{self, Lab};
use portcullis_proto::spa::native::{ServerKey, UserKey};

use crate::probe;
use crate::procmon;

mod daemon;
mod fwknopd;
mod kernel;
mod knockd;
mod portcullisd;
mod process;
mod xtables;

pub use daemon::{Daemon, SpaFormat};
use fwknopd::FwknopKeys;
pub use process::pin_to_last_cpu;
use process::{kill_descendants, terminate};

/// The protected service port.
pub const PROTECTED: u16 = 22;
/// The knock sequence (TCP SYN).
pub const SEQUENCE: [u16; 3] = [7000, 8000, 9000];
/// fwknopd's SPA port.
pub const SPA_PORT: u16 = 62201;
/// Door timeouts as in the anchors: seq_timeout and cmd_timeout/open_for/FW_ACCESS_TIMEOUT.
pub const SEQ_TIMEOUT_S: u64 = 5;
/// How long a grant lasts.
pub const GRANT_S: u64 = 5;
/// The native SPA user portcullisd knows (its public key in `[[spa.user]]`).
pub const NATIVE_USER: &str = "bench";
/// Trial source addresses available.
const POOL: u32 = 3000;
/// /24 prefixes the trial sources are spread over (198.19.4.0/24 onwards).
const POOL_PREFIXES: u32 = 200;

/// The `i`-th trial source: 198.19.(4 + i mod 200).(1 + i / 200), so that any 200
/// consecutive sources lie in 200 different /24s.
fn pool_addr(i: u32) -> Ipv4Addr {
    // Both octets fit: at most 203 and 15.
    const _: () = assert!(4 + POOL_PREFIXES <= 255 && POOL / POOL_PREFIXES < 254);
    let (net, host) = (4 + i % POOL_PREFIXES, 1 + i / POOL_PREFIXES);
    Ipv4Addr::new(198, 19, net as u8, host as u8)
}

/// Paths of the programs we run.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `portcullisd` (release build, next to this binary).
    pub portcullisd: PathBuf,
}

/// A running daemon.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    /// Which.
    pub daemon: Daemon,
    /// Its main process (0 in kernel-only mode, which has none).
    pub pid: u32,
}

/// The lab plus everything the scenarios share.
pub struct Env {
    /// Namespaces and started processes.
    pub lab: Lab,
    /// Scratch directory (configs, logs, fwknop HOME); removed on drop.
    pub dir: PathBuf,
    /// Program paths.
    pub bins: Bins,
    /// `/run/netns/...` of server, client, attacker.
    pub srv_ns: PathBuf,
    /// Client namespace path.
    pub cli_ns: PathBuf,
    /// Attacker namespace path.
    pub atk_ns: PathBuf,
    next_src: Cell<u32>,
    /// x_tables (iptables-legacy) were used in the server: reset them too.
    legacy_used: Cell<bool>,
    listener_stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
    /// fwknop keys (fwknopd and portcullisd's fwknop stanza), from the real client.
    keys: FwknopKeys,
    /// Native SPA: the server's X25519 key (written to each portcullisd's key file)
    /// and the bench user's Ed25519 key.
    pub native: (ServerKey, UserKey),
    seq: Cell<u32>,
    started: Vec<u32>,
    last_dir: PathBuf,
    /// Start daemons pinned to [`process::DAEMON_CPU`] (floods: the flooder has the last CPU).
    pub pin_daemon: bool,
    /// Run client attempts pinned to the last CPU.
    pub pin_client: bool,
    /// Print progress to stderr.
    pub verbose: bool,
    /// Extra fwknop stanzas (random keys, SOURCE ANY) placed before the real one in
    /// portcullisd's SPA configuration: what a large access.conf costs per junk packet.
    pub spa_decoy_stanzas: usize,
}

/// One start of a daemon: its own scratch directory, the file its stdout and stderr
/// go to, and whether it is pinned to [`process::DAEMON_CPU`].
struct Instance {
    dir: PathBuf,
    log: PathBuf,
    pin: bool,
}

impl Instance {
    /// The log, opened for appending (one handle per process started).
    fn log_file(&self) -> anyhow::Result<File> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.log);
        f.with_context(|| format!("opening {}", self.log.display()))
    }
}

/// Server address as an `IpAddr`.
pub fn server4() -> IpAddr {
    IpAddr::V4(lab::SERVER4.parse().unwrap_or(Ipv4Addr::new(192, 0, 2, 1)))
}

fn run_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    let out = lab::sh(&full)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Env {
    /// Build the lab and everything in it.
    pub fn new(bins: Bins, verbose: bool) -> anyhow::Result<Env> {
        let lab = Lab::new_bridged("bench")?;
        let dir = std::env::temp_dir().join(format!("pc-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home"))?;
        let keys = FwknopKeys::generate(&dir.join("home"), &dir.join("fwknop.keys"))?;
        let p = |ns: &str| PathBuf::from("/run/netns").join(ns);
        let mut env = Env {
            srv_ns: p(&lab.server),
            cli_ns: p(&lab.client),
            atk_ns: p(&lab.other),
            lab,
            dir,
            bins,
            next_src: Cell::new(0),
            legacy_used: Cell::new(false),
            listener_stop: Arc::new(AtomicBool::new(false)),
            listener: None,
            keys,
            native: (ServerKey::generate(&mut urandom), UserKey::generate(&mut urandom)),
            seq: Cell::new(0),
            started: Vec::new(),
            last_dir: PathBuf::new(),
            pin_daemon: false,
            pin_client: false,
            verbose,
            spa_decoy_stanzas: 0,
        };
        env.setup()?;
        Ok(env)
    }

    fn setup(&mut self) -> anyhow::Result<()> {
        let (s, c) = (self.lab.server.clone(), self.lab.client.clone());
        lab::sh(&["ip", "-n", &s, "addr", "add", "198.19.0.1/16", "dev", "eth0"])?;
        lab::sh(&["ip", "-n", &c, "addr", "add", "198.19.0.2/16", "dev", lab::BRIDGE])?;
        let mac =
            run_in(&c, &["cat", &format!("/sys/class/net/{}/address", lab::BRIDGE)])?.trim().to_string();
        let (mut cli_batch, mut srv_batch) = (String::new(), String::new());
        for i in 0..POOL {
            let a = pool_addr(i);
            let _ = writeln!(cli_batch, "addr add {a}/16 dev {}", lab::BRIDGE);
            let _ = writeln!(srv_batch, "neigh replace {a} lladdr {mac} dev eth0 nud permanent");
        }
        for (ns, text, name) in [(&c, &cli_batch, "cli.batch"), (&s, &srv_batch, "srv.batch")] {
            let f = self.dir.join(name);
            std::fs::write(&f, text)?;
            lab::sh(&["ip", "-n", ns, "-batch", &f.display().to_string()])?;
        }
        // Learn the server's MAC once (client and attacker), so no trial waits for ARP/ND.
        // (A connection attempt to a closed port: the RST proves the path, no firewall yet.)
        for ns in [&c, &self.lab.other.clone()] {
            for a in [lab::SERVER4, lab::SERVER6] {
                let p = self.lab.probe(ns, a.parse()?, 9, Duration::from_secs(1))?;
                if p != lab::Probe::Closed {
                    bail!("server {a} not reachable from {ns}: {p:?}");
                }
            }
        }
        // A service on the protected port: a complete handshake means "open".
        let stop = self.listener_stop.clone();
        let srv = self.srv_ns.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.listener = Some(std::thread::spawn(move || {
            let r = (|| -> anyhow::Result<TcpListener> {
                lab::enter(&srv)?;
                let l = TcpListener::bind(("::", PROTECTED))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })();
            let l = match r {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let end = Instant::now() + Duration::from_secs(3600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                match l.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        rx.recv().context("listener thread")??;
        Ok(())
    }

    /// Progress line on stderr.
    pub fn say(&self, msg: impl AsRef<str>) {
        eprintln!("[bench] {}", msg.as_ref());
    }

    /// A source address no trial has used yet.
    pub fn fresh_source(&self) -> anyhow::Result<Ipv4Addr> {
        let i = self.next_src.get();
        if i >= POOL {
            bail!("out of fresh client source addresses ({POOL})");
        }
        self.next_src.set(i + 1);
        Ok(pool_addr(i))
    }

    /// Reset the server firewall to the baseline (flush everything in the server
    /// namespace only: nftables, x_tables once iptables-legacy was used, ipsets) plus
    /// `extra` nft text.
    pub fn reset_firewall(&self, extra: &str) -> anyhow::Result<()> {
        // Flush first on its own: iptables-nft rules may reference ipsets, which go
        // next. x_tables and ipsets are not part of the nftables ruleset.
        run_in(&self.lab.server, &["nft", "flush", "ruleset"])?;
        if self.legacy_used.get() {
            self.reset_xtables()?;
        }
        self.destroy_ipsets()?;
        let rules = format!(
            "table inet bench {{\n\
               chain input {{\n\
                 type filter hook input priority 10; policy drop;\n\
                 ct state established,related accept\n\
                 iif lo accept\n\
                 meta l4proto {{ icmp, ipv6-icmp }} accept\n\
                 tcp dport {PROTECTED} accept\n\
               }}\n\
             }}\n{extra}"
        );
        let f = self.dir.join("base.nft");
        std::fs::write(&f, rules)?;
        run_in(&self.lab.server, &["nft", "-f", &f.display().to_string()])?;
        Ok(())
    }

    /// Note that iptables-legacy (x_tables) is about to be used in the server namespace,
    /// so that every later [`Env::reset_firewall`] flushes it as well.
    pub fn mark_legacy(&self) {
        self.legacy_used.set(true);
    }

    /// Start `d` with a clean firewall and wait until it opens the door once.
    pub fn start(&mut self, d: Daemon) -> anyhow::Result<Running> {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        let slug: String =
            d.name().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let dir = self.dir.join(format!("{n}-{slug}"));
        std::fs::create_dir_all(&dir)?;
        self.last_dir = dir.clone();
        let at = Instance { log: dir.join("daemon.log"), dir, pin: self.pin_daemon };
        let pid = match d {
            Daemon::Portcullisd
            | Daemon::PortcullisdOneProcess
            | Daemon::PortcullisdIptNft
            | Daemon::PortcullisdIptLegacy => self.start_portcullisd_knock(d, &at)?,
            Daemon::PortcullisdSpaFwknop | Daemon::PortcullisdSpaNative | Daemon::PortcullisdSpaKnock => {
                self.start_portcullisd_spa(&at)?
            }
            Daemon::PortcullisdFwknopdConf => self.start_portcullisd_fwknopd_conf(&at)?,
            Daemon::KnockdIpt | Daemon::KnockdNft => self.start_knockd(d, &at)?,
            Daemon::Fwknopd => self.start_fwknopd(&at)?,
            Daemon::KernelNft | Daemon::KernelIpt => self.start_kernel(d, &at)?,
        };
        if !d.is_kernel() {
            self.started.push(pid);
        }
        let running = Running { daemon: d, pid };
        // Warm-up: the door must open once (also proves the capture is live).
        let log = at.log;
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if !d.is_kernel() && procmon::sample(pid).is_none() {
                bail!(
                    "{} exited at start; log: {}",
                    d.name(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if self.attempt(d, Duration::from_millis(1500))?.is_some() {
                break;
            }
            if Instant::now() > end {
                bail!(
                    "{} never opened the door; log: {}",
                    d.name(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        if self.verbose {
            self.say(format!("{} ({}) ready, pid {pid}", d.name(), d.fw()));
        }
        Ok(running)
    }

    /// Stop a daemon and whatever it forked (knockd's command children), by PID.
    pub fn stop(&mut self, r: Running) {
        if r.daemon.is_kernel() {
            return; // no process; the next reset_firewall removes the ruleset
        }
        if self.verbose {
            self.say(format!("stopping {} (pid {})", r.daemon.name(), r.pid));
        }
        kill_descendants(r.pid);
        // SIGTERM first so portcullisd logs its packet counters, then make sure.
        terminate(r.pid, Duration::from_secs(2));
        self.lab.kill(r.pid);
        self.started.retain(|&p| p != r.pid);
    }

    /// One knock or SPA from a fresh source, then wait up to `limit` for the protected
    /// port to answer. `Some(latency)` if it opened.
    pub fn attempt(&self, d: Daemon, limit: Duration) -> anyhow::Result<Option<Duration>> {
        let (_, h) = self.attempt_async(d, limit, probe::PROBE_EVERY)?;
        h.join().map_err(|_| anyhow::anyhow!("attempt thread panicked"))?
    }

    /// Start an attempt on its own thread (legit knocks during floods run side by
    /// side). Returns the source it uses.
    pub fn attempt_async(
        &self,
        d: Daemon,
        limit: Duration,
        every: Duration,
    ) -> anyhow::Result<(Ipv4Addr, JoinHandle<anyhow::Result<Option<Duration>>>)> {
        let src = self.fresh_source()?;
        let spa = match d.spa() {
            Some(SpaFormat::Fwknop) => Some(self.spa_packet(src)?),
            Some(SpaFormat::Native) => Some(self.native_packet(src)?),
            None => None,
        };
        let ns = self.cli_ns.clone();
        let pin = self.pin_client;
        Ok((src, std::thread::spawn(move || attempt_in(&ns, IpAddr::V4(src), spa, limit, every, pin))))
    }

    /// The newest daemon's log (stderr, or knockd's LogFile).
    pub fn daemon_log(&self) -> String {
        let mut s = String::new();
        for f in ["daemon.log", "knockd.log"] {
            s.push_str(&std::fs::read_to_string(self.last_dir.join(f)).unwrap_or_default());
        }
        s
    }

    /// `rx_packets` of the server's `eth0`.
    pub fn server_rx(&self) -> u64 {
        run_in(&self.lab.server, &["cat", "/sys/class/net/eth0/statistics/rx_packets"])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn attempt_in(
    ns: &Path,
    src: IpAddr,
    spa: Option<Vec<u8>>,
    limit: Duration,
    every: Duration,
    pin: bool,
) -> anyhow::Result<Option<Duration>> {
    lab::enter(ns)?;
    if pin {
        pin_to_last_cpu();
    }
    let dst = server4();
    let t0 = match spa {
        Some(p) => probe::send_udp(src, SocketAddr::new(dst, SPA_PORT), &p)?,
        None => probe::knock_tcp(src, dst, &SEQUENCE)?,
    };
    Ok(probe::await_open(src, SocketAddr::new(dst, PROTECTED), t0, limit, every)?)
}

/// Fill `buf` from the kernel's CSPRNG (keys, nonces, ephemeral secrets). Falls back
/// to the bench's time-seeded generator only if `/dev/urandom` cannot be read, which
/// is acceptable for throwaway lab keys.
pub fn urandom(buf: &mut [u8]) {
    use std::io::Read as _;
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).is_ok();
    if !ok {
        crate::stats::Rng::from_time().fill(buf);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for &pid in &self.started {
            kill_descendants(pid);
        }
        self.listener_stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The Lab's own drop kills started processes by PID and deletes the namespaces.
    }
}

/// Write a file readable by its owner only (portcullisd refuses a group/world-readable
/// server key, or an access.conf holding keys).
pub(super) fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{pool_addr, POOL, POOL_PREFIXES};

    #[test]
    fn pool_sources_are_distinct_and_consecutive_ones_in_different_slash24s() {
        let all: HashSet<_> = (0..POOL).map(pool_addr).collect();
        assert_eq!(all.len(), POOL as usize);
        assert!(all.iter().all(|a| {
            let o = a.octets();
            o[0] == 198 && o[1] == 19 && (4..=203).contains(&o[2]) && (1..=254).contains(&o[3])
        }));
        assert_eq!(pool_addr(0).to_string(), "198.19.4.1");
        assert_eq!(pool_addr(POOL_PREFIXES).to_string(), "198.19.4.2");
        for start in [0, 17, POOL - POOL_PREFIXES] {
            let nets: HashSet<_> = (start..start + POOL_PREFIXES).map(|i| pool_addr(i).octets()[2]).collect();
            assert_eq!(nets.len(), POOL_PREFIXES as usize);
        }
    }
}
