//! What the store keeps and answers: rows, new grants to record, closes, filters, errors.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use portcullis_proto::Service;

use crate::firewall::{Key, Prefix};
use crate::grants::origin::Origin;

pub use portcullis_api::GrantState;

/// One stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Row id.
    pub id: i64,
    /// What made it.
    pub origin: Origin,
    /// The address let in (a prefix grant's network address).
    pub address: IpAddr,
    /// Prefix length: 32/128 for the single address.
    pub len: u8,
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

impl GrantRecord {
    /// What it lets in.
    pub fn source(&self) -> Prefix {
        Prefix { addr: self.address, len: self.len }
    }

    /// Its key in the firewall and the scheduler.
    pub fn key(&self) -> Key {
        (self.source(), self.service)
    }
}

/// Grants to record: one row per service. A successful grant of a key that has an
/// active row refreshes that row.
#[derive(Debug, Clone)]
pub struct NewGrants {
    /// What made them.
    pub origin: Origin,
    /// The address let in (canonical: IPv4-mapped IPv6 is IPv4; a prefix grant's
    /// network address).
    pub addr: IpAddr,
    /// Prefix length: 32/128 for the single address.
    pub len: u8,
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

/// Which row a close is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseTarget {
    /// A record by id.
    Id(i64),
    /// The active record for `(source, service)`.
    Key(Prefix, Service),
}

/// Mark an active row closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// Which row.
    pub target: CloseTarget,
    /// `Expired` or `Revoked`.
    pub state: GrantState,
    /// Who revoked it.
    pub by: Option<String>,
    /// When it closed (Unix ms).
    pub at: i64,
}

/// What a close found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Closed now; the row as it is now.
    Done(GrantRecord),
    /// The row was no longer active.
    NotActive(GrantRecord),
    /// No such row (or no active row for the key).
    NotFound,
}

/// List filter and page. `page` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only this state.
    pub state: Option<GrantState>,
    /// Only this address.
    pub address: Option<IpAddr>,
    /// Only this origin kind.
    pub origin_kind: Option<crate::grants::origin::OriginKind>,
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

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Writes dropped because the store channel was full or the thread gone.
    pub dropped: AtomicU64,
    /// SQLite errors (each rolled back).
    pub errors: AtomicU64,
    /// Closed records deleted by retention.
    pub pruned: AtomicU64,
}
