//! Checking that what `setup` built is still there: iptables has no change
//! notifications, so the daemon calls this periodically (see `grants::watch`).
//! Grants live in ipsets, which `iptables -F` does not touch; the grant lifecycle
//! compares them with its schedule through `list`.

use std::collections::HashMap;

use super::rules::{self, Saved};
use super::IptablesDriver;
use crate::firewall::{FirewallError, Plan};

/// Per (table, chain): rules appended; and the (table, hook, chain) jumps.
#[derive(Debug, Default)]
struct Shape {
    rules: HashMap<(String, String), usize>,
    jumps: Vec<(String, String, String)>,
}

/// The shape of a `setup` batch (`*table`, `-A CHAIN ...`, `-I HOOK n -j CHAIN`).
fn expected(batch: &str) -> Shape {
    let mut s = Shape::default();
    let mut table = String::new();
    for line in batch.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [t] if t.starts_with('*') => table = t[1..].to_string(),
            ["-A", chain, ..] => *s.rules.entry((table.clone(), (*chain).to_string())).or_default() += 1,
            ["-I", hook, _, "-j", chain] => {
                s.jumps.push((table.clone(), (*hook).to_string(), (*chain).to_string()))
            }
            _ => {}
        }
    }
    s
}

/// What is wrong with `iptables-save` output `text` (all tables of one family)
/// compared with `batch`, the rules `setup` writes; `None` if nothing.
pub fn problem(batch: &str, text: &str) -> Option<String> {
    let want = expected(batch);
    let mut have: HashMap<(String, String), usize> = HashMap::new();
    let mut jumps = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [t] if t.starts_with('*') => table = t[1..].to_string(),
            ["-A", hook, "-j", chain] => {
                jumps.push((table.clone(), (*hook).to_string(), (*chain).to_string()));
                *have.entry((table.clone(), (*hook).to_string())).or_default() += 1;
            }
            ["-A", chain, ..] => *have.entry((table.clone(), (*chain).to_string())).or_default() += 1,
            _ => {}
        }
    }
    for j in &want.jumps {
        if !jumps.contains(j) {
            return Some(format!("the jump from {} to {} (table {}) is missing", j.1, j.2, j.0));
        }
    }
    let mut chains: Vec<_> = want.rules.iter().collect();
    chains.sort();
    for ((table, chain), n) in chains {
        let got = have.get(&(table.clone(), chain.clone())).copied().unwrap_or(0);
        if got != *n {
            return Some(format!("chain {chain} (table {table}) has {got} rule(s), {n} expected"));
        }
    }
    None
}

impl IptablesDriver {
    pub(super) fn verify_state(&mut self, plan: &Plan) -> Result<Option<String>, FirewallError> {
        for fam in 0..2 {
            let batch = rules::setup_batch(plan, fam == 1, &self.routes, &Saved::default());
            if let Some(p) = problem(&batch, &self.save_text(fam)?) {
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
        Plan {
            protected: vec![Service::tcp(22), Service::tcp(443)],
            max_grants: 10,
            chain: "PORTCULLIS".into(),
            ..Plan::default()
        }
    }

    const GOOD: &str = "*filter\n:INPUT ACCEPT [0:0]\n:PORTCULLIS - [0:0]\n-A INPUT -j PORTCULLIS\n\
        -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
        -A PORTCULLIS -p tcp -m tcp --dport 22 -m set ! --match-set portcullis4 src,dst -j DROP\n\
        -A PORTCULLIS -p tcp -m tcp --dport 443 -m set ! --match-set portcullis4 src,dst -j DROP\nCOMMIT\n";

    #[test]
    fn intact_chain_passes_and_each_removal_is_named() {
        let batch = rules::setup_batch(&plan(), false, &[], &Saved::default());
        assert_eq!(problem(&batch, GOOD), None, "{batch}");
        let cases = [
            (GOOD.replace("-A INPUT -j PORTCULLIS\n", ""), "jump from INPUT to PORTCULLIS"),
            (
                GOOD.replace("-A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n", ""),
                "has 2 rule(s), 3 expected",
            ),
            (GOOD.replace(":PORTCULLIS - [0:0]\n", "").replace("-A PORTCULLIS", "-A OTHER"), "0 rule(s)"),
            (GOOD.replace("COMMIT", "-A PORTCULLIS -s 192.0.2.9 -j RETURN\nCOMMIT"), "4 rule(s), 3 expected"),
        ];
        for (text, want) in cases {
            let p = problem(&batch, &text).expect(want);
            assert!(p.contains(want), "{p}");
        }
        // `iptables -F`: the chain is declared but empty, INPUT has no jump.
        let flushed = "*filter\n:INPUT ACCEPT [0:0]\n:PORTCULLIS - [0:0]\nCOMMIT\n";
        assert!(problem(&batch, flushed).is_some());
    }
}
