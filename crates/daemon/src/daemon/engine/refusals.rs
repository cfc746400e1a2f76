//! Log lines for opens that did not happen (refused by a bound, or failed in the
//! firewall). A flood of completed sequences must not become a flood of log lines: the
//! first few of each interval are logged one by one, within a token budget, and every
//! interval with more ends in one summary line with the counts by reason.

use portcullis_proto::ratelimit::TokenBucket;
use portcullis_proto::Millis;

use crate::grants::Refusal;

/// One-by-one lines per second, and their burst.
const LINES_PER_SEC: u32 = 2;
const LINES_BURST: u32 = 20;
/// At most one summary line per interval.
pub const INTERVAL_MS: u64 = 10_000;

/// Why an open did not happen, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A bound refused it.
    Refused(Refusal),
    /// The firewall failed.
    Firewall,
}

impl Failure {
    fn index(self) -> usize {
        match self {
            Failure::Refused(r) => Refusal::ALL.iter().position(|&x| x == r).unwrap_or(0),
            Failure::Firewall => Refusal::ALL.len(),
        }
    }
}

/// Counts per interval and the one-by-one line budget.
#[derive(Debug)]
pub struct RefusalLog {
    budget: TokenBucket,
    /// Counts in this interval by [`Failure::index`].
    counts: [u64; Refusal::ALL.len() + 1],
    /// Of those, not logged one by one.
    unlogged: u64,
    since: Option<Millis>,
    /// Every failure so far, by [`Failure::index`] (for metrics and the exit line).
    pub total: [u64; Refusal::ALL.len() + 1],
}

impl Default for RefusalLog {
    fn default() -> RefusalLog {
        RefusalLog {
            budget: TokenBucket::new(LINES_PER_SEC, LINES_BURST),
            counts: [0; Refusal::ALL.len() + 1],
            unlogged: 0,
            since: None,
            total: [0; Refusal::ALL.len() + 1],
        }
    }
}

impl RefusalLog {
    /// Count a failure at `now`; true if it may be logged on its own line.
    pub fn count(&mut self, f: Failure, now: Millis) -> bool {
        let i = f.index();
        self.counts[i] += 1;
        self.total[i] += 1;
        self.since.get_or_insert(now);
        if self.budget.take(now) {
            true
        } else {
            self.unlogged += 1;
            false
        }
    }

    /// The summary line due at `now`, if an interval with unlogged failures is over.
    /// Starts the next interval.
    pub fn summary(&mut self, now: Millis) -> Option<String> {
        let since = self.since?;
        if now.since(since).as_millis() < u128::from(INTERVAL_MS) {
            return None;
        }
        let line = (self.unlogged > 0).then(|| {
            let total: u64 = self.counts.iter().sum();
            let mut parts: Vec<String> = Refusal::ALL
                .iter()
                .map(|&r| (r.as_str(), self.counts[Failure::Refused(r).index()]))
                .chain([("firewall error", self.counts[Failure::Firewall.index()])])
                .filter(|&(_, n)| n > 0)
                .map(|(what, n)| format!("{n} {what}"))
                .collect();
            parts.sort();
            format!(
                "opens refused or failed in the last {} s: {total} ({}); {} of them not logged one by one",
                now.since(since).as_secs(),
                parts.join(", "),
                self.unlogged
            )
        });
        self.counts = [0; Refusal::ALL.len() + 1];
        self.unlogged = 0;
        self.since = None;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_the_burst_then_one_summary_per_interval() {
        let mut l = RefusalLog::default();
        let logged =
            (0..50_000).filter(|_| l.count(Failure::Refused(Refusal::PrefixRate), Millis(0))).count();
        assert_eq!(logged, LINES_BURST as usize);
        assert!(l.count(Failure::Firewall, Millis(500)), "the budget refills: 2 a second");
        assert_eq!(l.summary(Millis(INTERVAL_MS - 1)), None, "not before the interval is over");
        let s = l.summary(Millis(INTERVAL_MS)).unwrap();
        assert!(s.contains("50001 (1 firewall error, 50000 source prefix over its rate"), "{s}");
        assert!(s.contains("49980 of them not logged"), "{s}");
        assert_eq!(l.summary(Millis(3 * INTERVAL_MS)), None, "nothing new, nothing said");
        assert_eq!(l.total[Failure::Firewall.index()], 1);
    }

    #[test]
    fn no_summary_when_everything_was_logged() {
        let mut l = RefusalLog::default();
        assert!(l.count(Failure::Refused(Refusal::DoorFull), Millis(0)));
        assert_eq!(l.summary(Millis(INTERVAL_MS)), None);
        // The next interval starts with the next failure.
        for _ in 0..30 {
            l.count(Failure::Refused(Refusal::DoorRate), Millis(INTERVAL_MS + 5));
        }
        assert_eq!(l.summary(Millis(2 * INTERVAL_MS)), None, "interval began at the failure");
        assert!(l.summary(Millis(2 * INTERVAL_MS + 5)).unwrap().contains("30 door over its rate"));
    }
}
