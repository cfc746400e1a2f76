//! Checking that the chain `setup` built is still there: iptables has no change
//! notifications, so the daemon calls this periodically (see `grants::watch`).

use super::rules::{self, CHAIN};
use super::{family, IptablesDriver};
use crate::firewall::{FirewallError, Plan};

/// What is wrong with one family's `iptables-save -t filter` output, if anything:
/// the jump from `INPUT`, our chain, its conntrack rule, one drop per protected
/// service, and the grant rules we wrote (`ours`) must all be present.
pub fn problem(text: &str, plan: &Plan, ours: &[rules::GrantRule]) -> Option<String> {
    let saved = rules::parse_save(text);
    if !saved.chain {
        return Some(format!("chain {CHAIN} is missing"));
    }
    if !saved.jump {
        return Some(format!("the jump from INPUT to {CHAIN} is missing"));
    }
    let prefix = format!("-A {CHAIN} ");
    let mine = || text.lines().filter_map(|l| l.strip_prefix(prefix.as_str()));
    if !mine().any(|l| l.contains("--ctstate RELATED,ESTABLISHED -j RETURN")) {
        return Some(format!("the conntrack rule of {CHAIN} is missing"));
    }
    let drops = mine().filter(|l| l.ends_with("-j DROP")).count();
    if drops != plan.protected.len() {
        return Some(format!("{CHAIN} has {drops} drop rule(s), {} expected", plan.protected.len()));
    }
    let missing = ours.iter().filter(|g| !saved.grants.contains(g)).count();
    if missing > 0 {
        return Some(format!("{missing} grant rule(s) missing from {CHAIN}"));
    }
    None
}

impl IptablesDriver {
    pub(super) fn verify_state(&mut self, plan: &Plan) -> Result<Option<String>, FirewallError> {
        for fam in 0..2 {
            let text = self.save_text(fam)?;
            let ours: Vec<rules::GrantRule> = self
                .grants
                .iter()
                .filter(|((a, _), _)| family(a) == fam)
                .map(|(&(addr, service), &expires)| rules::GrantRule { addr, service, expires })
                .collect();
            if let Some(p) = problem(&text, plan, &ours) {
                let which = if fam == 0 { "iptables" } else { "ip6tables" };
                return Ok(Some(format!("{which}: {p}")));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use portcullis_proto::Service;

    use super::*;

    fn plan() -> Plan {
        Plan { protected: vec![Service::tcp(22), Service::tcp(443)], max_grants: 10 }
    }

    const GOOD: &str = "*filter\n:INPUT ACCEPT [0:0]\n:PORTCULLIS - [0:0]\n-A INPUT -j PORTCULLIS\n\
        -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
        -A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP\n-A PORTCULLIS -p tcp -m tcp --dport 443 -j DROP\nCOMMIT\n";

    #[test]
    fn intact_chain_passes_and_each_removal_is_named() {
        assert_eq!(problem(GOOD, &plan(), &[]), None);
        let cases = [
            (GOOD.replace(":PORTCULLIS - [0:0]\n", ""), "chain PORTCULLIS is missing"),
            (GOOD.replace("-A INPUT -j PORTCULLIS\n", ""), "jump"),
            (
                GOOD.replace("-A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n", ""),
                "conntrack",
            ),
            (
                GOOD.replace("-A PORTCULLIS -p tcp -m tcp --dport 443 -j DROP\n", ""),
                "1 drop rule(s), 2 expected",
            ),
        ];
        for (text, want) in cases {
            let p = problem(&text, &plan(), &[]).expect(want);
            assert!(p.contains(want), "{p}");
        }
        // `iptables -F`: the chain is declared but empty, INPUT has no jump.
        let flushed = "*filter\n:INPUT ACCEPT [0:0]\n:PORTCULLIS - [0:0]\nCOMMIT\n";
        assert!(problem(flushed, &plan(), &[]).is_some());
    }

    #[test]
    fn a_grant_rule_we_wrote_must_still_be_there() {
        let g = rules::GrantRule {
            addr: "192.0.2.2".parse().unwrap(),
            service: Service::tcp(22),
            expires: 1_900_000_000,
        };
        let p = problem(GOOD, &plan(), &[g]).unwrap();
        assert!(p.contains("1 grant rule(s) missing"), "{p}");
        let with = GOOD.replace(
            "-A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP\n",
            "-A PORTCULLIS -s 192.0.2.2/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires=1900000000 -j RETURN\n-A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP\n",
        );
        assert_eq!(problem(&with, &plan(), &[g]), None);
    }
}
