//! knockd's `knockd.conf`, read unchanged into the native [`Config`], and the reverse:
//! [`to_toml`] prints any [`Config`] as native TOML (`portcullisd convert`).
//!
//! The format (knockd 0.8): an `[options]` section and one `[name]` section per door,
//! `key = value` lines with case-insensitive keys, whole-line `#` comments. Values run
//! from after the first `=` to the end of the line, trimmed. Where knockd is silent or
//! sloppy we are strict and say where: unknown keys, a key given twice, a port outside
//! 1..65535, a protocol other than tcp/udp, more than 32 knocks and a door without a
//! sequence or command are refused with `file:line: reason`. Where knockd has a default
//! we keep it: `Seq_Timeout` 25 s, `Cmd_Timeout` 10 s, no `TCPFlags` = any flags.
//! Differences from knockd are listed in `docs/knockd.md`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto::{FlagFilter, Proto, Service};

use super::{
    read_bounded, valid_ifname, Backend, CommandLine, Commands, Config, ConfigError, DaemonSettings, Door,
    Interfaces, IptablesVariant, LogTarget, OneTimeLine, OneTimeSequences, DEFAULT_COMMAND_TIME_LIMIT,
    DEFAULT_MAX_GRANTS, DEFAULT_MAX_TRACKED, MAX_SEQUENCE,
};

/// knockd's default `Seq_Timeout`.
pub const DEFAULT_SEQ_TIMEOUT: Duration = Duration::from_secs(25);
/// knockd's default `Cmd_Timeout`.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest command line accepted (knockd refuses commands longer than PATH_MAX).
pub const MAX_COMMAND_LEN: usize = 4096;
/// Most lines a one-time sequences file may have.
const MAX_ONE_TIME_LINES: usize = 100_000;

/// Whether `text` is a knockd.conf rather than native TOML: it has a single-bracket
/// section other than `[daemon]` (knockd's `[options]` or a door) before any native
/// `[[door]]`/`[daemon]` table.
pub fn looks_like_knockd(text: &str) -> bool {
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with("[[") || t == "[daemon]" {
            return false;
        }
        if t.starts_with('[') && t.ends_with(']') {
            return true;
        }
    }
    false
}

struct Section {
    name: String,
    line: usize,
    /// Lower-cased canonical key → (line, value).
    keys: Vec<(&'static str, usize, String)>,
}

/// Door keys: (accepted spelling, canonical key).
const DOOR_KEYS: &[(&str, &str)] = &[
    ("sequence", "sequence"),
    ("one_time_sequences", "one_time_sequences"),
    ("seq_timeout", "seq_timeout"),
    ("timeout", "seq_timeout"),
    ("tcpflags", "tcpflags"),
    ("start_command", "start_command"),
    ("command", "start_command"),
    ("start_command_6", "start_command_6"),
    ("command_6", "start_command_6"),
    ("cmd_timeout", "cmd_timeout"),
    ("stop_command", "stop_command"),
    ("stop_command_6", "stop_command_6"),
    ("target", "target"),
];

/// Parse and validate knockd.conf text (`path` is used in messages and to resolve nothing).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let err = |line: usize, message: String| ConfigError { path: path.to_owned(), line: Some(line), message };
    let mut daemon = DaemonSettings {
        interfaces: Interfaces::All,
        state_dir: PathBuf::from("/var/lib/portcullis"),
        log: LogTarget::Stderr,
        max_tracked: DEFAULT_MAX_TRACKED,
        backend: Backend::None,
        max_grants: DEFAULT_MAX_GRANTS,
        log_file: None,
        pid_file: None,
        command_time_limit: DEFAULT_COMMAND_TIME_LIMIT,
    };
    let mut in_options = false;
    let mut seen_options: Vec<&'static str> = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(n, format!("section header {line:?} lacks its closing ']'")));
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("options") {
                in_options = true;
                continue;
            }
            in_options = false;
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                return Err(err(
                    n,
                    format!("door name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"),
                ));
            }
            if let Some(prev) = sections.iter().find(|s| s.name == name) {
                return Err(err(n, format!("door [{name}] is defined twice (first at line {})", prev.line)));
            }
            sections.push(Section { name: name.to_string(), line: n, keys: Vec::new() });
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (line.to_ascii_lowercase(), None),
        };
        if in_options {
            let canon: &'static str = match key.as_str() {
                "usesyslog" => "usesyslog",
                "logfile" => "logfile",
                "pidfile" => "pidfile",
                "interface" => "interface",
                _ => {
                    return Err(err(
                        n,
                        format!(
                            "unknown option {key:?} in [options] (knockd knows UseSyslog, LogFile, PidFile, \
                             Interface)"
                        ),
                    ))
                }
            };
            if seen_options.contains(&canon) {
                return Err(err(n, format!("option {key:?} is given twice")));
            }
            seen_options.push(canon);
            match (canon, value) {
                ("usesyslog", None) => daemon.log = LogTarget::Syslog,
                ("usesyslog", Some(_)) => {
                    return Err(err(n, "UseSyslog takes no value: write the bare word".into()))
                }
                (k, None) => return Err(err(n, format!("option {k:?} needs a value: {k} = ..."))),
                (k, Some(v)) if v.is_empty() => {
                    return Err(err(n, format!("option {k:?} has an empty value")))
                }
                ("logfile", Some(v)) => {
                    daemon.log_file = Some(absolute(&v, "LogFile").map_err(|m| err(n, m))?)
                }
                ("pidfile", Some(v)) => {
                    daemon.pid_file = Some(absolute(&v, "PidFile").map_err(|m| err(n, m))?)
                }
                (_, Some(v)) => {
                    // Interface: knockd takes one; we also accept a comma-separated list.
                    let mut names = Vec::new();
                    for name in v.split(',').map(str::trim) {
                        if !valid_ifname(name) {
                            return Err(err(n, format!("invalid interface name {name:?}")));
                        }
                        if !names.iter().any(|x| x == name) {
                            names.push(name.to_string());
                        }
                    }
                    daemon.interfaces = Interfaces::Named(names);
                }
            }
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(err(
                n,
                format!("{key:?} is outside any section: start with [options] or [doorname]"),
            ));
        };
        let Some(&(_, canon)) = DOOR_KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(err(
                n,
                format!(
                    "unknown option {key:?} in door [{}] (knockd knows Sequence, One_Time_Sequences, \
                     Seq_Timeout, TCPFlags, Start_Command, Start_Command_6, Cmd_Timeout, Stop_Command, \
                     Stop_Command_6, Target)",
                    section.name
                ),
            ));
        };
        let Some(value) = value else {
            return Err(err(n, format!("{key:?} needs a value: {key} = ...")));
        };
        if let Some((_, first, _)) = section.keys.iter().find(|(k, _, _)| *k == canon) {
            return Err(err(
                n,
                format!("{key:?} is given twice in door [{}] (first at line {first})", section.name),
            ));
        }
        section.keys.push((canon, n, value));
    }
    let mut doors = Vec::with_capacity(sections.len());
    for s in sections {
        doors.push(door(s).map_err(|(line, m)| err(line, m))?);
    }
    if doors.is_empty() {
        return Err(ConfigError {
            path: path.to_owned(),
            line: None,
            message: "no doors configured: add at least one [doorname] section with a Sequence".into(),
        });
    }
    Ok(Config { path: path.to_owned(), daemon, doors, spa: None, api: None })
}

fn absolute(v: &str, what: &str) -> Result<PathBuf, String> {
    if v.starts_with('/') {
        Ok(PathBuf::from(v))
    } else {
        Err(format!("{what} must be an absolute path, not {v:?}"))
    }
}

fn door(s: Section) -> Result<Door, (usize, String)> {
    let get = |k: &str| s.keys.iter().find(|(c, _, _)| *c == k).map(|(_, l, v)| (*l, v.as_str()));
    let name = s.name.clone();
    let one_time = match get("one_time_sequences") {
        None => None,
        Some((l, v)) => {
            Some(load_one_time(Path::new(v)).map_err(|e| (l, format!("One_Time_Sequences: {e}")))?)
        }
    };
    let sequence = match (&one_time, get("sequence")) {
        // knockd: the file replaces Sequence.
        (Some(ot), _) => ot.remaining.first().map(|l| l.sequence.clone()).unwrap_or_default(),
        (None, Some((l, v))) => parse_sequence(v).map_err(|e| (l, e))?,
        (None, None) => {
            return Err((s.line, format!("door [{name}] has no Sequence (or One_Time_Sequences)")));
        }
    };
    let seconds = |k: &str, default: Duration, min: u64, max: u64| -> Result<Duration, (usize, String)> {
        match get(k) {
            None => Ok(default),
            Some((l, v)) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err((l, format!("{k} must be whole seconds from {min} to {max}, not {v:?}"))),
            },
        }
    };
    let seq_timeout = seconds("seq_timeout", DEFAULT_SEQ_TIMEOUT, 1, 3600)?;
    let cmd_timeout = seconds("cmd_timeout", DEFAULT_CMD_TIMEOUT, 0, 86_400)?;
    let flags = match get("tcpflags") {
        None => FlagFilter::ANY,
        Some((l, v)) => FlagFilter::parse(v).map_err(|e| (l, format!("TCPFlags: {e}")))?,
    };
    let target = match get("target") {
        None => None,
        Some((l, v)) => {
            Some(v.parse::<IpAddr>().map_err(|_| (l, format!("Target {v:?} is not an IP address")))?)
        }
    };
    let command = |k: &str| -> Result<Option<Option<CommandLine>>, (usize, String)> {
        match get(k) {
            None => Ok(None),
            Some((l, v)) if v.len() > MAX_COMMAND_LEN => {
                Err((l, format!("{k} is longer than {MAX_COMMAND_LEN} bytes")))
            }
            Some((_, "")) => Ok(Some(None)),
            Some((_, v)) => Ok(Some(Some(CommandLine::Shell(v.to_string())))),
        }
    };
    let start4 = command("start_command")?.flatten();
    let start6 = command("start_command_6")?.unwrap_or_else(|| start4.clone());
    let stop4 = command("stop_command")?.flatten();
    let stop6 = command("stop_command_6")?.unwrap_or_else(|| stop4.clone());
    if start4.is_none() && start6.is_none() {
        return Err((s.line, format!("door [{name}] has no Start_Command (or Command)")));
    }
    Ok(Door {
        name,
        sequence,
        seq_timeout,
        flags,
        open: Vec::new(),
        open_for: cmd_timeout,
        target,
        commands: Some(Commands { start4, start6, stop4, stop6, cmd_timeout }),
        one_time,
    })
}

/// Parse knockd's `port[:tcp|udp],...` (spaces around items tolerated; TCP by default).
pub fn parse_sequence(s: &str) -> Result<Vec<Service>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("empty knock in sequence {s:?}"));
        }
        let (port, proto) = match item.split_once(':') {
            Some((p, proto)) => (p.trim(), proto.trim()),
            None => (item, "tcp"),
        };
        let proto = if proto.eq_ignore_ascii_case("tcp") {
            Proto::Tcp
        } else if proto.eq_ignore_ascii_case("udp") {
            Proto::Udp
        } else {
            return Err(format!("knock {item:?}: protocol must be tcp or udp"));
        };
        let port = match port.parse::<u32>() {
            Ok(p @ 1..=65535) => p as u16,
            Ok(p) => return Err(format!("knock port {p} is out of range (1-65535)")),
            Err(_) => return Err(format!("knock {item:?} is not PORT or PORT:tcp / PORT:udp")),
        };
        out.push(Service { proto, port });
    }
    if out.len() > MAX_SEQUENCE {
        return Err(format!("{} knocks in the sequence; knockd allows at most {MAX_SEQUENCE}", out.len()));
    }
    Ok(out)
}

/// Read a one-time sequences file: one knockd sequence per line; lines starting with `#`
/// (comments, and used lines) and blank lines are skipped.
pub fn load_one_time(path: &Path) -> Result<OneTimeSequences, String> {
    let text = read_bounded(path).map_err(|e| e.message)?;
    parse_one_time(&text, path)
}

/// [`load_one_time`] on text already read.
pub fn parse_one_time(text: &str, path: &Path) -> Result<OneTimeSequences, String> {
    let mut remaining = Vec::new();
    let mut offset = 0u64;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i >= MAX_ONE_TIME_LINES {
            return Err(format!("{}: more than {MAX_ONE_TIME_LINES} lines", path.display()));
        }
        let start = offset;
        offset += line.len() as u64;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let sequence = parse_sequence(t).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
        remaining.push(OneTimeLine { line: i + 1, offset: start, sequence });
    }
    Ok(OneTimeSequences { path: path.to_owned(), remaining })
}

/// Advice specific to commands and one-time doors (merged into [`Config::warnings`]).
pub(crate) fn door_warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for d in &c.doors {
        if let Some(ot) = &d.one_time {
            if ot.remaining.is_empty() {
                out.push(format!(
                    "door {}: every sequence in {} is used; the door is disabled",
                    d.name,
                    ot.path.display()
                ));
            }
        }
        let Some(cmds) = &d.commands else { continue };
        let named = [
            ("start_command", &cmds.start4),
            ("start_command_6", &cmds.start6),
            ("stop_command", &cmds.stop4),
            ("stop_command_6", &cmds.stop6),
        ];
        let mut reported = Vec::new();
        for (what, cmd) in named {
            let Some(program) = cmd.as_ref().and_then(program_of) else { continue };
            if program.starts_with('/') && !Path::new(&program).exists() && !reported.contains(&program) {
                out.push(format!(
                    "door {}: {what} runs {program}, which does not exist here; the command will fail \
                     (logged with exit status 127){}",
                    d.name,
                    if program.ends_with("/iptables") { " - on Debian it is /usr/sbin/iptables" } else { "" }
                ));
                reported.push(program);
            }
        }
        if cmds.start6.is_some() && cmds.start6 == cmds.start4 {
            if let Some(p) = cmds.start4.as_ref().and_then(program_of) {
                if p.ends_with("/iptables") || p == "iptables" {
                    out.push(format!(
                        "door {}: IPv6 knockers get the IPv4 start_command ({p}), which cannot take an IPv6 \
                         address; set start_command_6 (ip6tables) or an empty one",
                        d.name
                    ));
                }
            }
        }
    }
    out
}

/// The program a command runs: an argv's first element, a shell line's first word.
fn program_of(c: &CommandLine) -> Option<String> {
    match c {
        CommandLine::Argv(v) => v.first().cloned(),
        CommandLine::Shell(s) => s.split_whitespace().next().map(str::to_string),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("\"{}ms\"", d.as_millis())
    }
}

fn toml_command(c: &Option<CommandLine>) -> String {
    match c {
        None => "\"\"".into(),
        Some(CommandLine::Shell(s)) => toml_str(s),
        Some(CommandLine::Argv(v)) => {
            format!("[{}]", v.iter().map(|a| toml_str(a)).collect::<Vec<_>>().join(", "))
        }
    }
}

/// `config` as native TOML that [`super::parse`] reads back to the same doors and
/// settings (`portcullisd convert`).
pub fn to_toml(config: &Config) -> String {
    let mut s = String::new();
    let d = &config.daemon;
    let _ = writeln!(s, "# Converted from {} by `portcullisd convert`.", config.path.display());
    let _ = writeln!(s, "# Format: docs/config.md; knockd mapping: docs/knockd.md.\n");
    let _ = writeln!(s, "[daemon]");
    match &d.interfaces {
        Interfaces::All => {
            let _ = writeln!(s, "interfaces = [\"all\"]");
        }
        Interfaces::Named(n) => {
            let list: Vec<String> = n.iter().map(|x| toml_str(x)).collect();
            let _ = writeln!(s, "interfaces = [{}]", list.join(", "));
        }
    }
    if d.state_dir != Path::new("/var/lib/portcullis") {
        let _ = writeln!(s, "state_dir = {}", toml_str(&d.state_dir.display().to_string()));
    }
    let log = match d.log {
        LogTarget::Stderr => "stderr",
        LogTarget::Syslog => "syslog",
        LogTarget::Journald => "journald",
    };
    let _ = writeln!(s, "log = \"{log}\"");
    if let Some(f) = &d.log_file {
        let _ = writeln!(s, "log_file = {}", toml_str(&f.display().to_string()));
    }
    if let Some(f) = &d.pid_file {
        let _ = writeln!(s, "pid_file = {}", toml_str(&f.display().to_string()));
    }
    let backend = match d.backend {
        Backend::Nftables => "nftables",
        Backend::Iptables(IptablesVariant::Auto) => "iptables",
        Backend::Iptables(IptablesVariant::Legacy) => "iptables-legacy",
        Backend::Iptables(IptablesVariant::Nft) => "iptables-nft",
        Backend::None => "none",
    };
    if d.backend == Backend::None && config.doors.iter().all(|x| x.open.is_empty()) {
        let _ = writeln!(s, "# The doors only run commands: no firewall backend is needed.");
    }
    let _ = writeln!(s, "backend = \"{backend}\"");
    if d.max_tracked != DEFAULT_MAX_TRACKED {
        let _ = writeln!(s, "max_tracked = {}", d.max_tracked);
    }
    if d.max_grants != DEFAULT_MAX_GRANTS {
        let _ = writeln!(s, "max_grants = {}", d.max_grants);
    }
    if d.command_time_limit != DEFAULT_COMMAND_TIME_LIMIT {
        let _ = writeln!(s, "command_time_limit = {}", toml_duration(d.command_time_limit));
    }
    for door in &config.doors {
        let _ = writeln!(s, "\n[[door]]");
        let _ = writeln!(s, "name = {}", toml_str(&door.name));
        match &door.one_time {
            Some(ot) => {
                let _ = writeln!(s, "one_time_sequences = {}", toml_str(&ot.path.display().to_string()));
            }
            None => {
                let seq: Vec<String> =
                    door.sequence.iter().map(|k| format!("\"{}:{}\"", k.port, k.proto)).collect();
                let _ = writeln!(s, "sequence = [{}]", seq.join(", "));
            }
        }
        let _ = writeln!(s, "seq_timeout = {}", toml_duration(door.seq_timeout));
        let _ = writeln!(s, "tcp_flags = \"{}\"", door.flags);
        if !door.open.is_empty() {
            let open: Vec<String> = door.open.iter().map(|o| format!("\"{o}\"")).collect();
            let _ = writeln!(s, "open = [{}]", open.join(", "));
            let _ = writeln!(s, "open_for = {}", toml_duration(door.open_for));
        }
        if let Some(t) = door.target {
            let _ = writeln!(s, "target = \"{t}\"");
        }
        if let Some(c) = &door.commands {
            // Absent *_6 keys fall back to the IPv4 command; write them only if they differ.
            if c.start4.is_some() {
                let _ = writeln!(s, "start_command = {}", toml_command(&c.start4));
            }
            if c.start6 != c.start4 {
                let _ = writeln!(s, "start_command_6 = {}", toml_command(&c.start6));
            }
            if c.stop4.is_some() {
                let _ = writeln!(s, "stop_command = {}", toml_command(&c.stop4));
            }
            if c.stop6 != c.stop4 {
                let _ = writeln!(s, "stop_command_6 = {}", toml_command(&c.stop6));
            }
            let _ = writeln!(s, "cmd_timeout = {}", toml_duration(c.cmd_timeout));
        }
    }
    s
}

#[cfg(test)]
mod tests;
