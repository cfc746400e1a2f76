//! Advice about weak doors (`portcullisd check` and the daemon's start log). None of
//! these stop the daemon; refusals belong in validation.

use std::collections::BTreeSet;
use std::path::Path;

use portcullis_proto::knock::DoorSpec;

use super::model::{CommandLine, Config};
use super::stanza::stanza_warnings;

/// Well-known service ports that make poor knocks: real traffic to them breaks sequences
/// and scanners hit them constantly.
const WELL_KNOWN: &[u16] = &[
    20, 21, 22, 23, 25, 53, 80, 110, 123, 143, 161, 389, 443, 445, 465, 587, 993, 995, 1433, 1521, 3306,
    3389, 5432, 5900, 6379, 8080, 8443, 27017,
];

impl Config {
    /// Advice about weak doors; none of these stop the daemon.
    pub fn warnings(&self) -> Vec<String> {
        let protected = self.protected();
        let mut out = self.notes.clone();
        out.extend(command_warnings(self));
        out.extend(self.limits.grant_prefix.warnings());
        if let Some(spa) = &self.spa {
            out.extend(spa.warnings.iter().cloned());
            // Stanzas read from access.conf are named `FILE:LINE` already.
            let file = spa.access_conf.as_ref().map(|p| format!(" (in {})", p.display())).unwrap_or_default();
            for st in spa.stanzas.iter().skip(spa.inline_stanzas) {
                out.extend(stanza_warnings(st, &format!("fwknop stanza {}{file}", st.name)));
            }
        }
        for d in &self.doors {
            if let Some(r) = &d.rotating {
                out.extend(rotating_warnings(&d.name, r, &protected));
                continue;
            }
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

/// Advice specific to commands and one-time doors (part of [`Config::warnings`]).
fn command_warnings(c: &Config) -> Vec<String> {
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

/// Advice about a rotating door: its sequences are only known at run time, so the
/// checks are on the definition.
fn rotating_warnings(
    name: &str,
    r: &super::RotatingDoor,
    protected: &[portcullis_proto::Service],
) -> Vec<String> {
    let rot = &r.rotation;
    let mut out = Vec::new();
    if rot.count() < 3 {
        out.push(format!(
            "door {name}: only {} knock(s) per step; anyone probing a few ports can stumble on it (use 3 or more)",
            rot.count()
        ));
    }
    let range = rot.range();
    if let Some(p) = protected.iter().find(|p| (range.bottom()..=range.top()).contains(&p.port)) {
        out.push(format!(
            "door {name}: the knock range {range} contains protected port {p}; connection attempts to it can count as knocks"
        ));
    }
    if r.algorithm_name() == "md5-hourly" {
        out.push(format!(
            "door {name}: md5-hourly sequences can repeat a port and stay valid for up to two hours; \
             prefer hmac-sha256 with a short step"
        ));
    }
    out
}
