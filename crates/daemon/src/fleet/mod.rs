//! Fleet mode: several gateways share one PostgreSQL database for a fleet-wide SPA
//! replay cache and for fleet-scoped grants (pushed with LISTEN/NOTIFY).
//!
//! Off unless the config has `[fleet]`; without it nothing here runs. Local doors never
//! depend on the database: a fleet problem only ever affects fleet-scoped requests,
//! and then as `on_db_down` says.
//!
//! * [`config`]: the `[fleet]` section and the root-only URL file.
//! * [`schema`]: versioned migrations (refuses a newer schema).
//! * [`gate`]: the SPA gate's fleet claim and `on_db_down`.
//! * [`replay`]: the atomic fleet replay claim, with a bounded wait off the caller.
//! * [`shared`]: fleet grants and revocations, their notifications, the listener.
//! * [`db`]: the database's settings, TLS and addresses, read before the split.
//! * [`tls`]: `sslmode` / `sslrootcert` of the database URL.
//! * [`query`]: the API's fleet view and revoke by fleet id.
//! * [`metrics`]: fleet connectivity and lag for the API's `/metrics`.
//! * [`node`]: this node's listener and publisher threads, status for health/metrics.

pub mod config;
pub mod db;
pub mod gate;
pub mod metrics;
pub mod node;
pub mod query;
pub mod replay;
pub mod schema;
pub mod shared;
pub mod tls;

pub use config::{FleetConfig, OnDbDown};

/// Why a fleet operation failed; says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The URL file is missing, unreadable, too open, or not a PostgreSQL URL.
    #[error("fleet database_url_file {path}: {reason}")]
    UrlFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database refused or could not be reached.
    #[error("fleet database: {0}")]
    Db(#[from] postgres::Error),
    /// The database holds a schema this daemon does not know.
    #[error(
        "fleet database schema is version {found}, newer than this daemon's {known}: upgrade \
         portcullis on this node before joining it to the fleet"
    )]
    NewerSchema {
        /// Version in the database.
        found: i32,
        /// Newest version this daemon knows.
        known: i32,
    },
    /// The fleet worker is gone or did not answer in time.
    #[error("fleet database did not answer in time")]
    Timeout,
}

/// Milliseconds since the Unix epoch by the system clock (fleet expiries are absolute).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A node's wall clock, unix ms (injected in tests to play a node whose clock is off).
pub type LocalClock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// Fleet time: the database's clock, as this node's clock plus the offset measured
/// when the listener (re)connects. Fleet rows hold fleet time, so a node whose clock
/// is off still closes a fleet grant at its absolute expiry.
#[derive(Clone)]
pub struct FleetClock {
    local: LocalClock,
    status: std::sync::Arc<metrics::FleetStatus>,
}

impl FleetClock {
    /// `local` corrected by the skew kept in `status`.
    pub fn new(local: LocalClock, status: std::sync::Arc<metrics::FleetStatus>) -> FleetClock {
        FleetClock { local, status }
    }

    /// This node's clock.
    pub fn local_ms(&self) -> i64 {
        (self.local)()
    }

    /// The database's clock minus this node's, as last measured.
    pub fn skew_ms(&self) -> i64 {
        self.status.skew_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A time by this node's clock, in fleet time.
    pub fn to_fleet(&self, local_ms: i64) -> i64 {
        local_ms.saturating_add(self.skew_ms())
    }

    /// Now, in fleet time.
    pub fn fleet_ms(&self) -> i64 {
        self.to_fleet(self.local_ms())
    }
}

#[cfg(test)]
mod tests;
