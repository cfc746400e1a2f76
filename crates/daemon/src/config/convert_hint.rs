//! Spotting knockd commands that only let the knocker through one port
//! (`iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT` and its `-D` twin), so that
//! `portcullisd convert` can suggest the native `open = ["tcp/22"]`: the kernel then
//! closes the port on time, with no stop command that can fail or be forgotten.

use portcullis_proto::Service;

use super::model::{CommandLine, Door};

/// What an accept rule command does to the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOp {
    /// `-A` / `-I`: the knocker gets in.
    Add,
    /// `-D`: the rule goes away again.
    Delete,
}

/// `cmd` as (operation, chain, service) if it is exactly an iptables/ip6tables accept rule
/// for the knocker's address on one port; anything else (more matches, another target,
/// several commands) is `None`.
pub fn accept_rule(cmd: &str) -> Option<(RuleOp, String, Service)> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let (prog, mut rest) = words.split_first()?;
    let name = prog.rsplit('/').next()?;
    if !matches!(name, "iptables" | "ip6tables" | "iptables-legacy" | "iptables-nft") {
        return None;
    }
    let (mut op, mut chain, mut proto, mut port, mut src, mut accept) =
        (None, None, None, None, false, false);
    while let Some((&flag, tail)) = rest.split_first() {
        rest = tail;
        if flag == "--syn" {
            continue; // a SYN-only accept still lets the connection through (conntrack)
        }
        let (&value, tail) = rest.split_first()?;
        rest = tail;
        match flag {
            "-A" | "-I" | "-D" => {
                op = Some(if flag == "-D" { RuleOp::Delete } else { RuleOp::Add });
                chain = Some(value.to_string());
                // `-I CHAIN 1`: an optional rule number.
                if flag == "-I" {
                    if let Some((n, tail)) = rest.split_first() {
                        if n.bytes().all(|b| b.is_ascii_digit()) {
                            rest = tail;
                        }
                    }
                }
            }
            "-s" | "--source" => src = value == "%IP%",
            "-p" | "--protocol" => proto = Some(value),
            "--dport" | "--destination-port" => port = Some(value.parse::<u16>().ok()?),
            "-j" | "--jump" => accept = value == "ACCEPT",
            "-m" if value == "tcp" || value == "udp" => {}
            _ => return None,
        }
    }
    if !(src && accept) {
        return None;
    }
    let service = match (proto?, port?) {
        ("tcp", p) if p > 0 => Service::tcp(p),
        ("udp", p) if p > 0 => Service::udp(p),
        _ => return None,
    };
    Some((op?, chain?, service))
}

fn shell(c: &Option<CommandLine>) -> Option<&str> {
    match c {
        Some(CommandLine::Shell(s)) => Some(s),
        _ => None,
    }
}

/// Comment lines (each starting `# `) suggesting the native form for `door`, if its
/// commands are plain accept rules. Empty when there is nothing to suggest.
pub fn suggest(door: &Door) -> Vec<String> {
    let Some(c) = &door.commands else { return Vec::new() };
    let start = shell(&c.start4).and_then(accept_rule);
    let stop = shell(&c.stop4).and_then(accept_rule);
    let mut out = Vec::new();
    match (start, stop) {
        (Some((RuleOp::Add, chain, svc)), stop) => {
            let paired = matches!(&stop, Some((RuleOp::Delete, ch, s)) if *ch == chain && *s == svc);
            out.push(format!(
                "These commands only let the knocker's address through {svc} (iptables chain {chain})."
            ));
            out.push("portcullis does that itself, and the kernel closes it on time (no stop command".into());
            out.push("that can fail or be forgotten). Instead of the commands, use:".into());
            out.push(format!("  open = [\"{svc}\"]"));
            let secs = if paired { c.cmd_timeout.as_secs().max(1) } else { 30 };
            out.push(format!("  open_for = {secs}"));
            out.push("and set `backend = \"nftables\"` in [daemon].".into());
            if !paired && stop.is_none() {
                out.push("(A door whose command deletes this rule is then not needed either.)".into());
            }
        }
        (Some((RuleOp::Delete, chain, svc)), None) => {
            out.push(format!("This command removes an accept rule for {svc} (iptables chain {chain}) that"));
            out.push(
                "another door added: with `open` and `open_for` on that door the kernel closes it".into(),
            );
            out.push("on time, and this door is not needed.".into());
        }
        _ => {}
    }
    out.into_iter().map(|l| format!("# {l}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_howto_commands() {
        assert_eq!(
            accept_rule("/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"),
            Some((RuleOp::Add, "INPUT".into(), Service::tcp(22)))
        );
        assert_eq!(
            accept_rule("/usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn --dport 22 -j ACCEPT"),
            Some((RuleOp::Delete, "INPUT".into(), Service::tcp(22)))
        );
        assert_eq!(
            accept_rule("iptables -I TCP 1 -s %IP% -p udp --dport 1194 -j ACCEPT"),
            Some((RuleOp::Add, "TCP".into(), Service::udp(1194)))
        );
    }

    #[test]
    fn anything_more_is_left_alone() {
        for cmd in [
            "iptables -A INPUT -s 10.0.0.1 -p tcp --dport 22 -j ACCEPT",
            "iptables -A INPUT -s %IP% -p tcp --dport 22 -j DROP",
            "iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT; rm -rf /",
            "iptables -A INPUT -s %IP% -p tcp --dport 22:25 -j ACCEPT",
            "iptables -A INPUT -s %IP% -p tcp -j ACCEPT",
            "nft add element inet f allowed { %IP% }",
            "iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT -m comment --comment x",
        ] {
            assert_eq!(accept_rule(cmd), None, "{cmd}");
        }
    }

    fn convert_example(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/knockd").join(name);
        let c = crate::config::load_as(&path, crate::config::Format::Knockd).unwrap();
        let out = crate::config::convert::to_toml(&c);
        // Still a config that reads back.
        crate::config::parse(&out, std::path::Path::new("converted.toml")).unwrap();
        out
    }

    #[test]
    fn the_knockd_howtos_get_the_native_form_suggested() {
        let oc = convert_example("howto-open-close.conf");
        assert!(
            oc.contains(
                "# These commands only let the knocker's address through tcp/22 (iptables chain INPUT)."
            ),
            "{oc}"
        );
        assert!(oc.contains("#   open = [\"tcp/22\"]\n#   open_for = 30\n"), "{oc}");
        assert!(
            oc.contains("# This command removes an accept rule for tcp/22 (iptables chain INPUT) that"),
            "{oc}"
        );

        let cmd = convert_example("howto-openclose-cmd-timeout.conf");
        assert!(cmd.contains("#   open = [\"tcp/22\"]\n#   open_for = 10\n"), "{cmd}");
        assert!(!cmd.contains("is then not needed"), "{cmd}");

        let chain = convert_example("howto-user-chain.conf");
        assert!(chain.contains("through tcp/22 (iptables chain TCP)"), "{chain}");
        assert!(chain.contains("#   open_for = 10\n"), "{chain}");
    }
}
