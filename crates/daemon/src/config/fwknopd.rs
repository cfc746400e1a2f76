//! fwknopd's `fwknopd.conf`, read unchanged (with the `access.conf` it names) into the
//! native [`Config`], so `portcullisd run --config /etc/fwknop/fwknopd.conf` replaces
//! fwknopd on a host as it is.
//!
//! Syntax as fwknopd reads it: `NAME value;` lines (the value ends at `;` or the end
//! of the line), `#` comments, and `$NAME` in a value expands to another variable.
//! Honoured keys are listed in [`HONOURED`]; every other key set in the file is named,
//! with its line and why, in one note that the daemon logs at start — nothing is
//! silently ignored. The grant semantics are fwknopd's: a grant is an ACCEPT in our
//! own chain (`IPT_INPUT_ACCESS`, `FWKNOP_INPUT` by default), so the port becomes
//! reachable on the default-drop host fwknopd's documentation asks for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access_conf;
use super::error::ConfigError;
use super::model::{
    valid_chain_name, valid_ifname, valid_syslog_identity, Backend, Config, DaemonSettings, Interfaces,
    IptablesVariant, LogTarget, SyslogFacility,
};
use super::spa::{SpaConfig, DEFAULT_PORT};

/// Keys we honour.
pub const HONOURED: &[&str] = &[
    "PCAP_INTF",
    "PCAP_FILTER",
    "ENABLE_UDP_SERVER",
    "UDPSERV_PORT",
    "ENABLE_SPA_PACKET_AGING",
    "MAX_SPA_PACKET_AGE",
    "ENABLE_DIGEST_PERSISTENCE",
    "DIGEST_FILE",
    "FWKNOP_RUN_DIR",
    "FWKNOP_CONF_DIR",
    "FWKNOP_PID_FILE",
    "ACCESS_FILE",
    "ACCESS_FOLDER",
    "IPT_INPUT_ACCESS",
    "FLUSH_IPT_AT_INIT",
    "FLUSH_IPT_AT_EXIT",
    "ENABLE_IPT_FORWARDING",
    "ENABLE_IPT_LOCAL_NAT",
    "SYSLOG_IDENTITY",
    "SYSLOG_FACILITY",
    "VERBOSE",
    "CMD_EXEC_TIMEOUT",
];

/// Keys fwknopd knows that we do not honour, with the reason given in the note.
const NOT_HONOURED: &[(&str, &str)] = &[
    ("EXIT_AT_INTF_DOWN", "moot: portcullisd keeps working when interfaces go down, change or appear"),
    ("ENABLE_PCAP_PROMISC", "moot: only packets addressed to this host are SPA for it"),
    ("PCAP_DISPATCH_COUNT", "moot: packets are read in batches as they arrive"),
    ("PCAP_LOOP_SLEEP", "moot: packets are read as they arrive"),
    ("MAX_SNIFF_BYTES", "moot: SPA packets up to 1500 bytes are always read"),
    ("ENABLE_PCAP_ANY_DIRECTION", "moot: only packets to this host count"),
    ("PCAP_FILE", "not supported: portcullisd reads live traffic only"),
    ("UDPSERV_SELECT_TIMEOUT", "moot"),
    ("LOCALE", "moot"),
    ("ENABLE_NFQ_CAPTURE", "not supported: packets are captured with an AF_PACKET socket instead"),
    ("NFQ_INTERFACE", "not supported (no NFQUEUE capture)"),
    ("NFQ_PORT", "not supported (no NFQUEUE capture)"),
    ("NFQ_TABLE", "not supported (no NFQUEUE capture)"),
    ("NFQ_CHAIN", "not supported (no NFQUEUE capture)"),
    ("NFQ_QUEUE_NUMBER", "not supported (no NFQUEUE capture)"),
    ("NFQ_LOOP_SLEEP", "not supported (no NFQUEUE capture)"),
    ("ENABLE_TCP_SERVER", "not supported: SPA over TCP is not accepted"),
    ("TCPSERV_PORT", "not supported: SPA over TCP is not accepted"),
    ("ENABLE_SPA_OVER_HTTP", "not supported: SPA over HTTP is not accepted"),
    ("ALLOW_ANY_USER_AGENT", "not supported: SPA over HTTP is not accepted"),
    ("ENABLE_X_FORWARDED_FOR", "not supported: SPA over HTTP is not accepted"),
    ("ENABLE_NAT_DNS", "not honoured: NAT destinations must be IPv4 addresses (no DNS on the packet path)"),
    ("DIGEST_DB_FILE", "not supported: DIGEST_FILE is imported instead"),
    ("GPG_HOME_DIR", "not supported: GnuPG stanzas are refused"),
    ("GPG_EXE", "not supported: GnuPG stanzas are refused"),
    ("ENABLE_RULE_PREPEND", "moot: grants are set members, not rules"),
    ("ENABLE_DESTINATION_RULE", "not honoured: grants match any local destination"),
    ("RULES_CHECK_THRESHOLD", "moot: expiry does not scan rules"),
    ("ENABLE_IPT_COMMENT_CHECK", "moot: grants are not commented rules"),
    ("ENABLE_IPT_OUTPUT", "not supported: no OUTPUT rules are made"),
    ("IPT_OUTPUT_ACCESS", "not supported: no OUTPUT rules are made"),
    ("ENABLE_IPT_SNAT", "not supported globally: use FORCE_SNAT in the stanza"),
    ("SNAT_TRANSLATE_IP", "not supported globally: use FORCE_SNAT in the stanza"),
    ("IPT_FORWARD_ACCESS", "not honoured: NAT grants use the firewall backend's own chains"),
    ("IPT_DNAT_ACCESS", "not honoured: NAT grants use the firewall backend's own chains"),
    ("IPT_SNAT_ACCESS", "not honoured: NAT grants use the firewall backend's own chains"),
    ("IPT_MASQUERADE_ACCESS", "not honoured: NAT grants use the firewall backend's own chains"),
    ("SUDO_EXE", "moot: SPA command messages are never executed"),
    ("FIREWALL_EXE", "moot: the iptables backend finds its own tools"),
    ("ENABLE_EXTERNAL_CMDS", "not implemented by fwknopd either; use CMD_CYCLE_* in access.conf"),
    ("EXTERNAL_CMD_OPEN", "not implemented by fwknopd either; use CMD_CYCLE_* in access.conf"),
    ("EXTERNAL_CMD_CLOSE", "not implemented by fwknopd either; use CMD_CYCLE_* in access.conf"),
    ("EXTERNAL_CMD_ALARM", "not implemented by fwknopd either; use CMD_CYCLE_* in access.conf"),
    ("ENABLE_EXT_CMD_PREFIX", "not implemented by fwknopd either"),
    ("EXT_CMD_PREFIX", "not implemented by fwknopd either"),
    ("BLACKLIST", "not implemented by fwknopd either; restrict SOURCE in access.conf"),
];

/// Prefixes of keys for firewalls other than iptables (firewalld, ipfw, pf).
const OTHER_FIREWALLS: &[&str] = &["FIREWD_", "ENABLE_FIREWD_", "FLUSH_FIREWD_", "IPFW_", "PF_"];

fn known(name: &str) -> bool {
    HONOURED.contains(&name)
        || NOT_HONOURED.iter().any(|(k, _)| *k == name)
        || OTHER_FIREWALLS.iter().any(|p| name.starts_with(p))
}

/// Whether `text` (read from `path`) is an fwknopd.conf: the file is called
/// `fwknopd.conf`, or its first setting is an fwknopd key (`NAME value;`), or it has
/// no setting at all and mentions fwknopd (the stock, all-comments file).
pub fn looks_like_fwknopd(text: &str, path: &Path) -> bool {
    if path.file_name().is_some_and(|n| n == "fwknopd.conf") {
        return true;
    }
    match text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')) {
        Some(l) => l.split_whitespace().next().is_some_and(known) && !l.contains('='),
        None => text.contains("fwknopd"),
    }
}

struct Var {
    line: usize,
    value: String,
}

fn yes(v: &str) -> bool {
    v.eq_ignore_ascii_case("y") || v.eq_ignore_ascii_case("yes")
}

/// Expand `$NAME` references (fwknopd expands them once, from other variables or the
/// built-in defaults).
fn expand(value: &str, vars: &HashMap<String, Var>, defaults: &HashMap<&str, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        match vars.get(name).map(|v| v.value.clone()).or_else(|| defaults.get(name).cloned()) {
            Some(v) if !name.is_empty() => out.push_str(&v),
            _ => {
                out.push('$');
                out.push_str(name);
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Parse and validate fwknopd.conf text; the access.conf it names is read from disk.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError { path: path.to_owned(), line, message };
    let mut vars: HashMap<String, Var> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => return Err(err(Some(i + 1), format!("{line:?} has no value"))),
        };
        let value = value.split(';').next().unwrap_or("").trim();
        if !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            return Err(err(Some(i + 1), format!("{name:?} is not an fwknopd.conf variable name")));
        }
        vars.insert(name.to_string(), Var { line: i + 1, value: value.to_string() });
    }
    let conf_dir = path.parent().unwrap_or(Path::new(".")).display().to_string();
    let mut defaults: HashMap<&str, String> = HashMap::new();
    defaults.insert("FWKNOP_RUN_DIR", "/var/run/fwknop".into());
    defaults.insert("FWKNOP_CONF_DIR", conf_dir);
    let get = |name: &str| vars.get(name).map(|v| (v.line, expand(&v.value, &vars, &defaults)));
    let flag = |name: &str, default: bool| get(name).map_or(default, |(_, v)| yes(&v));

    let mut daemon = DaemonSettings {
        backend: Backend::Iptables(IptablesVariant::Auto),
        log: LogTarget::Syslog,
        ..DaemonSettings::default()
    };
    daemon.syslog.identity = "fwknopd".into();
    if let Some((l, v)) = get("PCAP_INTF") {
        daemon.interfaces = if v == "any" {
            Interfaces::All
        } else if valid_ifname(&v) {
            Interfaces::Named(vec![v])
        } else {
            return Err(err(Some(l), format!("PCAP_INTF {v:?} is not an interface name")));
        };
    }
    let run_dir = get("FWKNOP_RUN_DIR").map_or_else(|| "/var/run/fwknop".to_string(), |(_, v)| v);
    let abs = |l: usize, what: &str, v: String| -> Result<PathBuf, ConfigError> {
        if v.starts_with('/') {
            Ok(PathBuf::from(v))
        } else {
            Err(err(Some(l), format!("{what} must be an absolute path")))
        }
    };
    if let Some((l, v)) = get("FWKNOP_RUN_DIR") {
        abs(l, "FWKNOP_RUN_DIR", v)?;
    }
    daemon.pid_file = Some(match get("FWKNOP_PID_FILE") {
        Some((l, v)) => abs(l, "FWKNOP_PID_FILE", v)?,
        None => PathBuf::from(format!("{run_dir}/fwknopd.pid")),
    });
    let (chain, jump) = match get("IPT_INPUT_ACCESS") {
        None => ("FWKNOP_INPUT".to_string(), 1),
        Some((l, v)) => ipt_access(&v).map_err(|m| err(Some(l), format!("IPT_INPUT_ACCESS: {m}")))?,
    };
    daemon.firewall.accept = true;
    daemon.firewall.iptables_chain = chain;
    daemon.firewall.iptables_jump = jump;
    // fwknopd forwards only what a NAT grant lets through; we gate forwarded flows too.
    daemon.firewall.gate_forward = true;
    daemon.flush_at_start = flag("FLUSH_IPT_AT_INIT", true);
    daemon.flush_at_exit = flag("FLUSH_IPT_AT_EXIT", true);
    if let Some((l, v)) = get("SYSLOG_IDENTITY") {
        if !valid_syslog_identity(&v) {
            return Err(err(
                Some(l),
                format!("SYSLOG_IDENTITY {v:?}: use 1-32 characters of A-Z a-z 0-9 _ . -"),
            ));
        }
        daemon.syslog.identity = v;
    }
    if let Some((l, v)) = get("SYSLOG_FACILITY") {
        daemon.syslog.facility = SyslogFacility::parse(&v).ok_or_else(|| {
            err(Some(l), format!("SYSLOG_FACILITY {v:?}: use LOG_DAEMON, LOG_AUTH, LOG_LOCAL0..7, ..."))
        })?;
    }
    if let Some((l, v)) = get("VERBOSE") {
        daemon.verbose = v.parse::<u32>().map_err(|_| err(Some(l), "VERBOSE must be a number".into()))? > 0;
    }
    if let Some((l, v)) = get("CMD_EXEC_TIMEOUT") {
        daemon.command_time_limit = v
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .map(Duration::from_secs)
            .ok_or_else(|| err(Some(l), "CMD_EXEC_TIMEOUT must be 1 to 3600 seconds".into()))?;
    }

    let mut ports = vec![DEFAULT_PORT];
    if let Some((l, v)) = get("PCAP_FILTER") {
        ports = vec![filter_port(&v).ok_or_else(|| {
            err(Some(l), format!("PCAP_FILTER {v:?}: only filters naming one UDP port are understood (e.g. udp port 62201)"))
        })?];
    }
    let udp_server = if flag("ENABLE_UDP_SERVER", false) {
        let port = match get("UDPSERV_PORT") {
            None => DEFAULT_PORT,
            Some((l, v)) => v
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| err(Some(l), "UDPSERV_PORT must be in 1..65535".into()))?,
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
        Some(port)
    } else {
        None
    };
    let max_age = match get("MAX_SPA_PACKET_AGE") {
        None => 120,
        Some((l, v)) => v
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=86_400).contains(s))
            .ok_or_else(|| err(Some(l), "MAX_SPA_PACKET_AGE must be 1 to 86400 seconds".into()))?,
    };
    let persist = flag("ENABLE_DIGEST_PERSISTENCE", true);
    let digest_file = match get("DIGEST_FILE") {
        Some((l, v)) => abs(l, "DIGEST_FILE", v)?,
        None => PathBuf::from(format!("{run_dir}/digest.cache")),
    };
    let forwarding = flag("ENABLE_IPT_FORWARDING", false);
    // NAT grants need the backend's NAT rules.
    daemon.firewall.nat = forwarding;

    let conf_dir = get("FWKNOP_CONF_DIR")
        .map_or_else(|| path.parent().unwrap_or(Path::new(".")).to_owned(), |(_, v)| PathBuf::from(v));
    let (access_line, access_path, access) = match (get("ACCESS_FOLDER"), get("ACCESS_FILE")) {
        (Some((l, v)), _) => (Some(l), conf_dir.join(&v), access_conf::load_folder(&conf_dir.join(&v))),
        (None, Some((l, v))) => (Some(l), conf_dir.join(&v), access_conf::load(&conf_dir.join(&v))),
        (None, None) => {
            (None, conf_dir.join("access.conf"), access_conf::load(&conf_dir.join("access.conf")))
        }
    };
    let access = access.map_err(|m| err(access_line, m))?;

    let mut notes = Vec::new();
    let mut ignored: Vec<(usize, String)> = Vec::new();
    for (name, v) in &vars {
        if HONOURED.contains(&name.as_str()) {
            continue;
        }
        let why = match NOT_HONOURED.iter().find(|(k, _)| k == name) {
            // Switching off a feature we do not have is what we do anyway.
            Some(_) if v.value.eq_ignore_ascii_case("n") && name != "EXIT_AT_INTF_DOWN" => continue,
            Some((_, why)) => why.to_string(),
            None if OTHER_FIREWALLS.iter().any(|p| name.starts_with(p)) => {
                "for another firewall (iptables is used)".into()
            }
            None => "unknown to fwknopd and to portcullisd".into(),
        };
        ignored.push((v.line, format!("{name} (line {}): {why}", v.line)));
    }
    if !ignored.is_empty() {
        ignored.sort();
        let list: Vec<String> = ignored.into_iter().map(|(_, s)| s).collect();
        notes.push(format!("{}: settings not honoured: {}", path.display(), list.join("; ")));
    }
    notes.extend(access.notes);
    let spa = SpaConfig {
        ports,
        max_age,
        protect: Vec::new(),
        server_key: None,
        users: HashMap::new(),
        stanzas: access.stanzas,
        udp_server,
        aging: flag("ENABLE_SPA_PACKET_AGING", true),
        persist_replay: persist,
        import_digest_file: persist.then_some(digest_file),
        forwarding,
        local_nat: forwarding && flag("ENABLE_IPT_LOCAL_NAT", true),
        access_conf: Some(access_path),
        inline_stanzas: 0,
        source_prefix: (24, 56),
        warnings: Vec::new(),
    };
    let (limits, store) = (super::Limits::for_max_grants(daemon.max_grants), Default::default());
    Ok(Config {
        path: path.to_owned(),
        daemon,
        doors: Vec::new(),
        spa: Some(spa),
        api: None,
        fleet: None,
        notes,
        limits,
        store,
    })
}

/// `ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1` → (our chain, jump position in INPUT).
fn ipt_access(v: &str) -> Result<(String, u32), String> {
    let f: Vec<&str> = v.split(',').map(str::trim).collect();
    let [target, table, from, jump, chain, _rule] = f[..] else {
        return Err("write TARGET, TABLE, FROM_CHAIN, JUMP_POSITION, CHAIN, RULE_POSITION".into());
    };
    if target != "ACCEPT" || table != "filter" {
        return Err(format!("only ACCEPT in the filter table is supported, not {target} in {table}"));
    }
    if from != "INPUT" {
        return Err(format!("the jump must come from INPUT, not {from}"));
    }
    let builtin = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"].contains(&chain);
    if !valid_chain_name(chain) || builtin {
        return Err(format!(
            "{chain:?}: our chain needs a name of 1-24 characters of A-Z a-z 0-9 _ -, not a built-in one"
        ));
    }
    let jump = jump.parse().ok().filter(|&p| (1..=10_000).contains(&p)).ok_or("bad jump position")?;
    Ok((chain.to_string(), jump))
}

/// The UDP port of a pcap filter like `udp port 62201` or `udp dst port 62201`.
fn filter_port(f: &str) -> Option<u16> {
    let w: Vec<&str> = f.split_whitespace().collect();
    match w[..] {
        ["udp", "port", p] | ["udp", "dst", "port", p] => p.parse().ok().filter(|&p| p != 0),
        _ => None,
    }
}

#[cfg(test)]
#[path = "fwknopd_tests.rs"]
mod tests;
