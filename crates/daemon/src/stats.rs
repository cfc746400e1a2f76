//! The capture thread's counters, shared by the engine (which counts), the grant
//! path (which publishes them) and the metrics endpoint (which reads them).

use crate::spa::RejectClass;

/// Counters exposed in logs (and later metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the engine.
    pub packets: u64,
    /// Of those, addressed to us on a listened interface.
    pub for_us: u64,
    /// Sequences completed.
    pub opened: u64,
    /// Grants the firewall refused.
    pub grant_failures: u64,
    /// Door opens refused by a bound (rate per door or prefix, live grants per door).
    pub opens_refused: u64,
    /// SPA packets accepted.
    pub spa_accepted: u64,
    /// SPA packets rejected.
    pub spa_rejected: u64,
    /// Per-knock log lines dropped by the rate limit.
    pub suppressed_logs: u64,
    /// Knock sequences completed (each opens its door).
    pub knock_completed: u64,
    /// Knock sequences broken by a wrong knock.
    pub knock_resets: u64,
    /// Knock sequences that ran out of time.
    pub knock_timeouts: u64,
    /// Packets the capture socket dropped in the kernel (receive buffer full).
    pub capture_drops: u64,
    /// SPA rejections by class, indexed by [`RejectClass::index`].
    pub spa_rejected_by: [u64; RejectClass::ALL.len()],
}

impl Stats {
    /// Count one rejected SPA packet in its class.
    pub fn count_spa_reject(&mut self, class: RejectClass) {
        self.spa_rejected += 1;
        self.spa_rejected_by[class.index()] += 1;
    }

    /// SPA rejections so far in `class`.
    pub fn spa_rejected_in(&self, class: RejectClass) -> u64 {
        self.spa_rejected_by[class.index()]
    }
}
