//! `portcullisd convert`: any [`Config`] printed as native TOML that reads back to the
//! same doors and settings.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::model::{
    Backend, CommandLine, Config, Interfaces, DEFAULT_COMMAND_TIME_LIMIT, DEFAULT_MAX_GRANTS,
    DEFAULT_MAX_TRACKED,
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
        for line in super::convert_hint::suggest(door) {
            let _ = writeln!(s, "{line}");
        }
    }
    s
}
