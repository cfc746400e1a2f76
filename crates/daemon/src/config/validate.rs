//! Native TOML → [`Config`]: serde reads the [`raw`](super::raw) shapes, then every value
//! is checked for meaning and range. Each refusal names the line it is about, and a
//! message says what would be accepted, not how the parser failed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto::{FlagFilter, Proto, Service};
use toml::Spanned;

use super::error::ConfigError;
use super::model::{
    valid_ifname, valid_syslog_identity, Backend, CommandLine, Commands, Config, DaemonSettings, Door,
    FirewallSettings, Interfaces, IptablesVariant, LogTarget, SyslogFacility, SyslogSettings,
    DEFAULT_COMMAND_TIME_LIMIT, DEFAULT_MAX_GRANTS, DEFAULT_MAX_TRACKED, MAX_SEQUENCE,
};
use super::one_time::load_one_time;
use super::raw::{RawCommand, RawConfig, RawDaemon, RawDoor, RawDuration, RawKnock};
use super::source::line_of;
use super::{api, grant_prefix, limits, rotating, spa};

/// Parse and validate native TOML text (`path` is only used in messages and to resolve
/// relative paths).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        match single_bracket_array_table(text) {
            Some((l, (table, noun))) => ConfigError {
                path: path.to_owned(),
                line: Some(l),
                message: format!(
                    "[{table}] is a single table, but each {noun} is a [[{table}]] table (double brackets), \
                     one per {noun}"
                ),
            },
            None => ConfigError { path: path.to_owned(), line, message: e.message().to_string() },
        }
    })?;
    Validator { text, path }.config(raw)
}

/// Tables that may appear many times, so they must be written `[[name]]`: (name, what
/// one of them is).
const ARRAY_TABLES: &[(&str, &str)] = &[("door", "door"), ("spa.user", "user"), ("spa.fwknop", "stanza")];

/// The first line that opens one of [`ARRAY_TABLES`] with single brackets, if any: serde
/// then only says "duplicate key" or "invalid type: map".
fn single_bracket_array_table(text: &str) -> Option<(usize, (&'static str, &'static str))> {
    text.lines().enumerate().find_map(|(i, line)| {
        let t = line.trim();
        let t = t.split_once('#').map_or(t, |(a, _)| a).trim_end();
        let name = t.strip_prefix('[')?.strip_suffix(']')?;
        if name.starts_with('[') {
            return None;
        }
        let name = name.trim();
        ARRAY_TABLES.iter().find(|(a, _)| *a == name).map(|&a| (i + 1, a))
    })
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

    fn config(&self, mut raw: RawConfig) -> Result<Config, ConfigError> {
        let mut bounds = limits::RawBounds::take(&mut raw.daemon);
        for d in &mut raw.doors {
            let d = d.get_mut();
            bounds.doors.push((
                d.name.get_ref().clone(),
                d.opens_per_second.take(),
                d.max_live_grants.take(),
            ));
        }
        let (prefixes, prefix_at) = grant_prefix::take(&mut raw).or_else(|(at, m)| self.err(at, m))?;
        let store = limits::store(raw.store.take());
        let daemon = self.daemon(raw.daemon)?;
        if let (Some(at), true) = (prefix_at, daemon.firewall.accept) {
            return self.err(at, "grant_prefix_v4/grant_prefix_v6 work in mode = \"gate\" only");
        }
        let mut limits = bounds.build(daemon.max_grants).or_else(|(at, m)| self.err(at, m))?;
        limits.grant_prefix = prefixes;
        let store = store.or_else(|(at, m)| self.err(at, m))?;
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
        let mut notes = Vec::new();
        let spa = match raw.spa {
            None => None,
            Some(s) => {
                let span = s.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                let at_line = |offset| format!("{}:{}", self.path.display(), line_of(self.text, offset));
                match spa::validate(s.into_inner(), dir, &at_line) {
                    Ok((v, _)) if (v.forwarding || v.local_nat) && !daemon.firewall.nat => {
                        return self
                            .err(span, "[spa] forwarding/local_nat need [daemon] nat = true (NAT grants)")
                    }
                    Ok((v, n)) => {
                        notes = n;
                        Some(v)
                    }
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
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
        let fleet = match raw.fleet {
            None => None,
            Some(f) => {
                let span = f.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match crate::fleet::config::validate(f.into_inner(), dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
        let fleet_scoped = doors.iter().any(|d| d.fleet)
            || spa
                .as_ref()
                .is_some_and(|s| s.users.values().any(|u| u.fleet) || s.stanzas.iter().any(|s| s.fleet));
        if fleet.is_none() && fleet_scoped {
            return self.err(
                0..0,
                "a door, [[spa.user]] or fwknop stanza has scope = \"fleet\" but there is no [fleet] section",
            );
        }
        // Fleet grants are shared as single addresses: a prefix would silently narrow on
        // the other nodes, so the combination is refused rather than half-applied.
        let wide_fleet = doors
            .iter()
            .filter(|d| d.fleet && !limits.grant_prefix.door(&d.name).is_single())
            .map(|d| format!("door {:?}", d.name))
            .chain(spa.iter().flat_map(|s| {
                s.users
                    .iter()
                    .filter(|(n, u)| u.fleet && !limits.grant_prefix.user(n).is_single())
                    .map(|(n, _)| format!("[[spa.user]] {n:?}"))
            }))
            .next();
        if let Some(what) = wide_fleet {
            return self.err(
                0..0,
                format!(
                    "{what}: scope = \"fleet\" with a grant prefix is not supported (fleet grants are \
                     shared for single addresses); use scope = \"local\" or drop grant_prefix_v4/v6"
                ),
            );
        }
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
        Ok(Config { path: self.path.to_owned(), daemon, doors, spa, api, fleet, notes, limits, store })
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
        let mut never_gate = Vec::new();
        for s in raw.never_gate.map(|l| l.into_inner()).unwrap_or_default() {
            match s.get_ref().parse::<crate::firewall::Prefix>() {
                Ok(p) if never_gate.contains(&p) => {
                    return self.err(s.span(), format!("never_gate lists {p} twice"))
                }
                Ok(p) => never_gate.push(p),
                Err(e) => return self.err(s.span(), format!("never_gate: {e}")),
            }
        }
        let mut syslog = SyslogSettings::default();
        if let Some(i) = raw.syslog_identity {
            if !valid_syslog_identity(i.get_ref()) {
                return self.err(i.span(), "syslog_identity must be 1-32 characters of A-Z a-z 0-9 _ . -");
            }
            syslog.identity = i.into_inner();
        }
        if let Some(f) = raw.syslog_facility {
            syslog.facility = match SyslogFacility::parse(f.get_ref()) {
                Some(v) => v,
                None => {
                    return self.err(
                        f.span(),
                        "syslog_facility must be daemon, auth, authpriv, user or local0..local7",
                    )
                }
            };
        }
        let mut firewall = self.firewall(
            &raw.mode,
            raw.gate_forward,
            raw.iptables_chain,
            raw.iptables_jump,
            raw.accept_table,
            backend,
        )?;
        firewall.nat = raw.nat.is_some_and(|n| *n.get_ref());
        Ok(DaemonSettings {
            never_gate,
            firewall,
            interfaces,
            state_dir,
            log,
            max_tracked,
            backend,
            max_grants,
            log_file,
            pid_file,
            command_time_limit,
            flush_at_start: raw.flush_at_start.unwrap_or(false),
            flush_at_exit: raw.flush_at_exit.unwrap_or(false),
            syslog,
            verbose: raw.verbose.unwrap_or(false),
        })
    }

    fn firewall(
        &self,
        mode: &Option<Spanned<String>>,
        gate_forward: Option<Spanned<bool>>,
        chain: Option<Spanned<String>>,
        jump: Option<Spanned<i64>>,
        accept_table: Option<Spanned<String>>,
        backend: Backend,
    ) -> Result<FirewallSettings, ConfigError> {
        let mut f = FirewallSettings::default();
        if let Some(m) = mode {
            f.accept = match m.get_ref().as_str() {
                "gate" => false,
                "accept" => true,
                other => return self.err(m.span(), format!("mode must be gate or accept, not {other:?}")),
            };
        }
        if let Some(g) = gate_forward {
            f.gate_forward = *g.get_ref();
        }
        if let Some(c) = chain {
            let name = c.get_ref();
            let builtin =
                ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"].contains(&name.as_str());
            let ok = (1..=24).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok || builtin {
                return self.err(
                    c.span(),
                    format!("iptables_chain {name:?} must be 1-24 letters, digits, '_' or '-', and not a built-in chain"),
                );
            }
            f.iptables_chain = c.into_inner();
        }
        if let Some(j) = jump {
            f.iptables_jump = match u32::try_from(*j.get_ref()) {
                Ok(v) if (1..=10_000).contains(&v) => v,
                _ => {
                    return self
                        .err(j.span(), "iptables_jump must be between 1 and 10000 (1 = first rule of INPUT)")
                }
            };
        }
        if let Some(t) = accept_table {
            let words: Vec<&str> = t.get_ref().split_whitespace().collect();
            let ok = match words.as_slice() {
                [family, name] => {
                    *family == "inet"
                        && (1..=64).contains(&name.len())
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        && *name != "portcullis"
                }
                _ => false,
            };
            if !ok {
                return self.err(
                    t.span(),
                    format!(
                        "accept_table must be \"inet <table>\" naming your own inet table (like \"inet filter\"), not {:?}",
                        t.get_ref()
                    ),
                );
            }
            if !f.accept {
                return self.err(t.span(), "accept_table is only used with mode = \"accept\"");
            }
            f.accept_table = Some((words[0].to_string(), words[1].to_string()));
        }
        if let (Some(m), true, Backend::Nftables, None) = (mode, f.accept, backend, &f.accept_table) {
            return self.err(
                m.span(),
                "mode = \"accept\" with nftables needs accept_table = \"inet <table>\": an accept is final only \
                 in the admin's own table",
            );
        }
        Ok(f)
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
            Some(p) => match load_one_time(Path::new(p.get_ref())) {
                Ok(ot) => Some(ot),
                Err(e) => return self.err(p.span(), format!("one_time_sequences: {e}")),
            },
        };
        let rotating = match raw.rotating {
            None => None,
            Some(r) => {
                let span = r.span();
                if raw.sequence.is_some() || one_time.is_some() {
                    return self.err(
                        span,
                        format!("door {name:?}: rotating replaces sequence and one_time_sequences; keep one"),
                    );
                }
                let mut r = r.into_inner();
                let step = match r.step.take() {
                    None => None,
                    Some(s) => {
                        let at = s.span();
                        let max = Duration::from_secs(portcullis_proto::rotate::MAX_STEP_SECS);
                        Some((self.duration(s, Duration::from_secs(1), max, "rotating.step")?, at))
                    }
                };
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match rotating::validate(r, step, dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at, format!("door {name:?}: {message}")),
                }
            }
        };
        let (seq_span, knocks) = match (raw.sequence, &one_time) {
            (Some(s), _) => (s.span(), s.into_inner()),
            (None, Some(_)) => (name_span.clone(), Vec::new()),
            (None, None) if rotating.is_some() => (name_span.clone(), Vec::new()),
            (None, None) => {
                return self.err(
                    name_span,
                    format!("door {name:?} has no sequence (or one_time_sequences, or rotating)"),
                )
            }
        };
        let from_file = (one_time.is_some() || rotating.is_some()) && knocks.is_empty();
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
                RawKnock::Other(v) => {
                    Err(format!("knock {v}: write a port number or text like \"7000:tcp\" / \"7000:udp\""))
                }
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
        let fleet = match crate::fleet::config::scope(raw.scope) {
            Ok(f) => f,
            Err((at, m)) => return self.err(at.unwrap_or(name_span), m),
        };
        if fleet && open.is_empty() {
            return self.err(
                name_span,
                format!(
                    "door {name:?}: scope \"fleet\" shares what a door opens, and this one opens nothing"
                ),
            );
        }
        Ok(Door {
            name,
            sequence,
            seq_timeout,
            flags,
            open,
            open_for,
            target,
            commands,
            one_time,
            rotating,
            fleet,
        })
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
        let one = |c: Option<Spanned<RawCommand>>,
                   what: &str|
         -> Result<Option<Option<CommandLine>>, ConfigError> {
            let Some(c) = c else { return Ok(None) };
            let span = c.span();
            match c.into_inner() {
                RawCommand::Shell(s) if s.trim().is_empty() => Ok(Some(None)),
                RawCommand::Shell(s) => Ok(Some(Some(CommandLine::Shell(s)))),
                RawCommand::Argv(v) if v.is_empty() => Ok(Some(None)),
                RawCommand::Argv(v) if v[0].is_empty() || v[0].contains("%IP%") => self.err(
                    span,
                    format!("{what}: the program (first element) must be a fixed, non-empty path"),
                ),
                RawCommand::Argv(v) => Ok(Some(Some(CommandLine::Argv(v)))),
                RawCommand::Other(v) => self.err(
                    span,
                    format!(
                        "{what}: expected a shell command line (text) or a list of text arguments, got {v}"
                    ),
                ),
            }
        };
        let start4 = one(start, "start_command")?.flatten();
        let start6 = one(start6, "start_command_6")?.unwrap_or_else(|| start4.clone());
        let stop4 = one(stop, "stop_command")?.flatten();
        let stop6 = one(stop6, "stop_command_6")?.unwrap_or_else(|| stop4.clone());
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
        let (parsed, written) = match d.get_ref() {
            RawDuration::Seconds(s) => (u64::try_from(*s).ok().map(Duration::from_secs), s.to_string()),
            RawDuration::Text(t) => match humantime::parse_duration(t) {
                Ok(v) => (Some(v), format!("{t:?}")),
                Err(_) => {
                    return self.err(
                        d.span(),
                        format!(
                            "{what}: {t:?} is not a duration; write a whole number of seconds or text \
                             like \"500ms\", \"5s\" or \"2m\""
                        ),
                    )
                }
            },
            RawDuration::Other(v) => {
                return self.err(
                    d.span(),
                    format!(
                        "{what}: expected a whole number of seconds or a duration like \"500ms\" or \"5s\", \
                         got {v}"
                    ),
                )
            }
        };
        match parsed {
            Some(v) if v >= min && v <= max => Ok(v),
            _ => self.err(
                d.span(),
                format!("{what} must be between {} and {}, got {written}", human(min), human(max)),
            ),
        }
    }
}

/// A limit as messages show it: `100 ms`, `1 s`, `90 s`, `5 min`, `24 h`.
pub(super) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 && secs >= 300 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}
