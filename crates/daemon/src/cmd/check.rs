//! `portcullisd check`: validate a config and show what the daemon would do.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::daemon::plan_for;
use crate::firewall::nft;

/// Print the effective plan, or the config error. Exit 2 on an invalid config.
pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let c = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullisd: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    print!("{}", report(&c));
    Ok(ExitCode::SUCCESS)
}

/// The plan as text (pure, for tests).
pub fn report(c: &config::Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "config {} is valid", c.path.display());
    let ifs = match &c.daemon.interfaces {
        config::Interfaces::All => "all".to_string(),
        config::Interfaces::Named(n) => n.join(", "),
    };
    let _ = writeln!(
        s,
        "interfaces: {ifs}; backend: {:?}; state dir: {}",
        c.daemon.backend,
        c.daemon.state_dir.display()
    );
    let _ = writeln!(s, "\ndoors:");
    for d in &c.doors {
        let seq: Vec<String> = d.sequence.iter().map(|k| format!("{}:{}", k.port, k.proto)).collect();
        let open: Vec<String> = d.open.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "  {}: knock {} within {}, tcp flags {} -> open {} for {}{}",
            d.name,
            seq.join(","),
            humantime::format_duration(d.seq_timeout),
            d.flags,
            open.join(","),
            humantime::format_duration(d.open_for),
            d.target.map(|t| format!(" (knocks to {t} only)")).unwrap_or_default()
        );
        // knockd drop-in (issue 3): commands and one-time sequences.
        if let Some(ot) = &d.one_time {
            let _ =
                writeln!(s, "    one-time sequences: {} ({} unused)", ot.path.display(), ot.remaining.len());
        }
        if let Some(cmds) = &d.commands {
            let show = |c: &Option<config::CommandLine>| match c {
                None => "(nothing)".to_string(),
                Some(config::CommandLine::Shell(x)) => format!("sh -c {x:?}"),
                Some(config::CommandLine::Argv(v)) => format!("{v:?}"),
            };
            let _ = writeln!(s, "    start (IPv4): {}", show(&cmds.start4));
            let _ = writeln!(s, "    start (IPv6): {}", show(&cmds.start6));
            let _ = writeln!(
                s,
                "    stop after {}: IPv4 {}, IPv6 {}",
                humantime::format_duration(cmds.cmd_timeout),
                show(&cmds.stop4),
                show(&cmds.stop6)
            );
        }
    }
    let plan = plan_for(c);
    let prot: Vec<String> = plan.protected.iter().map(ToString::to_string).collect();
    let _ = writeln!(s, "\nprotected (dropped unless granted): {}", prot.join(", "));
    let warnings = c.warnings();
    if !warnings.is_empty() {
        let _ = writeln!(s, "\nwarnings:");
        for w in warnings {
            let _ = writeln!(s, "  - {w}");
        }
    }
    if c.daemon.backend == config::Backend::Nftables {
        let _ = writeln!(s, "\nequivalent nftables ruleset:\n{}", nft::render(&plan));
    }
    s
}
