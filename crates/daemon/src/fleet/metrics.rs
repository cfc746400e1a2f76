//! Fleet connectivity and lag in the API's Prometheus text. The daemon runs at most one
//! fleet membership, registered here when it starts; without one nothing is added.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};

/// Connectivity and lag, for health and metrics.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// The listener holds a live connection.
    pub connected: AtomicBool,
    /// Grants waiting for the database.
    pub queued: AtomicU64,
    /// Grants dropped from a full queue.
    pub dropped: AtomicU64,
    /// Fleet grants applied from other nodes.
    pub applied: AtomicU64,
    /// Milliseconds from a grant's creation on its node to its application here (last).
    pub lag_ms: AtomicI64,
    /// The database's clock minus this node's, ms, measured at each (re)connect.
    pub skew_ms: AtomicI64,
    /// Why the listener has no connection (empty while connected).
    pub problem: std::sync::Mutex<String>,
}

impl FleetStatus {
    /// Record the listener's connectivity, and why it is lost.
    pub fn set_connected(&self, up: bool, why: &str) {
        self.connected.store(up, Ordering::Relaxed);
        if let Ok(mut p) = self.problem.lock() {
            why.clone_into(&mut p);
        }
    }

    /// Why the listener has no connection (empty while connected).
    pub fn problem(&self) -> String {
        self.problem.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

static STATUS: OnceLock<Arc<FleetStatus>> = OnceLock::new();

/// Register the daemon's fleet status (the first registration wins).
pub fn register(status: Arc<FleetStatus>) {
    let _ = STATUS.set(status);
}

/// Append the fleet metrics to `out`, if a fleet is running.
pub fn render(out: &mut String) {
    let Some(s) = STATUS.get() else { return };
    let rows: [(&str, &str, &str, i64); 6] = [
        (
            "portcullis_fleet_up",
            "gauge",
            "1 if the fleet listener holds a database connection.",
            i64::from(s.connected.load(Ordering::Relaxed)),
        ),
        (
            "portcullis_fleet_queued",
            "gauge",
            "Fleet grants waiting for the database.",
            i64::try_from(s.queued.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        ),
        (
            "portcullis_fleet_dropped_total",
            "counter",
            "Fleet grants dropped from a full queue (kept local).",
            i64::try_from(s.dropped.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        ),
        (
            "portcullis_fleet_applied_total",
            "counter",
            "Fleet grants from other nodes applied here.",
            i64::try_from(s.applied.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        ),
        (
            "portcullis_fleet_lag_milliseconds",
            "gauge",
            "Last fleet grant: from its recording on its node to its application here.",
            s.lag_ms.load(Ordering::Relaxed),
        ),
        (
            "portcullis_fleet_clock_skew_milliseconds",
            "gauge",
            "The fleet database's clock minus this node's.",
            s.skew_ms.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_once_registered() {
        let mut out = String::new();
        let s = std::sync::Arc::new(super::FleetStatus::default());
        s.connected.store(true, super::Ordering::Relaxed);
        super::register(std::sync::Arc::clone(&s));
        super::render(&mut out);
        assert!(out.contains("portcullis_fleet_up 1\n"), "{out}");
        assert!(out.contains(
            "# TYPE portcullis_fleet_lag_milliseconds gauge\nportcullis_fleet_lag_milliseconds 0\n"
        ));
    }
}
