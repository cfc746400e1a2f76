//! The grant store: every grant, whoever made it, as a row in an embedded SQLite
//! database (`state_dir/grants.db`), and the thread that owns the writing side.
//!
//! # Threads
//!
//! One **store thread** owns the write connection and is the only writer. Everyone else
//! sends it [`Cmd`]s over a bounded channel:
//!
//! - the capture thread only ever `try_send`s (never blocks on disk); when the channel is
//!   full the record is dropped, counted (`store_dropped`) and logged;
//! - the API sends and awaits a reply, so an API grant answers only once its row is
//!   committed.
//!
//! Reads (list, get, metrics) use a separate read-only connection; in WAL mode they never
//! wait for the writer.
//!
//! The store thread also runs the **expiry scheduler**: an in-memory index of active
//! rows by expiry (mini-redis style), marking rows expired on time, and, for drivers
//! without kernel expiry ([`FirewallDriver::kernel_expiry`] false), revoking the grant
//! in the firewall first. At start it **reconciles** store and firewall (see
//! [`Store::reconcile`]).
//!
//! # Ordering against the capture thread
//!
//! The capture thread applies a grant and enqueues its record while holding the driver
//! lock. When the store thread revokes something in the firewall (API revoke, daemon-side
//! expiry) it takes the driver lock, drains every record already enqueued, applies them,
//! and only then decides. So a record can never describe a firewall state older than a
//! revoke that the store has already written down.

pub mod db;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use portcullis_proto::Service;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::firewall::{FirewallDriver, Grant};

/// The firewall driver, shared by the capture thread, the API and the store thread.
pub type SharedDriver = Arc<Mutex<Box<dyn FirewallDriver>>>;

/// Lock the driver, surviving a panicked holder (the driver has no invariants that a
/// panic mid-call could break beyond what the kernel already reports).
pub fn lock_driver(d: &SharedDriver) -> MutexGuard<'_, Box<dyn FirewallDriver>> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

/// A firewall grant with no record that is younger than this at start is adopted (its
/// record was most likely still in the channel when the daemon died), not revoked.
pub const ADOPT_WINDOW: Duration = Duration::from_secs(10);

/// Capacity of the store channel. At ~20 µs per row this is well under a second of work.
pub const CHANNEL_CAPACITY: usize = 4096;

pub use portcullis_api::{GrantState, OriginKind};

/// Who or what made a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The kind of origin.
    pub kind: OriginKind,
    /// Door name, SPA stanza/user, or API token name.
    pub detail: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.detail)
    }
}

/// One stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Row id.
    pub id: i64,
    /// What made it.
    pub origin: Origin,
    /// The address let in.
    pub address: IpAddr,
    /// What it may reach.
    pub service: Service,
    /// When it was asked for (Unix ms).
    pub requested_at: i64,
    /// When the firewall applied it (Unix ms); `None` if it failed.
    pub effective_at: Option<i64>,
    /// When it ends (Unix ms), following the latest refresh.
    pub expires_at: i64,
    /// Duration of the latest grant or refresh, ms.
    pub duration_ms: i64,
    /// Life-cycle state.
    pub state: GrantState,
    /// Who revoked it (token name, `reconcile`).
    pub revoked_by: Option<String>,
    /// When it stopped being active (Unix ms).
    pub closed_at: Option<i64>,
    /// The firewall driver that applied it.
    pub driver: String,
    /// `ok`, or the driver's error.
    pub driver_result: String,
    /// How often a repeat grant refreshed it.
    pub refresh_count: i64,
    /// When it was last refreshed (Unix ms).
    pub refreshed_at: Option<i64>,
}

/// Grants to record: one row per service.
#[derive(Debug, Clone)]
pub struct NewGrants {
    /// What made them.
    pub origin: Origin,
    /// The address let in (folded: IPv4-mapped IPv6 is IPv4).
    pub addr: IpAddr,
    /// What it may reach.
    pub services: Vec<Service>,
    /// When asked (Unix ms).
    pub requested_at: i64,
    /// When the driver applied them (Unix ms).
    pub effective_at: i64,
    /// For how long.
    pub duration: Duration,
    /// Driver name.
    pub driver: &'static str,
    /// The driver's answer.
    pub result: Result<(), String>,
}

/// List filter and page. `page` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only this state.
    pub state: Option<GrantState>,
    /// Only this address.
    pub address: Option<IpAddr>,
    /// Only this origin kind.
    pub origin_kind: Option<OriginKind>,
    /// Only this origin detail (door name, token name...).
    pub origin_detail: Option<String>,
    /// 1-based page.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter { state: None, address: None, origin_kind: None, origin_detail: None, page: 1, per_page: 100 }
    }
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened at start; the daemon runs without records.
    #[error("grant store unavailable: {0}")]
    Unavailable(String),
    /// The store thread is behind (channel full) or gone.
    #[error("grant store busy or stopped")]
    Busy,
    /// SQLite refused (disk full, read-only, I/O error). Nothing was half-written.
    #[error("grant store error: {0}")]
    Db(String),
}

/// Why a revoke did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No such record / no active grant for that key.
    #[error("no such grant")]
    NotFound,
    /// It is no longer active.
    #[error("grant is {}, not active", .0.as_str())]
    NotActive(GrantState),
    /// The firewall refused the revoke; the record stays active.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeTarget {
    /// A record by id.
    Id(i64),
    /// The active record for `(address, service)`.
    Key(IpAddr, Service),
}

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

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records dropped because the store channel was full or the thread gone.
    pub dropped: AtomicU64,
    /// SQLite errors (each rolled back).
    pub errors: AtomicU64,
    /// Grants closed by the daemon at expiry (drivers without kernel expiry).
    pub daemon_expired: AtomicU64,
}

type Reply<T> = oneshot::Sender<T>;

/// A request to the store thread.
pub enum Cmd {
    /// Record grants; reply with the rows (API) or not (capture thread).
    Record(NewGrants, Option<Reply<Result<Vec<db::Recorded>, StoreError>>>),
    /// Revoke an active grant: firewall first, then the row.
    Revoke(RevokeTarget, String, Reply<Result<GrantRecord, RevokeError>>),
    /// Start-up reconciliation.
    Reconcile(Reply<Result<ReconcileReport, StoreError>>),
    /// Reply once every earlier command is done.
    Sync(Reply<()>),
    /// Stop the thread.
    Stop,
}

/// Handle to the store: the channel to its thread, and a read connection.
pub struct Store {
    tx: SyncSender<Cmd>,
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    path: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    last_drop_log: Mutex<Option<Instant>>,
}

/// Options for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Cap the database size in pages (`PRAGMA max_page_count`): simulates a full disk.
    pub max_pages: Option<u32>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl Store {
    /// Open (creating and migrating) the database at `path` and start its thread.
    pub fn open(path: &Path, driver: SharedDriver, opts: Options) -> Result<Arc<Store>, StoreError> {
        let unavailable = |what: &str, e: &dyn fmt::Display| {
            StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        let mut conn = Connection::open(path).map_err(|e| unavailable("opening", &e))?;
        db::configure(&conn).map_err(|e| unavailable("configuring", &e))?;
        db::migrate(&mut conn).map_err(|e| unavailable("migrating", &e))?;
        if let Some(n) = opts.max_pages {
            let _: i64 = conn
                .query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| r.get(0))
                .map_err(|e| unavailable("limiting", &e))?;
        }
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| unavailable("opening (read side)", &e))?;
        reader.busy_timeout(Duration::from_secs(5)).map_err(|e| unavailable("configuring", &e))?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters::default());
        let kernel_expiry = lock_driver(&driver).kernel_expiry();
        let mut worker = Worker {
            conn,
            rx,
            driver,
            kernel_expiry,
            schedule: BTreeSet::new(),
            scheduled: HashMap::new(),
            backlog: VecDeque::new(),
            counters: Arc::clone(&counters),
            last_error_log: None,
        };
        worker.load_schedule();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || worker.run())
            .map_err(|e| unavailable("starting the thread for", &e))?;
        Ok(Arc::new(Store {
            tx,
            reader: Mutex::new(reader),
            counters,
            path: path.to_owned(),
            thread: Mutex::new(Some(thread)),
            last_drop_log: Mutex::new(None),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Enqueue a record without waiting (the capture thread's path). Never blocks; a
    /// full channel drops the record, counts it and says so in the log.
    pub fn record_nowait(&self, g: NewGrants) {
        if let Err(e) = self.tx.try_send(Cmd::Record(g, None)) {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let g = match &e {
                TrySendError::Full(Cmd::Record(g, _)) | TrySendError::Disconnected(Cmd::Record(g, _)) => {
                    Some(g)
                }
                _ => None,
            };
            let mut last = self.last_drop_log.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                let what = g.map(|g| format!(" ({} for {})", g.origin, g.addr)).unwrap_or_default();
                tracing::error!(
                    "store: grant record DROPPED{what}: store thread {}; {n} dropped so far (the firewall grant itself stands)",
                    if matches!(e, TrySendError::Full(_)) { "is behind" } else { "has stopped" }
                );
            }
        }
    }

    /// Enqueue a record and get a receiver for its rows (the API's path).
    pub fn record(
        &self,
        g: NewGrants,
    ) -> Result<oneshot::Receiver<Result<Vec<db::Recorded>, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Cmd::Record(g, Some(reply))).map_err(|_| StoreError::Busy)?;
        Ok(rx)
    }

    /// Ask the store thread to revoke: firewall first, then the row. Exactly one of
    /// concurrent revokes of the same grant succeeds.
    pub fn revoke(
        &self,
        target: RevokeTarget,
        by: &str,
    ) -> Result<oneshot::Receiver<Result<GrantRecord, RevokeError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Cmd::Revoke(target, by.to_string(), reply)).map_err(|_| StoreError::Busy)?;
        Ok(rx)
    }

    /// Reconcile store and firewall (blocking; call once at start, before capture and API).
    ///
    /// - active records past expiry: marked expired (closed at their expiry), and removed
    ///   from the firewall if still there;
    /// - active, unexpired records missing from the firewall (reboot, `nft flush ruleset`):
    ///   re-added with their remaining time;
    /// - firewall grants with no active record: revoked (nothing unknown stays open).
    pub fn reconcile(&self) -> Result<ReconcileReport, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Reconcile(reply)).map_err(|_| StoreError::Busy)?;
        rx.blocking_recv().map_err(|_| StoreError::Busy)?
    }

    /// Wait until every command sent before is processed (blocking; tests, shutdown).
    pub fn sync_blocking(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Sync(reply)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Like [`Store::sync_blocking`], for async callers.
    pub async fn sync(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.try_send(Cmd::Sync(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(sql_err)
    }

    /// One record (blocking).
    pub fn get(&self, id: i64) -> Result<Option<GrantRecord>, StoreError> {
        self.read(|c| db::get(c, id))
    }

    /// A page of records and the total (blocking).
    pub fn list(&self, f: &Filter) -> Result<(Vec<GrantRecord>, u64), StoreError> {
        self.read(|c| db::list(c, f))
    }

    /// Counts by (origin kind, state) (blocking).
    pub fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(db::counts)
    }

    /// Stop the thread after it has processed what is queued.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.tx.try_send(Cmd::Stop);
    }
}

/// The store thread.
struct Worker {
    conn: Connection,
    rx: Receiver<Cmd>,
    driver: SharedDriver,
    kernel_expiry: bool,
    /// (expires_at, id) of active rows.
    schedule: BTreeSet<(i64, i64)>,
    /// id → (expires_at, address, service) of active rows.
    scheduled: HashMap<i64, (i64, IpAddr, Service)>,
    /// Commands drained during a fence, to run next.
    backlog: VecDeque<Cmd>,
    counters: Arc<Counters>,
    last_error_log: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let cmd = match self.backlog.pop_front() {
                Some(c) => Some(c),
                None => {
                    let wait = self.schedule.first().map_or(1000, |&(t, _)| (t - now_ms()).clamp(0, 1000));
                    match self.rx.recv_timeout(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) {
                        Ok(c) => Some(c),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            if let Some(cmd) = cmd {
                if matches!(cmd, Cmd::Stop) {
                    // Finish what is queued, then go.
                    while let Ok(c) = self.rx.try_recv() {
                        if !matches!(c, Cmd::Stop) {
                            self.handle(c);
                        }
                    }
                    return;
                }
                self.handle(cmd);
            }
            self.expire(now_ms());
        }
    }

    fn db_error(&mut self, what: &str, e: &rusqlite::Error) {
        let n = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if self.last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_error_log = Some(Instant::now());
            tracing::error!(
                "store: {what} FAILED and was rolled back: {e} ({n} store errors so far; \
                 the firewall keeps enforcing, records are missing)"
            );
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Record(g, reply) => {
                let r = self.record(&g);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Cmd::Revoke(target, by, reply) => {
                let r = self.revoke(target, &by);
                let _ = reply.send(r);
            }
            Cmd::Reconcile(reply) => {
                let r = self.reconcile();
                let _ = reply.send(r);
            }
            Cmd::Sync(reply) => {
                let _ = reply.send(());
            }
            Cmd::Stop => {}
        }
    }

    fn record(&mut self, g: &NewGrants) -> Result<Vec<db::Recorded>, StoreError> {
        match db::record(&mut self.conn, g) {
            Ok(rows) => {
                for (row, &service) in rows.iter().zip(&g.services) {
                    if let Some(exp) = row.expires_at {
                        self.unschedule(row.id);
                        self.schedule.insert((exp, row.id));
                        self.scheduled.insert(row.id, (exp, g.addr, service));
                    }
                }
                Ok(rows)
            }
            Err(e) => {
                self.db_error(&format!("recording {} for {}", g.origin, g.addr), &e);
                Err(sql_err(e))
            }
        }
    }

    fn unschedule(&mut self, id: i64) {
        if let Some((exp, _, _)) = self.scheduled.remove(&id) {
            self.schedule.remove(&(exp, id));
        }
    }

    fn load_schedule(&mut self) {
        match db::all_active(&self.conn) {
            Ok(rows) => {
                for r in rows {
                    self.schedule.insert((r.expires_at, r.id));
                    self.scheduled.insert(r.id, (r.expires_at, r.address, r.service));
                }
            }
            Err(e) => self.db_error("loading active grants", &e),
        }
    }

    /// Run `op` on the driver with every record already enqueued applied first (see the
    /// module doc). Records are applied before `op` returns to the caller; other
    /// commands drained on the way go to the backlog.
    fn fenced<T>(&mut self, op: impl FnOnce(&mut dyn FirewallDriver, &[NewGrants]) -> T) -> T {
        let driver = Arc::clone(&self.driver);
        let mut records = Vec::new();
        let out = {
            let mut d = lock_driver(&driver);
            while let Ok(c) = self.rx.try_recv() {
                match c {
                    Cmd::Record(..) => records.push(c),
                    other => self.backlog.push_back(other),
                }
            }
            let pending: Vec<NewGrants> = records
                .iter()
                .filter_map(|c| if let Cmd::Record(g, _) = c { Some(g.clone()) } else { None })
                .collect();
            op(d.as_mut(), &pending)
        };
        // Store I/O happens after the driver lock is released.
        for c in records {
            self.handle(c);
        }
        out
    }

    fn revoke(&mut self, target: RevokeTarget, by: &str) -> Result<GrantRecord, RevokeError> {
        let found = match target {
            RevokeTarget::Id(id) => db::get(&self.conn, id),
            RevokeTarget::Key(addr, service) => db::active_for(&self.conn, addr, service),
        };
        let rec = match found {
            Ok(Some(r)) => r,
            Ok(None) => return Err(RevokeError::NotFound),
            Err(e) => {
                self.db_error("looking up a grant to revoke", &e);
                return Err(StoreError::Db(e.to_string()).into());
            }
        };
        if rec.state != GrantState::Active {
            return Err(RevokeError::NotActive(rec.state));
        }
        let key = (rec.address, rec.service);
        self.fenced(|d, _| d.revoke(&[key])).map_err(|e| RevokeError::Firewall(e.to_string()))?;
        let now = now_ms();
        match db::close(&self.conn, rec.id, GrantState::Revoked, Some(by), now) {
            Ok(true) => {}
            Ok(false) => return Err(RevokeError::NotActive(GrantState::Revoked)),
            Err(e) => {
                self.db_error(&format!("marking grant #{} revoked", rec.id), &e);
                return Err(StoreError::Db(e.to_string()).into());
            }
        }
        self.unschedule(rec.id);
        tracing::info!("{}: revoked {} (grant #{}) by {by}", rec.address, rec.service, rec.id);
        match db::get(&self.conn, rec.id) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(RevokeError::NotFound),
            Err(e) => Err(StoreError::Db(e.to_string()).into()),
        }
    }

    /// Close everything due at `now`.
    fn expire(&mut self, now: i64) {
        let due: Vec<(i64, i64)> = self.schedule.iter().take_while(|&&(t, _)| t <= now).copied().collect();
        if due.is_empty() {
            return;
        }
        let mut ids: Vec<i64> = due.iter().map(|&(_, id)| id).collect();
        if !self.kernel_expiry {
            // The firewall will not close these by itself: revoke them, except keys that a
            // record drained by the fence has just refreshed.
            let keys: Vec<(i64, IpAddr, Service)> =
                ids.iter().filter_map(|id| self.scheduled.get(id).map(|&(_, a, s)| (*id, a, s))).collect();
            let revoked = self.fenced(|d, pending| {
                let refreshed = |a: IpAddr, s: Service| {
                    pending.iter().any(|g| g.result.is_ok() && g.addr == a && g.services.contains(&s))
                };
                let close: Vec<(i64, IpAddr, Service)> =
                    keys.iter().filter(|&&(_, a, s)| !refreshed(a, s)).copied().collect();
                let pairs: Vec<(IpAddr, Service)> = close.iter().map(|&(_, a, s)| (a, s)).collect();
                match d.revoke(&pairs) {
                    Ok(()) => close,
                    Err(e) => {
                        tracing::error!(
                            "expiry: firewall refused to close {} grant(s): {e}; retrying",
                            pairs.len()
                        );
                        Vec::new()
                    }
                }
            });
            for (_, a, s) in &revoked {
                tracing::info!("{a}: closed {s} (expired) via daemon-side expiry");
            }
            self.counters.daemon_expired.fetch_add(revoked.len() as u64, Ordering::Relaxed);
            ids = revoked.iter().map(|&(id, _, _)| id).collect();
            if ids.is_empty() {
                // Nothing closed (refused, or all refreshed): try again in a second.
                self.retry_later(&due, now);
                return;
            }
        }
        match db::expire_due(&mut self.conn, now, Some(&ids)) {
            Ok(done) => {
                for id in done {
                    self.unschedule(id);
                }
                // Anything still scheduled in the past was refreshed by a record
                // processed just now (its schedule entry moved) or failed; check later.
                let stale: Vec<(i64, i64)> =
                    self.schedule.iter().take_while(|&&(t, _)| t <= now).copied().collect();
                self.retry_later(&stale, now);
            }
            Err(e) => {
                self.db_error("marking grants expired", &e);
                self.retry_later(&due, now);
            }
        }
    }

    fn retry_later(&mut self, entries: &[(i64, i64)], now: i64) {
        for &(t, id) in entries {
            if self.schedule.remove(&(t, id)) {
                let later = now + 1000;
                self.schedule.insert((later, id));
                if let Some(e) = self.scheduled.get_mut(&id) {
                    e.0 = later;
                }
            }
        }
    }

    fn reconcile(&mut self) -> Result<ReconcileReport, StoreError> {
        let now = now_ms();
        let mut report = ReconcileReport::default();
        let active = db::all_active(&self.conn).map_err(sql_err)?;
        let driver = Arc::clone(&self.driver);
        let mut d = lock_driver(&driver);
        let live = match d.list() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("reconcile: cannot list firewall grants: {e}; skipping reconciliation");
                report.failures += 1;
                return Ok(report);
            }
        };
        let is_live = |a: IpAddr, s: Service| live.iter().any(|l| l.addr == a && l.service == s);
        let mut restore = Vec::new();
        let mut remove = Vec::new();
        let mut known = Vec::new();
        for r in &active {
            if r.expires_at <= now {
                if is_live(r.address, r.service) {
                    remove.push((r.address, r.service));
                }
                report.expired += 1;
                if let Err(e) = db::close(&self.conn, r.id, GrantState::Expired, None, r.expires_at) {
                    self.db_error("closing an expired grant", &e);
                }
                self.unschedule(r.id);
                tracing::info!(
                    "{}: {} (grant #{}) expired while the daemon was down",
                    r.address,
                    r.service,
                    r.id
                );
                continue;
            }
            known.push((r.address, r.service));
            if is_live(r.address, r.service) {
                report.kept += 1;
            } else {
                let left = Duration::from_millis(u64::try_from(r.expires_at - now).unwrap_or(0));
                restore.push(Grant { addr: r.address, service: r.service, timeout: left });
                tracing::info!(
                    "{}: restoring {} (grant #{}, {}) missing from the firewall, {}s left",
                    r.address,
                    r.service,
                    r.id,
                    r.origin,
                    left.as_secs()
                );
            }
        }
        let mut adopt = Vec::new();
        for l in &live {
            if !known.contains(&(l.addr, l.service)) && !remove.contains(&(l.addr, l.service)) {
                if let (Some(t), Some(r)) = (l.timeout, l.remaining) {
                    let age = t.saturating_sub(r);
                    if age < ADOPT_WINDOW {
                        tracing::warn!(
                            "{}: adopting {} found in the firewall with no record, granted {}s before this \
                             start (its record was lost in a crash)",
                            l.addr,
                            l.service,
                            age.as_secs()
                        );
                        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(0);
                        adopt.push(NewGrants {
                            origin: Origin { kind: OriginKind::Adopted, detail: "reconcile".into() },
                            addr: l.addr,
                            services: vec![l.service],
                            requested_at: now - ms(age),
                            effective_at: now - ms(age),
                            duration: t,
                            driver: d.name(),
                            result: Ok(()),
                        });
                        continue;
                    }
                }
                tracing::warn!(
                    "{}: revoking {} found in the firewall with no active record",
                    l.addr,
                    l.service
                );
                remove.push((l.addr, l.service));
                report.unknown_revoked += 1;
            }
        }
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
                    tracing::error!("reconcile: restoring {} for {} failed: {e}", g.service, g.addr);
                    report.failures += 1;
                }
            }
        }
        drop(d);
        for g in adopt {
            if self.record(&g).is_ok() {
                report.adopted += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
