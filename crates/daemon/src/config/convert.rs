//! `portcullisd convert`: any [`Config`] printed as native TOML that reads back to the
//! same doors and settings.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::model::{
    Backend, CommandLine, Config, FirewallSettings, Interfaces, SyslogSettings, DEFAULT_COMMAND_TIME_LIMIT,
    DEFAULT_MAX_GRANTS, DEFAULT_MAX_TRACKED,
};

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
    let _ =
        writeln!(s, "# Format: docs/config.md; knockd mapping: docs/knockd.md; fwknopd: docs/fwknopd.md.");
    for n in &config.notes {
        let _ = writeln!(s, "# note: {n}");
    }
    let _ = writeln!(s);
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
    let _ = writeln!(s, "log = \"{}\"", d.log);
    if let Some(f) = &d.log_file {
        let _ = writeln!(s, "log_file = {}", toml_str(&f.display().to_string()));
    }
    if let Some(f) = &d.pid_file {
        let _ = writeln!(s, "pid_file = {}", toml_str(&f.display().to_string()));
    }
    if d.backend == Backend::None && config.doors.iter().all(|x| x.open.is_empty()) {
        let _ = writeln!(s, "# The doors only run commands: no firewall backend is needed.");
    }
    let _ = writeln!(s, "backend = \"{}\"", d.backend);
    if d.max_tracked != DEFAULT_MAX_TRACKED {
        let _ = writeln!(s, "max_tracked = {}", d.max_tracked);
    }
    if d.max_grants != DEFAULT_MAX_GRANTS {
        let _ = writeln!(s, "max_grants = {}", d.max_grants);
    }
    if d.command_time_limit != DEFAULT_COMMAND_TIME_LIMIT {
        let _ = writeln!(s, "command_time_limit = {}", toml_duration(d.command_time_limit));
    }
    daemon_extras(&mut s, config);
    spa_section(&mut s, config);
    for door in &config.doors {
        let _ = writeln!(s, "\n[[door]]");
        let _ = writeln!(s, "name = {}", toml_str(&door.name));
        match (&door.one_time, &door.rotating) {
            (Some(ot), _) => {
                let _ = writeln!(s, "one_time_sequences = {}", toml_str(&ot.path.display().to_string()));
            }
            (None, Some(r)) => {
                let _ =
                    writeln!(s, "rotating = {}", r.to_toml(&toml_str(&r.secret_file.display().to_string())));
            }
            (None, None) => {
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
        for line in super::convert_hint::suggest(door) {
            let _ = writeln!(s, "{line}");
        }
    }
    s
}

/// `[daemon]` keys beyond knockd's: firewall mode, flushing, syslog, verbosity.
fn daemon_extras(s: &mut String, config: &Config) {
    let d = &config.daemon;
    let f = &d.firewall;
    let def = FirewallSettings::default();
    if f.accept {
        let _ = writeln!(s, "mode = \"accept\"");
    }
    if f.nat {
        let _ = writeln!(s, "nat = true");
    }
    if f.gate_forward != def.gate_forward {
        let _ = writeln!(s, "gate_forward = {}", f.gate_forward);
    }
    if f.iptables_chain != def.iptables_chain {
        let _ = writeln!(s, "iptables_chain = {}", toml_str(&f.iptables_chain));
    }
    if f.iptables_jump != def.iptables_jump {
        let _ = writeln!(s, "iptables_jump = {}", f.iptables_jump);
    }
    if let Some((family, name)) = &f.accept_table {
        let _ = writeln!(s, "accept_table = {}", toml_str(&format!("{family} {name}")));
    }
    if d.flush_at_start {
        let _ = writeln!(s, "flush_at_start = true");
    }
    if d.flush_at_exit {
        let _ = writeln!(s, "flush_at_exit = true");
    }
    if d.syslog != SyslogSettings::default() {
        let _ = writeln!(s, "syslog_identity = {}", toml_str(&d.syslog.identity));
        let _ = writeln!(s, "syslog_facility = \"{}\"", d.syslog.facility);
    }
    if d.verbose {
        let _ = writeln!(s, "verbose = true");
    }
}

/// `[spa]`, when the config has SPA. Keys are never printed: stanzas read from an
/// access.conf stay there (`access_conf` points at it), and inline stanzas or native
/// users, which hold or name secrets, are left for the admin to copy.
fn spa_section(s: &mut String, config: &Config) {
    let Some(spa) = &config.spa else { return };
    let _ = writeln!(s, "\n[spa]");
    let ports: Vec<String> = spa.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(s, "ports = [{}]", ports.join(", "));
    let _ = writeln!(s, "max_age = {}", spa.max_age);
    if !spa.aging {
        let _ = writeln!(s, "aging = false");
    }
    if let Some(p) = spa.udp_server {
        let _ = writeln!(s, "udp_server_port = {p}");
    }
    if !spa.persist_replay {
        let _ = writeln!(s, "persist_replay = false");
    }
    if let Some(p) = &spa.import_digest_file {
        let _ = writeln!(s, "import_digest_file = {}", toml_str(&p.display().to_string()));
    }
    if spa.forwarding {
        let _ = writeln!(s, "forwarding = true");
    }
    if spa.local_nat {
        let _ = writeln!(s, "local_nat = true");
    }
    if !spa.protect.is_empty() {
        let p: Vec<String> = spa.protect.iter().map(|x| format!("\"{x}\"")).collect();
        let _ = writeln!(s, "protect = [{}]", p.join(", "));
    }
    if let Some(p) = &spa.access_conf {
        let _ = writeln!(s, "access_conf = {}", toml_str(&p.display().to_string()));
    }
    if spa.inline_stanzas > 0 || !spa.users.is_empty() {
        let _ = writeln!(
            s,
            "# {} inline [[spa.fwknop]] stanza(s) and {} native user(s) are not printed: they hold or name \
             secrets; copy them from the original file",
            spa.inline_stanzas,
            spa.users.len()
        );
    }
}
