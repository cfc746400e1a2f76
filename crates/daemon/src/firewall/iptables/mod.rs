//! iptables driver: grants live in ipsets (`hash:ip,port` per family, one entry per
//! grant, with a kernel timeout); a `PORTCULLIS` chain per family matches them with
//! one rule per protected service (see [`rules`] for the exact rules).
//!
//! - A grant or revoke is one ipset netlink round trip ([`ipset`]): O(1) whatever the
//!   number of live grants, no process forked, and the kernel closes grants on time
//!   even if the daemon dies ([`FirewallDriver::kernel_expiry`] is true).
//! - Rules change only at `setup`, `teardown` and the first NAT grant to a new
//!   destination, with atomic `iptables-restore --noflush` batches. Works with
//!   `iptables-legacy` and `iptables-nft` (the variant's own binaries are called by
//!   name, so `update-alternatives` is never needed or changed; `Auto` follows
//!   `iptables -V`); ipsets are the same for both.
//! - `setup` keeps live grants: the sets survive restarts; when they exist they are
//!   rebuilt into a fresh set (only services still protected, at most `max_grants`)
//!   and swapped in atomically. Grant rules left by older versions are moved in.
//! - Prefix grants (carrier-grade NAT) live in a `hash:net,port` set per family
//!   (`portcullis4n`/`portcullis6n`, each entry with its prefix length), created only when
//!   the plan has prefix lengths for that family; the drop rules then also check it.
//! - No shell is involved: binaries get fixed argv, batches go to stdin.

pub mod ipset;
pub mod rules;
mod verify;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use portcullis_proto::Service;

use super::{FirewallDriver, FirewallError, Grant, Key, LiveGrant, NatGrant, Plan, Prefix};
use crate::config::IptablesVariant;
use ipset::{Entry, Ipset, Kind};
use rules::{NatRoute, NET4, NET6, SET4, SET6};

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

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The grant set and its rebuild twin, per family.
const SETS: [(&str, &str); 2] = [(SET4, "portcullis4-new"), (SET6, "portcullis6-new")];
/// The prefix grant set (`hash:net,port`, any length the plan has) and its twin, per
/// family; they exist only while the plan has prefix lengths for that family.
const NET_SETS: [(&str, &str); 2] = [(NET4, "portcullis4n-new"), (NET6, "portcullis6n-new")];

/// What an entry lets in.
fn source(e: &Entry) -> Prefix {
    e.cidr.map_or(Prefix::host(e.addr), |len| Prefix { addr: e.addr, len })
}

/// Whether `plan` has prefix lengths for family `fam` (0: IPv4, 1: IPv6).
fn has_prefixes(plan: &Plan, fam: usize) -> bool {
    !if fam == 1 { &plan.prefix_v6 } else { &plan.prefix_v4 }.is_empty()
}

/// The iptables backend: ipsets for grants, chains for matching them.
#[derive(Debug)]
pub struct IptablesDriver {
    flavor: Flavor,
    /// `[iptables, ip6tables]` restore and save binaries.
    restore: [PathBuf; 2],
    save: [PathBuf; 2],
    ipset: Ipset,
    plan: Plan,
    /// NAT destinations with rules installed.
    routes: Vec<NatRoute>,
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
            ipset: Ipset::open()?,
            plan: Plan::default(),
            routes: Vec::new(),
        })
    }

    /// Which variant this driver drives.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn read(&self, fam: usize, chain: &str) -> Result<rules::Saved, FirewallError> {
        Ok(rules::parse_save(&self.save_text(fam)?, chain))
    }

    fn save_text(&self, fam: usize) -> Result<String, FirewallError> {
        let out = Command::new(&self.save[fam])
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
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    /// The grants that survive a re-install under `plan`: live entries and older
    /// versions' grant rules for services still protected, with time left, at most
    /// `max_grants` (longest remaining first).
    fn restorable(plan: &Plan, live: Vec<Entry>, legacy: &[rules::LegacyGrant]) -> Vec<Entry> {
        let now = unix_now();
        let mut keep: Vec<Entry> = live
            .into_iter()
            .chain(legacy.iter().map(|g| Entry {
                addr: g.addr,
                cidr: None,
                service: Some(g.service),
                timeout_s: u32::try_from(g.expires.saturating_sub(now)).unwrap_or(ipset::MAX_TIMEOUT_S),
            }))
            .filter(|e| e.timeout_s > 0 && e.service.is_some_and(|s| plan.protected.contains(&s)))
            .filter(|e| plan.holds(&source(e)))
            .collect();
        keep.sort_by_key(|e| std::cmp::Reverse(e.timeout_s));
        if plan.max_grants > 0 {
            keep.truncate(plan.max_grants as usize);
        }
        keep
    }

    /// Make the grant set of family `fam` match `plan`, keeping `extra` grants too.
    fn rebuild_set(
        &mut self,
        plan: &Plan,
        fam: usize,
        legacy: &[rules::LegacyGrant],
    ) -> Result<usize, FirewallError> {
        self.rebuild(plan, SETS[fam], Kind::IpPort, fam == 1, legacy)
    }

    /// Make `set` (of `kind`, rebuilt through `twin`) hold what `plan` keeps of it.
    fn rebuild(
        &mut self,
        plan: &Plan,
        (set, twin): (&str, &str),
        kind: Kind,
        v6: bool,
        legacy: &[rules::LegacyGrant],
    ) -> Result<usize, FirewallError> {
        match self.ipset.list(set)? {
            None => {
                self.ipset.create(set, kind, v6, plan.max_grants)?;
                let keep = Self::restorable(plan, Vec::new(), legacy);
                self.ipset.add(set, &keep)?;
                Ok(keep.len())
            }
            Some(live) => {
                let keep = Self::restorable(plan, live, legacy);
                self.ipset.destroy(twin)?;
                self.ipset.create(twin, kind, v6, plan.max_grants)?;
                self.ipset.add(twin, &keep)?;
                // Rules keep pointing at `set`, which now holds the new contents.
                self.ipset.swap(set, twin)?;
                self.ipset.destroy(twin)?;
                Ok(keep.len())
            }
        }
    }

    fn ensure_route_set(&mut self, r: &NatRoute) -> Result<(), FirewallError> {
        if self.ipset.list(&r.set())?.is_none() {
            self.ipset.create(&r.set(), Kind::Ip, r.to.is_ipv6(), self.plan.max_grants)?;
        }
        Ok(())
    }

    /// (Re)install the rules of family `fam` for the current plan and routes.
    fn install_rules(&mut self, fam: usize) -> Result<(), FirewallError> {
        let saved = self.read(fam, &self.plan.chain)?;
        self.apply(fam, &rules::setup_batch(&self.plan, fam == 1, &self.routes, &saved))
    }
}

fn entry(addr: IpAddr, service: Option<Service>, timeout: Duration) -> Entry {
    Entry { addr, cidr: None, service, timeout_s: ipset::timeout_s(timeout) }
}

/// The entry for a grant's source: in the host set, or with its length in the net set.
fn entry_for(p: Prefix, service: Service, timeout: Duration) -> Entry {
    Entry { cidr: (!p.is_host()).then_some(p.len), ..entry(p.addr, Some(service), timeout) }
}

/// The host set or the prefix set of family `fam`.
fn set_of(p: &Prefix) -> &'static str {
    let fam = usize::from(p.addr.is_ipv6());
    if p.is_host() {
        SETS[fam].0
    } else {
        NET_SETS[fam].0
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
        if plan.chain.is_empty() || plan.chain.len() > 24 {
            return Err(FirewallError::Protocol(format!(
                "iptables chain name {:?} must be 1-24 characters",
                plan.chain
            )));
        }
        self.plan = plan.clone();
        self.routes.clear();
        for (fam, (set, _)) in SETS.iter().enumerate() {
            let saved = self.read(fam, &plan.chain)?;
            let mut kept = self.rebuild_set(plan, fam, &saved.legacy)?;
            if has_prefixes(plan, fam) {
                kept += self.rebuild(plan, NET_SETS[fam], Kind::NetPort, fam == 1, &[])?;
            }
            if kept > 0 {
                tracing::info!(kept, set, "setup: kept live grants");
            }
            for r in saved.routes.iter().filter(|r| r.to.is_ipv6() == (fam == 1)) {
                self.ensure_route_set(r)?;
                self.routes.push(r.clone());
            }
            self.apply(fam, &rules::setup_batch(plan, fam == 1, &self.routes, &saved))?;
            if !has_prefixes(plan, fam) {
                // No rule refers to it any more.
                self.ipset.destroy(NET_SETS[fam].0)?;
                self.ipset.destroy(NET_SETS[fam].1)?;
            }
        }
        Ok(())
    }

    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        if let Some(g) = grants.iter().find(|g| !self.plan.holds(&g.source())) {
            return Err(FirewallError::Protocol(format!(
                "grant for {}: no door or user grants /{} prefixes, so the firewall has no set for them",
                g.source(),
                g.len
            )));
        }
        for set in [SET4, SET6, NET4, NET6] {
            let add: Vec<Entry> = grants
                .iter()
                .filter(|g| set_of(&g.source()) == set)
                .map(|g| entry_for(g.source(), g.service, g.timeout))
                .collect();
            if !add.is_empty() {
                self.ipset.add(set, &add)?;
            }
        }
        Ok(())
    }

    fn revoke(&mut self, grants: &[Key]) -> Result<(), FirewallError> {
        for set in [SET4, SET6, NET4, NET6] {
            // A prefix length the plan has no set for cannot be in the firewall.
            let del: Vec<Entry> = grants
                .iter()
                .filter(|(p, _)| set_of(p) == set && self.plan.holds(p))
                .map(|&(p, s)| entry_for(p, s, Duration::ZERO))
                .collect();
            if !del.is_empty() {
                self.ipset.del(set, &del)?;
            }
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        let mut out = Vec::new();
        for (set, _) in SETS.into_iter().chain(NET_SETS) {
            for e in self.ipset.list(set)?.unwrap_or_default() {
                if let Some(service) = e.service {
                    out.push(LiveGrant {
                        addr: e.addr,
                        len: source(&e).len,
                        service,
                        remaining: Some(Duration::from_secs(e.timeout_s.into())),
                        // ipset reports only the time left.
                        timeout: None,
                    });
                }
            }
        }
        Ok(out)
    }

    fn teardown(&mut self) -> Result<(), FirewallError> {
        let chain = self.plan.chain.clone();
        let mut route_sets = Vec::new();
        for fam in 0..2 {
            let saved = self.read(fam, &chain)?;
            let b = rules::teardown_batch(&chain, &saved);
            if b != "*filter\nCOMMIT\n" {
                self.apply(fam, &b)?;
            }
            route_sets.extend(saved.routes.iter().map(NatRoute::set));
        }
        route_sets.extend(self.routes.iter().map(NatRoute::set));
        for (set, twin) in SETS.into_iter().chain(NET_SETS) {
            self.ipset.destroy(set)?;
            self.ipset.destroy(twin)?;
        }
        for set in route_sets {
            self.ipset.destroy(&set)?;
        }
        self.routes.clear();
        Ok(())
    }

    fn kernel_expiry(&self) -> bool {
        true
    }

    fn adopt(&mut self, plan: &Plan) {
        self.plan = plan.clone();
    }

    fn grant_nat(&mut self, grants: &[NatGrant]) -> Result<(), FirewallError> {
        if !self.plan.nat {
            return Err(FirewallError::Protocol("NAT grants need nat = true in the config".into()));
        }
        for g in grants {
            if g.addr.is_ipv6() != g.to.is_ipv6() {
                return Err(FirewallError::Protocol(format!(
                    "NAT grant for {} to {}: address families differ",
                    g.addr, g.to
                )));
            }
            let route = NatRoute { service: g.service, to: g.to };
            if !self.routes.contains(&route) {
                // A new destination: one set and two rules, once.
                self.ensure_route_set(&route)?;
                self.routes.push(route.clone());
                if let Err(e) = self.install_rules(usize::from(g.to.is_ipv6())) {
                    self.routes.retain(|r| r != &route);
                    return Err(e);
                }
            }
            self.ipset.add(&route.set(), &[entry(g.addr, None, g.timeout)])?;
        }
        Ok(())
    }

    fn revoke_nat(&mut self, grants: &[NatGrant]) -> Result<(), FirewallError> {
        for g in grants {
            let route = NatRoute { service: g.service, to: g.to };
            if self.routes.contains(&route) {
                self.ipset.del(&route.set(), &[entry(g.addr, None, Duration::ZERO)])?;
            }
        }
        Ok(())
    }

    fn verify(&mut self, plan: &Plan) -> Result<Option<String>, FirewallError> {
        self.verify_state(plan)
    }
}
