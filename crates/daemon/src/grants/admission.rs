//! Whether a door may open now: the bounds on knock grants. Knock sequences travel in
//! clear, so anyone who saw one can complete it from any number of spoofed sources;
//! these bounds keep such a flood from filling the firewall, the store and the log.
//!
//! Three checks, in this order, so a refused open costs the later budgets nothing:
//!
//! 1. **door full**: the door already holds `max_live_grants` live grants (a refresh of
//!    one of them is not a new grant and passes);
//! 2. **prefix rate**: the source's /24 (IPv4) or /56 (IPv6) prefix opened more than
//!    `opens_per_prefix` allows; a flood from a few prefixes never reaches the door's
//!    budget, so knocks from elsewhere still open;
//! 3. **door rate**: the door opened more than `opens_per_second`. The lower half of
//!    the door's budget is kept for *fresh* prefixes: ones that still hold more than
//!    half their `opens_per_prefix` allowance and have not opened for [`FRESH_MS`]. A
//!    flood completing a known sequence from many prefixes brings each one's whole
//!    burst at once, then keeps each at the bottom of its allowance; without the
//!    reserve it takes the door's budget token by token as it refills, and a knock from
//!    an unflooded prefix finds it empty. Now a flooding prefix gets one open from the
//!    lower half when it appears and none once it has used half its allowance, and a
//!    newcomer finds room unless the flood brings new prefixes faster than the door's
//!    rate.
//!
//! Pure: the caller passes the time (Unix ms). The prefix table is bounded; when it is
//! full of busy prefixes, new ones share one overflow budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use portcullis_proto::ratelimit::TokenBucket;
use portcullis_proto::Millis;

use super::scheduler::{Key, Table};
use crate::config::{Limits, Rate};

/// Most source prefixes tracked at once.
pub const MAX_PREFIXES: usize = 65_536;
/// A prefix that opened within this many ms draws on the upper half of a door's rate
/// budget only.
pub const FRESH_MS: i64 = 500;

/// Why an open was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The door holds its maximum of live grants.
    DoorFull,
    /// The source's prefix opened too often.
    PrefixRate,
    /// The door opened too often.
    DoorRate,
}

impl Refusal {
    /// Every refusal, for summaries.
    pub const ALL: [Refusal; 3] = [Refusal::DoorFull, Refusal::PrefixRate, Refusal::DoorRate];

    /// Short text for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::DoorFull => "door full (max_live_grants)",
            Refusal::PrefixRate => "source prefix over its rate (opens_per_prefix)",
            Refusal::DoorRate => "door over its rate (opens_per_second)",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token bucket for a [`Rate`]: `count` tokens at most, refilled over `per`.
#[derive(Debug, Clone)]
struct RateBucket {
    bucket: TokenBucket,
    /// Time of the last take (to tell an idle, refilled bucket).
    last: i64,
    /// Time of the last admitted open (prefixes: whether it is fresh).
    opened: Option<i64>,
    /// Doors: tokens held back for fresh prefixes (half the burst). Prefixes: a prefix
    /// holding no more than this many tokens is not fresh (half its allowance).
    reserved: u32,
}

impl RateBucket {
    fn new(r: Rate) -> RateBucket {
        let per = u32::try_from(r.per.as_millis()).unwrap_or(u32::MAX);
        RateBucket { bucket: TokenBucket::per_period(r.count, per), last: 0, opened: None, reserved: 0 }
    }

    fn take(&mut self, now_ms: i64) -> bool {
        self.take_keeping(now_ms, 0)
    }

    fn take_keeping(&mut self, now_ms: i64, keep: u32) -> bool {
        self.last = now_ms;
        self.bucket.take_keeping(Millis(u64::try_from(now_ms).unwrap_or(0)), keep)
    }

    /// A prefix's take: `None` if it has no token left, else whether it is fresh: it
    /// still holds more than half its allowance and has not opened for [`FRESH_MS`].
    fn take_prefix(&mut self, now_ms: i64) -> Option<bool> {
        let recent = self.opened.is_some_and(|t| now_ms.saturating_sub(t) < FRESH_MS);
        let light = self.take_keeping(now_ms, self.reserved);
        (light || self.take(now_ms)).then_some(light && !recent)
    }
}

/// Time for an emptied bucket of `r` to be full again (an entry idle this long is as
/// good as new and may be dropped).
fn refill_ms(r: Rate) -> i64 {
    i64::try_from(r.per.as_millis()).unwrap_or(i64::MAX)
}

/// A source prefix: family and the address with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// IPv4, masked.
    V4(u32),
    /// IPv6, masked.
    V6(u128),
}

/// The prefix of `addr` (IPv4-mapped IPv6 counts as IPv4) at `v4`/`v6` bits.
pub fn prefix(addr: IpAddr, v4: u8, v6: u8) -> Prefix {
    match portcullis_proto::addr::canonical(addr) {
        IpAddr::V4(a) => Prefix::V4(u32::from(a) & mask32(v4)),
        IpAddr::V6(a) => Prefix::V6(u128::from(a) & mask128(v6)),
    }
}

fn mask32(bits: u8) -> u32 {
    match bits {
        0 => 0,
        b if b >= 32 => u32::MAX,
        b => u32::MAX << (32 - u32::from(b)),
    }
}

fn mask128(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => u128::MAX,
        b => u128::MAX << (128 - u32::from(b)),
    }
}

fn door_rate(per_sec: Option<u32>) -> Option<RateBucket> {
    per_sec.map(|n| RateBucket {
        reserved: n / 2,
        ..RateBucket::new(Rate { count: n, per: Duration::from_secs(1) })
    })
}

#[derive(Debug)]
struct DoorState {
    rate: Option<RateBucket>,
    max_live: Option<usize>,
    /// This door's live grants by key and deadline.
    live: Table,
}

/// The admission state: per-door budgets and live grants, per-prefix budgets.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    doors: HashMap<String, DoorState>,
    prefixes: HashMap<Prefix, RateBucket>,
    overflow: Option<RateBucket>,
    max_prefixes: usize,
}

impl Default for Admission {
    /// No bounds at all (tests, dry runs).
    fn default() -> Admission {
        Admission::new(Limits::unbounded())
    }
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Admission {
        Admission::with_capacity(limits, MAX_PREFIXES)
    }

    /// Like [`Admission::new`] with room for `max_prefixes` prefixes (tests).
    pub fn with_capacity(limits: Limits, max_prefixes: usize) -> Admission {
        let overflow = limits.opens_per_prefix.map(RateBucket::new);
        Admission { limits, doors: HashMap::new(), prefixes: HashMap::new(), overflow, max_prefixes }
    }

    /// New bounds: budgets start afresh, live grants are kept.
    pub fn set_limits(&mut self, limits: Limits) {
        self.overflow = limits.opens_per_prefix.map(RateBucket::new);
        self.prefixes.clear();
        for (name, d) in &mut self.doors {
            let l = limits.door(name);
            d.rate = door_rate(l.opens_per_second);
            d.max_live = l.max_live_grants;
        }
        self.limits = limits;
    }

    fn door(&mut self, name: &str) -> &mut DoorState {
        // Looked up on every open: allocate the key only the first time.
        if !self.doors.contains_key(name) {
            let l = self.limits.door(name);
            let state = DoorState {
                rate: door_rate(l.opens_per_second),
                max_live: l.max_live_grants,
                live: Table::default(),
            };
            self.doors.insert(name.to_string(), state);
        }
        self.doors.get_mut(name).expect("inserted above")
    }

    /// May door `door` open `keys` for `src` at `now_ms`? Consumes budget only when the
    /// open is admitted or refused at the last check (see the module doc for the order).
    pub fn check(&mut self, door: &str, src: IpAddr, keys: &[Key], now_ms: i64) -> Result<(), Refusal> {
        let d = self.door(door);
        drop(d.live.take_due(now_ms));
        if let Some(max) = d.max_live {
            let new = keys.iter().filter(|&&k| d.live.get(k).is_none()).count();
            if new > 0 && d.live.len() + new > max {
                return Err(Refusal::DoorFull);
            }
        }
        let Some(fresh) = self.take_prefix(src, now_ms) else {
            return Err(Refusal::PrefixRate);
        };
        let d = self.door(door);
        if let Some(b) = d.rate.as_mut() {
            let keep = if fresh { 0 } else { b.reserved };
            if !b.take_keeping(now_ms, keep) {
                return Err(Refusal::DoorRate);
            }
        }
        if let Some(p) = self
            .limits
            .opens_per_prefix
            .and_then(|_| self.prefixes.get_mut(&prefix(src, self.limits.prefix_v4, self.limits.prefix_v6)))
        {
            p.opened = Some(now_ms);
        }
        Ok(())
    }

    /// Door `door` holds `key` until `expires_at` (after a successful open, or found at
    /// start).
    pub fn opened(&mut self, door: &str, key: Key, expires_at: i64, now_ms: i64) {
        self.door(door).live.open(key, expires_at, now_ms);
    }

    /// `key` was closed early (revoked).
    pub fn closed(&mut self, key: Key) {
        for d in self.doors.values_mut() {
            d.live.remove(key);
        }
    }

    /// Live grants of `door` at `now_ms`.
    pub fn live(&mut self, door: &str, now_ms: i64) -> usize {
        let d = self.door(door);
        drop(d.live.take_due(now_ms));
        d.live.len()
    }

    /// Prefixes tracked now.
    pub fn prefixes(&self) -> usize {
        self.prefixes.len()
    }

    /// Take a token of `src`'s prefix: `None` if it has none, else whether the prefix
    /// is fresh (has not opened for [`FRESH_MS`]; always without prefix limits, never
    /// for the shared overflow budget).
    fn take_prefix(&mut self, src: IpAddr, now_ms: i64) -> Option<bool> {
        let Some(rate) = self.limits.opens_per_prefix else { return Some(true) };
        let p = prefix(src, self.limits.prefix_v4, self.limits.prefix_v6);
        if let Some(b) = self.prefixes.get_mut(&p) {
            return b.take_prefix(now_ms);
        }
        if self.prefixes.len() >= self.max_prefixes {
            // Drop the prefixes whose budget has refilled: they are as good as new.
            let idle = refill_ms(rate);
            self.prefixes.retain(|_, b| now_ms.saturating_sub(b.last) < idle);
        }
        if self.prefixes.len() >= self.max_prefixes {
            return self.overflow.as_mut().is_some_and(|b| b.take(now_ms)).then_some(false);
        }
        let mut b = RateBucket { reserved: rate.count / 2, ..RateBucket::new(rate) };
        let fresh = b.take_prefix(now_ms);
        self.prefixes.insert(p, b);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use portcullis_proto::Service;

    use super::*;
    use crate::config::DoorLimits;

    const T0: i64 = 1_800_000_000_000;

    fn limits(per_prefix: Option<Rate>, per_sec: Option<u32>, max_live: Option<usize>) -> Limits {
        Limits {
            opens_per_prefix: per_prefix,
            prefix_v4: 24,
            prefix_v6: 56,
            default_door: DoorLimits { opens_per_second: per_sec, max_live_grants: max_live },
            doors: Default::default(),
            grant_prefix: Default::default(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(s: &str) -> Key {
        (crate::firewall::Prefix::host(ip(s)), Service::tcp(22))
    }

    /// Check and, if admitted, open for 10 s.
    fn open(a: &mut Admission, door: &str, src: &str, now: i64) -> Result<(), Refusal> {
        a.check(door, ip(src), &[key(src)], now)?;
        a.opened(door, key(src), now + 10_000, now);
        Ok(())
    }

    #[test]
    fn prefixes_mask_at_the_configured_length() {
        assert_eq!(prefix(ip("192.0.2.77"), 24, 56), Prefix::V4(0xC000_0200));
        assert_eq!(prefix(ip("::ffff:192.0.2.77"), 24, 56), prefix(ip("192.0.2.1"), 24, 56));
        assert_eq!(prefix(ip("192.0.2.77"), 32, 56), Prefix::V4(0xC000_024D));
        assert_eq!(prefix(ip("192.0.2.77"), 0, 56), Prefix::V4(0));
        assert_eq!(prefix(ip("2001:db8:0:ff::1"), 24, 56), prefix(ip("2001:db8:0:1::9"), 24, 56));
        assert_ne!(prefix(ip("2001:db8:0:ff::1"), 24, 56), prefix(ip("2001:db8:0:ff00::1"), 24, 56));
        assert_ne!(prefix(ip("2001:db8:0:100::1"), 24, 56), prefix(ip("2001:db8:0:ff::1"), 24, 56));
        assert_ne!(prefix(ip("2001:db8::1"), 24, 128), prefix(ip("2001:db8::2"), 24, 128));
        assert_eq!(prefix(ip("2001:db8::1"), 24, 0), Prefix::V6(0));
    }

    #[test]
    fn the_prefix_budget_is_exact_and_refills_over_its_period() {
        let r = Rate { count: 3, per: Duration::from_secs(60) };
        let mut a = Admission::new(limits(Some(r), None, None));
        for i in 1..=3 {
            assert_eq!(open(&mut a, "ssh", &format!("192.0.2.{i}"), T0), Ok(()), "{i}");
        }
        assert_eq!(open(&mut a, "ssh", "192.0.2.4", T0), Err(Refusal::PrefixRate), "4th from the /24");
        assert_eq!(open(&mut a, "ssh", "192.0.3.4", T0), Ok(()), "another /24 has its own budget");
        assert_eq!(open(&mut a, "ssh", "192.0.2.5", T0 + 19_000), Err(Refusal::PrefixRate));
        assert_eq!(open(&mut a, "ssh", "192.0.2.5", T0 + 20_000), Ok(()), "one token per 20 s");
        assert_eq!(open(&mut a, "ssh", "192.0.2.6", T0 + 20_000), Err(Refusal::PrefixRate));
    }

    #[test]
    fn the_door_rate_is_exact_per_second_and_prefixes_are_checked_first() {
        let r = Rate { count: 1, per: Duration::from_secs(1) };
        let mut a = Admission::new(limits(Some(r), Some(2), None));
        assert_eq!(open(&mut a, "ssh", "192.0.2.1", T0), Ok(()));
        // Refused by its prefix: the door's budget is not spent.
        assert_eq!(open(&mut a, "ssh", "192.0.2.2", T0), Err(Refusal::PrefixRate));
        assert_eq!(open(&mut a, "ssh", "198.51.100.1", T0), Ok(()));
        assert_eq!(open(&mut a, "ssh", "203.0.113.1", T0), Err(Refusal::DoorRate), "3rd in the second");
        assert_eq!(open(&mut a, "other", "203.0.113.2", T0), Err(Refusal::PrefixRate), "same /24");
        assert_eq!(open(&mut a, "other", "203.0.114.2", T0), Ok(()), "each door has its own rate");
        assert_eq!(open(&mut a, "ssh", "192.0.9.3", T0 + 499), Err(Refusal::DoorRate));
        assert_eq!(open(&mut a, "ssh", "192.0.10.3", T0 + 500), Ok(()), "2/s: a token every 500 ms");
    }

    #[test]
    fn bursting_prefixes_leave_half_the_door_rate_to_fresh_ones() {
        let r = Rate { count: 30, per: Duration::from_secs(60) };
        let mut a = Admission::new(limits(Some(r), Some(100), None));
        // A flood's prefixes each bring their whole burst at once: after the first
        // open, each gets only the upper half of the door's budget.
        let mut admitted = 0;
        for p in 0..20u8 {
            for h in 1..=30u8 {
                admitted += usize::from(open(&mut a, "ssh", &format!("198.18.{p}.{h}"), T0).is_ok());
            }
        }
        // The first two prefixes take the upper half (50); the other 18 one open each.
        assert_eq!(admitted, 50 + 18);
        assert_eq!(open(&mut a, "ssh", "192.0.2.7", T0), Ok(()), "a newcomer still opens");
        assert_eq!(open(&mut a, "ssh", "192.0.2.8", T0), Err(Refusal::DoorRate), "its prefix just opened");
        assert_eq!(open(&mut a, "ssh", "203.0.113.1", T0), Ok(()), "another newcomer");
        // 500 ms later the door has refilled to 81: fresh or not, the upper half is open.
        assert_eq!(open(&mut a, "ssh", "192.0.2.8", T0 + 500), Ok(()));
        // Without contention, a prefix's burst is not held back.
        let mut b = Admission::new(limits(Some(r), Some(100), None));
        assert!((1..=30u8).all(|h| open(&mut b, "ssh", &format!("192.0.2.{h}"), T0).is_ok()));
    }

    /// The bench's grant flood with the default bounds: 32,768 spoofed sources in 128
    /// /24s, in order, each completing the sequence, at 35,000 completions a second. A
    /// knock from another prefix (which opened 600 ms before the flood) at any moment of
    /// the flood's first pass, when every prefix still has its whole burst, is admitted.
    #[test]
    fn a_knock_from_an_unflooded_prefix_opens_during_a_bursting_flood() {
        let per_sec: i64 = 35_000;
        let mut refused = Vec::new();
        for at in (300..900).step_by(37) {
            let mut a = Admission::new(Limits::default());
            assert_eq!(open(&mut a, "ssh", "198.19.4.1", T0 - 600), Ok(()));
            for n in 0..per_sec {
                let t = T0 + n * 1000 / per_sec;
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n % 32_768) as u32);
                let _ = open(&mut a, "ssh", &src.to_string(), t);
                if t == T0 + at && n * 1000 % per_sec == 0 {
                    if let Err(r) = open(&mut a, "ssh", "198.19.4.2", t) {
                        refused.push((at, r));
                    }
                }
            }
        }
        assert!(refused.is_empty(), "{refused:?}");
    }

    /// The same with 50,000 sources (196 /24s): once past their burst the flood's
    /// prefixes open about 98 times a second in all, next to the door's 100, yet a knock
    /// from another /24 once a second opens every time, the flood's steady state included.
    #[test]
    fn a_knock_from_an_unflooded_prefix_opens_throughout_a_long_flood() {
        let per_sec: i64 = 35_000;
        let mut refused = Vec::new();
        for phase in [0, 333, 666] {
            let mut a = Admission::new(Limits::default());
            assert_eq!(open(&mut a, "ssh", "198.19.4.1", T0 - 600), Ok(()));
            let mut next = T0 + 500 + phase;
            for n in 0..per_sec * 8 {
                let t = T0 + n * 1000 / per_sec;
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n % 50_000) as u32);
                let _ = open(&mut a, "ssh", &src.to_string(), t);
                if t >= next {
                    let legit = format!("198.19.4.{}", 2 + (next - T0) / 1000);
                    if let Err(r) = open(&mut a, "ssh", &legit, t) {
                        refused.push((t - T0, r));
                    }
                    next += 1000;
                }
            }
        }
        assert!(refused.is_empty(), "{refused:?}");
    }

    #[test]
    fn the_live_cap_counts_new_grants_only_and_frees_at_expiry_or_revoke() {
        let mut a = Admission::new(limits(None, None, Some(2)));
        assert_eq!(open(&mut a, "ssh", "192.0.2.1", T0), Ok(()));
        assert_eq!(open(&mut a, "ssh", "192.0.2.2", T0), Ok(()));
        assert_eq!(a.live("ssh", T0), 2);
        assert_eq!(open(&mut a, "ssh", "192.0.2.3", T0), Err(Refusal::DoorFull), "3rd live grant");
        assert_eq!(open(&mut a, "ssh", "192.0.2.1", T0 + 1), Ok(()), "a refresh is not a new grant");
        assert_eq!(open(&mut a, "web", "192.0.2.3", T0), Ok(()), "the cap is per door");
        // Two new keys at once with room for one: refused whole.
        let two = [key("192.0.2.8"), key("192.0.2.9")];
        a.closed(key("192.0.2.2"));
        assert_eq!(a.check("ssh", ip("192.0.2.8"), &two, T0), Err(Refusal::DoorFull));
        assert_eq!(open(&mut a, "ssh", "192.0.2.4", T0), Ok(()), "a revoke frees its place");
        // 192.0.2.4 expires at T0 + 10 s, 192.0.2.1 (refreshed) at T0 + 10.001 s.
        assert_eq!(open(&mut a, "ssh", "192.0.2.5", T0 + 9_999), Err(Refusal::DoorFull));
        assert_eq!(open(&mut a, "ssh", "192.0.2.5", T0 + 10_000), Ok(()), "expired at its deadline");
        assert_eq!(a.live("ssh", T0 + 10_000), 2);
    }

    #[test]
    fn a_full_door_spends_no_budget() {
        let r = Rate { count: 1, per: Duration::from_secs(3600) };
        let mut a = Admission::new(limits(Some(r), Some(1), Some(0)));
        assert_eq!(open(&mut a, "ssh", "192.0.2.1", T0), Err(Refusal::DoorFull));
        let mut a2 = Admission::new(limits(Some(r), Some(1), None));
        assert_eq!(open(&mut a2, "ssh", "192.0.2.1", T0), Ok(()), "budgets are intact after DoorFull");
    }

    #[test]
    fn per_door_settings_override_the_default() {
        let mut l = limits(None, Some(1), Some(1));
        l.doors.insert("vip".into(), DoorLimits { opens_per_second: None, max_live_grants: Some(3) });
        let mut a = Admission::new(l);
        for i in 1..=3 {
            assert_eq!(open(&mut a, "vip", &format!("192.0.2.{i}"), T0), Ok(()));
        }
        assert_eq!(open(&mut a, "vip", "192.0.2.9", T0), Err(Refusal::DoorFull));
        assert_eq!(open(&mut a, "ssh", "192.0.2.9", T0), Ok(()));
        assert_eq!(open(&mut a, "ssh", "192.0.2.10", T0 + 5_000), Err(Refusal::DoorFull));
    }

    #[test]
    fn the_prefix_table_is_bounded_and_overflow_shares_one_budget() {
        let r = Rate { count: 2, per: Duration::from_secs(10) };
        let mut a = Admission::with_capacity(limits(Some(r), None, None), 4);
        for i in 0..4 {
            assert_eq!(open(&mut a, "ssh", &format!("10.0.{i}.1"), T0), Ok(()));
        }
        assert_eq!(a.prefixes(), 4);
        // Full of busy prefixes: newcomers share the overflow budget (2).
        assert_eq!(open(&mut a, "ssh", "10.1.0.1", T0 + 1), Ok(()));
        assert_eq!(open(&mut a, "ssh", "10.1.1.1", T0 + 1), Ok(()));
        assert_eq!(open(&mut a, "ssh", "10.1.2.1", T0 + 1), Err(Refusal::PrefixRate));
        assert_eq!(a.prefixes(), 4, "never more than the capacity");
        // Once the tracked ones have been idle for a full refill, they make room.
        assert_eq!(open(&mut a, "ssh", "10.2.0.1", T0 + 10_000), Ok(()));
        assert_eq!(a.prefixes(), 1);
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut a = Admission::default();
        for i in 0..1000 {
            assert_eq!(open(&mut a, "ssh", &format!("10.0.{}.{}", i / 256, i % 256), T0), Ok(()));
        }
        assert_eq!(a.prefixes(), 0);
    }
}
