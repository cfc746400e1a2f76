//! Start-up: make store, firewall and scheduler agree.

use std::time::Duration;

use super::clock::ms;
use super::scheduler::Entry;
use super::{Granter, Origin, OriginKind};
use crate::firewall::{FirewallError, Grant, Key, LiveGrant};
use crate::store::{CloseTarget, Closing, GrantState, NewGrants, StoreError};

/// A firewall grant with no record that is younger than this at start is adopted (its
/// record was most likely still in the channel when the daemon died), not revoked.
pub const ADOPT_WINDOW: Duration = Duration::from_secs(10);

/// What start-up reconciliation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Active, unexpired records found in the firewall.
    pub kept: usize,
    /// Active, unexpired records missing from the firewall, re-added with their remaining time.
    pub restored: usize,
    /// Active records past their expiry, closed in the store (and removed from the firewall if there).
    pub expired: usize,
    /// Firewall grants with no active record, revoked.
    pub unknown_revoked: usize,
    /// Firewall grants with no record but younger than [`ADOPT_WINDOW`]: recorded.
    pub adopted: usize,
    /// Firewall operations that failed (logged).
    pub failures: usize,
}

impl Granter {
    /// Reconcile store and firewall (blocking; once at start, before capture and API),
    /// and arm the scheduler with every active grant:
    ///
    /// - active records past expiry: marked expired (closed at their expiry), and removed
    ///   from the firewall if still there;
    /// - active, unexpired records missing from the firewall (reboot, `nft flush ruleset`):
    ///   re-added with their remaining time;
    /// - firewall grants with no active record: revoked (nothing unknown stays open),
    ///   unless younger than [`ADOPT_WINDOW`]: adopted and recorded.
    pub fn reconcile(&self) -> Result<ReconcileReport, StoreError> {
        let store = self.store()?;
        store.sync_blocking();
        let active = store.all_active()?;
        let now = self.clock.now_ms();
        let mut report = ReconcileReport::default();
        let mut d = self.firewall.lock();
        let mut t = self.sched.lock();
        let live = match d.list() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("reconcile: cannot list firewall grants: {e}; skipping reconciliation");
                report.failures += 1;
                for r in &active {
                    let opened_at = r.effective_at.unwrap_or(r.requested_at);
                    t.insert(r.key(), Entry { expires_at: r.expires_at, opened_at });
                }
                drop(t);
                self.sched.wake();
                return Ok(report);
            }
        };
        let is_live = |k: Key| live.iter().any(|l| l.key() == k);
        let mut restore = Vec::new();
        let mut remove = Vec::new();
        let mut known = Vec::new();
        let mut closes = Vec::new();
        for r in &active {
            if r.expires_at <= now {
                if is_live(r.key()) {
                    remove.push(r.key());
                }
                report.expired += 1;
                closes.push(Closing {
                    target: CloseTarget::Id(r.id),
                    state: GrantState::Expired,
                    by: None,
                    at: r.expires_at,
                });
                tracing::info!(
                    "{}: {} (grant #{}) expired while the daemon was down",
                    r.source().short(),
                    r.service,
                    r.id
                );
                continue;
            }
            known.push(r.key());
            let opened_at = r.effective_at.unwrap_or(r.requested_at);
            t.insert(r.key(), Entry { expires_at: r.expires_at, opened_at });
            if r.origin.kind == OriginKind::Door {
                self.admission_opened(&r.origin.detail, r.key(), r.expires_at, now);
            }
            if is_live(r.key()) {
                report.kept += 1;
            } else {
                let left = Duration::from_millis(u64::try_from(r.expires_at - now).unwrap_or(0));
                restore.push(Grant { addr: r.address, len: r.len, service: r.service, timeout: left });
                tracing::info!(
                    "{}: restoring {} (grant #{}, {}) missing from the firewall, {}s left",
                    r.source().short(),
                    r.service,
                    r.id,
                    r.origin,
                    left.as_secs()
                );
            }
        }
        let mut adopt = Vec::new();
        for l in &live {
            if known.contains(&l.key()) || remove.contains(&l.key()) {
                continue;
            }
            if let (Some(timeout), Some(left)) = (l.timeout, l.remaining) {
                let age = timeout.saturating_sub(left);
                if age < ADOPT_WINDOW {
                    tracing::warn!(
                        "{}: adopting {} found in the firewall with no record, granted {}s before this \
                         start (its record was lost in a crash)",
                        l.source().short(),
                        l.service,
                        age.as_secs()
                    );
                    let opened_at = now - ms(age);
                    t.insert(l.key(), Entry { expires_at: now + ms(left), opened_at });
                    adopt.push(NewGrants {
                        origin: Origin { kind: OriginKind::Adopted, detail: "reconcile".into() },
                        addr: l.addr,
                        len: l.len,
                        services: vec![l.service],
                        requested_at: opened_at,
                        effective_at: opened_at,
                        duration: timeout,
                        driver: self.firewall.name(),
                        result: Ok(()),
                    });
                    continue;
                }
            }
            tracing::warn!(
                "{}: revoking {} found in the firewall with no active record",
                l.source().short(),
                l.service
            );
            remove.push(l.key());
            report.unknown_revoked += 1;
        }
        drop(t);
        self.sched.wake();
        if !remove.is_empty() {
            if let Err(e) = d.revoke(&remove) {
                tracing::error!("reconcile: revoking {} grant(s) failed: {e}", remove.len());
                report.failures += 1;
            }
        }
        for g in &restore {
            match d.grant(std::slice::from_ref(g)) {
                Ok(()) => report.restored += 1,
                Err(e) => {
                    tracing::error!(
                        "reconcile: restoring {} for {} failed: {e}",
                        g.service,
                        g.source().short()
                    );
                    report.failures += 1;
                }
            }
        }
        report.adopted = adopt.len();
        store.close_nowait(closes);
        for g in adopt {
            store.record_nowait(g);
        }
        drop(d);
        store.sync_blocking();
        Ok(report)
    }

    /// Without a store: arm the scheduler with what the firewall holds, at its
    /// remaining time (unknown: now), and close what is due. Returns how many.
    pub fn adopt_live(&self) -> Result<usize, FirewallError> {
        let now = self.clock.now_ms();
        let live = {
            let mut d = self.firewall.lock();
            let live = d.list()?;
            // An element without a timeout would never expire and nothing records it:
            // it was not ours to keep.
            let forever: Vec<_> = live.iter().filter(|g| g.remaining.is_none()).map(LiveGrant::key).collect();
            if !forever.is_empty() {
                d.revoke(&forever)?;
                tracing::warn!("{} grant(s) without a timeout found in the firewall, revoked", forever.len());
            }
            let mut t = self.sched.lock();
            for g in live.iter().filter(|g| g.remaining.is_some()) {
                let left = g.remaining.unwrap_or_default();
                let age = g.timeout.map_or(Duration::ZERO, |full| full.saturating_sub(left));
                t.insert(g.key(), Entry { expires_at: now + ms(left), opened_at: now - ms(age) });
            }
            live.len()
        };
        self.sched.wake();
        self.expire_due();
        Ok(live)
    }
}
