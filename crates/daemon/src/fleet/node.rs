//! This node's fleet threads: the listener (applies fleet grants and revocations to the
//! kernel through the [`Granter`]) and the publisher (records this node's fleet grants,
//! queued while the database is away). Both reconnect by themselves; while the
//! database is away nothing local stops: the kernel keeps enforcing and expiring what
//! it holds, and local doors do not touch the database.

pub use super::metrics::FleetStatus;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use portcullis_proto::Service;

use super::config::FleetConfig;
use super::db::Database;
use super::shared::{self, Apply, FleetGrant};
use super::{schema, unix_ms, FleetClock, LocalClock};
use crate::grants::{Granter, Origin, OriginKind, RevokeTarget};

/// Most grants queued for the database while it is away; beyond that the oldest are
/// dropped (they still hold on this node, only the other nodes miss them).
pub const QUEUE: usize = 4096;

/// A grant made here to share with the fleet.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Who may come in.
    pub addr: IpAddr,
    /// To what.
    pub services: Vec<Service>,
    /// Absolute expiry, unix ms by this node's clock (converted to fleet time when sent).
    pub expires_at: i64,
    /// What made it here.
    pub origin: String,
}

impl Outgoing {
    /// A grant made now for `duration`.
    pub fn new(addr: IpAddr, services: &[Service], duration: Duration, origin: &Origin) -> Outgoing {
        let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Outgoing {
            addr: portcullis_proto::addr::canonical(addr),
            services: services.to_vec(),
            expires_at: unix_ms().saturating_add(ms),
            origin: origin.to_string(),
        }
    }
}

/// What the publisher sends to the database.
#[derive(Debug, Clone)]
enum Job {
    Grant(Outgoing),
    Revoke(IpAddr, Service),
}

/// The daemon's fleet membership, for the API (the first registered wins).
static CURRENT: std::sync::OnceLock<Arc<Fleet>> = std::sync::OnceLock::new();

/// The daemon's fleet membership, if it has one.
pub fn current() -> Option<&'static Arc<Fleet>> {
    CURRENT.get()
}

/// Revoke `(addr, service)` on every node (an API/CLI revoke here); without a fleet,
/// nothing. Never blocks: a full queue drops it (logged; kernel expiry still holds).
pub fn revoke_everywhere(addr: IpAddr, service: Service) {
    if let Some(f) = current() {
        f.revoke(addr, service);
    }
}

/// A running fleet membership.
pub struct Fleet {
    pub(super) cfg: FleetConfig,
    out: SyncSender<Job>,
    status: Arc<FleetStatus>,
    stop: Arc<AtomicBool>,
    pub(super) database: Arc<Database>,
    pub(super) clock: FleetClock,
    /// The API's connection (list, revoke by id), opened on first use.
    pub(super) db: std::sync::Mutex<Option<postgres::Client>>,
}

impl Fleet {
    /// Read the URL file, migrate the schema (a newer one is refused: the error is
    /// returned and the daemon must not start its fleet side), and start the threads.
    /// An unreachable database is not an error: the threads retry.
    pub fn start(cfg: FleetConfig, granter: &Arc<Granter>) -> Result<Fleet, super::FleetError> {
        Fleet::start_with_clock(cfg, granter, Arc::new(unix_ms))
    }

    /// [`Fleet::start`] with this node's wall clock given.
    pub fn start_with_clock(
        cfg: FleetConfig,
        granter: &Arc<Granter>,
        local: LocalClock,
    ) -> Result<Fleet, super::FleetError> {
        let database = Database::read(&cfg.database_url_file)?;
        Fleet::start_on(cfg, database, granter, local)
    }

    /// [`Fleet::start_with_clock`] on a database already read (before the split, as root).
    pub fn start_on(
        cfg: FleetConfig,
        database: Database,
        granter: &Arc<Granter>,
        local: LocalClock,
    ) -> Result<Fleet, super::FleetError> {
        let database = Arc::new(database);
        if let Some(mut c) = database.connect() {
            let found = schema::migrate(&mut c)?;
            tracing::info!("fleet: node {} joined (schema {found} -> {})", cfg.node, schema::VERSION);
        }
        let status = Arc::new(FleetStatus::default());
        status.set_connected(false, "not connected yet");
        super::metrics::register(Arc::clone(&status));
        let clock = FleetClock::new(local, Arc::clone(&status));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, rx) = mpsc::sync_channel(QUEUE);
        {
            let (cfg, db, clock, stop) =
                (cfg.clone(), Arc::clone(&database), clock.clone(), Arc::clone(&stop));
            let mut apply = GranterApply { granter: Arc::clone(granter), status: Arc::clone(&status) };
            std::thread::Builder::new()
                .name("fleet-listen".into())
                .spawn(move || listener(&cfg, &db, &mut apply, &clock, &stop))
                .map_err(|_| super::FleetError::Timeout)?;
        }
        {
            let (node, db, clock, stop) =
                (cfg.node.clone(), Arc::clone(&database), clock.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("fleet-publish".into())
                .spawn(move || publisher(&node, &db, &rx, &clock, &stop))
                .map_err(|_| super::FleetError::Timeout)?;
        }
        Ok(Fleet { cfg, out, status, stop, database, clock, db: std::sync::Mutex::new(None) })
    }

    /// Fleet time (the database's clock, as this node measures it).
    pub fn clock(&self) -> &FleetClock {
        &self.clock
    }

    /// This node's settings.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// The database (for the replay worker).
    pub fn database(&self) -> &Arc<Database> {
        &self.database
    }

    /// Connectivity and lag.
    pub fn status(&self) -> &Arc<FleetStatus> {
        &self.status
    }

    /// Share a grant this node made (never blocks: a full queue drops it, logged).
    pub fn share(&self, g: Outgoing) {
        match self.out.try_send(Job::Grant(g)) {
            Ok(()) => {
                self.status.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.status.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("fleet: share queue full; a grant stays local to this node");
            }
        }
    }

    /// Revoke `(addr, service)` on every node, this one included (queued like grants).
    pub fn revoke(&self, addr: IpAddr, service: Service) {
        let job = Job::Revoke(portcullis_proto::addr::canonical(addr), service);
        if self.out.try_send(job).is_err() {
            self.status.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("fleet: share queue full; revoke of {addr} {service} stays local to this node");
        }
    }

    /// Stop the threads (within a quarter second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Read the database URL file of `config`'s `[fleet]`, if it has one (as root, before
/// the split: the unprivileged part cannot read it).
pub fn open_for(config: &crate::config::Config) -> Result<Option<Database>, super::FleetError> {
    config.fleet.as_ref().map(|f| Database::read(&f.database_url_file)).transpose()
}

/// Start the fleet side of `config`, if it has `[fleet]`, on `database` as
/// [`open_for`] read it.
pub fn start_for(
    config: &crate::config::Config,
    database: Option<Database>,
    granter: &Arc<Granter>,
) -> anyhow::Result<Option<Arc<Fleet>>> {
    match (&config.fleet, database) {
        (None, _) => Ok(None),
        (Some(_), None) => anyhow::bail!("[fleet]: the database URL file was not read at start"),
        (Some(f), Some(database)) => {
            let fleet = Arc::new(Fleet::start_on(f.clone(), database, granter, Arc::new(unix_ms))?);
            let _ = CURRENT.set(Arc::clone(&fleet));
            Ok(Some(fleet))
        }
    }
}

/// The SPA gate's fleet side, when some native user is fleet-scoped.
pub fn gate_for(
    fleet: Option<&Fleet>,
    spa: &crate::config::spa::SpaConfig,
) -> anyhow::Result<Option<super::gate::FleetGate>> {
    let Some(f) = fleet else { return Ok(None) };
    if !spa.users.values().any(|u| u.fleet) && !spa.stanzas.iter().any(|s| s.fleet) {
        return Ok(None);
    }
    let replay = super::replay::FleetReplay::spawn_on(
        Arc::clone(&f.database),
        f.cfg.node.clone(),
        super::replay::DEFAULT_WAIT,
    )?;
    Ok(Some(super::gate::FleetGate::new(replay, f.cfg.on_db_down)))
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Applies fleet grants through the Granter (one lifecycle owner).
struct GranterApply {
    granter: Arc<Granter>,
    status: Arc<FleetStatus>,
}

fn origin_of(g: &FleetGrant) -> Origin {
    let kind = g.origin.split(':').next().and_then(OriginKind::parse).unwrap_or(OriginKind::Spa);
    Origin { kind, detail: format!("fleet:{} {}", g.node, g.origin) }
}

impl Apply for GranterApply {
    fn open(&mut self, g: &FleetGrant, remaining: Duration) {
        match self.granter.grant(origin_of(g), g.addr, &[g.service], remaining) {
            Ok(()) => {
                self.status.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "{}: {} opened for {}s by fleet node {}",
                    g.addr,
                    g.service,
                    remaining.as_secs(),
                    g.node
                );
            }
            Err(e) => tracing::error!("{}: fleet grant {} from {} failed: {e}", g.addr, g.id, g.node),
        }
    }

    fn close(&mut self, g: &FleetGrant) {
        let by = format!("fleet:{}", g.node);
        let target = RevokeTarget::Key(g.addr, g.service);
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let recorded = rt.map(|rt| rt.block_on(self.granter.revoke(target, &by)));
        match recorded {
            Ok(Ok(_)) => {}
            // No store (or no record here): close it in the firewall all the same.
            _ => {
                let key = (crate::firewall::Prefix::host(g.addr), g.service);
                if let Err(e) = self.granter.with_driver(|d| d.revoke(&[key])) {
                    tracing::error!("{}: fleet revoke of {} failed: {e}", g.addr, g.service);
                }
            }
        }
        tracing::info!("{}: {} closed by fleet revoke", g.addr, g.service);
    }
}

fn listener(cfg: &FleetConfig, db: &Database, apply: &mut dyn Apply, clock: &FleetClock, stop: &AtomicBool) {
    let stopped = || stop.load(Ordering::Relaxed);
    let status = &*clock.status;
    while !stopped() {
        if let Some(mut c) = db.connect() {
            // Also when the database was away at start (a fresh one gets its tables), and
            // so a database upgraded by a newer node meanwhile is refused, not read.
            if let Err(e) = schema::migrate(&mut c) {
                tracing::error!("fleet: {e}");
                status.set_connected(false, &e.to_string());
                for _ in 0..20 {
                    if stopped() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                continue;
            }
            let mut lagging = LagApply { inner: apply, clock };
            let why = match shared::listen(&mut c, cfg, &mut lagging, &stopped, clock) {
                Ok(()) => "stopped".to_owned(),
                Err(e) => {
                    tracing::error!("fleet: listener lost the database: {e}");
                    e.to_string()
                }
            };
            status.set_connected(false, &why);
        } else {
            status.set_connected(false, "database unreachable");
        }
        for _ in 0..4 {
            if stopped() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Measures lag (creation on its node to applied here) around another [`Apply`].
struct LagApply<'a> {
    inner: &'a mut dyn Apply,
    clock: &'a FleetClock,
}

impl Apply for LagApply<'_> {
    fn open(&mut self, g: &FleetGrant, remaining: Duration) {
        self.inner.open(g, remaining);
        self.clock.status.lag_ms.store(g.lag_ms(self.clock.fleet_ms()), Ordering::Relaxed);
    }
    fn close(&mut self, g: &FleetGrant) {
        self.inner.close(g);
    }
}

fn publisher(node: &str, db: &Database, rx: &Receiver<Job>, clock: &FleetClock, stop: &AtomicBool) {
    let status = &*clock.status;
    let mut pending: VecDeque<Job> = VecDeque::new();
    // Connected before the first grant: a burst right after start must not wait for
    // connection set-up while the channel fills.
    let mut client = db.connect();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(g) => pending.push_back(g),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        take_queued(rx, &mut pending, status);
        // Written only once the listener has checked the schema (a newer one is never
        // written to) and measured the clock (expiries are converted with it).
        if pending.is_empty() || !status.connected.load(Ordering::Relaxed) {
            continue;
        }
        if client.as_ref().is_none_or(postgres::Client::is_closed) {
            client = db.connect();
        }
        let Some(c) = client.as_mut() else { continue };
        while !pending.is_empty() {
            match publish_front(c, node, &pending, clock) {
                Ok(n) => {
                    for _ in 0..n {
                        if matches!(pending.pop_front(), Some(Job::Grant(_))) {
                            status.queued.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("fleet: publish deferred: {e}");
                    client = None;
                    break;
                }
            }
            // Between batches too: a burst must not fill the channel while it is written.
            take_queued(rx, &mut pending, status);
        }
    }
}

/// Move what the channel holds into `pending`; beyond [`QUEUE`] the oldest are dropped.
fn take_queued(rx: &Receiver<Job>, pending: &mut VecDeque<Job>, status: &FleetStatus) {
    while let Ok(g) = rx.try_recv() {
        pending.push_back(g);
    }
    while pending.len() > QUEUE {
        if matches!(pending.pop_front(), Some(Job::Grant(_))) {
            status.queued.fetch_sub(1, Ordering::Relaxed);
        }
        status.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Write the front of `pending`: its leading grants together (at most
/// [`shared::MAX_BATCH`], one transaction), else the revoke there. Returns how many
/// jobs are done.
fn publish_front(
    c: &mut postgres::Client,
    node: &str,
    pending: &VecDeque<Job>,
    clock: &FleetClock,
) -> Result<usize, super::FleetError> {
    let (local, now) = (clock.local_ms(), clock.fleet_ms());
    let grants: Vec<&Outgoing> = pending
        .iter()
        .take(shared::MAX_BATCH)
        .map_while(|j| match j {
            Job::Grant(g) => Some(g),
            Job::Revoke(..) => None,
        })
        .collect();
    if grants.is_empty() {
        if let Some(Job::Revoke(addr, service)) = pending.front() {
            shared::revoke(c, node, *addr, Some(*service), now)?;
        }
        return Ok(1);
    }
    // Expired while queued: nothing left to share.
    let batch: Vec<shared::NewGrant<'_>> = grants
        .iter()
        .filter(|g| g.expires_at > local)
        .map(|g| shared::NewGrant {
            addr: g.addr,
            services: &g.services,
            expires_at: clock.to_fleet(g.expires_at),
            origin: &g.origin,
        })
        .collect();
    shared::publish_batch(c, node, &batch, now)?;
    Ok(grants.len())
}
