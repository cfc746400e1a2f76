//! Crypto budgets for SPA: a token bucket per source prefix, plus a global ceiling.
//!
//! Anyone holding the (public) native server key can make every packet cost an X25519
//! operation, and any base64-looking junk costs one HMAC or AES per fwknop stanza. One
//! global bucket let such a flood from one place drain the budget for everyone. Here
//! each source prefix (/24 for IPv4, /56 for IPv6 by default: what one customer or
//! site usually holds) has its own bucket, so a flood from one prefix runs dry while
//! other prefixes keep their own allowance; the global bucket still caps the total
//! work a second, whatever the number of prefixes.
//!
//! A flood spread over many prefixes (spoofed sources are free: SPA needs no answer)
//! can still drain the global bucket. So a small reserve, on top of it, is open only
//! to *quiet* prefixes: ones not seen for [`QUIET`] (or never). A flooding prefix is
//! by definition not quiet, so a legitimate client's first packet from elsewhere gets
//! through unless the attacker sprays more prefixes than the table holds (each then
//! looks new); the reserve is bounded too, so the ceiling stays the ceiling.
//!
//! Memory is fixed: a set-associative table of [`SETS`] × [`WAYS`] slots, indexed by a
//! keyed hash of the prefix (the key is random per process, so nobody can aim many
//! prefixes at one set). A prefix not in its set takes the least recently used slot
//! of that set, starting with a full bucket. Eviction can only ever *give* a prefix a
//! fresh allowance, never take one from a prefix that is sending: an attacker who
//! sprays many prefixes gains fresh buckets but is still held by the global ceiling.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use portcullis_proto::ratelimit::TokenBucket;
use portcullis_proto::Millis;

/// Sets in the prefix table.
pub const SETS: usize = 1024;
/// Slots per set.
pub const WAYS: usize = 4;

/// A refill rate and a burst, in units of work (one X25519, one HMAC/AES attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per second.
    pub per_sec: u32,
    /// Units available at once.
    pub burst: u32,
}

/// A prefix not seen for this long (or never) may draw on the reserve.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// How crypto work is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Each source prefix.
    pub per_prefix: Rate,
    /// All sources together.
    pub global: Rate,
    /// On top of `global`, for quiet prefixes only.
    pub reserve: Rate,
    /// IPv4 prefix length sources are grouped by.
    pub v4_prefix: u8,
    /// IPv6 prefix length sources are grouped by.
    pub v6_prefix: u8,
}

/// Native packets that pass the cheap checks cost ~60-130 µs of crypto each: the
/// global ceiling is at most ~0.25 s of one core a second, leaving the capture thread
/// time to drain the socket; one prefix gets 50 a second
/// (a site full of users behind one NAT still fits), bursting to 20.
pub const NATIVE: Limits = Limits {
    per_prefix: Rate { per_sec: 50, burst: 20 },
    global: Rate { per_sec: 2000, burst: 200 },
    reserve: Rate { per_sec: 200, burst: 20 },
    v4_prefix: 24,
    v6_prefix: 56,
};

/// fwknop: one unit is one stanza's HMAC (or AES for a stanza without HMAC), ~1-3 µs
/// on a 200-byte packet. A genuine packet may need one per configured stanza, so the
/// burst covers a few packets against a large access.conf.
pub const FWKNOP: Limits = Limits {
    per_prefix: Rate { per_sec: 1000, burst: 400 },
    global: Rate { per_sec: 50_000, burst: 5000 },
    reserve: Rate { per_sec: 2000, burst: 400 },
    v4_prefix: 24,
    v6_prefix: 56,
};

/// `limits` with the (IPv4, IPv6) prefix lengths of `[spa] source_prefix_v4/v6`.
pub const fn with_prefix(limits: Limits, (v4_prefix, v6_prefix): (u8, u8)) -> Limits {
    Limits { v4_prefix, v6_prefix, ..limits }
}

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The source's prefix used its allowance.
    Prefix,
    /// All sources together reached the ceiling (and the source was not quiet, or
    /// the reserve was empty too).
    Global,
}

/// A source prefix: the address with its host bits cleared, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    bits: u128,
    len: u8,
    v6: bool,
}

impl Prefix {
    /// The prefix of `addr`: `v4` or `v6` leading bits (clamped to 32 / 128).
    pub fn of(addr: IpAddr, v4: u8, v6: u8) -> Prefix {
        let (bits, width, len) = match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32, u32::from(v4.min(32))),
            IpAddr::V6(a) => (u128::from(a), 128u32, u32::from(v6.min(128))),
        };
        let host = width - len;
        let mask = if len == 0 { 0 } else { (u128::MAX >> (128 - width)) >> host << host };
        Prefix { bits: bits & mask, len: len as u8, v6: addr.is_ipv6() }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    prefix: Option<Prefix>,
    bucket: TokenBucket,
    used: Millis,
}

/// Per-prefix token buckets in a fixed table, plus the global ceiling.
pub struct PrefixBudget {
    limits: Limits,
    slots: Vec<Slot>,
    global: TokenBucket,
    reserve: TokenBucket,
    hasher: RandomState,
}

impl PrefixBudget {
    /// A table of [`SETS`] × [`WAYS`] prefixes (~200 KB).
    pub fn new(limits: Limits) -> PrefixBudget {
        PrefixBudget::with_sets(limits, SETS)
    }

    /// A table with `sets` sets (at least one).
    pub fn with_sets(limits: Limits, sets: usize) -> PrefixBudget {
        let fresh = Slot { prefix: None, bucket: bucket(limits.per_prefix), used: Millis(0) };
        PrefixBudget {
            limits,
            slots: vec![fresh; sets.max(1) * WAYS],
            global: bucket(limits.global),
            reserve: bucket(limits.reserve),
            hasher: RandomState::new(),
        }
    }

    /// Spend one unit for a packet from `src` at `now`: the prefix's bucket first (so
    /// a prefix that is out spends nothing of the global ceiling), then the ceiling,
    /// then, for a quiet prefix, the reserve.
    pub fn take(&mut self, src: IpAddr, now: Millis) -> Result<(), Exhausted> {
        self.take_n(src, 1, now)
    }

    /// Spend `n` units for one packet (an fwknop packet tried against `n` stanzas), all
    /// or none from each bucket: a packet that cannot pay in full spends nothing of the
    /// ceiling, and a quiet prefix's packet may take all `n` from the reserve.
    pub fn take_n(&mut self, src: IpAddr, n: u32, now: Millis) -> Result<(), Exhausted> {
        let (slot, quiet) = self.slot_for(Prefix::of(src, self.limits.v4_prefix, self.limits.v6_prefix), now);
        if !slot.bucket.take_n(now, n) {
            return Err(Exhausted::Prefix);
        }
        if self.global.take_n(now, n) || (quiet && self.reserve.take_n(now, n)) {
            Ok(())
        } else {
            Err(Exhausted::Global)
        }
    }

    /// The slot of `p` (taking the set's least recently used one if `p` has none),
    /// and whether `p` was quiet: new, or not seen for [`QUIET`].
    fn slot_for(&mut self, p: Prefix, now: Millis) -> (&mut Slot, bool) {
        let sets = self.slots.len() / WAYS;
        // The hash is 64 bits and sets ≤ usize::MAX: the modulo fits in usize.
        let set = usize::try_from(self.hasher.hash_one(p) % sets as u64).unwrap_or(0);
        let ways = &mut self.slots[set * WAYS..(set + 1) * WAYS];
        let (i, quiet) = match ways.iter().position(|s| s.prefix == Some(p)) {
            Some(i) => (i, now.since(ways[i].used) >= QUIET),
            None => {
                // An empty slot if there is one, else the least recently used.
                let i = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.prefix.is_some(), s.used))
                    .map_or(0, |(i, _)| i);
                ways[i] = Slot { prefix: Some(p), bucket: bucket(self.limits.per_prefix), used: now };
                (i, true)
            }
        };
        let slot = &mut ways[i];
        slot.used = slot.used.max(now);
        (slot, quiet)
    }
}

/// A full bucket for `r`. A bucket starts full at `Millis(0)` and refills up to its
/// burst on first use, so a new slot's bucket is full at any `now`.
fn bucket(r: Rate) -> TokenBucket {
    TokenBucket::new(r.per_sec, r.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SMALL: Limits = Limits {
        per_prefix: Rate { per_sec: 10, burst: 5 },
        global: Rate { per_sec: 100, burst: 12 },
        reserve: Rate { per_sec: 10, burst: 2 },
        v4_prefix: 24,
        v6_prefix: 56,
    };

    fn spend(b: &mut PrefixBudget, src: &str, now: Millis, n: usize) -> Vec<Result<(), Exhausted>> {
        (0..n).map(|_| b.take(ip(src), now)).collect()
    }

    #[test]
    fn prefixes_mask_host_bits() {
        assert_eq!(Prefix::of(ip("192.0.2.7"), 24, 56), Prefix::of(ip("192.0.2.250"), 24, 56));
        assert_ne!(Prefix::of(ip("192.0.2.7"), 24, 56), Prefix::of(ip("192.0.3.7"), 24, 56));
        assert_eq!(Prefix::of(ip("2001:db8:0:ff::1"), 24, 56), Prefix::of(ip("2001:db8:0:1::9"), 24, 56));
        assert_ne!(Prefix::of(ip("2001:db8:0:100::1"), 24, 56), Prefix::of(ip("2001:db8:0:1::1"), 24, 56));
        // Edges: /0 groups everything, /32 and /128 nothing, lengths past the width clamp.
        assert_eq!(Prefix::of(ip("1.2.3.4"), 0, 0), Prefix::of(ip("5.6.7.8"), 0, 0));
        assert_ne!(Prefix::of(ip("1.2.3.4"), 32, 128), Prefix::of(ip("1.2.3.5"), 32, 128));
        assert_eq!(Prefix::of(ip("1.2.3.4"), 99, 200), Prefix::of(ip("1.2.3.4"), 32, 128));
        assert_ne!(Prefix::of(ip("::1"), 24, 128), Prefix::of(ip("::2"), 24, 128));
        // Families never share a prefix, even with equal bits.
        assert_ne!(Prefix::of(ip("0.0.0.0"), 0, 0), Prefix::of(ip("::"), 0, 0));
    }

    #[test]
    fn a_prefix_gets_its_burst_then_its_rate() {
        let mut b = PrefixBudget::new(SMALL);
        let r = spend(&mut b, "192.0.2.1", Millis(0), 6);
        assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 5);
        assert_eq!(r[5], Err(Exhausted::Prefix));
        // Another host of the same /24 shares it.
        assert_eq!(b.take(ip("192.0.2.200"), Millis(0)), Err(Exhausted::Prefix));
        // 10 a second: one more after 100 ms, not before.
        assert_eq!(b.take(ip("192.0.2.1"), Millis(99)), Err(Exhausted::Prefix));
        assert_eq!(b.take(ip("192.0.2.1"), Millis(100)), Ok(()));
    }

    #[test]
    fn a_flooding_prefix_does_not_drain_another() {
        let mut b = PrefixBudget::new(SMALL);
        spend(&mut b, "198.51.100.9", Millis(0), 1000);
        assert_eq!(b.take(ip("192.0.2.1"), Millis(0)), Ok(()), "refused units cost the ceiling nothing");
        spend(&mut b, "2001:db8:bad::1", Millis(0), 1000);
        assert_eq!(b.take(ip("2001:db8:600d::1"), Millis(0)), Ok(()));
    }

    #[test]
    fn the_global_ceiling_holds_across_prefixes() {
        let mut b = PrefixBudget::new(SMALL);
        let ok = (0..100u8).filter(|i| b.take(IpAddr::from([10, *i, 0, 1]), Millis(0)).is_ok()).count();
        assert_eq!(ok, 12 + 2, "global burst, then the reserve for the new (quiet) prefixes");
        assert_eq!(b.take(ip("192.0.2.1"), Millis(0)), Err(Exhausted::Global));
        assert_eq!(b.take(ip("192.0.2.1"), Millis(10)), Ok(()), "100 a second");
    }

    #[test]
    fn the_reserve_serves_quiet_prefixes_only() {
        let mut b = PrefixBudget::new(SMALL);
        // Twelve busy prefixes drain the global bucket (and stay busy).
        for t in 0..3u64 {
            for i in 0..12u8 {
                let _ = b.take(IpAddr::from([10, i, 0, 1]), Millis(t));
            }
        }
        // A busy prefix cannot reach the reserve...
        assert_eq!(b.take(ip("10.0.0.1"), Millis(3)), Err(Exhausted::Global));
        // ...a newcomer can, up to its burst,
        assert_eq!(b.take(ip("192.0.2.1"), Millis(3)), Ok(()));
        // but it is not quiet any more once seen,
        assert_eq!(b.take(ip("192.0.2.1"), Millis(4)), Err(Exhausted::Global));
        // until it has been silent for QUIET.
        let later = Millis(4 + QUIET.as_millis() as u64);
        for t in (4..=later.0).step_by(10) {
            for i in 0..12u8 {
                let _ = b.take(IpAddr::from([10, i, 0, 1]), Millis(t));
            }
        }
        assert!(b.take(ip("10.0.0.1"), later).is_err(), "busy all along");
        assert_eq!(b.take(ip("192.0.2.1"), later), Ok(()));
        // The reserve is bounded too: newcomers beyond its burst are refused.
        let refused = (0..10u8).filter(|i| b.take(IpAddr::from([172, 16, *i, 1]), later).is_err()).count();
        assert!(refused >= 9, "{refused}");
    }

    #[test]
    fn a_packet_pays_all_its_units_or_none() {
        let mut b = PrefixBudget::new(SMALL);
        // Twelve busy prefixes drain the global bucket but for 2 units.
        for i in 0..10u8 {
            b.take(IpAddr::from([10, i, 0, 1]), Millis(0)).unwrap();
        }
        assert_eq!(b.take_n(ip("10.0.0.1"), 3, Millis(0)), Err(Exhausted::Global), "2 left, not quiet");
        assert_eq!(b.take_n(ip("10.1.0.1"), 2, Millis(0)), Ok(()), "the 2 were not spent by the refusal");
        // A quiet newcomer takes a whole multi-unit packet from the reserve (burst 2).
        assert_eq!(b.take_n(ip("192.0.2.1"), 3, Millis(0)), Err(Exhausted::Global), "more than the reserve");
        assert_eq!(b.take_n(ip("192.0.3.1"), 2, Millis(0)), Ok(()));
    }

    #[test]
    fn memory_is_fixed_and_eviction_only_refills() {
        let mut b = PrefixBudget::with_sets(SMALL, 1);
        let slots = b.slots.len();
        spend(&mut b, "192.0.2.1", Millis(0), 5);
        // Four other prefixes at later times push the drained one out of the only set.
        for (i, t) in [(1u8, 1u64), (2, 2), (3, 3), (4, 4)] {
            b.take(IpAddr::from([10, i, 0, 1]), Millis(t)).unwrap();
        }
        assert_eq!(b.slots.len(), slots, "the table never grows");
        assert!(b.slots.iter().all(|s| s.prefix != Some(Prefix::of(ip("192.0.2.1"), 24, 56))));
        // Back, it starts full again: eviction gives, never takes.
        assert_eq!(b.take(ip("192.0.2.1"), Millis(5)), Ok(()));
    }

    #[test]
    fn the_busiest_prefix_is_not_the_one_evicted() {
        let mut b = PrefixBudget::with_sets(SMALL, 1);
        for t in 0..WAYS as u64 {
            b.take(IpAddr::from([10, t as u8, 0, 1]), Millis(t)).unwrap();
        }
        // 10.0.0.0/24 is used again, last: a newcomer evicts 10.1.0.0/24 instead.
        let _ = b.take(ip("10.0.0.1"), Millis(10));
        b.take(ip("192.0.2.1"), Millis(11)).unwrap();
        let held: Vec<_> = b.slots.iter().filter_map(|s| s.prefix).collect();
        assert!(held.contains(&Prefix::of(ip("10.0.0.1"), 24, 56)));
        assert!(!held.contains(&Prefix::of(ip("10.1.0.1"), 24, 56)));
    }
}
