//! Native TOML configuration: [`RawConfig`] is what serde reads (with source spans),
//! [`Config`] is the validated result the daemon runs on. Every refusal names the
//! file, the line and the reason; unknown keys are errors, not silently ignored,
//! because a typo in a security config must not quietly weaken it.
//!
//! The format is documented in `docs/config.md` and `examples/portcullis.toml`.
//! knockd's `knockd.conf` is read by [`knockd`] into the same [`Config`]; [`load`]
//! detects which format a file is in (see `docs/knockd.md`).

pub mod knockd;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto::knock::DoorSpec;
use portcullis_proto::{FlagFilter, Proto, Service};
use serde::Deserialize;
use toml::Spanned;

pub mod access_conf;
pub mod api;
pub mod spa;

pub use api::ApiConfig;
pub use spa::SpaConfig;

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
    // --- knockd drop-in (issue 3) ---
    /// Also append log lines to this file (knockd `LogFile`).
    pub log_file: Option<PathBuf>,
    /// Write our PID here at start, remove it at exit (knockd `PidFile`).
    pub pid_file: Option<PathBuf>,
    /// A start/stop command still running after this long is killed (its process group).
    pub command_time_limit: Duration,
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
    // --- knockd drop-in (issue 3) ---
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

/// A refused configuration: file, line (when known) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.path.display(), l, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What serde reads. Spans let validation errors point at a line.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default, rename = "door")]
    doors: Vec<Spanned<RawDoor>>,
    spa: Option<Spanned<spa::RawSpa>>,
    api: Option<Spanned<api::RawApi>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    state_dir: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
    max_tracked: Option<Spanned<i64>>,
    backend: Option<Spanned<String>>,
    max_grants: Option<Spanned<i64>>,
    log_file: Option<Spanned<String>>,
    pid_file: Option<Spanned<String>>,
    command_time_limit: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoor {
    name: Spanned<String>,
    sequence: Option<Spanned<Vec<Spanned<RawKnock>>>>,
    seq_timeout: Option<Spanned<RawDuration>>,
    tcp_flags: Option<Spanned<String>>,
    open: Option<Spanned<Vec<Spanned<String>>>>,
    open_for: Option<Spanned<RawDuration>>,
    target: Option<Spanned<String>>,
    start_command: Option<Spanned<RawCommand>>,
    start_command_6: Option<Spanned<RawCommand>>,
    stop_command: Option<Spanned<RawCommand>>,
    stop_command_6: Option<Spanned<RawCommand>>,
    cmd_timeout: Option<Spanned<RawDuration>>,
    one_time_sequences: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawKnock {
    Port(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(i64),
    Text(String),
}

/// Which syntax a config file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Decide from the content ([`knockd::looks_like_knockd`]).
    #[default]
    Auto,
    /// portcullis' TOML.
    Native,
    /// knockd's `knockd.conf`.
    Knockd,
}

/// Read and validate a config file, detecting its format.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_as(path, Format::Auto)
}

/// Read and validate a config file in the given format.
pub fn load_as(path: &Path, format: Format) -> Result<Config, ConfigError> {
    let text = read_bounded(path)?;
    match format {
        Format::Native => parse(&text, path),
        Format::Knockd => knockd::parse(&text, path),
        Format::Auto if knockd::looks_like_knockd(&text) => knockd::parse(&text, path),
        Format::Auto => parse(&text, path),
    }
}

/// Read a config file, refusing absurd sizes (a config is never megabytes).
pub fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    const MAX: u64 = 1 << 20;
    let err = |message: String| ConfigError { path: path.to_owned(), line: None, message };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() > MAX {
        return Err(err(format!("file is larger than {MAX} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| err("file is not valid UTF-8".into()))
}

/// Parse and validate config text (`path` is only used in messages).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().to_string(),
    })?;
    Validator { text, path }.config(raw)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            path: self.path.to_owned(),
            line: Some(line_of(self.text, span.start)),
            message: message.into(),
        })
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let daemon = self.daemon(raw.daemon)?;
        let mut doors = Vec::with_capacity(raw.doors.len());
        let mut names = BTreeSet::new();
        for d in raw.doors {
            let span = d.span();
            let door = self.door(d.into_inner())?;
            if !names.insert(door.name.clone()) {
                return self.err(span, format!("door name {:?} is used twice", door.name));
            }
            doors.push(door);
        }
        let spa = match raw.spa {
            None => None,
            Some(s) => {
                let span = s.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match spa::validate(s.into_inner(), dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
        // [api] (issue 5)
        let api = match raw.api {
            None => None,
            Some(a) => {
                let span = a.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match api::validate(a.into_inner(), dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
        if doors.is_empty() && spa.is_none() {
            return Err(ConfigError {
                path: self.path.to_owned(),
                line: None,
                message: "nothing to do: add at least one [[door]] or an [spa] section".into(),
            });
        }
        if doors.len() > usize::from(u16::MAX) {
            return Err(ConfigError {
                path: self.path.to_owned(),
                line: None,
                message: "more than 65535 doors".into(),
            });
        }
        Ok(Config { path: self.path.to_owned(), daemon, doors, spa, api })
    }

    fn daemon(&self, raw: RawDaemon) -> Result<DaemonSettings, ConfigError> {
        let interfaces = match raw.interfaces {
            None => Interfaces::All,
            Some(list) => {
                let span = list.span();
                let names: Vec<Spanned<String>> = list.into_inner();
                if names.is_empty() {
                    return self.err(span, "interfaces is empty (omit it, or use [\"all\"])");
                }
                if names.iter().any(|n| n.get_ref() == "all") {
                    if names.len() > 1 {
                        return self.err(span, "\"all\" cannot be combined with named interfaces");
                    }
                    Interfaces::All
                } else {
                    let mut out = Vec::new();
                    for n in names {
                        if !valid_ifname(n.get_ref()) {
                            return self.err(n.span(), format!("invalid interface name {:?}", n.get_ref()));
                        }
                        out.push(n.into_inner());
                    }
                    Interfaces::Named(out)
                }
            }
        };
        let state_dir = match raw.state_dir {
            None => PathBuf::from("/var/lib/portcullis"),
            Some(s) if s.get_ref().starts_with('/') => PathBuf::from(s.into_inner()),
            Some(s) => return self.err(s.span(), "state_dir must be an absolute path"),
        };
        let log = match raw.log {
            None => LogTarget::Stderr,
            Some(s) => match s.get_ref().as_str() {
                "stderr" => LogTarget::Stderr,
                "syslog" => LogTarget::Syslog,
                "journald" => LogTarget::Journald,
                other => {
                    return self
                        .err(s.span(), format!("log must be stderr, syslog or journald, not {other:?}"))
                }
            },
        };
        let max_tracked = match raw.max_tracked {
            None => DEFAULT_MAX_TRACKED,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if (1_000..=50_000_000).contains(&v) => v,
                _ => return self.err(n.span(), "max_tracked must be between 1000 and 50000000"),
            },
        };
        let backend = match raw.backend {
            None => Backend::Nftables,
            Some(s) => match s.get_ref().as_str() {
                "nftables" => Backend::Nftables,
                "iptables" => Backend::Iptables(IptablesVariant::Auto),
                "iptables-legacy" => Backend::Iptables(IptablesVariant::Legacy),
                "iptables-nft" => Backend::Iptables(IptablesVariant::Nft),
                "none" => Backend::None,
                other => {
                    return self.err(
                        s.span(),
                        format!(
                            "backend must be nftables, iptables, iptables-legacy, iptables-nft or none, \
                             not {other:?}"
                        ),
                    )
                }
            },
        };
        let max_grants = match raw.max_grants {
            None => DEFAULT_MAX_GRANTS,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (16..=4_194_304).contains(&v) => v,
                _ => return self.err(n.span(), "max_grants must be between 16 and 4194304"),
            },
        };
        let log_file = match raw.log_file {
            None => None,
            Some(s) if s.get_ref().starts_with('/') => Some(PathBuf::from(s.into_inner())),
            Some(s) => return self.err(s.span(), "log_file must be an absolute path"),
        };
        let pid_file = match raw.pid_file {
            None => None,
            Some(s) if s.get_ref().starts_with('/') => Some(PathBuf::from(s.into_inner())),
            Some(s) => return self.err(s.span(), "pid_file must be an absolute path"),
        };
        let command_time_limit = match raw.command_time_limit {
            None => DEFAULT_COMMAND_TIME_LIMIT,
            Some(d) => {
                self.duration(d, Duration::from_millis(100), Duration::from_secs(3600), "command_time_limit")?
            }
        };
        Ok(DaemonSettings {
            interfaces,
            state_dir,
            log,
            max_tracked,
            backend,
            max_grants,
            log_file,
            pid_file,
            command_time_limit,
        })
    }

    fn door(&self, raw: RawDoor) -> Result<Door, ConfigError> {
        let name = raw.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return self.err(
                raw.name.span(),
                format!("door name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"),
            );
        }
        let name_span = raw.name.span();
        let one_time = match &raw.one_time_sequences {
            None => None,
            Some(p) => match knockd::load_one_time(Path::new(p.get_ref())) {
                Ok(ot) => Some(ot),
                Err(e) => return self.err(p.span(), format!("one_time_sequences: {e}")),
            },
        };
        let (seq_span, knocks) = match (raw.sequence, &one_time) {
            (Some(s), _) => (s.span(), s.into_inner()),
            (None, Some(_)) => (name_span.clone(), Vec::new()),
            (None, None) => {
                return self.err(name_span, format!("door {name:?} has no sequence (or one_time_sequences)"))
            }
        };
        let from_file = one_time.is_some() && knocks.is_empty();
        if !from_file && (knocks.is_empty() || knocks.len() > MAX_SEQUENCE) {
            return self.err(seq_span, format!("sequence must have 1 to {MAX_SEQUENCE} knocks"));
        }
        let mut sequence = Vec::with_capacity(knocks.len());
        for k in knocks {
            let svc = match k.get_ref() {
                RawKnock::Port(p) => u16::try_from(*p)
                    .ok()
                    .filter(|&p| p != 0)
                    .map(Service::tcp)
                    .ok_or_else(|| format!("knock port {p} is not in 1..65535")),
                RawKnock::Text(t) => Service::parse_knock(t, Proto::Tcp)
                    .map_err(|e| format!("knock {t:?}: {e} (write PORT or PORT:tcp / PORT:udp)")),
            };
            match svc {
                Ok(s) => sequence.push(s),
                Err(m) => return self.err(k.span(), m),
            }
        }
        if let Some(ot) = &one_time {
            // The file decides (knockd: One_Time_Sequences replaces Sequence).
            sequence = ot.remaining.first().map(|l| l.sequence.clone()).unwrap_or_default();
        }
        let seq_timeout = match raw.seq_timeout {
            None => Duration::from_secs(10),
            Some(d) => {
                self.duration(d, Duration::from_millis(100), Duration::from_secs(3600), "seq_timeout")?
            }
        };
        let flags = match raw.tcp_flags {
            None => FlagFilter::SYN_ONLY,
            Some(f) if f.get_ref() == "any" => FlagFilter::ANY,
            Some(f) => match FlagFilter::parse(f.get_ref()) {
                Ok(v) => v,
                Err(e) => return self.err(f.span(), format!("tcp_flags: {e}")),
            },
        };
        let open_span = raw.open.as_ref().map_or(name_span.clone(), |o| o.span());
        let mut open = Vec::new();
        for o in raw.open.map(Spanned::into_inner).unwrap_or_default() {
            match Service::parse_grant(o.get_ref()) {
                Ok(s) if !open.contains(&s) => open.push(s),
                Ok(_) => return self.err(o.span(), format!("{:?} is listed twice", o.get_ref())),
                Err(e) => {
                    return self
                        .err(o.span(), format!("open {:?}: {e} (write tcp/22 or udp/53)", o.get_ref()))
                }
            }
        }
        let commands = self.commands(
            raw.start_command,
            raw.start_command_6,
            raw.stop_command,
            raw.stop_command_6,
            raw.cmd_timeout,
        )?;
        if open.is_empty() && commands.is_none() {
            return self.err(
                open_span,
                "open must list at least one service, e.g. [\"tcp/22\"] (or give a start_command)",
            );
        }
        let open_for = match raw.open_for {
            // A command-only door: its "open" time is the command's.
            None if open.is_empty() => commands.as_ref().map_or(Duration::from_secs(30), |c| c.cmd_timeout),
            None => Duration::from_secs(30),
            Some(d) => self.duration(d, Duration::from_secs(1), Duration::from_secs(86_400), "open_for")?,
        };
        let target = match raw.target {
            None => None,
            Some(t) => match t.get_ref().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return self.err(t.span(), format!("target {:?} is not an IP address", t.get_ref()))
                }
            },
        };
        Ok(Door { name, sequence, seq_timeout, flags, open, open_for, target, commands, one_time })
    }

    fn commands(
        &self,
        start: Option<Spanned<RawCommand>>,
        start6: Option<Spanned<RawCommand>>,
        stop: Option<Spanned<RawCommand>>,
        stop6: Option<Spanned<RawCommand>>,
        cmd_timeout: Option<Spanned<RawDuration>>,
    ) -> Result<Option<Commands>, ConfigError> {
        let any = start.is_some() || start6.is_some() || stop.is_some() || stop6.is_some();
        if !any {
            if let Some(t) = cmd_timeout {
                return self.err(t.span(), "cmd_timeout needs a start_command");
            }
            return Ok(None);
        }
        let one = |c: Option<Spanned<RawCommand>>| -> Result<Option<Option<CommandLine>>, ConfigError> {
            let Some(c) = c else { return Ok(None) };
            let span = c.span();
            match c.into_inner() {
                RawCommand::Shell(s) if s.trim().is_empty() => Ok(Some(None)),
                RawCommand::Shell(s) => Ok(Some(Some(CommandLine::Shell(s)))),
                RawCommand::Argv(v) if v.is_empty() => Ok(Some(None)),
                RawCommand::Argv(v) if v[0].is_empty() || v[0].contains("%IP%") => {
                    self.err(span, "the program (first element) must be a fixed, non-empty path")
                }
                RawCommand::Argv(v) => Ok(Some(Some(CommandLine::Argv(v)))),
            }
        };
        let start4 = one(start)?.flatten();
        let start6 = one(start6)?.unwrap_or_else(|| start4.clone());
        let stop4 = one(stop)?.flatten();
        let stop6 = one(stop6)?.unwrap_or_else(|| stop4.clone());
        let cmd_timeout = match cmd_timeout {
            None => Duration::from_secs(10),
            Some(d) => self.duration(d, Duration::ZERO, Duration::from_secs(86_400), "cmd_timeout")?,
        };
        Ok(Some(Commands { start4, start6, stop4, stop6, cmd_timeout }))
    }

    fn duration(
        &self,
        d: Spanned<RawDuration>,
        min: Duration,
        max: Duration,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        let parsed = match d.get_ref() {
            RawDuration::Seconds(s) => u64::try_from(*s).ok().map(Duration::from_secs),
            RawDuration::Text(t) => humantime::parse_duration(t).ok(),
        };
        match parsed {
            Some(v) if v >= min && v <= max => Ok(v),
            _ => self.err(
                d.span(),
                format!(
                    "{what} must be between {} and {} (seconds, or text like \"30s\", \"5m\")",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ),
        }
    }
}

/// Linux interface names: 1-15 bytes, no '/', no whitespace, not "." or "..".
pub fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && n.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Well-known service ports that make poor knocks: real traffic to them breaks sequences
/// and scanners hit them constantly.
const WELL_KNOWN: &[u16] = &[
    20, 21, 22, 23, 25, 53, 80, 110, 123, 143, 161, 389, 443, 445, 465, 587, 993, 995, 1433, 1521, 3306,
    3389, 5432, 5900, 6379, 8080, 8443, 27017,
];

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

    /// Advice about weak doors; none of these stop the daemon.
    pub fn warnings(&self) -> Vec<String> {
        let protected = self.protected();
        let mut out = Vec::new();
        out.extend(knockd::door_warnings(self));
        for d in &self.doors {
            if d.sequence.is_empty() {
                continue; // an exhausted one-time door: reported above
            }
            if d.sequence.len() < 3 {
                out.push(format!(
                    "door {}: only {} knock(s); anyone probing a few ports can stumble on it (use 3 or more)",
                    d.name,
                    d.sequence.len()
                ));
            }
            let spec = DoorSpec { sequence: d.sequence.clone(), timeout: d.seq_timeout, flags: d.flags };
            if d.sequence.len() >= 3 && spec.sweep_walkable() {
                out.push(format!(
                    "door {}: ports only rise or only fall on one protocol, so a port scan in that order \
                     walks the sequence; mix the order (e.g. 7000, 9000, 8000) or protocols",
                    d.name
                ));
            }
            let uniq: BTreeSet<_> = d.sequence.iter().collect();
            if uniq.len() != d.sequence.len() {
                out.push(format!(
                    "door {}: a port is repeated in the sequence; retransmissions can skip a step",
                    d.name
                ));
            }
            for k in &d.sequence {
                if WELL_KNOWN.contains(&k.port) {
                    out.push(format!(
                        "door {}: knock {} is a well-known service port; real traffic will break sequences",
                        d.name, k
                    ));
                }
                if protected.contains(k) {
                    out.push(format!(
                        "door {}: knock {} is also a protected port; connection attempts to it count as knocks",
                        d.name, k
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    const GOOD: &str = r#"
[daemon]
interfaces = ["eth0", "wg0"]
state_dir = "/var/lib/pc"
log = "syslog"
max_tracked = 2000000

[[door]]
name = "ssh"
sequence = [7000, "8000:udp", "9000:tcp"]
seq_timeout = "5s"
tcp_flags = "syn,!ack"
open = ["tcp/22"]
open_for = 30

[[door]]
name = "web-admin"
sequence = ["7000", "8000:udp", "9500"]
open = ["tcp/8443", "udp/51820"]
target = "2001:db8::1"
"#;

    #[test]
    fn accepts_a_full_config() {
        let c = p(GOOD).unwrap();
        assert_eq!(c.daemon.interfaces, Interfaces::Named(vec!["eth0".into(), "wg0".into()]));
        assert_eq!(c.daemon.log, LogTarget::Syslog);
        assert_eq!(c.daemon.max_tracked, 2_000_000);
        assert_eq!(c.doors.len(), 2);
        let d = &c.doors[0];
        assert_eq!(d.sequence, vec![Service::tcp(7000), Service::udp(8000), Service::tcp(9000)]);
        assert_eq!(d.seq_timeout, Duration::from_secs(5));
        assert_eq!(d.open_for, Duration::from_secs(30));
        assert_eq!(c.doors[1].flags, FlagFilter::SYN_ONLY);
        assert_eq!(c.doors[1].target, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(c.protected(), vec![Service::tcp(22), Service::tcp(8443), Service::udp(51820)]);
    }

    #[test]
    fn defaults_are_safe() {
        let c = p("[[door]]\nname='a'\nsequence=[1111,2222,3333]\nopen=['tcp/22']\n").unwrap();
        assert_eq!(c.daemon.interfaces, Interfaces::All);
        assert_eq!(c.daemon.backend, Backend::Nftables);
        assert_eq!(c.daemon.max_tracked, DEFAULT_MAX_TRACKED);
        assert_eq!(c.doors[0].flags, FlagFilter::SYN_ONLY);
    }

    fn err_line(text: &str) -> (Option<usize>, String) {
        let e = p(text).unwrap_err();
        (e.line, e.message)
    }

    #[test]
    fn refuses_bad_configs_with_line_and_reason() {
        let base = "[[door]]\nname = 'a'\nsequence = [1111, 2222, 3333]\nopen = ['tcp/22']\n";
        let cases: &[(&str, usize, &str)] = &[
            ("[[door]]\nname = 'a'\nsequence = [1111, 0, 3333]\nopen = ['tcp/22']\n", 3, "1..65535"),
            ("[[door]]\nname = 'a'\nsequence = [1111, '70000', 3333]\nopen = ['tcp/22']\n", 3, "1 to 65535"),
            ("[[door]]\nname = 'a'\nsequence = ['1111:icmp']\nopen = ['tcp/22']\n", 3, "tcp or udp"),
            ("[[door]]\nname = 'a'\nsequence = []\nopen = ['tcp/22']\n", 3, "1 to 32"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['22']\n", 4, "tcp/22"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = []\n", 4, "at least one"),
            ("[[door]]\nname = 'a b'\nsequence = [1]\nopen = ['tcp/1']\n", 2, "door name"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\nseq_timeout = -5\n", 5, "seq_timeout"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\nopen_for = '100d'\n", 5, "open_for"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\ntcp_flags = 'syn,bogus'\n", 5, "bogus"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\ntarget = 'example.com'\n", 5, "not an IP"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\nsequense = [2]\n", 5, "unknown field"),
            ("[daemon]\nlog = 'file'\n[[door]]\nname='a'\nsequence=[1]\nopen=['tcp/1']\n", 2, "stderr"),
            ("[daemon]\nmax_tracked = 10\n[[door]]\nname='a'\nsequence=[1]\nopen=['tcp/1']\n", 2, "max_tracked"),
            ("[daemon]\ninterfaces = ['all', 'eth0']\n", 2, "combined"),
            ("[daemon]\ninterfaces = ['../x']\n", 2, "interface"),
            ("[daemon]\nstate_dir = 'rel'\n", 2, "absolute"),
            ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\n[[door]]\nname = 'a'\nsequence = [2]\nopen = ['tcp/1']\n", 5, "twice"),
            ("this is not toml", 1, ""),
        ];
        for (text, line, needle) in cases {
            let (l, m) = err_line(text);
            assert_eq!(l, Some(*line), "{text:?} -> {m}");
            assert!(m.contains(needle), "{text:?}: {m:?} lacks {needle:?}");
        }
        assert!(p(base).is_ok());
        let e = p("").unwrap_err();
        assert!(e.to_string().contains("nothing to do"), "{e}");
        assert!(e.to_string().starts_with("test.toml: "), "{e}");
    }

    #[test]
    fn warns_about_weak_doors() {
        let c = p("[[door]]\nname='w'\nsequence=[22, 7000]\nopen=['tcp/22']\n").unwrap();
        let w = c.warnings().join("\n");
        assert!(w.contains("only 2 knock"), "{w}");
        assert!(w.contains("well-known"), "{w}");
        assert!(w.contains("also a protected port"), "{w}");
        let c = p("[[door]]\nname='r'\nsequence=[7000, 7000, 8000]\nopen=['tcp/22']\n").unwrap();
        assert!(c.warnings().join("\n").contains("repeated"));
        let c = p("[[door]]\nname='s'\nsequence=[7000, 8000, 9000]\nopen=['tcp/22']\n").unwrap();
        assert!(c.warnings().join("\n").contains("port scan"));
        let c = p("[[door]]\nname='ok'\nsequence=[7000, 9000, 8000]\nopen=['tcp/22']\n").unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let c = p("[[door]]\nname='ok'\nsequence=[7000, '8000:udp', 9000]\nopen=['tcp/22']\n").unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn shipped_example_config_is_valid() {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/portcullis.toml"));
        let c = super::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.doors.len(), 2);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }
}
