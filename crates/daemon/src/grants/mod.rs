//! The one grant path shared by the capture thread (doors, SPA) and the API.
//!
//! A [`Granter`] owns the firewall driver behind a mutex and the [`Store`] handle.
//! Granting is: lock the driver, apply (one netlink batch, microseconds), enqueue the
//! record, unlock. The capture thread never waits for the disk: its records are
//! `try_send`-ed to the store thread ([`Store::record_nowait`]). The API waits for its
//! record to be committed and gets the row ids back.
//!
//! If the store could not be opened (read-only or full state dir, corrupt file), the
//! daemon still enforces and grants; records are missing and every API call that needs
//! them answers 503 with the reason.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_proto::Service;
use tokio::sync::oneshot;

use crate::firewall::{FirewallDriver, FirewallError, Grant, LiveGrant, Plan};
use crate::stats::Stats;
use crate::store::{
    self, db::Recorded, lock_driver, now_ms, NewGrants, Origin, SharedDriver, Store, StoreError,
};
use portcullis_proto::addr::canonical as fold;

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

/// Shared grant path: driver, store, and what the firewall protects.
pub struct Granter {
    driver: SharedDriver,
    driver_name: &'static str,
    kernel_expiry: bool,
    store: Result<Arc<Store>, StoreError>,
    protected: Vec<Service>,
    /// The capture thread's latest [`Stats`], published about once a second for metrics.
    stats: Mutex<Stats>,
}

impl Granter {
    /// A granter that records into `store` (or runs without records, with the reason).
    pub fn new(
        driver: SharedDriver,
        protected: Vec<Service>,
        store: Result<Arc<Store>, StoreError>,
    ) -> Granter {
        let (driver_name, kernel_expiry) = {
            let d = lock_driver(&driver);
            (d.name(), d.kernel_expiry())
        };
        Granter { driver, driver_name, kernel_expiry, store, protected, stats: Mutex::new(Stats::default()) }
    }

    /// A granter with no store (tests, dry runs).
    pub fn unrecorded(driver: Box<dyn FirewallDriver>) -> Granter {
        Granter::new(
            Arc::new(Mutex::new(driver)),
            Vec::new(),
            Err(StoreError::Unavailable("no store configured".into())),
        )
    }

    /// The driver's name.
    pub fn driver_name(&self) -> &'static str {
        self.driver_name
    }

    /// Whether the firewall closes grants by itself.
    pub fn kernel_expiry(&self) -> bool {
        self.kernel_expiry
    }

    /// The shared driver.
    pub fn driver(&self) -> &SharedDriver {
        &self.driver
    }

    /// The store, or why there is none.
    pub fn store(&self) -> Result<&Arc<Store>, StoreError> {
        self.store.as_ref().map_err(Clone::clone)
    }

    /// Services the firewall protects (a grant for anything else changes nothing).
    pub fn protected(&self) -> &[Service] {
        &self.protected
    }

    /// Run `f` with the driver locked.
    pub fn with_driver<T>(&self, f: impl FnOnce(&mut dyn FirewallDriver) -> T) -> T {
        f(lock_driver(&self.driver).as_mut())
    }

    /// The grants the firewall holds now.
    pub fn live(&self) -> Result<Vec<LiveGrant>, FirewallError> {
        self.with_driver(|d| d.list())
    }

    /// Publish the capture thread's counters (for metrics).
    pub fn publish_stats(&self, s: Stats) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The latest published counters.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(
        &self,
        d: &mut dyn FirewallDriver,
        origin: &Origin,
        addr: IpAddr,
        services: &[Service],
        duration: Duration,
        requested_at: i64,
    ) -> (Result<(), FirewallError>, NewGrants) {
        let grants: Vec<Grant> =
            services.iter().map(|&service| Grant { addr, service, timeout: duration }).collect();
        let r = d.grant(&grants);
        let rec = NewGrants {
            origin: origin.clone(),
            addr,
            services: services.to_vec(),
            requested_at,
            effective_at: now_ms(),
            duration,
            driver: self.driver_name,
            result: r.as_ref().map(|_| ()).map_err(ToString::to_string),
        };
        (r, rec)
    }

    /// The capture thread's path: open, and enqueue the record without waiting.
    pub fn grant(
        &self,
        origin: Origin,
        addr: IpAddr,
        services: &[Service],
        duration: Duration,
    ) -> Result<(), FirewallError> {
        let addr = fold(addr);
        let requested_at = now_ms();
        let mut d = lock_driver(&self.driver);
        let (r, rec) = self.apply(d.as_mut(), &origin, addr, services, duration, requested_at);
        // Enqueued under the driver lock: see "Ordering" in the store module doc.
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
    ) -> Result<Vec<Recorded>, GrantError> {
        let addr = fold(addr);
        let store = self.store()?;
        let requested_at = now_ms();
        type Rx = oneshot::Receiver<Result<Vec<Recorded>, StoreError>>;
        // Decide under the driver lock, await only after it is released.
        let step: Result<Rx, (Option<Rx>, GrantError)> = {
            let mut d = lock_driver(&self.driver);
            let (r, rec) = self.apply(d.as_mut(), &origin, addr, services, duration, requested_at);
            match (store.record(rec), r) {
                (Ok(rx), Ok(())) => Ok(rx),
                // Recorded as failed; the caller still hears the firewall's error.
                (Ok(rx), Err(e)) => Err((Some(rx), e.into())),
                (Err(e), r) => {
                    if r.is_ok() {
                        self.undo(d.as_mut(), addr, services);
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
        let recorded = match rx.await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Busy),
        };
        match recorded {
            Ok(rows) => Ok(rows),
            Err(e) => {
                let mut d = lock_driver(&self.driver);
                self.undo(d.as_mut(), addr, services);
                Err(e.into())
            }
        }
    }

    fn undo(&self, d: &mut dyn FirewallDriver, addr: IpAddr, services: &[Service]) {
        let keys: Vec<(IpAddr, Service)> = services.iter().map(|&s| (addr, s)).collect();
        match d.revoke(&keys) {
            Ok(()) => tracing::error!("{addr}: API grant undone: it could not be recorded"),
            Err(e) => tracing::error!("{addr}: API grant could not be recorded NOR undone: {e}"),
        }
    }
}

/// Set up the firewall, open the store next to the other state, reconcile them, and
/// return the shared granter. A store that cannot be opened is logged loudly and the
/// daemon goes on without records (the firewall is what protects the host).
pub fn start(
    state_dir: &Path,
    plan: &Plan,
    mut driver: Box<dyn FirewallDriver>,
) -> anyhow::Result<Arc<Granter>> {
    use anyhow::Context;
    driver.setup(plan).context("installing the firewall ruleset")?;
    let shared: SharedDriver = Arc::new(Mutex::new(driver));
    let path = state_dir.join("grants.db");
    let store = Store::open(&path, Arc::clone(&shared), store::Options::default());
    match &store {
        Ok(s) => match s.reconcile() {
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
        },
        Err(e) => tracing::error!(
            "store: {e}. RUNNING WITHOUT GRANT RECORDS: the firewall is enforced and knocks/SPA still \
             open doors, but grants are not recorded, not reconciled at restart, and the API cannot grant"
        ),
    }
    Ok(Arc::new(Granter::new(shared, plan.protected.clone(), store)))
}
