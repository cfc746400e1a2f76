//! The grant lifecycle, for every origin (knock, SPA, API, CLI): grant, refresh,
//! revoke, expire, reconcile, retry. A [`Granter`] owns the firewall driver (behind
//! [`firewall::Shared`]), the one expiry [`scheduler`], and the [`Store`] handle.
//!
//! Granting is: lock the driver, apply (one netlink batch, microseconds), arm the
//! scheduler, enqueue the record, unlock. The scheduler is armed whatever the store
//! does (not opened, thread gone, channel full, disk full): a grant of a driver without
//! kernel expiry (iptables, none) is closed on time by the daemon in every case. The
//! capture thread never waits for the disk: its records are `try_send`-ed to the store
//! thread. The API waits for its record to be committed and gets the rows back.
//!
//! Revoking (API, CLI) and expiring take the same lock: firewall first, then the record.
//!
//! # Ordering
//!
//! Every firewall change and the store command that records it are made under the
//! driver lock, and the store channel is FIFO. So the store applies records and closes
//! in the order the firewall saw them: a record can never describe a firewall state
//! older than a revoke already written. A revoke by record id checks that the row belongs
//! to the activation the firewall holds now (not written before it opened), so it never
//! closes a newer grant of the same key whose record is still in the channel.
//!
//! If the store could not be opened (read-only or full state dir, corrupt file), the
//! daemon still enforces, grants and expires; records are missing and every API call
//! that needs them answers 503 with the reason.

pub mod admission;
pub mod clock;
pub mod created;
pub mod origin;
mod reconcile;
mod revoke;
pub mod scheduler;
pub mod watch;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use portcullis_proto::addr::canonical;
use portcullis_proto::Service;
use tokio::sync::oneshot;

use crate::config::{GrantPrefixes, Limits};
use crate::firewall::{self, FirewallDriver, FirewallError, Grant, LiveGrant, Plan, Prefix};
use crate::stats::Stats;
use crate::store::{self, GrantRecord, NewGrants, Store, StoreError};
use admission::Admission;
pub use admission::Refusal;
use clock::{ms, Clock};
pub use origin::{Origin, OriginKind};
pub use reconcile::{ReconcileReport, ADOPT_WINDOW};
pub use revoke::{RevokeError, RevokeTarget};
use scheduler::{Key, Scheduler};

/// Why an API grant did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The firewall refused.
    #[error("firewall: {0}")]
    Firewall(#[from] FirewallError),
    /// The store could not record it (the firewall grant was undone).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a capture-path open did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A bound on opens refused it (nothing was asked of the firewall).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The firewall refused.
    #[error("firewall: {0}")]
    Firewall(#[from] FirewallError),
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Grants closed by the daemon at expiry (drivers without kernel expiry).
    pub daemon_expired: AtomicU64,
    /// Grants opened, by origin kind and name.
    pub created: created::Created,
}

/// The grant lifecycle: driver, scheduler, store, and what the firewall protects.
pub struct Granter {
    firewall: firewall::Shared,
    store: Result<Arc<Store>, StoreError>,
    protected: Vec<Service>,
    clock: Arc<dyn Clock>,
    sched: Arc<Scheduler>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Counters,
    /// The capture thread's latest [`Stats`], published about once a second for metrics.
    stats: Mutex<Stats>,
    /// What the firewall must enforce, once it is watched ([`watch`]).
    plan: OnceLock<Plan>,
    /// The firewall's health and its watcher.
    watch: watch::State,
    /// Bounds on door opens. Lock order: driver, scheduler table, then this.
    admission: Mutex<Admission>,
    /// Doors and SPA users that grant their source's prefix (set with the limits).
    prefixes: Mutex<Arc<GrantPrefixes>>,
}

impl Granter {
    /// A granter that records into `store` (or runs without records, with the reason),
    /// with its scheduler thread running on `clock`.
    pub fn new(
        firewall: firewall::Shared,
        protected: Vec<Service>,
        store: Result<Arc<Store>, StoreError>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Arc<Granter>> {
        let g = Arc::new(Granter {
            firewall,
            store,
            protected,
            clock,
            sched: Arc::new(Scheduler::default()),
            thread: Mutex::new(None),
            counters: Counters::default(),
            stats: Mutex::new(Stats::default()),
            plan: OnceLock::new(),
            watch: watch::State::default(),
            admission: Mutex::new(Admission::default()),
            prefixes: Mutex::new(Arc::default()),
        });
        let t = scheduler::spawn(Arc::downgrade(&g), Arc::clone(&g.sched), Arc::clone(&g.clock))?;
        *g.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        Ok(g)
    }

    /// A granter with no store on the system clock (tests, dry runs).
    pub fn unrecorded(driver: Box<dyn FirewallDriver>) -> std::io::Result<Arc<Granter>> {
        Granter::new(
            firewall::Shared::new(driver),
            Vec::new(),
            Err(StoreError::Unavailable("no store configured".into())),
            clock::system(),
        )
    }

    /// Bound door opens by `limits` (budgets start afresh; live grants stay counted).
    pub fn set_limits(&self, limits: Limits) {
        *self.prefixes.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits.grant_prefix.clone());
        self.admission().set_limits(limits);
    }

    /// What a grant by `origin` for `addr` lets in: the single address, or the prefix
    /// its door (`grant_prefix_v4`/`_v6`) or native SPA user (origin detail `user NAME`)
    /// grants.
    pub fn source_for(&self, origin: &Origin, addr: IpAddr) -> Prefix {
        let prefixes = Arc::clone(&self.prefixes.lock().unwrap_or_else(|p| p.into_inner()));
        if prefixes.is_empty() {
            return Prefix::host(addr);
        }
        let p = match origin.kind {
            OriginKind::Door => prefixes.door(&origin.detail),
            OriginKind::Spa => {
                origin.detail.strip_prefix("user ").map(|u| prefixes.user(u)).unwrap_or_default()
            }
            _ => Default::default(),
        };
        p.source(addr)
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admission_opened(&self, door: &str, key: Key, expires_at: i64, now: i64) {
        self.admission().opened(door, key, expires_at, now);
    }

    fn admission_closed(&self, key: Key) {
        self.admission().closed(key);
    }

    /// Live grants door `door` holds now, as its bounds count them.
    pub fn door_live(&self, door: &str) -> usize {
        self.admission().live(door, self.clock.now_ms())
    }

    /// The driver's name.
    pub fn driver_name(&self) -> &'static str {
        self.firewall.name()
    }

    /// Whether the firewall closes grants by itself.
    pub fn kernel_expiry(&self) -> bool {
        self.firewall.kernel_expiry()
    }

    /// The store, or why there is none.
    pub fn store(&self) -> Result<&Arc<Store>, StoreError> {
        self.store.as_ref().map_err(Clone::clone)
    }

    /// Services the firewall protects (a grant for anything else changes nothing).
    pub fn protected(&self) -> &[Service] {
        &self.protected
    }

    /// The clock grants are timed by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Run `f` on the driver under its lock (NAT grants, which the driver expires itself).
    pub fn with_driver<T>(&self, f: impl FnOnce(&mut dyn FirewallDriver) -> T) -> T {
        f(self.firewall.lock().as_mut())
    }

    /// The grants the firewall holds now.
    pub fn live(&self) -> Result<Vec<LiveGrant>, FirewallError> {
        self.firewall.lock().list()
    }

    /// Grants the scheduler tracks (to close or mark expired on time).
    pub fn scheduled(&self) -> usize {
        self.sched.lock().len()
    }

    /// Publish the capture thread's counters (for metrics).
    pub fn publish_stats(&self, s: Stats) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The latest published counters.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply grants with the driver locked, and arm the scheduler if they took.
    fn apply(
        &self,
        d: &mut dyn FirewallDriver,
        origin: &Origin,
        src: Prefix,
        services: &[Service],
        duration: Duration,
        requested_at: i64,
    ) -> (Result<(), FirewallError>, NewGrants) {
        let grants: Vec<Grant> = services
            .iter()
            .map(|&service| Grant { addr: src.addr, len: src.len, service, timeout: duration })
            .collect();
        let mut r = d.grant(&grants);
        // Refused because our ruleset is gone (ENOENT after a flush)? Repair, retry once.
        if let Err(e) = &r {
            if self.repair_if_broken(d, e) {
                r = d.grant(&grants);
            }
        }
        let now = self.clock.now_ms();
        if r.is_ok() {
            let mut t = self.sched.lock();
            let mut earliest = false;
            for &s in services {
                earliest |= t.open((src, s), now.saturating_add(ms(duration)), now);
            }
            if earliest {
                self.sched.wake();
            }
        }
        let rec = NewGrants {
            origin: origin.clone(),
            addr: src.addr,
            len: src.len,
            services: services.to_vec(),
            requested_at,
            effective_at: now,
            duration,
            driver: self.firewall.name(),
            result: r.as_ref().map(|_| ()).map_err(ToString::to_string),
        };
        (r, rec)
    }

    /// The capture thread's path for a door: admit (an open from `src` within the
    /// door's bounds, see [`admission`]), then [`Granter::grant`]. A refused open asks
    /// nothing of the firewall and writes no record.
    pub fn open_door(
        &self,
        origin: Origin,
        src: IpAddr,
        addr: IpAddr,
        services: &[Service],
        duration: Duration,
    ) -> Result<(), OpenError> {
        let allow = self.source_for(&origin, canonical(addr));
        let keys: Vec<Key> = services.iter().map(|&s| (allow, s)).collect();
        self.admission()
            .check(&origin.detail, src, &keys, self.clock.now_ms())
            .map_err(OpenError::Refused)?;
        let door = origin.detail.clone();
        self.grant_source(origin, allow, services, duration)?;
        let now = self.clock.now_ms();
        let mut a = self.admission();
        for k in keys {
            a.opened(&door, k, now.saturating_add(ms(duration)), now);
        }
        Ok(())
    }

    /// The capture thread's path: open (for `addr`, or the prefix `origin` grants; see
    /// [`Granter::source_for`]), arm expiry, and enqueue the record without waiting.
    pub fn grant(
        &self,
        origin: Origin,
        addr: IpAddr,
        services: &[Service],
        duration: Duration,
    ) -> Result<(), FirewallError> {
        let src = self.source_for(&origin, canonical(addr));
        self.grant_source(origin, src, services, duration)
    }

    /// [`Granter::grant`] for `src` as it is.
    fn grant_source(
        &self,
        origin: Origin,
        src: Prefix,
        services: &[Service],
        duration: Duration,
    ) -> Result<(), FirewallError> {
        let requested_at = self.clock.now_ms();
        let mut d = self.firewall.lock();
        let (r, rec) = self.apply(d.as_mut(), &origin, src, services, duration, requested_at);
        if r.is_ok() {
            self.counters.created.add(&origin);
        }
        if let Ok(store) = &self.store {
            store.record_nowait(rec);
        }
        drop(d);
        r
    }

    /// The API's path: open, record, and wait for the rows. If the store cannot take the
    /// record the grant is undone (fail closed) and the store error returned.
    pub async fn grant_recorded(
        &self,
        origin: Origin,
        addr: IpAddr,
        services: &[Service],
        duration: Duration,
    ) -> Result<Vec<GrantRecord>, GrantError> {
        let src = Prefix::host(canonical(addr));
        let store = self.store()?;
        let requested_at = self.clock.now_ms();
        type Rx = oneshot::Receiver<Result<Vec<GrantRecord>, StoreError>>;
        // Decide under the driver lock, await only after it is released.
        let step: Result<Rx, (Option<Rx>, GrantError)> = {
            let mut d = self.firewall.lock();
            let (r, rec) = self.apply(d.as_mut(), &origin, src, services, duration, requested_at);
            if r.is_ok() {
                self.counters.created.add(&origin);
            }
            match (store.record(rec), r) {
                (Ok(rx), Ok(())) => Ok(rx),
                // Recorded as failed; the caller still hears the firewall's error.
                (Ok(rx), Err(e)) => Err((Some(rx), e.into())),
                (Err(e), r) => {
                    if r.is_ok() {
                        self.undo(d.as_mut(), src, services);
                    }
                    Err((None, e.into()))
                }
            }
        };
        let rx = match step {
            Ok(rx) => rx,
            Err((wait, e)) => {
                if let Some(rx) = wait {
                    let _ = rx.await;
                }
                return Err(e);
            }
        };
        match rx.await.unwrap_or(Err(StoreError::Busy)) {
            Ok(rows) => Ok(rows),
            Err(e) => {
                let mut d = self.firewall.lock();
                self.undo(d.as_mut(), src, services);
                Err(e.into())
            }
        }
    }

    /// Take back an API grant that could not be recorded (driver locked by the caller).
    fn undo(&self, d: &mut dyn FirewallDriver, src: Prefix, services: &[Service]) {
        let addr = src.short();
        let keys: Vec<Key> = services.iter().map(|&s| (src, s)).collect();
        match d.revoke(&keys) {
            Ok(()) => {
                let mut t = self.sched.lock();
                for &k in &keys {
                    t.remove(k);
                }
                tracing::error!("{addr}: API grant undone: it could not be recorded");
            }
            Err(e) => tracing::error!("{addr}: API grant could not be recorded NOR undone: {e}"),
        }
    }

    /// Stop the scheduler thread, then the store after what is queued. Grants stay in
    /// the firewall (kernel timeouts close them, or the next start does).
    pub fn shutdown(&self) {
        self.watch.stop();
        self.sched.stop();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        if let Ok(store) = &self.store {
            store.shutdown();
        }
    }
}

impl Drop for Granter {
    fn drop(&mut self) {
        self.sched.stop();
    }
}

/// Set up the firewall, open the store next to the other state, reconcile them, and
/// return the granter. A store that cannot be opened is logged loudly and the daemon
/// goes on without records (the firewall is what protects the host), its scheduler
/// armed with what the firewall holds. `watch`: whether this process watches the
/// firewall for changes by others (not the unprivileged part of a split daemon: the
/// privileged part, which holds the firewall, does).
pub fn start(
    state_dir: &Path,
    plan: &Plan,
    mut driver: Box<dyn FirewallDriver>,
    settings: &crate::config::StoreSettings,
    watch: bool,
) -> anyhow::Result<Arc<Granter>> {
    use anyhow::Context;
    driver.setup(plan).context("installing the firewall ruleset")?;
    let clock = clock::system();
    let path = state_dir.join("grants.db");
    let opts = store::Options {
        clock: Arc::clone(&clock),
        retention: Some(settings.retention),
        ..store::Options::default()
    };
    let store = Store::open(&path, opts);
    if let Err(e) = &store {
        tracing::error!(
            "store: {e}. RUNNING WITHOUT GRANT RECORDS: the firewall is enforced, knocks/SPA still \
             open doors and grants still close on time, but grants are not recorded, not reconciled \
             at restart, and the API cannot grant"
        );
    }
    let granter = Granter::new(firewall::Shared::new(driver), plan.protected.clone(), store, clock)
        .context("starting the expiry scheduler")?;
    if watch {
        granter.watch_firewall(plan.clone()).context("starting the firewall watcher")?;
    }
    if granter.store().is_ok() {
        match granter.reconcile() {
            Ok(r) => tracing::info!(
                "store: {} (reconciled: {} kept, {} restored, {} expired while down, {} unknown revoked, \
                 {} adopted, {} failures)",
                path.display(),
                r.kept,
                r.restored,
                r.expired,
                r.unknown_revoked,
                r.adopted,
                r.failures
            ),
            Err(e) => tracing::error!("store: reconciliation FAILED: {e}"),
        }
    } else {
        let n = granter.adopt_live().context("reading live grants")?;
        tracing::info!("expiry: {n} grant(s) found in the firewall scheduled with their remaining time");
    }
    Ok(granter)
}

#[cfg(test)]
mod tests;
