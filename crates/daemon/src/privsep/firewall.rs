//! The privileged part's firewall: the real driver, the plan of its own config, and a
//! mirror of the grants it applied for the unprivileged part (with absolute expiry).
//! Its watcher ([`crate::grants::watch`]) reinstalls a removed ruleset and puts the
//! live grants back with the time they have left, without asking the other part: a
//! flush is repaired even while the unprivileged part is busy, stuck or compromised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::firewall::{FirewallDriver, FirewallError, Grant, Key, LiveGrant, Plan, Shared};
use crate::grants::watch::{self, State, Watched};

/// The driver, the plan, the mirror and the firewall's health.
pub struct Firewall {
    shared: Shared,
    plan: Plan,
    /// Live grants as applied: key → when it ends.
    mirror: Mutex<HashMap<Key, Instant>>,
    /// Most entries kept (the firewall holds at most `max_grants` anyway).
    cap: usize,
    state: State,
}

impl Firewall {
    /// Take `driver` enforcing `plan`. The grants the firewall holds already (from
    /// before a restart) are mirrored with their remaining time, if it knows it.
    pub fn new(mut driver: Box<dyn FirewallDriver>, plan: Plan) -> Arc<Firewall> {
        let now = Instant::now();
        let seed: HashMap<Key, Instant> = driver
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| Some((l.key(), now + l.remaining?)))
            .collect();
        let cap = usize::try_from(plan.max_grants).unwrap_or(usize::MAX).clamp(1024, 1 << 20);
        Arc::new(Firewall {
            shared: Shared::new(driver),
            plan,
            mirror: Mutex::new(seed),
            cap,
            state: State::default(),
        })
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Instant>> {
        self.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribe to the firewall's change notifications (while capabilities allow).
    pub fn subscribe(&self) -> Option<Box<dyn crate::firewall::Watch>> {
        watch::subscribe(self)
    }

    /// Start the watcher thread on `source` (from [`Firewall::subscribe`]).
    pub fn watch(self: &Arc<Self>, source: Option<Box<dyn crate::firewall::Watch>>) -> std::io::Result<()> {
        watch::spawn(self, source)
    }

    /// Health and repair counters.
    pub fn health(&self) -> &State {
        &self.state
    }

    /// Install (or verify) the plan.
    pub fn setup(&self) -> Result<(), FirewallError> {
        self.shared.lock().setup(&self.plan)
    }

    /// Apply `grants`; if the firewall refuses because the ruleset is gone, repair it
    /// and retry once (as the grant lifecycle does in one process).
    pub fn grant(&self, grants: &[Grant]) -> Result<(), FirewallError> {
        let mut d = self.shared.lock();
        let mut r = d.grant(grants);
        if let Err(e) = &r {
            if watch::repair_if_broken(self, d.as_mut(), e) {
                r = d.grant(grants);
            }
        }
        if r.is_ok() {
            let now = Instant::now();
            let mut m = self.mirror();
            if m.len() + grants.len() > self.cap {
                m.retain(|_, end| *end > now);
            }
            for g in grants {
                if m.len() < self.cap || m.contains_key(&g.key()) {
                    m.insert(g.key(), now + g.timeout);
                }
            }
        }
        r
    }

    /// Remove grants.
    pub fn revoke(&self, keys: &[Key]) -> Result<(), FirewallError> {
        let mut d = self.shared.lock();
        let r = d.revoke(keys);
        if r.is_ok() {
            let mut m = self.mirror();
            for k in keys {
                m.remove(k);
            }
        }
        r
    }

    /// The grants the firewall holds now.
    pub fn list(&self) -> Result<Vec<LiveGrant>, FirewallError> {
        self.shared.lock().list()
    }

    /// Remove everything (fwknopd's `FLUSH_IPT_AT_EXIT`).
    pub fn teardown(&self) -> Result<(), FirewallError> {
        let r = self.shared.lock().teardown();
        self.mirror().clear();
        r
    }

    /// Stop the watcher.
    pub fn stop(&self) {
        self.state.stop();
    }
}

impl Watched for Firewall {
    fn firewall(&self) -> &Shared {
        &self.shared
    }
    fn plan(&self) -> Option<&Plan> {
        Some(&self.plan)
    }
    fn state(&self) -> &State {
        &self.state
    }
    fn wanted(&self, slack: Duration) -> Vec<Grant> {
        let now = Instant::now();
        self.mirror()
            .iter()
            .filter_map(|(&(src, service), &end)| {
                let left = end.checked_duration_since(now)?;
                (left > slack).then_some(Grant { addr: src.addr, len: src.len, service, timeout: left })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::none::NoFirewall;
    use portcullis_proto::Service;
    use std::net::IpAddr;

    fn g(last: u8, secs: u64) -> Grant {
        Grant::host(IpAddr::from([192, 0, 2, last]), Service::tcp(22), Duration::from_secs(secs))
    }

    #[test]
    fn the_mirror_follows_grants_and_revokes_with_absolute_expiry() {
        let plan = Plan { protected: vec![Service::tcp(22)], max_grants: 10, ..Plan::default() };
        let fw = Firewall::new(Box::new(NoFirewall::default()), plan);
        fw.setup().unwrap();
        fw.grant(&[g(2, 30), g(3, 60)]).unwrap();
        fw.revoke(&[g(3, 0).key()]).unwrap();
        let want = fw.wanted(Duration::ZERO);
        assert_eq!(want.len(), 1);
        assert_eq!(want[0].addr, g(2, 0).addr);
        assert!(want[0].timeout <= Duration::from_secs(30) && want[0].timeout > Duration::from_secs(29));
        assert!(fw.wanted(Duration::from_secs(31)).is_empty(), "slack leaves out what is about to end");
    }
}
