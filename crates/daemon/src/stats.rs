//! The capture thread's counters, shared by the engine (which counts), the grant
//! path (which publishes them) and the metrics endpoint (which reads them).

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
    /// SPA rejections by reason class, indexed like [`SPA_REJECT_CLASSES`].
    pub spa_rejected_by: [u64; SPA_REJECT_CLASSES.len()],
}

/// Reason classes for rejected SPA packets (metrics labels).
pub const SPA_REJECT_CLASSES: [&str; 6] = ["auth", "replay", "window", "policy", "malformed", "other"];

/// Class of an SPA rejection reason (the gate's reasons are fixed texts).
pub fn spa_reject_class(reason: &str) -> usize {
    let r = reason.to_ascii_lowercase();
    let has = |ws: &[&str]| ws.iter().any(|w| r.contains(w));
    if has(&["replay"]) {
        1
    } else if has(&["window", "stale", "future", "expired"]) {
        2
    } else if has(&["hmac", "signature", "decrypt", "authentic", "key", "budget"]) {
        0
    } else if has(&["not permitted", "nat", "command", "not allowed", "restrict", "source", "user"]) {
        3
    } else if has(&["length", "short", "long", "base64", "format", "field", "not a", "invalid", "magic"]) {
        4
    } else {
        5
    }
}
