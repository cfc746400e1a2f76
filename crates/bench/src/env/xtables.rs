//! Resetting what the nftables `flush ruleset` does not reach in the server namespace:
//! x_tables (iptables-legacy) tables and ipsets.
//!
//! portcullis' iptables driver keeps its chain in `mangle` PREROUTING (a DROP of the
//! protected ports for sources not in its ipset) and leaves it in place at exit (a
//! restart must not close holes). Left behind by the iptables-legacy row, that chain
//! drops every later row's probes whatever the later row's own firewall says.

use std::time::Duration;

use anyhow::bail;
use portcullis_daemon::lab;

use super::{run_in, Env};

/// The built-in chains of each x_tables table (all reset to policy ACCEPT).
fn builtin_chains(table: &str) -> anyhow::Result<&'static [&'static str]> {
    Ok(match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        other => bail!("unknown x_tables table `{other}` in the server namespace: cannot reset it"),
    })
}

/// `iptables-restore` input replacing each of `tables` by an empty table (no rules, no
/// user chains, built-in chains with policy ACCEPT).
fn empty_tables(tables: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    for t in tables.split_whitespace() {
        out.push_str(&format!("*{t}\n"));
        for c in builtin_chains(t)? {
            out.push_str(&format!(":{c} ACCEPT [0:0]\n"));
        }
        out.push_str("COMMIT\n");
    }
    Ok(out)
}

impl Env {
    /// Empty every x_tables table registered in the server namespace (IPv4 and IPv6).
    pub(super) fn reset_xtables(&self) -> anyhow::Result<()> {
        let ns = self.lab.server.clone();
        for (bin, names) in [
            ("iptables-legacy-restore", "/proc/net/ip_tables_names"),
            ("ip6tables-legacy-restore", "/proc/net/ip6_tables_names"),
        ] {
            // The file is there once the module is loaded; read inside the namespace
            // (it lists that namespace's tables). Absent: nothing to reset.
            let tables = run_in(&ns, &["sh", "-c", "cat \"$1\" 2>/dev/null || true", "sh", names])?;
            let text = empty_tables(&tables)?;
            if text.is_empty() {
                continue;
            }
            let f = self.dir.join(format!("{bin}.empty"));
            std::fs::write(&f, text)?;
            // No --noflush: each listed table is replaced, its user chains go.
            let load = format!("exec {bin} -w < \"$1\"");
            run_in(&ns, &["sh", "-c", &load, "sh", &f.display().to_string()])?;
        }
        Ok(())
    }

    /// Destroy every ipset in the server namespace (the iptables drivers' and the
    /// fwknopd drop-in's grants live there). Call once no rule references a set:
    /// after `nft flush ruleset` and [`Env::reset_xtables`].
    pub(super) fn destroy_ipsets(&self) -> anyhow::Result<()> {
        // nf_tables releases a flushed rule's set reference in a deferred worker, so
        // a set can stay "in use" for a moment after the flush: retry briefly.
        let mut last = None;
        let done = lab::wait_until(Duration::from_secs(2), || {
            match run_in(&self.lab.server, &["ipset", "destroy"]) {
                Ok(_) => true,
                Err(e) => {
                    last = Some(e);
                    false
                }
            }
        });
        match (done, last) {
            (true, _) => Ok(()),
            (false, Some(e)) => Err(e.context("destroying the server's ipsets")),
            (false, None) => bail!("destroying the server's ipsets: no attempt finished in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::empty_tables;

    #[test]
    fn every_listed_table_is_replaced_with_accept_policies() {
        let t = empty_tables("mangle\nfilter\n").unwrap();
        assert_eq!(
            t,
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n\
             *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
        );
        assert_eq!(empty_tables("").unwrap(), "");
        assert!(empty_tables("broute").is_err());
    }
}
