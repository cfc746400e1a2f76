//! iptables driver: a `PORTCULLIS` chain per family in table `filter`, updated with
//! atomic `iptables-restore --noflush` batches (see [`rules`] for the exact rules).
//!
//! - Works with `iptables-legacy` and `iptables-nft`: the variant's own binaries
//!   (`iptables-legacy-restore`, `ip6tables-nft-save`, ...) are called by name, so the
//!   system's `update-alternatives` choice is never needed or changed. `Auto` follows
//!   what `iptables -V` reports.
//! - iptables has no element timeouts: [`FirewallDriver::kernel_expiry`] is false and
//!   the daemon closes grants (the [`crate::grants::scheduler`]). Each grant
//!   rule carries its expiry epoch in a comment; `setup` drops grants that expired
//!   while the daemon was down and reports the others' remaining time via `list`.
//! - No shell is involved: binaries get fixed argv, batches go to stdin.

pub mod rules;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use portcullis_proto::Service;

use super::{FirewallDriver, FirewallError, Grant, LiveGrant, Plan};
use crate::config::IptablesVariant;
use rules::GrantRule;

/// A resolved variant: which binaries to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// x_tables.
    Legacy,
    /// nf_tables through the xt compatibility layer.
    Nft,
}

impl Flavor {
    fn suffix(self) -> &'static str {
        match self {
            Flavor::Legacy => "legacy",
            Flavor::Nft => "nft",
        }
    }
}

const BIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"];

fn find_bin(name: &str) -> Option<PathBuf> {
    BIN_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// Resolve `Auto` from `iptables -V` ("... (nf_tables)" or "... (legacy)").
pub fn resolve(v: IptablesVariant) -> Result<Flavor, FirewallError> {
    match v {
        IptablesVariant::Legacy => Ok(Flavor::Legacy),
        IptablesVariant::Nft => Ok(Flavor::Nft),
        IptablesVariant::Auto => {
            let bin = find_bin("iptables").ok_or_else(|| {
                FirewallError::Protocol("iptables not found (apt-get install iptables)".into())
            })?;
            let out = Command::new(&bin)
                .arg("-V")
                .stdin(Stdio::null())
                .output()
                .map_err(|source| FirewallError::Kernel { op: "running iptables -V", source })?;
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(if text.contains("legacy") { Flavor::Legacy } else { Flavor::Nft })
        }
    }
}

fn family(addr: &IpAddr) -> usize {
    usize::from(addr.is_ipv6())
}

/// The iptables backend. Grants are remembered with their expiry epoch (the same
/// value as in the rule's comment, needed to delete the rule by its exact spec).
#[derive(Debug)]
pub struct IptablesDriver {
    flavor: Flavor,
    /// `[iptables, ip6tables]` restore and save binaries.
    restore: [PathBuf; 2],
    save: [PathBuf; 2],
    grants: HashMap<(IpAddr, Service), u64>,
    max_grants: u32,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl IptablesDriver {
    /// A driver for `variant`; fails if its binaries are missing.
    pub fn new(variant: IptablesVariant) -> Result<IptablesDriver, FirewallError> {
        let flavor = resolve(variant)?;
        let bin = |family: &str, action: &str| {
            let name = format!("{family}-{}-{action}", flavor.suffix());
            find_bin(&name).ok_or_else(|| {
                FirewallError::Protocol(format!("{name} not found (apt-get install iptables)"))
            })
        };
        Ok(IptablesDriver {
            flavor,
            restore: [bin("iptables", "restore")?, bin("ip6tables", "restore")?],
            save: [bin("iptables", "save")?, bin("ip6tables", "save")?],
            grants: HashMap::new(),
            max_grants: 0,
        })
    }

    /// Which variant this driver drives.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn read(&self, fam: usize) -> Result<rules::Saved, FirewallError> {
        let out = Command::new(&self.save[fam])
            .args(["-t", "filter"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| FirewallError::Kernel { op: "running iptables-save", source })?;
        if !out.status.success() {
            return Err(FirewallError::Protocol(format!(
                "{} failed: {}",
                self.save[fam].display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(rules::parse_save(&String::from_utf8_lossy(&out.stdout)))
    }

    fn apply(&self, fam: usize, batch: &str) -> Result<(), FirewallError> {
        let mut child = Command::new(&self.restore[fam])
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| FirewallError::Kernel { op: "running iptables-restore", source })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(batch.as_bytes())
                .map_err(|source| FirewallError::Kernel { op: "writing to iptables-restore", source })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| FirewallError::Kernel { op: "waiting for iptables-restore", source })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(FirewallError::Protocol(format!(
                "{} refused the batch: {}",
                self.restore[fam].display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn rule(&self, addr: IpAddr, service: Service) -> Option<GrantRule> {
        self.grants.get(&(addr, service)).map(|&expires| GrantRule { addr, service, expires })
    }

    /// Re-read our grants from the kernel (after a batch failed: someone edited the chain).
    fn resync(&mut self) -> Result<(), FirewallError> {
        self.grants.clear();
        for fam in 0..2 {
            for g in self.read(fam)?.grants {
                self.grants.insert((g.addr, g.service), g.expires);
            }
        }
        Ok(())
    }

    fn update(&mut self, add: &[GrantRule], del: &[(IpAddr, Service)]) -> Result<(), FirewallError> {
        for fam in 0..2 {
            let a: Vec<GrantRule> = add.iter().filter(|g| family(&g.addr) == fam).copied().collect();
            let d: Vec<GrantRule> = del
                .iter()
                .filter(|(ip, _)| family(ip) == fam)
                .filter_map(|&(ip, s)| self.rule(ip, s))
                .collect();
            if a.is_empty() && d.is_empty() {
                continue;
            }
            if let Err(first) = self.apply(fam, &rules::update_batch(&a, &d)) {
                // A rule we meant to delete may be gone: re-read and retry once.
                self.resync()?;
                let d: Vec<GrantRule> = del
                    .iter()
                    .filter(|(ip, _)| family(ip) == fam)
                    .filter_map(|&(ip, s)| self.rule(ip, s))
                    .collect();
                self.apply(fam, &rules::update_batch(&a, &d)).map_err(|_| first)?;
            }
        }
        for &(ip, s) in del {
            self.grants.remove(&(ip, s));
        }
        for g in add {
            self.grants.insert((g.addr, g.service), g.expires);
        }
        Ok(())
    }
}

impl FirewallDriver for IptablesDriver {
    fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::Legacy => "iptables-legacy",
            Flavor::Nft => "iptables-nft",
        }
    }

    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
        self.max_grants = plan.max_grants;
        let now = unix_now();
        let mut kept = HashMap::new();
        for fam in 0..2 {
            let saved = self.read(fam)?;
            let keep: Vec<GrantRule> = saved
                .grants
                .into_iter()
                .filter(|g| g.expires > now && plan.protected.contains(&g.service) && family(&g.addr) == fam)
                .collect();
            let mgmt: Vec<_> = plan.never_gate.iter().copied().filter(|p| family(&p.addr) == fam).collect();
            self.apply(fam, &rules::setup_batch_with(&plan.protected, &mgmt, &keep, saved.jump))?;
            for g in keep {
                kept.insert((g.addr, g.service), g.expires);
            }
        }
        self.grants = kept;
        Ok(())
    }

    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        let now = unix_now();
        let fresh = grants.iter().filter(|g| !self.grants.contains_key(&(g.addr, g.service))).count();
        if self.max_grants > 0 && self.grants.len() + fresh > self.max_grants as usize {
            return Err(FirewallError::Protocol(format!("more than {} grants open", self.max_grants)));
        }
        let add: Vec<GrantRule> = grants
            .iter()
            .map(|g| GrantRule {
                addr: g.addr,
                service: g.service,
                expires: now + g.timeout.as_secs().max(1),
            })
            .collect();
        // Refreshing = delete the old rule and insert the new one, in the same commit.
        let del: Vec<(IpAddr, Service)> =
            grants.iter().map(|g| (g.addr, g.service)).filter(|k| self.grants.contains_key(k)).collect();
        self.update(&add, &del)
    }

    fn revoke(&mut self, grants: &[(IpAddr, Service)]) -> Result<(), FirewallError> {
        let del: Vec<(IpAddr, Service)> =
            grants.iter().copied().filter(|k| self.grants.contains_key(k)).collect();
        self.update(&[], &del)
    }

    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        let now = unix_now();
        Ok(self
            .grants
            .iter()
            .map(|(&(addr, service), &exp)| LiveGrant {
                addr,
                service,
                remaining: Some(Duration::from_secs(exp.saturating_sub(now))),
                // Rules carry only their expiry epoch, not the full timeout.
                timeout: None,
            })
            .collect())
    }

    fn teardown(&mut self) -> Result<(), FirewallError> {
        for fam in 0..2 {
            let saved = self.read(fam)?;
            if saved.chain {
                self.apply(fam, &rules::teardown_batch(saved.jump))?;
            }
        }
        self.grants.clear();
        Ok(())
    }

    fn kernel_expiry(&self) -> bool {
        false
    }
}
