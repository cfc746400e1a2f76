//! The bench's world: a bridged [`Lab`] (server, client, attacker on one segment), a
//! pool of fresh client source addresses, a baseline firewall, a service on the
//! protected port, and the daemons (portcullisd as knock and as SPA daemon, knockd,
//! fwknopd) started and stopped by PID.
//!
//! Addresses: the segment is 192.0.2.0/24 (server .1, client .2, attacker .3). Trial
//! sources are 198.19.4.1 onwards (RFC 2544 benchmark range), all on the client's
//! bridge; the server has 198.19.0.1/16 and a permanent neighbour entry for each, so
//! no ARP exchange is timed. Spoofed floods use 198.18.0.0/17 and 2001:db8:ff00::/40,
//! which nothing in the lab owns; replies to them are not routable and never leave.
//!
//! Baseline firewall in the server (the anchors' "input policy drop"): `inet bench`,
//! priority 10, drops everything but established traffic, ICMP and tcp/22. Knocks and
//! SPA datagrams are captured before netfilter, so every daemon still sees them, and
//! the server answers no knock with a RST. Each daemon then adds its own gate on
//! tcp/22 (portcullis' own table, an iptables DROP with knockd's/fwknopd's ACCEPT
//! rules in front of it, or a nft set for knockd-nft).

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use portcullis_daemon::lab::{self, Lab};
use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey};
use portcullis_proto::{Proto, Service};

use crate::probe;
use crate::procmon;

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
/// First trial source.
const POOL_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 4, 1);

/// The daemons under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// portcullisd, nftables driver.
    Portcullisd,
    /// portcullisd, iptables driver, `iptables-nft-restore` batches (`backend = "iptables-nft"`).
    PortcullisdIptNft,
    /// portcullisd, iptables driver, `iptables-legacy-restore` batches (`backend = "iptables-legacy"`).
    PortcullisdIptLegacy,
    /// knockd, start_command `iptables -I`, stop_command `iptables -D`.
    KnockdIpt,
    /// knockd, start_command `nft add element` with a timeout.
    KnockdNft,
    /// fwknopd (iptables), HMAC-SHA256 + Rijndael, driven by the real `fwknop` client.
    Fwknopd,
    /// portcullisd with `[spa]` (an fwknop stanza with fwknopd's keys and a native
    /// user), driven by packets from the real `fwknop` client.
    PortcullisdSpaFwknop,
    /// The same portcullisd SPA configuration, driven by native packets
    /// (`portcullis_proto::spa::native::seal`, in process).
    PortcullisdSpaNative,
}

/// Which SPA packet an attempt sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaFormat {
    /// Built by the real `fwknop` client (HMAC-SHA256 + Rijndael).
    Fwknop,
    /// portcullis native (X25519 + ChaCha20-Poly1305 + Ed25519), 256 bytes.
    Native,
}

impl Daemon {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Portcullisd => "portcullisd",
            Daemon::PortcullisdIptNft => "portcullisd (iptables-nft)",
            Daemon::PortcullisdIptLegacy => "portcullisd (iptables-legacy)",
            Daemon::KnockdIpt | Daemon::KnockdNft => "knockd",
            Daemon::Fwknopd => "fwknopd",
            Daemon::PortcullisdSpaFwknop => "portcullisd SPA, fwknop format",
            Daemon::PortcullisdSpaNative => "portcullisd SPA, native format",
        }
    }

    /// portcullisd in any configuration.
    pub fn is_portcullisd(self) -> bool {
        matches!(
            self,
            Daemon::Portcullisd
                | Daemon::PortcullisdIptNft
                | Daemon::PortcullisdIptLegacy
                | Daemon::PortcullisdSpaFwknop
                | Daemon::PortcullisdSpaNative
        )
    }

    /// portcullisd's `backend` key for this configuration.
    pub fn backend(self) -> &'static str {
        match self {
            Daemon::PortcullisdIptNft => "iptables-nft",
            Daemon::PortcullisdIptLegacy => "iptables-legacy",
            _ => "nftables",
        }
    }

    /// The SPA packet an attempt sends, or `None` for knocks.
    pub fn spa(self) -> Option<SpaFormat> {
        match self {
            Daemon::Fwknopd | Daemon::PortcullisdSpaFwknop => Some(SpaFormat::Fwknop),
            Daemon::PortcullisdSpaNative => Some(SpaFormat::Native),
            Daemon::Portcullisd
            | Daemon::PortcullisdIptNft
            | Daemon::PortcullisdIptLegacy
            | Daemon::KnockdIpt
            | Daemon::KnockdNft => None,
        }
    }

    /// Firewall column.
    pub fn fw(self) -> &'static str {
        match self {
            Daemon::Portcullisd | Daemon::PortcullisdSpaFwknop | Daemon::PortcullisdSpaNative => {
                "nftables (netlink)"
            }
            Daemon::PortcullisdIptNft => "iptables-nft (driver: restore batches)",
            Daemon::PortcullisdIptLegacy => "iptables-legacy (driver: restore batches)",
            Daemon::KnockdIpt => "iptables",
            Daemon::KnockdNft => "nft set",
            Daemon::Fwknopd => "iptables",
        }
    }
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
    /// Its main process.
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
    keys: (String, String),
    /// Native SPA: the server's X25519 key (written to each portcullisd's key file)
    /// and the bench user's Ed25519 key.
    pub native: (ServerKey, UserKey),
    seq: Cell<u32>,
    started: Vec<u32>,
    last_dir: PathBuf,
    /// Start daemons pinned to [`DAEMON_CPU`] (floods: the flooder has the last CPU).
    pub pin_daemon: bool,
    /// Run client attempts pinned to the last CPU.
    pub pin_client: bool,
    /// Print progress to stderr.
    pub verbose: bool,
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
            keys: (String::new(), String::new()),
            native: (ServerKey::generate(&mut urandom), UserKey::generate(&mut urandom)),
            seq: Cell::new(0),
            started: Vec::new(),
            last_dir: PathBuf::new(),
            pin_daemon: false,
            pin_client: false,
            verbose,
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
            let a = Ipv4Addr::from(u32::from(POOL_BASE) + i);
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
        // fwknop keys, made by the real client.
        let home = self.dir.join("home");
        let keyfile = self.dir.join("fwknop.keys");
        let out = Command::new("fwknop")
            .env("HOME", &home)
            .args(["--key-gen", "--key-gen-file"])
            .arg(&keyfile)
            .stdin(Stdio::null())
            .output()
            .context("running fwknop --key-gen (apt-get install fwknop-client)")?;
        if !out.status.success() {
            bail!("fwknop --key-gen failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = std::fs::read_to_string(&keyfile)?;
        let get = |k: &str| {
            text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        self.keys = (get("KEY_BASE64:"), get("HMAC_KEY_BASE64:"));
        if self.keys.0.is_empty() || self.keys.1.is_empty() {
            bail!("could not read keys from fwknop --key-gen output");
        }
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
        Ok(Ipv4Addr::from(u32::from(POOL_BASE) + i))
    }

    /// Reset the server firewall to the baseline (flush everything in the server
    /// namespace only) plus `extra` nft text.
    pub fn reset_firewall(&self, extra: &str) -> anyhow::Result<()> {
        let rules = format!(
            "flush ruleset\n\
             table inet bench {{\n\
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
        if self.legacy_used.get() {
            // `nft flush ruleset` does not reach x_tables; portcullisd leaves its chain in
            // place at exit (a restart must not close holes), so flush table filter here
            // (no --noflush: the table is replaced, our chains go), server namespace only.
            let empty = self.dir.join("legacy-empty.rules");
            std::fs::write(
                &empty,
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
            )?;
            for bin in ["iptables-legacy-restore", "ip6tables-legacy-restore"] {
                let (ns, file) = (self.lab.server.clone(), empty.display().to_string());
                lab::sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sh",
                    "-c",
                    &format!("exec {bin} -w < \"$1\""),
                    "sh",
                    &file,
                ])?;
            }
        }
        Ok(())
    }

    /// Note that iptables-legacy (x_tables) is about to be used in the server namespace,
    /// so that every later [`Env::reset_firewall`] flushes it as well.
    pub fn mark_legacy(&self) {
        self.legacy_used.set(true);
    }

    fn iptables(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["iptables", "-w"];
        full.extend_from_slice(args);
        run_in(&self.lab.server, &full).map(|_| ())
    }

    /// Start `d` with a clean firewall and wait until it opens the door once.
    /// Start portcullisd with `conf` in namespace `srv` and wait for its `ready:` line.
    fn spawn_portcullisd(
        &mut self,
        srv: &str,
        pin: bool,
        conf: &Path,
        logf: std::fs::File,
        log: &Path,
    ) -> anyhow::Result<u32> {
        let (bin, conf) = (self.bins.portcullisd.display().to_string(), conf.display().to_string());
        let c = self.lab.spawn(
            srv,
            &pinned(pin, &[&bin, "run", "--config", &conf]),
            Stdio::null(),
            Stdio::from(logf),
        )?;
        let pid = c.id();
        wait_for_log(log, "ready:", Duration::from_secs(10))?;
        Ok(pid)
    }

    pub fn start(&mut self, d: Daemon) -> anyhow::Result<Running> {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        let slug: String =
            d.name().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let dir = self.dir.join(format!("{n}-{slug}"));
        std::fs::create_dir_all(&dir)?;
        self.last_dir = dir.clone();
        let pin = self.pin_daemon;
        let srv = self.lab.server.clone();
        let log = dir.join("daemon.log");
        let logf = std::fs::File::create(&log)?;
        let s = |p: &Path| p.display().to_string();
        let seq = SEQUENCE.map(|p| p.to_string()).join(",");
        let pid = match d {
            Daemon::Portcullisd | Daemon::PortcullisdIptNft | Daemon::PortcullisdIptLegacy => {
                if d == Daemon::PortcullisdIptLegacy {
                    self.mark_legacy();
                }
                self.reset_firewall("")?;
                let conf = dir.join("portcullis.toml");
                std::fs::write(
                    &conf,
                    format!(
                        "[daemon]\nstate_dir = \"{}\"\ninterfaces = [\"eth0\"]\nbackend = \"{}\"\n\n[[door]]\nname = \"bench\"\n\
                         sequence = [{seq}]\nseq_timeout = {SEQ_TIMEOUT_S}\nopen = [\"tcp/{PROTECTED}\"]\nopen_for = {GRANT_S}\n",
                        s(&dir.join("state")),
                        d.backend()
                    ),
                )?;
                self.spawn_portcullisd(&srv, pin, &conf, logf, &log)?
            }
            Daemon::PortcullisdSpaFwknop | Daemon::PortcullisdSpaNative => {
                self.reset_firewall("")?;
                let key = dir.join("server.key");
                write_private(&key, self.native.0.to_text().as_bytes())?;
                let conf = dir.join("portcullis.toml");
                std::fs::write(
                    &conf,
                    format!(
                        "[daemon]\nstate_dir = \"{}\"\ninterfaces = [\"eth0\"]\n\n\
                         [spa]\nports = [{SPA_PORT}]\nserver_key_file = \"{}\"\n\n\
                         [[spa.user]]\nname = \"{NATIVE_USER}\"\nkey = \"{}\"\nopen = [\"tcp/{PROTECTED}\"]\nmax_open_for = {GRANT_S}\n\n\
                         [[spa.fwknop]]\nname = \"bench\"\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n\
                         hmac_digest_type = \"sha256\"\nopen_ports = [\"tcp/{PROTECTED}\"]\nfw_access_timeout = {GRANT_S}\n",
                        s(&dir.join("state")),
                        s(&key),
                        self.native.1.public(),
                        self.keys.0,
                        self.keys.1
                    ),
                )?;
                self.spawn_portcullisd(&srv, pin, &conf, logf, &log)?
            }
            Daemon::KnockdIpt | Daemon::KnockdNft => {
                let (start, stop) = if d == Daemon::KnockdIpt {
                    self.reset_firewall("")?;
                    self.iptables(&[
                        "-A",
                        "INPUT",
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "ACCEPT",
                    ])?;
                    self.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"])?;
                    (
                        format!("/usr/sbin/iptables -w -I INPUT 1 -s %IP% -p tcp --dport {PROTECTED} -j ACCEPT"),
                        format!("stop_command = /usr/sbin/iptables -w -D INPUT -s %IP% -p tcp --dport {PROTECTED} -j ACCEPT\n"),
                    )
                } else {
                    self.reset_firewall(&format!(
                        "table inet knock {{\n set allow4 {{ type ipv4_addr; flags timeout; }}\n\
                         chain input {{ type filter hook input priority 0; policy accept;\n\
                           ct state established,related accept\n\
                           ip saddr != @allow4 tcp dport {PROTECTED} drop\n\
                           meta nfproto ipv6 tcp dport {PROTECTED} drop\n }}\n}}\n"
                    ))?;
                    (
                        format!("/usr/sbin/nft add element inet knock allow4 {{ %IP% timeout {GRANT_S}s }}"),
                        String::new(),
                    )
                };
                let conf = dir.join("knockd.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "[options]\n  LogFile = {}\n  PidFile = {}\n  Interface = eth0\n\n[bench]\n  sequence = {seq}\n  \
                         seq_timeout = {SEQ_TIMEOUT_S}\n  tcpflags = syn\n  start_command = {start}\n  cmd_timeout = {GRANT_S}\n  {stop}",
                        s(&dir.join("knockd.log")),
                        s(&dir.join("knockd.pid"))
                    ),
                )?;
                let c = self.lab.spawn(
                    &srv,
                    &pinned(pin, &["knockd", "-i", "eth0", "-c", &s(&conf)]),
                    Stdio::null(),
                    Stdio::from(logf),
                )?;
                let pid = c.id();
                wait_for_log(&dir.join("knockd.log"), "listening on", Duration::from_secs(10)).ok();
                pid
            }
            Daemon::Fwknopd => {
                self.reset_firewall("")?;
                self.iptables(&[
                    "-A",
                    "INPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ])?;
                self.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"])?;
                let run = dir.join("run");
                std::fs::create_dir_all(&run)?;
                let conf = dir.join("fwknopd.conf");
                let access = dir.join("access.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "PCAP_INTF eth0;\nPCAP_FILTER udp port {SPA_PORT};\nFWKNOP_RUN_DIR {};\n\
                         ENABLE_DIGEST_PERSISTENCE N;\nEXIT_AT_INTF_DOWN N;\n",
                        s(&run)
                    ),
                )?;
                std::fs::write(
                    &access,
                    format!(
                        "SOURCE ANY\nOPEN_PORTS tcp/{PROTECTED}\nKEY_BASE64 {}\nHMAC_KEY_BASE64 {}\nHMAC_DIGEST_TYPE sha256\n\
                         FW_ACCESS_TIMEOUT {GRANT_S}\n",
                        self.keys.0, self.keys.1
                    ),
                )?;
                let c = self.lab.spawn(
                    &srv,
                    &pinned(
                        pin,
                        &[
                            "fwknopd",
                            "-f",
                            "-c",
                            &s(&conf),
                            "-a",
                            &s(&access),
                            "-i",
                            "eth0",
                            "-p",
                            &s(&run.join("fwknopd.pid")),
                            "-d",
                            &s(&run.join("digest.cache")),
                        ],
                    ),
                    Stdio::null(),
                    Stdio::from(logf),
                )?;
                c.id()
            }
        };
        self.started.push(pid);
        let running = Running { daemon: d, pid };
        // Warm-up: the door must open once (also proves the capture is live).
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if procmon::sample(pid).is_none() {
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
        if self.verbose {
            self.say(format!("stopping {} (pid {})", r.daemon.name(), r.pid));
        }
        kill_descendants(r.pid);
        // SIGTERM first so portcullisd logs its packet counters, then make sure.
        if let Ok(p) = i32::try_from(r.pid) {
            if p > 1 {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGTERM);
                let end = Instant::now() + Duration::from_secs(2);
                while Instant::now() < end && procmon::sample(r.pid).is_some_and(|_| !is_zombie(r.pid)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
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

    /// An SPA packet made by the real `fwknop` client in the client namespace, asking
    /// to open tcp/22 for `allow` (`-T -B`: build and save, we send it ourselves so the
    /// send time is known to the microsecond).
    pub fn spa_packet(&self, allow: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
        let out = self.dir.join(format!("spa-{allow}"));
        let home = self.dir.join("home");
        let o = self.lab.exec(
            &self.lab.client,
            &[
                "env",
                &format!("HOME={}", home.display()),
                "fwknop",
                "-A",
                &format!("tcp/{PROTECTED}"),
                "-a",
                &allow.to_string(),
                "-D",
                lab::SERVER4,
                "--use-hmac",
                "--key-base64-rijndael",
                &self.keys.0,
                "--key-base64-hmac",
                &self.keys.1,
                "--no-save-args",
                "--no-rc-file",
                "-T",
                "-B",
                &out.display().to_string(),
            ],
        )?;
        if !o.status.success() {
            bail!("fwknop failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let data = std::fs::read(&out)?;
        let _ = std::fs::remove_file(&out);
        Ok(data.trim_ascii().to_vec())
    }

    /// A native SPA packet for tcp/22, allow address `allow` (explicit, as the format
    /// recommends), sealed in process for this lab's server key and signed by the
    /// bench user: 256 bytes, sent by the caller as one datagram.
    pub fn native_packet(&self, allow: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let req = Request::new(
            NATIVE_USER,
            now,
            AllowAddr::V4(allow),
            [Service { proto: Proto::Tcp, port: PROTECTED }],
            u32::try_from(GRANT_S)?,
            &mut urandom,
        )
        .map_err(|e| anyhow::anyhow!("native request: {e}"))?;
        native::seal(&req, self.native.0.public(), &self.native.1, &mut urandom)
            .map_err(|e| anyhow::anyhow!("native seal: {e}"))
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

/// Write a file readable by its owner only (portcullisd refuses a group/world-readable
/// server key).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// CPU daemons are pinned to in floods (`taskset`; the flooder takes the last CPU), so
/// that runs are comparable: the scheduler cannot put attacker and daemon on one core
/// in one run and on two in the next. No pinning on a single-CPU machine.
pub const DAEMON_CPU: &str = "0";

/// Number of CPUs this process may use.
pub fn cpus() -> usize {
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
fn pinned<'a>(pin: bool, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::new();
    if pin && cpus() > 1 {
        v.extend(["taskset", "-c", DAEMON_CPU]);
    }
    v.extend_from_slice(args);
    v
}

/// SIGKILL every descendant of `pid` (knockd's forked command children), by PID.
fn kill_descendants(pid: u32) {
    for c in procmon::descendants(pid) {
        if let Ok(p) = i32::try_from(c) {
            if p > 1 {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn wait_for_log(path: &Path, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(f) = std::fs::File::open(path) {
            if BufReader::new(f).lines().map_while(Result::ok).any(|l| l.contains(needle)) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "`{needle}` not in {} after {limit:?}: {}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    )
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
