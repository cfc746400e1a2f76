//! The server's own host firewall, as the knockd and fwknopd how-tos have it before a
//! knock daemon adds to it: iptables, replies to established connections accepted
//! first, then new connections dropped. Tests and the bench install it in the lab's
//! server namespace, so that knockd's and fwknopd's ACCEPT rules (inserted in front of
//! it) have something to open, and so that portcullisd is seen to work beside it.

use super::{sh, Lab};

/// What the baseline drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline<'a> {
    /// Every new inbound connection but loopback's (INPUT policy DROP), as in the
    /// knockd how-to.
    DropAll,
    /// New TCP connections to these ports only, as in fwknopd's default set-up.
    DropTcp(&'a [u16]),
}

impl Baseline<'_> {
    /// The rules as `iptables` arguments, in the order they are applied.
    pub fn rules(self) -> Vec<Vec<String>> {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let established =
            args(&["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]);
        match self {
            Baseline::DropAll => vec![
                args(&["-P", "INPUT", "DROP"]),
                args(&["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]),
                established,
            ],
            Baseline::DropTcp(ports) => {
                std::iter::once(established)
                    .chain(ports.iter().map(|p| {
                        args(&["-A", "INPUT", "-p", "tcp", "--dport", &p.to_string(), "-j", "DROP"])
                    }))
                    .collect()
            }
        }
    }
}

impl Lab {
    /// Install `baseline` in namespace `ns` with `iptables` (the system's default
    /// variant, as the how-tos' `/sbin/iptables`), after whatever is there already.
    pub fn iptables_baseline(&self, ns: &str, baseline: Baseline<'_>) -> anyhow::Result<()> {
        for rule in baseline.rules() {
            let mut argv = vec!["ip", "netns", "exec", ns, "iptables", "-w"];
            argv.extend(rule.iter().map(String::as_str));
            sh(&argv)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Baseline;

    #[test]
    fn established_traffic_is_accepted_before_anything_is_dropped() {
        for b in [Baseline::DropAll, Baseline::DropTcp(&[22, 2222])] {
            let rules: Vec<String> = b.rules().iter().map(|r| r.join(" ")).collect();
            let established = rules.iter().position(|r| r.contains("ESTABLISHED,RELATED -j ACCEPT"));
            let first_drop = rules.iter().position(|r| r.ends_with("DROP") && !r.starts_with("-P"));
            assert!(established.is_some(), "{rules:?}");
            assert!(first_drop.is_none_or(|d| established < Some(d)), "{rules:?}");
        }
        let ports = Baseline::DropTcp(&[22, 2222]).rules();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[2].join(" "), "-A INPUT -p tcp --dport 2222 -j DROP");
        assert_eq!(Baseline::DropAll.rules()[0].join(" "), "-P INPUT DROP");
    }
}
