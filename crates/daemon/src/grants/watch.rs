//! Keeping the firewall what the grant lifecycle says it is. Someone else may remove
//! or edit what the driver installed (`nft flush ruleset`, which Debian's
//! `systemctl reload nftables` runs; `portcullisd teardown` from another shell;
//! `iptables -F`): every protected port would then be open to everyone.
//!
//! A watcher thread notices it — at once through the driver's change notifications
//! (nftables netlink events), and by [`FirewallDriver::verify`] every
//! [`VERIFY_PERIOD`] otherwise (iptables) and as a backstop — and repairs it under the
//! driver lock: `setup` reinstalls the ruleset atomically, grants the firewall holds
//! that the scheduler does not know are revoked, and every live grant of the scheduler
//! is restored with its remaining time (the scheduler knows every live grant and its
//! expiry whatever the store does; the kernel's state may be gone). A grant that the
//! firewall refuses checks and repairs the same way before it is retried.
//!
//! Health is `degraded` from the moment a change is seen until a check made at least
//! [`CONFIRM_AFTER`] after the last repair finds ruleset and grants in place.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::scheduler::Key;
use super::Granter;
use crate::firewall::{FirewallDriver, FirewallError, Grant, Plan, Shared, Watch};

/// How often the firewall is checked without notifications (the iptables bound).
pub const VERIFY_PERIOD: Duration = Duration::from_secs(1);
/// A repair counts as holding when a check this long after it passes.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(500);
/// The watcher looks at its stop flag at least this often.
const POLL: Duration = Duration::from_millis(100);
/// More repairs than this within [`BURST_WINDOW`] (another program fighting over the
/// table) are spaced out to one per window, so the daemon does not spin.
const BURST: usize = 10;
const BURST_WINDOW: Duration = Duration::from_secs(1);
/// A scheduled grant this close to its end is not counted missing (kernel timeouts
/// and the expiry thread race with the check).
const EXPIRY_SLACK: Duration = Duration::from_millis(1500);

/// The firewall's health and the watcher thread.
#[derive(Default)]
pub struct State {
    /// `None`: matches the records. `Some(reason)`: degraded.
    problem: Mutex<Option<String>>,
    /// Repairs that reinstalled the ruleset.
    pub restores: AtomicU64,
    /// Repairs that failed.
    pub repair_failures: AtomicU64,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl State {
    /// `None` if the firewall matches the records, else why not.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Set health (the watcher; in a split daemon, the poller that mirrors the
    /// privileged part's watcher).
    pub fn set_problem(&self, p: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }

    /// Stop the watcher and wait for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// What a repair did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Live grants put back with their remaining time.
    pub grants: usize,
    /// Grants found in the firewall that the lifecycle does not know, revoked.
    pub unknown: usize,
}

/// What a watcher keeps in place: a driver shared with whoever grants, the plan it must
/// enforce, the grants that must be live, and where health and counters go. The grant
/// lifecycle ([`Granter`]) is one; the privileged part of a split daemon, which keeps a
/// mirror of the grants it applied, is the other.
pub trait Watched: Send + Sync + 'static {
    /// The driver, locked for every check and repair.
    fn firewall(&self) -> &Shared;
    /// What must be enforced (`None`: not yet known, nothing to repair with).
    fn plan(&self) -> Option<&Plan>;
    /// Health and counters.
    fn state(&self) -> &State;
    /// The grants that must be live now with the time each has left, only those with
    /// more than `slack` left. Called with the driver locked.
    fn wanted(&self, slack: Duration) -> Vec<Grant>;
}

impl Watched for Granter {
    fn firewall(&self) -> &Shared {
        &self.firewall
    }
    fn plan(&self) -> Option<&Plan> {
        self.plan.get()
    }
    fn state(&self) -> &State {
        &self.watch
    }
    fn wanted(&self, slack: Duration) -> Vec<Grant> {
        let now = self.clock.now_ms();
        let slack = i64::try_from(slack.as_millis()).unwrap_or(i64::MAX);
        self.sched
            .lock()
            .iter()
            .filter(|(_, e)| e.expires_at > now.saturating_add(slack))
            .map(|(&(src, service), e)| Grant {
                addr: src.addr,
                len: src.len,
                service,
                timeout: Duration::from_millis(u64::try_from(e.expires_at - now).unwrap_or(0)),
            })
            .collect()
    }
}

impl Granter {
    /// The firewall's health and repair counters.
    pub fn firewall_state(&self) -> &State {
        &self.watch
    }

    /// Watch the firewall for `plan` from now on (once; [`super::start`] does it).
    pub fn watch_firewall(self: &Arc<Self>, plan: Plan) -> std::io::Result<()> {
        let _ = self.plan.set(plan);
        start(self)
    }

    #[cfg(test)]
    fn check_locked(
        &self,
        d: &mut dyn FirewallDriver,
        plan: &Plan,
        grants: bool,
    ) -> Result<Option<String>, FirewallError> {
        check_locked(self, d, plan, grants)
    }

    #[cfg(test)]
    fn repair_locked(&self, d: &mut dyn FirewallDriver, what: &str) -> Result<Restored, FirewallError> {
        repair_locked(self, d, what)
    }

    /// See [`repair_if_broken`].
    pub(super) fn repair_if_broken(&self, d: &mut dyn FirewallDriver, err: &FirewallError) -> bool {
        repair_if_broken(self, d, err)
    }
}

/// Start `w`'s watcher thread (its plan must be set).
pub fn start<W: Watched>(w: &Arc<W>) -> std::io::Result<()> {
    let source = subscribe(w.as_ref());
    spawn(w, source)
}

/// Subscribe to the driver's change notifications, if it has them (a privileged part
/// does it before dropping capabilities, and starts the thread after: capabilities
/// are per thread).
pub fn subscribe(w: &dyn Watched) -> Option<Box<dyn Watch>> {
    match w.firewall().lock().watch() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                "firewall: cannot subscribe to change notifications ({e}); checking every {}s instead",
                VERIFY_PERIOD.as_secs()
            );
            None
        }
    }
}

/// Start `w`'s watcher thread on `source` (from [`subscribe`]).
pub fn spawn<W: Watched>(w: &Arc<W>, source: Option<Box<dyn Watch>>) -> std::io::Result<()> {
    let how = if source.is_some() { "change notifications" } else { "periodic checks" };
    tracing::info!(
        "firewall: watching for changes by others ({how}; ruleset checked every {VERIFY_PERIOD:?})"
    );
    let me: Weak<W> = Arc::downgrade(w);
    let me: Weak<dyn Watched> = me;
    let t = std::thread::Builder::new().name("fw-watch".into()).spawn(move || run(&me, source))?;
    *w.state().thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    Ok(())
}

/// Check the ruleset against the plan and, with `grants`, the firewall's grants
/// against the wanted ones (a dump of every grant: done when confirming a repair, and
/// every period for drivers without notifications). Driver locked by the caller.
/// `Ok(None)`: all in place.
fn check_locked(
    w: &dyn Watched,
    d: &mut dyn FirewallDriver,
    plan: &Plan,
    grants: bool,
) -> Result<Option<String>, FirewallError> {
    if let Some(what) = d.verify(plan)? {
        return Ok(Some(what));
    }
    if !grants {
        return Ok(None);
    }
    // Sets, not nested scans: this runs under the driver lock with up to max_grants each.
    let live: std::collections::HashSet<Key> = d.list()?.into_iter().map(|l| l.key()).collect();
    let missing = w.wanted(EXPIRY_SLACK).iter().filter(|g| !live.contains(&g.key())).count();
    Ok((missing > 0).then(|| format!("{missing} live grant(s) missing from the firewall")))
}

/// Reinstall the ruleset and put the wanted grants back (driver locked by the caller).
/// Logs at error level, counts, and marks health degraded until confirmed.
pub fn repair_locked(
    w: &dyn Watched,
    d: &mut dyn FirewallDriver,
    what: &str,
) -> Result<Restored, FirewallError> {
    let Some(plan) = w.plan() else {
        return Err(FirewallError::Protocol("no firewall plan to repair with".into()));
    };
    let st = w.state();
    st.set_problem(Some(format!("firewall changed by someone else: {what}")));
    let t0 = Instant::now();
    let r = restore(w, d, plan);
    match &r {
        Ok(r) => {
            st.restores.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "firewall: {what}; REINSTALLED the {} ruleset and restored {} live grant(s) with their \
                 remaining time ({} unknown grant(s) revoked) in {:?}",
                d.name(),
                r.grants,
                r.unknown,
                t0.elapsed()
            );
        }
        Err(e) => {
            st.repair_failures.fetch_add(1, Ordering::Relaxed);
            st.set_problem(Some(format!("firewall changed by someone else ({what}) and NOT repaired: {e}")));
            tracing::error!("firewall: {what}; reinstalling the ruleset FAILED: {e}; PORTS MAY BE OPEN");
        }
    }
    r
}

/// A grant the firewall refused: if our ruleset is what is missing, repair it and say
/// so (the caller retries once).
pub fn repair_if_broken(w: &dyn Watched, d: &mut dyn FirewallDriver, err: &FirewallError) -> bool {
    let Some(plan) = w.plan() else { return false };
    match d.verify(plan) {
        Ok(Some(what)) => repair_locked(w, d, &format!("a grant failed ({err}): {what}")).is_ok(),
        _ => false,
    }
}

/// `setup`, then make the firewall's grants the wanted ones.
fn restore(w: &dyn Watched, d: &mut dyn FirewallDriver, plan: &Plan) -> Result<Restored, FirewallError> {
    d.setup(plan)?;
    let want = w.wanted(Duration::ZERO);
    let wanted: std::collections::HashSet<Key> = want.iter().map(Grant::key).collect();
    let unknown: Vec<Key> = d.list()?.into_iter().map(|l| l.key()).filter(|k| !wanted.contains(k)).collect();
    d.revoke(&unknown)?;
    if !want.is_empty() {
        d.grant(&want)?;
    }
    Ok(Restored { grants: want.len(), unknown: unknown.len() })
}

/// The watcher: wait for a notification or the next check; repair what is broken.
fn run(me: &Weak<dyn Watched>, mut source: Option<Box<dyn Watch>>) {
    let mut next_check = Instant::now() + VERIFY_PERIOD;
    let mut confirm_at: Option<Instant> = None;
    let mut recent: Vec<Instant> = Vec::new();
    loop {
        let due = confirm_at.map_or(next_check, |c| c.min(next_check));
        let wait = due.saturating_duration_since(Instant::now()).min(POLL);
        let seen = match source.as_mut() {
            Some(w) => w.wait(wait),
            None => {
                std::thread::sleep(wait);
                Ok(None)
            }
        };
        let Some(g) = me.upgrade() else { return };
        let g = g.as_ref();
        if g.state().stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(plan) = g.plan() else { return };
        let what = match seen {
            Ok(Some(what)) => Some(what),
            Err(e) => {
                // Overflow: changes may have been missed; repairing costs one batch.
                tracing::warn!("firewall: change notifications lost ({e}); repairing to be sure");
                Some("change notifications lost".to_string())
            }
            Ok(None) => {
                let now = Instant::now();
                if now < due {
                    continue;
                }
                next_check = now + VERIFY_PERIOD;
                let mut d = g.firewall().lock();
                match check_locked(g, d.as_mut(), plan, source.is_none() || confirm_at.is_some()) {
                    Ok(None) => {
                        if confirm_at.is_none_or(|c| now >= c) {
                            if g.state().problem().is_some() {
                                tracing::warn!("firewall: in place again and matching the grant records");
                            }
                            g.state().set_problem(None);
                            confirm_at = None;
                        }
                        None
                    }
                    Ok(Some(what)) => Some(what),
                    Err(e) => {
                        tracing::warn!("firewall: check failed: {e}");
                        // Confirm later rather than retrying at once.
                        confirm_at = confirm_at.map(|_| now + CONFIRM_AFTER);
                        None
                    }
                }
            }
        };
        let Some(what) = what else { continue };
        // Space out repairs if someone keeps undoing them.
        let now = Instant::now();
        recent.retain(|t| now.duration_since(*t) < BURST_WINDOW);
        if recent.len() >= BURST {
            tracing::error!("firewall: changed {BURST} times within {BURST_WINDOW:?}; is another program managing the same table?");
            std::thread::sleep(BURST_WINDOW.saturating_sub(now.duration_since(recent[0])));
        }
        recent.push(Instant::now());
        let mut d = g.firewall().lock();
        let _ = repair_locked(g, d.as_mut(), &what);
        drop(d);
        confirm_at = Some(Instant::now() + CONFIRM_AFTER);
        next_check = next_check.min(Instant::now() + CONFIRM_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Mutex;

    use portcullis_proto::Service;

    use super::*;
    use crate::firewall::{self, LiveGrant};
    use crate::grants::clock::ManualClock;
    use crate::grants::{Origin, OriginKind};
    use crate::store::StoreError;

    /// A firewall someone else can flush: grants then fail with ENOENT, as nftables'.
    #[derive(Default)]
    struct Kernel {
        installed: bool,
        grants: Vec<Grant>,
        setups: usize,
    }

    struct Flushable(Arc<Mutex<Kernel>>);

    impl FirewallDriver for Flushable {
        fn name(&self) -> &'static str {
            "flushable"
        }
        fn setup(&mut self, _: &Plan) -> Result<(), FirewallError> {
            let mut k = self.0.lock().unwrap();
            k.installed = true;
            k.setups += 1;
            Ok(())
        }
        fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
            let mut k = self.0.lock().unwrap();
            if !k.installed {
                let source = std::io::Error::from_raw_os_error(libc::ENOENT);
                return Err(FirewallError::Kernel { op: "grant", source });
            }
            for g in grants {
                k.grants.retain(|x| x.key() != g.key());
                k.grants.push(*g);
            }
            Ok(())
        }
        fn revoke(&mut self, keys: &[crate::firewall::Key]) -> Result<(), FirewallError> {
            self.0.lock().unwrap().grants.retain(|x| !keys.contains(&x.key()));
            Ok(())
        }
        fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
            let k = self.0.lock().unwrap();
            Ok(k.grants
                .iter()
                .map(|g| LiveGrant {
                    addr: g.addr,
                    len: g.len,
                    service: g.service,
                    remaining: None,
                    timeout: None,
                })
                .collect())
        }
        fn teardown(&mut self) -> Result<(), FirewallError> {
            *self.0.lock().unwrap() = Kernel::default();
            Ok(())
        }
        fn kernel_expiry(&self) -> bool {
            true
        }
        fn verify(&mut self, _: &Plan) -> Result<Option<String>, FirewallError> {
            Ok((!self.0.lock().unwrap().installed).then(|| "table missing".into()))
        }
    }

    const T0: i64 = 1_800_000_000_000;

    fn granter() -> (Arc<Granter>, Arc<Mutex<Kernel>>, Arc<ManualClock>) {
        let kernel = Arc::new(Mutex::new(Kernel::default()));
        let clock = ManualClock::new(T0);
        let mut d = Flushable(Arc::clone(&kernel));
        let plan = Plan { protected: vec![Service::tcp(22)], max_grants: 10, ..Plan::default() };
        d.setup(&plan).unwrap();
        let g = Granter::new(
            firewall::Shared::new(Box::new(d)),
            plan.protected.clone(),
            Err(StoreError::Unavailable("none".into())),
            clock.clone(),
        )
        .unwrap();
        // The plan without the watcher thread: these tests drive every step.
        g.plan.set(plan).unwrap();
        (g, kernel, clock)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn origin() -> Origin {
        Origin { kind: OriginKind::Door, detail: "ssh".into() }
    }

    #[test]
    fn a_grant_refused_for_a_missing_table_repairs_restores_the_others_and_succeeds() {
        let (g, kernel, clock) = granter();
        g.grant(origin(), ip(2), &[Service::tcp(22)], Duration::from_secs(30)).unwrap();
        clock.advance(Duration::from_secs(10));
        // `nft flush ruleset` behind our back.
        {
            let mut k = kernel.lock().unwrap();
            k.installed = false;
            k.grants.clear();
        }
        assert_eq!(g.firewall_state().problem(), None, "nobody has looked yet");
        g.grant(origin(), ip(3), &[Service::tcp(22)], Duration::from_secs(60)).unwrap();
        let k = kernel.lock().unwrap();
        assert!(k.installed);
        assert_eq!(k.setups, 2);
        let find = |a| k.grants.iter().find(|x| x.addr == a).map(|x| x.timeout);
        assert_eq!(find(ip(2)), Some(Duration::from_secs(20)), "restored with its remaining time");
        assert_eq!(find(ip(3)), Some(Duration::from_secs(60)), "the new grant took");
        drop(k);
        assert_eq!(g.firewall_state().restores.load(Ordering::Relaxed), 1);
        let p = g.firewall_state().problem().expect("degraded until a check confirms");
        assert!(p.contains("table missing"), "{p}");
    }

    #[test]
    fn the_check_finds_a_missing_table_and_missing_grants_but_not_ones_about_to_expire() {
        let (g, kernel, clock) = granter();
        let plan = g.plan.get().unwrap().clone();
        let check = || {
            let mut d = g.firewall.lock();
            g.check_locked(d.as_mut(), &plan, true).unwrap()
        };
        g.grant(origin(), ip(2), &[Service::tcp(22)], Duration::from_secs(30)).unwrap();
        assert_eq!(check(), None);
        kernel.lock().unwrap().grants.clear();
        assert_eq!(check().as_deref(), Some("1 live grant(s) missing from the firewall"));
        clock.advance(Duration::from_millis(29_000));
        assert_eq!(check(), None, "within the expiry slack: the kernel may have closed it already");
        kernel.lock().unwrap().installed = false;
        assert_eq!(check().as_deref(), Some("table missing"));
        // A repair puts back only what is still live, and revokes what we do not know.
        kernel.lock().unwrap().grants.push(Grant::host(ip(9), Service::tcp(22), Duration::from_secs(90)));
        let r = g.repair_locked(g.firewall.lock().as_mut(), "test").unwrap();
        assert_eq!(r, Restored { grants: 1, unknown: 1 });
        let k = kernel.lock().unwrap();
        assert_eq!(k.grants.len(), 1);
        assert_eq!((k.grants[0].addr, k.grants[0].timeout), (ip(2), Duration::from_secs(1)));
    }
}
