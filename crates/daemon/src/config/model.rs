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
    /// Fleet mode (`[fleet]`), if configured.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Bounds on knock opens (`[daemon]` and `[[door]]` keys).
    pub limits: super::Limits,
    /// The grant records (`[store]`).
    pub store: super::StoreSettings,
    /// Things the reader could not honour and did not refuse (fwknopd.conf keys that are
    /// moot here, unknown access.conf keys), each with its file and line: logged once at
    /// start and shown by `check`.
    pub notes: Vec<String>,
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
    pub never_gate: Vec<crate::firewall::prefix::Prefix>,
    /// How the firewall backend treats protected services.
    pub firewall: FirewallSettings,
    /// Remove what the firewall backend owns (every grant) when starting (fwknopd
    /// `FLUSH_IPT_AT_INIT`); otherwise live grants are kept across a restart.
    pub flush_at_start: bool,
    /// Remove what the firewall backend owns when stopping (fwknopd `FLUSH_IPT_AT_EXIT`).
    pub flush_at_exit: bool,
    /// Syslog identity and facility (used with `log = "syslog"`).
    pub syslog: SyslogSettings,
    /// Debug logging (fwknopd `VERBOSE`), as `run --verbose`.
    pub verbose: bool,
}

impl Default for DaemonSettings {
    fn default() -> DaemonSettings {
        DaemonSettings {
            interfaces: Interfaces::All,
            state_dir: PathBuf::from("/var/lib/portcullis"),
            log: LogTarget::Stderr,
            max_tracked: DEFAULT_MAX_TRACKED,
            backend: Backend::Nftables,
            max_grants: DEFAULT_MAX_GRANTS,
            log_file: None,
            pid_file: None,
            command_time_limit: DEFAULT_COMMAND_TIME_LIMIT,
            firewall: FirewallSettings::default(),
            flush_at_start: false,
            flush_at_exit: false,
            syslog: SyslogSettings::default(),
            verbose: false,
            never_gate: Vec::new(),
        }
    }
}

/// Syslog identity and facility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    /// The tag in front of every line (`portcullisd`; fwknopd `SYSLOG_IDENTITY`).
    pub identity: String,
    /// The facility (`daemon`; fwknopd `SYSLOG_FACILITY`).
    pub facility: SyslogFacility,
}

impl Default for SyslogSettings {
    fn default() -> SyslogSettings {
        SyslogSettings { identity: "portcullisd".into(), facility: SyslogFacility::Daemon }
    }
}

/// Syslog facilities a daemon may log to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFacility {
    /// `LOG_DAEMON`.
    Daemon,
    /// `LOG_AUTH`.
    Auth,
    /// `LOG_AUTHPRIV`.
    Authpriv,
    /// `LOG_USER`.
    User,
    /// `LOG_LOCAL0` .. `LOG_LOCAL7`.
    Local(u8),
}

impl SyslogFacility {
    /// Parse `daemon`, `LOG_DAEMON`, `local3`, `LOG_LOCAL3` (any case).
    pub fn parse(s: &str) -> Option<SyslogFacility> {
        let l = s.trim().to_ascii_lowercase();
        let l = l.strip_prefix("log_").unwrap_or(&l);
        Some(match l {
            "daemon" => SyslogFacility::Daemon,
            "auth" => SyslogFacility::Auth,
            "authpriv" => SyslogFacility::Authpriv,
            "user" => SyslogFacility::User,
            _ => {
                let n: u8 = l.strip_prefix("local")?.parse().ok()?;
                if n > 7 {
                    return None;
                }
                SyslogFacility::Local(n)
            }
        })
    }
}

impl fmt::Display for SyslogFacility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogFacility::Daemon => f.write_str("daemon"),
            SyslogFacility::Auth => f.write_str("auth"),
            SyslogFacility::Authpriv => f.write_str("authpriv"),
            SyslogFacility::User => f.write_str("user"),
            SyslogFacility::Local(n) => write!(f, "local{n}"),
        }
    }
}

/// How the firewall backend treats protected services (`mode`, `gate_forward`,
/// `iptables_chain`, `iptables_jump`, `accept_table` in `[daemon]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSettings {
    /// `mode = "accept"`: a grant also accepts (default `"gate"`: only drops).
    pub accept: bool,
    /// Also gate forwarded connections DNAT'd from a protected service (default true).
    pub gate_forward: bool,
    /// iptables: our chain's name.
    pub iptables_chain: String,
    /// iptables: 1-based position of the jump in `INPUT`.
    pub iptables_jump: u32,
    /// nftables accept mode: the admin's table, as (family, name).
    pub accept_table: Option<(String, String)>,
    /// `nat = true`: NAT grants (DNAT of one source to an inside host) may be given.
    pub nat: bool,
}

impl Default for FirewallSettings {
    fn default() -> FirewallSettings {
        FirewallSettings {
            accept: false,
            gate_forward: true,
            iptables_chain: "PORTCULLIS".to_string(),
            iptables_jump: 1,
            accept_table: None,
            nat: false,
        }
    }
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

/// Our iptables chain names: 1-24 characters of letters, digits, `_` and `-`.
pub fn valid_chain_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 24 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Syslog identities: 1-32 characters of letters, digits, `_`, `.` and `-`.
pub fn valid_syslog_identity(n: &str) -> bool {
    !n.is_empty() && n.len() <= 32 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
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
    /// A sequence derived from a secret and the time; `sequence` is then empty and the
    /// knocks of a step come from [`super::RotatingDoor::accepted_at`].
    pub rotating: Option<super::RotatingDoor>,
    /// `scope = "fleet"`: the door's grants are shared with every fleet node.
    pub fleet: bool,
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
            // A command-cycle stanza's commands open its ports (fwknopd leaves the firewall
            // alone for them), so we must not drop them.
            set.extend(
                spa.stanzas
                    .iter()
                    .filter(|s| s.cmd_cycle.is_none())
                    .flat_map(|s| s.open_ports.iter().copied()),
            );
        }
        set.into_iter().collect()
    }
}
