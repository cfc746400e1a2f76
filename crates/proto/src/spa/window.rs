//! The SPA time window, and how long a replay-cache entry must live: one rule for
//! both formats, so the time check and the cache can never disagree about the last
//! second in which a captured packet is still good.
//!
//! Times are whole Unix seconds: packet timestamps are whole seconds, and the caller
//! passes `now` rounded *down* (`SystemTime::duration_since(UNIX_EPOCH).as_secs()`).
//! A packet stamped `t` is accepted for every `now` in `t − max_age ..= t + max_age`
//! (clients may be ahead or behind by `max_age`), that is until the wall clock reaches
//! `t + max_age + 1`. Its replay entry must therefore stay live *through* the second
//! `t + max_age`, inclusive: [`Window::last_accepted`] is that second and
//! [`replay_entry_live`] is the cache's liveness test.

/// The acceptance window: `|now − timestamp| ≤ max_age`, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    max_age: u64,
}

impl Window {
    /// A window of `max_age` seconds either way.
    pub const fn new(max_age: u64) -> Window {
        Window { max_age }
    }

    /// Whether a packet stamped `timestamp` is inside the window at Unix second `now`
    /// (no overflow at the ends of `u64`).
    pub const fn accepts(self, timestamp: u64, now: u64) -> bool {
        timestamp.abs_diff(now) <= self.max_age
    }

    /// The last Unix second at which a packet stamped `timestamp` is accepted: its
    /// replay entry must be live through this second (saturating, so an entry near
    /// the end of time never expires rather than wrapping to the past).
    pub const fn last_accepted(self, timestamp: u64) -> u64 {
        timestamp.saturating_add(self.max_age)
    }
}

/// Whether a replay entry stored with `last_accepted` (from
/// [`Window::last_accepted`]) must still refuse its packet at Unix second `now`.
/// Live exactly while [`Window::accepts`] could still accept the packet.
pub const fn replay_entry_live(last_accepted: u64, now: u64) -> bool {
    now <= last_accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000;

    /// The invariant: whenever the window accepts a packet, its entry is live.
    fn covered(w: Window, ts: u64, now: u64) -> bool {
        !w.accepts(ts, now) || replay_entry_live(w.last_accepted(ts), now)
    }

    #[test]
    fn window_bounds_are_inclusive_both_ways() {
        let w = Window::new(120);
        assert!(w.accepts(T, T - 120));
        assert!(!w.accepts(T, T - 121));
        assert!(w.accepts(T, T + 120));
        assert!(!w.accepts(T, T + 121));
        assert!(w.accepts(T, T));
    }

    #[test]
    fn entry_lives_through_the_last_accepted_second_and_not_after() {
        let w = Window::new(120);
        let last = w.last_accepted(T);
        assert_eq!(last, T + 120);
        assert!(replay_entry_live(last, T + 119));
        assert!(replay_entry_live(last, T + 120), "the last second of the window");
        assert!(!replay_entry_live(last, T + 121));
        assert!(!w.accepts(T, T + 121), "dead entry only once the window refuses by itself");
    }

    #[test]
    fn every_accepted_second_is_covered_including_future_stamps() {
        for max_age in [0, 1, 2, 30, 120] {
            let w = Window::new(max_age);
            // A client clock ahead by up to max_age (timestamp in our future) and
            // one behind: every `now` around the window, both edges ±1.
            for ts in [T - max_age, T, T + max_age] {
                for now in (T - 2 * max_age - 2)..=(T + 2 * max_age + 2) {
                    assert!(covered(w, ts, now), "max_age {max_age} ts {ts} now {now}");
                }
            }
        }
    }

    #[test]
    fn no_overflow_at_the_ends_of_time() {
        let w = Window::new(120);
        assert_eq!(w.last_accepted(u64::MAX - 5), u64::MAX);
        assert!(replay_entry_live(w.last_accepted(u64::MAX - 5), u64::MAX));
        assert!(w.accepts(u64::MAX, u64::MAX - 120));
        assert!(!w.accepts(0, u64::MAX));
        assert!(covered(w, u64::MAX, u64::MAX));
        assert!(covered(w, 0, 0));
        assert!(covered(w, 0, 120));
    }
}
