//! The validated configuration: what the rest of the daemon runs on. Built from native
//! TOML by [`super::validate`] and from knockd.conf by [`super::knockd`]; nothing here
//! reads files or knows about syntax.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use portcullis_proto::{FlagFilter, Service};

use super::api::ApiConfig;
use super::spa::SpaConfig;

/// Default cap on tracked (source, door) knock attempts.
pub const DEFAULT_MAX_TRACKED: usize = 1_000_000;
/// Default kernel set size (simultaneous grants per address family).
pub const DEFAULT_MAX_GRANTS: u32 = 262_144;
/// Longest sequence knockd accepts; we keep the same limit.
pub const MAX_SEQUENCE: usize = 32;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Daemon-wide settings.
    pub daemon: DaemonSettings,
    /// The doors, in file order.
    pub doors: Vec<Door>,
    /// Single-packet authorization, if configured.
    pub spa: Option<SpaConfig>,
    /// The local REST API, if configured (`[api]`).
    pub api: Option<ApiConfig>,
}

/// Daemon-wide settings (`[daemon]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Interfaces to sniff on.
    pub interfaces: Interfaces,
    /// Where persistent state lives.
    pub state_dir: PathBuf,
    /// Where log lines go.
    pub log: LogTarget,
    /// Cap on tracked (source, door) knock attempts.
    pub max_tracked: usize,
    /// Firewall backend.
    pub backend: Backend,
    /// Kernel set size: simultaneous grants per address family.
    pub max_grants: u32,
    /// Also append log lines to this file (knockd `LogFile`).
    pub log_file: Option<PathBuf>,
    /// Write our PID here at start, remove it at exit (knockd `PidFile`).
    pub pid_file: Option<PathBuf>,
    /// A start/stop command still running after this long is killed (its process group).
    pub command_time_limit: Duration,
    /// Source prefixes the firewall never gates (the management network).
    pub never_gate: Vec<crate::firewall::Prefix>,
}

/// Default for [`DaemonSettings::command_time_limit`].
pub const DEFAULT_COMMAND_TIME_LIMIT: Duration = Duration::from_secs(30);

/// Which interfaces to sniff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface, including ones that appear later.
    All,
    /// Only these (they may be absent or down at start; they are picked up when they appear).
    Named(Vec<String>),
}

/// Linux interface names: 1-15 bytes, no '/', no whitespace, not "." or "..".
pub fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && n.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Log destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (the default; systemd captures it into the journal).
    Stderr,
    /// Classic syslog via syslog(3), facility daemon.
    Syslog,
    /// The systemd journal, with structured fields.
    Journald,
}

/// Firewall backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables over netlink (the default).
    Nftables,
    /// iptables/ip6tables chains updated with `*tables-restore` (daemon-side expiry).
    Iptables(IptablesVariant),
    /// Enforce nothing: log what would be opened (dry run).
    None,
}

/// Which iptables implementation the `iptables` backend drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    /// Whatever `iptables -V` says the system uses (nf_tables or legacy).
    Auto,
    /// `iptables-legacy-restore` / `ip6tables-legacy-restore` (x_tables).
    Legacy,
    /// `iptables-nft-restore` / `ip6tables-nft-restore` (nf_tables with xt compat).
    Nft,
}

impl fmt::Display for LogTarget {
    /// The config spelling (`log = "..."`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogTarget::Stderr => "stderr",
            LogTarget::Syslog => "syslog",
            LogTarget::Journald => "journald",
        })
    }
}

impl fmt::Display for Backend {
    /// The config spelling (`backend = "..."`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nftables => "nftables",
            Backend::Iptables(IptablesVariant::Auto) => "iptables",
            Backend::Iptables(IptablesVariant::Legacy) => "iptables-legacy",
            Backend::Iptables(IptablesVariant::Nft) => "iptables-nft",
            Backend::None => "none",
        })
    }
}

/// A command run for a knocker. The knocker's address is always passed as data,
/// never spliced into text a shell parses (see [`crate::actions::subst`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// A `/bin/sh -c` command line, knockd style; `%IP%` becomes `"$1"`.
    Shell(String),
    /// An argv run without a shell; `%IP%` inside an element becomes the address.
    Argv(Vec<String>),
}

/// knockd-style commands of a door, already resolved per address family
/// (`*_6` falls back to the IPv4 command when absent; empty means nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Commands {
    /// Run when an IPv4 knocker completes the sequence.
    pub start4: Option<CommandLine>,
    /// Run when an IPv6 knocker completes the sequence.
    pub start6: Option<CommandLine>,
    /// Run `cmd_timeout` after `start4`.
    pub stop4: Option<CommandLine>,
    /// Run `cmd_timeout` after `start6`.
    pub stop6: Option<CommandLine>,
    /// Time between the start and the stop command (knockd `Cmd_Timeout`).
    pub cmd_timeout: Duration,
}

/// A knockd `One_Time_Sequences` file as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeSequences {
    /// The file; used lines get a `#` written over their first byte.
    pub path: PathBuf,
    /// The unused sequences, in file order; the first one is the door's current one.
    pub remaining: Vec<OneTimeLine>,
}

/// One unused line of a one-time sequences file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeLine {
    /// 1-based line number (for logs).
    pub line: usize,
    /// Byte offset of the line's first byte (overwritten with `#` once used).
    pub offset: u64,
    /// The knocks.
    pub sequence: Vec<Service>,
}

/// A door: a knock sequence and what it opens.
#[derive(Debug, Clone, PartialEq)]
pub struct Door {
    /// Name used in logs.
    pub name: String,
    /// The knocks, in order.
    pub sequence: Vec<Service>,
    /// Time allowed from the first knock to the last.
    pub seq_timeout: Duration,
    /// Which TCP knocks count.
    pub flags: FlagFilter,
    /// What a correct sequence opens for the knocking address.
    pub open: Vec<Service>,
    /// How long the grant lasts (kernel-enforced with nftables).
    pub open_for: Duration,
    /// Only knocks addressed to this IP count (routers, VIPs); default: any local address.
    pub target: Option<IpAddr>,
    /// Commands run for the knocker (knockd `Start_Command` and friends).
    pub commands: Option<Commands>,
    /// knockd `One_Time_Sequences`: `sequence` is the first remaining line (empty
    /// when the file is exhausted: the door is disabled).
    pub one_time: Option<OneTimeSequences>,
}

impl Door {
    /// Every knock this door may ever need: its sequence plus, for one-time doors,
    /// every unused sequence still to come (the capture filter must pass them all).
    pub fn all_knocks(&self) -> Vec<Service> {
        let mut out = self.sequence.clone();
        if let Some(ot) = &self.one_time {
            out.extend(ot.remaining.iter().flat_map(|l| l.sequence.iter().copied()));
        }
        out
    }
}

impl Config {
    /// Every service some door opens (sorted, unique): these are the protected ports.
    pub fn protected(&self) -> Vec<Service> {
        let mut set: BTreeSet<Service> = self.doors.iter().flat_map(|d| d.open.iter().copied()).collect();
        if let Some(spa) = &self.spa {
            set.extend(spa.protect.iter().copied());
            set.extend(spa.users.values().flat_map(|u| u.open.iter().copied()));
            set.extend(spa.stanzas.iter().flat_map(|s| s.open_ports.iter().copied()));
        }
        set.into_iter().collect()
    }
}
