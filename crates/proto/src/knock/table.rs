//! Bounded storage for in-progress attempts: two generations of `HashMap`s.
//!
//! # Invariants
//! - Each generation holds at most `half = capacity / 2` slots, and its map is created
//!   `with_capacity(half)`, so it never grows or rehashes: no latency spikes on the
//!   packet path, and the allocation is fixed for the generation's life.
//! - `current` only ever gains slots by insertion and loses none: an attempt that ends
//!   is marked dead (`stage == 0`) in place. This keeps hashbrown from accumulating
//!   tombstones, which would otherwise force an in-place rehash (O(table)) on some
//!   later insert. `previous` only ever loses slots (removals), never gains any.
//! - A key is live in at most one generation. If `current` has a slot for a key (live
//!   or dead), `previous` has none for it, so lookups may stop at `current`.
//! - [`Table::tick`] runs before every read and write with a slack of at most
//!   `max_age`. So every write into a generation happens within `2 * max_age` of its
//!   `born`; a live attempt started at most `max_age` before it was written; and a
//!   generation still held has a write within `2 * max_age`. Hence a live attempt is
//!   read less than `5 * max_age` after it started, which is what makes the 32-bit
//!   wrapping start times exact (see [`MAX_AGE_MS`]).
//!
//! # Eviction
//! When a new key must go into a full `current`, `previous` is dropped (every attempt
//! in it is forgotten), `current` becomes `previous`, and a fresh `current` is used. An
//! attempt that progresses while in `previous` is moved back to `current`. So the
//! attempts idle longest are forgotten first, and an attempt survives at least `half`
//! newer attempts by others after its last progress. Cost: dropping a map is one
//! deallocation; allocating the next one writes its control bytes (one byte per
//! bucket), i.e. O(half) once per `half` inserts: O(1) amortised.
//!
//! Time also ages generations out: once the newest write into a generation is older
//! than the longest door timeout, everything in it has expired and housekeeping frees
//! it, so memory returns to zero after a flood ends.

use std::collections::HashMap;
use std::mem::size_of;

use crate::Millis;

/// Longest door timeout the wrapping 32-bit start times can represent safely.
///
/// Live attempts are read less than `5 * MAX_AGE_MS` after they started (module
/// invariants), which must stay below `2^31` ms (24.8 days) for the wrapping
/// difference to be exact. One day (5 days) leaves a wide margin and is far beyond any sane
/// knock timeout (knockd's default is 25 s).
pub(super) const MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;

/// Address (16 bytes, IPv4 as IPv4-mapped IPv6) then door id (big-endian u16).
///
/// Byte arrays rather than `u128`/`u16` fields keep the alignment at 1, so a
/// `(Key, Slot)` bucket is 23 bytes with no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key([u8; 18]);

impl Key {
    pub(super) fn new(addr: [u8; 16], door: u16) -> Key {
        let mut k = [0u8; 18];
        k[..16].copy_from_slice(&addr);
        k[16..].copy_from_slice(&door.to_be_bytes());
        Key(k)
    }

    fn door(&self) -> u16 {
        u16::from_be_bytes([self.0[16], self.0[17]])
    }
}

/// Progress of one attempt. `stage == 0` marks a dead slot in `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// Low 32 bits of the first knock's `Millis`, compared with wrapping arithmetic.
    started: [u8; 4],
    /// Knocks completed so far (1..=31 when live).
    stage: u8,
}

/// A live attempt as seen by the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempt {
    /// Knocks completed so far, `>= 1`.
    pub(super) stage: u8,
    /// Low 32 bits of the first knock's time.
    pub(super) started: u32,
}

impl Attempt {
    /// Milliseconds since the first knock; zero if `now` is earlier (a clock that
    /// stepped back), matching [`Millis::since`].
    pub(super) fn age_ms(self, now: Millis) -> u32 {
        // Truncation is intended: see MAX_AGE_MS for why the wrapping difference is exact.
        let d = (now.0 as u32).wrapping_sub(self.started);
        if d > i32::MAX as u32 {
            0
        } else {
            d
        }
    }
}

/// Where a lookup found a key's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loc {
    /// `current` has a slot (live or dead) for the key.
    Current,
    /// `previous` has a live slot for the key.
    Previous,
    /// Neither generation has a slot.
    Nowhere,
}

#[derive(Debug, Default)]
struct Generation {
    map: HashMap<Key, Slot>,
    /// Slots with `stage != 0`.
    live: usize,
    /// When this generation became `current`.
    born: Millis,
    /// Time of the latest write of a live attempt; every start time is `<=` this.
    last_write: Millis,
}

/// The two-generation attempt store. See the module docs.
#[derive(Debug)]
pub(super) struct Table {
    current: Generation,
    previous: Generation,
    half: usize,
    max_age_ms: u64,
}

impl Table {
    /// `half >= 1` slots per generation; `max_age_ms` is the longest door timeout.
    pub(super) fn new(half: usize, max_age_ms: u64) -> Table {
        Table { current: Generation::default(), previous: Generation::default(), half, max_age_ms }
    }

    /// Free generations whose attempts have all expired, and retire `current` once
    /// it is old, where "old" is more than the longest timeout plus `slack_ms`. O(1)
    /// apart from the deallocation.
    ///
    /// Housekeeping passes no slack, to give memory back promptly. The packet path
    /// passes one timeout's worth, so that a source knocking again soon after its
    /// attempt expired usually still gets its `TimedOut` reported.
    pub(super) fn tick(&mut self, now: Millis, slack_ms: u64) {
        let old = self.max_age_ms.saturating_add(slack_ms);
        let stale = |g: &Generation| now.0.saturating_sub(g.last_write.0) > old;
        if self.previous.map.capacity() != 0 && (self.previous.map.is_empty() || stale(&self.previous)) {
            self.previous = Generation::default();
        }
        if !self.current.map.is_empty() {
            if stale(&self.current) {
                self.current = Generation::default();
            } else if now.0.saturating_sub(self.current.born.0) > old {
                // Everything in `previous` was written before `current.born`, more
                // than the longest timeout ago, so it has all expired: dropping it
                // loses nothing.
                self.previous = std::mem::take(&mut self.current);
            }
        }
    }

    /// The longest door timeout, in ms.
    pub(super) fn max_age_ms(&self) -> u64 {
        self.max_age_ms
    }

    /// Find the live attempt for `key`, if any, and where its slot is.
    pub(super) fn get(&self, key: &Key) -> (Loc, Option<Attempt>) {
        if let Some(s) = self.current.map.get(key) {
            return (Loc::Current, live(s));
        }
        match self.previous.map.get(key) {
            Some(s) => (Loc::Previous, live(s)),
            None => (Loc::Nowhere, None),
        }
    }

    /// End the attempt for `key` found at `loc`.
    pub(super) fn forget(&mut self, key: &Key, loc: Loc) {
        match loc {
            Loc::Current => {
                if let Some(s) = self.current.map.get_mut(key) {
                    if s.stage != 0 {
                        s.stage = 0;
                        self.current.live -= 1;
                    }
                }
            }
            Loc::Previous => {
                if let Some(s) = self.previous.map.remove(key) {
                    if s.stage != 0 {
                        self.previous.live -= 1;
                    }
                }
            }
            Loc::Nowhere => {}
        }
    }

    /// Store `attempt` for `key` in `current`, whose slot for it was found at `loc`
    /// by [`Table::get`] (with no writes since). May evict `previous`.
    pub(super) fn put(&mut self, key: Key, loc: Loc, attempt: Attempt, now: Millis) {
        let slot = Slot { started: attempt.started.to_le_bytes(), stage: attempt.stage };
        debug_assert!(slot.stage != 0);
        if loc == Loc::Current {
            if let Some(s) = self.current.map.get_mut(&key) {
                if s.stage == 0 {
                    self.current.live += 1;
                }
                *s = slot;
                self.current.last_write = now;
                return;
            }
        }
        if loc == Loc::Previous {
            self.forget(&key, Loc::Previous);
        }
        if self.current.map.len() >= self.half {
            // Eviction: see the module docs.
            self.previous = std::mem::take(&mut self.current);
        }
        if self.current.map.is_empty() {
            if self.current.map.capacity() == 0 {
                self.current.map = HashMap::with_capacity(self.half);
            }
            self.current.born = now;
        }
        self.current.map.insert(key, slot);
        self.current.live += 1;
        self.current.last_write = now;
    }

    /// End every attempt on `door`. O(slots held); for configuration changes only.
    pub(super) fn forget_door(&mut self, door: u16) {
        let mut ended = 0;
        for (k, s) in self.current.map.iter_mut() {
            // Mark rather than remove, to keep `current` free of tombstones.
            if k.door() == door && s.stage != 0 {
                s.stage = 0;
                ended += 1;
            }
        }
        self.current.live -= ended;
        let mut ended = 0;
        self.previous.map.retain(|k, s| {
            let keep = k.door() != door;
            if !keep && s.stage != 0 {
                ended += 1;
            }
            keep
        });
        self.previous.live -= ended;
    }

    /// Live attempts held (including expired ones not yet noticed).
    pub(super) fn live(&self) -> usize {
        self.current.live + self.previous.live
    }

    /// Slots occupied, live or dead. Never exceeds `2 * half`.
    pub(super) fn slots(&self) -> usize {
        self.current.map.len() + self.previous.map.len()
    }

    /// Estimated bytes currently allocated for both generations.
    pub(super) fn allocated_bytes(&self) -> usize {
        table_bytes_for_capacity(self.current.map.capacity())
            + table_bytes_for_capacity(self.previous.map.capacity())
    }

    /// Upper bound on bytes the two generations can ever allocate.
    pub(super) fn bound_bytes(&self) -> usize {
        2 * table_bytes(buckets_for(self.half))
    }
}

fn live(s: &Slot) -> Option<Attempt> {
    (s.stage != 0).then(|| Attempt { stage: s.stage, started: u32::from_le_bytes(s.started) })
}

/// Bytes one bucket costs: the `(Key, Slot)` pair plus hashbrown's control byte.
pub(super) const BUCKET_BYTES: usize = size_of::<(Key, Slot)>() + 1;

/// Buckets hashbrown allocates for `with_capacity(n)`, rounded up: it keeps the load
/// factor at most 7/8 and uses a power of two, with a 16-bucket floor for small n.
/// (Checked against the real `HashMap` in the tests.)
pub(super) fn buckets_for(n: usize) -> usize {
    if n < 15 {
        16
    } else {
        (n.saturating_mul(8) / 7).checked_next_power_of_two().unwrap_or(usize::MAX)
    }
}

/// Bytes for a table of `buckets` buckets: data, control bytes, plus one SIMD group
/// of trailing control bytes and alignment slack (32 bytes in all).
fn table_bytes(buckets: usize) -> usize {
    buckets.saturating_mul(BUCKET_BYTES).saturating_add(32)
}

fn table_bytes_for_capacity(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        // hashbrown reports buckets * 7/8 (or buckets - 1 when small).
        table_bytes((capacity + 1).next_power_of_two())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_23_bytes_plus_control_byte() {
        assert_eq!(size_of::<(Key, Slot)>(), 23);
        assert_eq!(BUCKET_BYTES, 24);
    }

    #[test]
    fn bucket_estimate_bounds_the_real_hashmap() {
        for n in (1..2_000).chain([50_000, 500_000, 917_504, 917_505]) {
            let real = HashMap::<Key, Slot>::with_capacity(n).capacity();
            assert!(real >= n);
            assert!((real + 1).next_power_of_two() <= buckets_for(n), "n={n} real={real}");
        }
    }

    #[test]
    fn full_current_rotates_without_growing() {
        let mut t = Table::new(100, 1_000);
        let cap = {
            t.put(Key::new([0; 16], 0), Loc::Nowhere, Attempt { stage: 1, started: 0 }, Millis(0));
            t.current.map.capacity()
        };
        for i in 1..1_000u32 {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&i.to_be_bytes());
            let k = Key::new(a, 0);
            let (loc, _) = t.get(&k);
            t.put(k, loc, Attempt { stage: 1, started: 0 }, Millis(0));
            assert!(t.current.map.len() <= 100 && t.previous.map.len() <= 100);
            assert_eq!(t.current.map.capacity(), cap, "current must never grow");
        }
    }
}
