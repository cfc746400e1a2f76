//! A token bucket on caller-supplied time: the one rate limiter of the project (log
//! lines per second, crypto operations per second). Integer arithmetic in thousandths
//! of a token, so refill and burst boundaries are exact.

use crate::Millis;

/// A token bucket: `burst` tokens at most, refilled at `per_sec` tokens a second (or
/// `count` tokens per period). It starts full at `Millis(0)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Available, in units of `1 / cost` token.
    milli_tokens: u64,
    /// Capacity, in the same units.
    milli_burst: u64,
    /// Refill in units per millisecond.
    per_sec: u64,
    /// Units in one token: 1000 for rates per second, the period in ms otherwise.
    cost: u64,
    last: Millis,
}

impl TokenBucket {
    /// A full bucket holding `burst` tokens, refilled at `per_sec` tokens a second.
    pub const fn new(per_sec: u32, burst: u32) -> TokenBucket {
        let milli_burst = burst as u64 * 1000;
        TokenBucket {
            milli_tokens: milli_burst,
            milli_burst,
            per_sec: per_sec as u64,
            cost: 1000,
            last: Millis(0),
        }
    }

    /// A full bucket holding `count` tokens, refilled at `count` tokens per `period_ms`
    /// milliseconds, exactly (e.g. 3 per minute: one token every 20 000 ms).
    pub const fn per_period(count: u32, period_ms: u32) -> TokenBucket {
        let cost = if period_ms == 0 { 1 } else { period_ms as u64 };
        let cap = count as u64 * cost;
        TokenBucket { milli_tokens: cap, milli_burst: cap, per_sec: count as u64, cost, last: Millis(0) }
    }

    /// Take one token at `now` if there is one. Time that runs backwards refills
    /// nothing (and is not remembered, so it cannot be counted twice later).
    pub fn take(&mut self, now: Millis) -> bool {
        self.take_keeping(now, 0)
    }

    /// Take one token at `now` only if `keep` more would still be left: the last
    /// `keep` tokens are held back for callers that pass a smaller `keep`.
    pub fn take_keeping(&mut self, now: Millis, keep: u32) -> bool {
        self.take_n_keeping(now, 1, keep)
    }

    /// Take `n` tokens at `now` if there are that many, else none.
    pub fn take_n(&mut self, now: Millis, n: u32) -> bool {
        self.take_n_keeping(now, n, 0)
    }

    fn take_n_keeping(&mut self, now: Millis, n: u32, keep: u32) -> bool {
        if now > self.last {
            let refill = (now.0 - self.last.0).saturating_mul(self.per_sec);
            self.milli_tokens = self.milli_tokens.saturating_add(refill).min(self.milli_burst);
            self.last = now;
        }
        let take = self.cost.saturating_mul(u64::from(n));
        if self.milli_tokens >= take.saturating_add(self.cost.saturating_mul(u64::from(keep))) {
            self.milli_tokens -= take;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut TokenBucket, now: Millis) -> usize {
        std::iter::from_fn(|| b.take(now).then_some(())).take(1_000_000).count()
    }

    #[test]
    fn starts_full_and_allows_exactly_the_burst() {
        let mut b = TokenBucket::new(100, 500);
        assert_eq!(drain(&mut b, Millis(0)), 500);
        assert!(!b.take(Millis(0)));
    }

    #[test]
    fn refills_at_the_rate_to_the_token() {
        let mut b = TokenBucket::new(100, 500);
        drain(&mut b, Millis(0));
        // 100 per second: one token every 10 ms, none before.
        assert!(!b.take(Millis(9)));
        assert!(b.take(Millis(10)));
        assert!(!b.take(Millis(10)));
        // Partial refills accumulate: 9 ms + 1 ms is one token.
        assert!(!b.take(Millis(19)));
        assert!(b.take(Millis(20)));
        assert_eq!(drain(&mut b, Millis(1020)), 100);
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let mut b = TokenBucket::new(4000, 400);
        drain(&mut b, Millis(0));
        assert_eq!(drain(&mut b, Millis(3_600_000)), 400);
        assert_eq!(drain(&mut b, Millis(u64::MAX)), 400, "no overflow at the end of time");
    }

    #[test]
    fn time_running_backwards_refills_nothing() {
        let mut b = TokenBucket::new(100, 1);
        assert!(b.take(Millis(1000)));
        assert!(!b.take(Millis(0)));
        assert!(!b.take(Millis(1009)), "the step back is not counted as elapsed time");
        assert!(b.take(Millis(1010)));
    }

    #[test]
    fn per_period_rates_are_exact() {
        let mut b = TokenBucket::per_period(3, 60_000);
        assert_eq!(drain(&mut b, Millis(0)), 3);
        assert!(!b.take(Millis(19_999)));
        assert!(b.take(Millis(20_000)), "3 per minute: one every 20 s");
        assert!(!b.take(Millis(39_999)));
        assert_eq!(drain(&mut b, Millis(u64::MAX)), 3);
    }

    #[test]
    fn the_last_tokens_can_be_held_back() {
        let mut b = TokenBucket::new(100, 4);
        assert_eq!(std::iter::from_fn(|| b.take_keeping(Millis(0), 2).then_some(())).count(), 2);
        assert!(b.take(Millis(0)) && b.take(Millis(0)), "the held-back two are there for others");
        assert!(!b.take(Millis(0)));
        assert!(!b.take_keeping(Millis(10), 1) && b.take_keeping(Millis(10), 0), "one refilled");
    }

    #[test]
    fn several_tokens_are_taken_all_or_none() {
        let mut b = TokenBucket::new(1000, 20);
        assert!(b.take_n(Millis(0), 15));
        assert!(!b.take_n(Millis(0), 6), "5 left: none taken");
        assert!(b.take_n(Millis(0), 5));
        assert!(!b.take(Millis(0)));
        assert!(b.take_n(Millis(7), 7) && !b.take(Millis(7)));
    }

    #[test]
    fn zero_rate_never_refills() {
        let mut b = TokenBucket::new(0, 2);
        assert_eq!(drain(&mut b, Millis(5)), 2);
        assert_eq!(drain(&mut b, Millis(u64::MAX)), 0);
    }
}
