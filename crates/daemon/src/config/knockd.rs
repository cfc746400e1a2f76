//! knockd's `knockd.conf`, read unchanged into the native [`Config`] (the reverse,
//! any [`Config`] as native TOML, is [`super::convert`]).
//!
//! The format (knockd 0.8): an `[options]` section and one `[name]` section per door,
//! `key = value` lines with case-insensitive keys, whole-line `#` comments. Values run
//! from after the first `=` to the end of the line, trimmed. Where knockd is silent or
//! sloppy we are strict and say where: unknown keys, a key given twice, a port outside
//! 1..65535, a protocol other than tcp/udp, more than 32 knocks and a door without a
//! sequence or command are refused with `file:line: reason`. Where knockd has a default
//! we keep it: `Seq_Timeout` 25 s, `Cmd_Timeout` 10 s, no `TCPFlags` = any flags.
//! Differences from knockd are listed in `docs/knockd.md`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto::FlagFilter;

use super::error::ConfigError;
use super::model::{
    valid_ifname, Backend, CommandLine, Commands, Config, DaemonSettings, Door, Interfaces, LogTarget,
    DEFAULT_COMMAND_TIME_LIMIT, DEFAULT_MAX_GRANTS, DEFAULT_MAX_TRACKED,
};
pub use super::one_time::load_one_time;
use super::one_time::parse_sequence;

/// knockd's default `Seq_Timeout`.
pub const DEFAULT_SEQ_TIMEOUT: Duration = Duration::from_secs(25);
/// knockd's default `Cmd_Timeout`.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest command line accepted (knockd refuses commands longer than PATH_MAX).
pub const MAX_COMMAND_LEN: usize = 4096;

/// Top-level tables of the native format.
const NATIVE_TABLES: &[&str] = &["daemon", "door", "spa", "api"];

/// Whether `text` is a knockd.conf rather than native TOML. The first section header
/// decides: an array table (`[[door]]`) or one of the native tables (`[daemon]`, `[spa]`,
/// `[api]`, `[door]`, or a dotted name under them) means native; anything else
/// (`[options]`, a door name) means knockd. A knockd door literally named like a native
/// table needs `--format knockd`.
pub fn looks_like_knockd(text: &str) -> bool {
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with("[[") {
            return false;
        }
        if let Some((name, _)) = t.strip_prefix('[').and_then(|r| r.split_once(']')) {
            let top = name.split('.').next().unwrap_or(name).trim();
            return !NATIVE_TABLES.contains(&top);
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
        ..DaemonSettings::default()
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
    let limits = super::Limits::for_max_grants(daemon.max_grants);
    Ok(Config {
        path: path.to_owned(),
        daemon,
        doors,
        spa: None,
        api: None,
        fleet: None,
        notes: Vec::new(),
        limits,
        store: Default::default(),
    })
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
        rotating: None,
        fleet: false,
    })
}

#[cfg(test)]
mod tests;
