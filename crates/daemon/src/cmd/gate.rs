//! `portcullisd gate`: install the firewall gate for a config and exit.
//!
//! Run at boot before the network is up (portcullis-gate.service), so protected ports
//! are closed even if the daemon never starts. The driver's `setup` replaces the table
//! atomically and keeps grants that are already live, so running it while the daemon
//! is up (or after a restart) closes nothing that is open and extends nothing.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::daemon::{driver_for, plan_for};
use crate::firewall::Plan;

/// Load `path`, install its gate, print what is protected. Exit 2 on an invalid config
/// (the firewall is left as it was).
pub fn gate(path: &Path, format: config::Format) -> anyhow::Result<ExitCode> {
    let c = match config::load_as(path, format) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullisd: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let plan = plan_for(&c);
    let mut d = driver_for(&c)?;
    d.setup(&plan).map_err(|e| anyhow::anyhow!("installing the {} gate: {e}", d.name()))?;
    let kept = d.list().map(|l| l.len()).ok();
    println!("{}", summary(d.name(), &plan, kept));
    Ok(ExitCode::SUCCESS)
}

/// One line saying what is now enforced (pure, for tests).
pub fn summary(driver: &str, plan: &Plan, kept: Option<usize>) -> String {
    if plan.protected.is_empty() {
        return format!("{driver}: gate installed, but the config protects no port");
    }
    let ports: Vec<String> = plan.protected.iter().map(ToString::to_string).collect();
    let kept = match kept {
        Some(n) => format!("{n} live grant(s) kept"),
        None => "live grants unknown to this backend".to_string(),
    };
    format!("{driver}: gate installed, protecting {}; {kept}", ports.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_proto::Service;

    #[test]
    fn summary_names_every_protected_port_and_the_kept_grants() {
        let plan =
            Plan { protected: vec![Service::tcp(22), Service::udp(53)], max_grants: 10, ..Plan::default() };
        assert_eq!(
            summary("nftables", &plan, Some(1)),
            "nftables: gate installed, protecting tcp/22, udp/53; 1 live grant(s) kept"
        );
        assert_eq!(
            summary("none", &Plan::default(), None),
            "none: gate installed, but the config protects no port"
        );
    }
}
