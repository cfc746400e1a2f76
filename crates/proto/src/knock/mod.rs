//! The knock-sequence state machine.
//!
//! [`Tracker`] is fed one `(source, service, tcp flags, now)` per sniffed packet and
//! reports what happened through [`Event`]s. It does no I/O and reads no clock.
//!
//! # Semantics
//! A *door* ([`DoorSpec`]) is a sequence of 1..=32 knocks, a timeout and a TCP flag
//! filter. For every enabled door whose sequence contains the packet's service:
//! - a TCP packet whose flags fail the door's filter is ignored for that door (no
//!   progress, no reset). UDP has no flags;
//! - an attempt whose first knock was more than `timeout` ago is dead: the packet is
//!   handled as if there were no attempt. The death is reported once, as
//!   [`Event::TimedOut`], if the attempt is still held when the source next knocks on
//!   the door; [`Tracker::housekeeping`] may forget expired attempts silently first;
//! - the next expected knock advances the attempt ([`Event::Stage`]); the last one
//!   emits only [`Event::Open`] and forgets the attempt;
//! - an immediate repeat of the knock just accepted (a retransmitted SYN, a duplicate
//!   datagram) is ignored, unless it is itself the next expected knock;
//! - any other knock on one of the door's services ends the attempt
//!   ([`Event::Reset`]), so a scan cannot walk a sequence by hitting every port (but
//!   see below on ordered scans). If that knock is
//!   the door's first, a new attempt starts at once (`Stage 1` after the `Reset`);
//! - with no attempt, the door's first knock starts one; a 1-knock door opens at once.
//!
//! Sources are IPv4 or IPv6; an IPv4-mapped IPv6 address is the same source as the
//! IPv4 address. Doors progress independently even when they share knocks.
//!
//! Resets stop a scan from walking a sequence only if the scan meets the door's ports
//! out of order: ports outside the door are ignored, so an ascending scan opens a door
//! whose ports ascend (knockd behaves the same). [`DoorSpec::sweep_walkable`] finds
//! such doors so the daemon can warn about them.
//!
//! # Invariants and costs
//! - Per packet, work is bounded by the configuration: one lookup in a precomputed
//!   `service -> doors` index, then a few keyed-hash operations (at most five) per
//!   door using that service. Nothing scales with the number of tracked sources (unlike knockd, which
//!   walks every attempt on every packet).
//! - A packet that matches no door is rejected by the index lookup: no event, no
//!   allocation, no state change.
//! - State is keyed by `(source, door)` in `std` `HashMap`s with `RandomState`
//!   (SipHash with a random key): the attacker chooses source addresses, so an unkeyed
//!   hash would let them force collisions.
//! - At most `capacity` `(source, door)` attempts are held; memory is bounded by
//!   [`Tracker::memory_bound_bytes`]. See [`Tracker::new`] for the eviction policy and
//!   the per-attempt memory figure.
//! - Nothing here panics on packet input, and there is no `unsafe`.
//!
//! The caller should rate-limit what it does on [`Event::Open`]: a 1-knock door opens
//! on every matching packet.

mod table;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::{FlagFilter, Millis, Proto, Service, TcpFlags};

use table::{Attempt, Key, Loc, Table};

/// Most knocks a door's sequence may have (knockd's limit).
pub const MAX_KNOCKS: usize = 32;

/// Longest accepted sequence timeout: one day. Start times are stored in 32 bits to
/// keep attempts small, which is exact only for bounded timeouts.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(table::MAX_AGE_MS);

/// Most doors a [`Tracker`] accepts: door ids are stored as `u16`.
pub const MAX_DOORS: usize = u16::MAX as usize;

/// Largest accepted `capacity` (2^28 attempts, about 13 GiB of tables). A sanity
/// limit so that a configuration typo is an error rather than an allocation abort.
pub const MAX_CAPACITY: usize = 1 << 28;

/// Index of a door in the `Vec<DoorSpec>` given to [`Tracker::new`].
pub type DoorId = usize;

/// One knock sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorSpec {
    /// The knocks, in order: 1..=32 of them. Empty means the door is disabled (only
    /// ever after [`Tracker::set_sequence`] with `None`).
    pub sequence: Vec<Service>,
    /// Longest time from the first knock to the last, inclusive.
    pub timeout: Duration,
    /// Flags a TCP knock must carry to count at all.
    pub flags: FlagFilter,
}

impl DoorSpec {
    /// Whether a plain port scan can open this door: its knocks all use one protocol
    /// and their ports strictly rise or strictly fall (this includes every 1-knock
    /// door and every 2-knock door on distinct ports). A scan in that order hits the
    /// door's ports in sequence order, and ports outside the door are ignored, so no
    /// reset happens. A scan in random order opens an `n`-knock door on distinct
    /// ports with probability about `1/n!`. The daemon should warn about such doors;
    /// refusing them would reject valid knockd configurations.
    pub fn sweep_walkable(&self) -> bool {
        let seq = &self.sequence;
        let one_proto = seq.windows(2).all(|w| w[0].proto == w[1].proto);
        let rising = seq.windows(2).all(|w| w[0].port < w[1].port);
        let falling = seq.windows(2).all(|w| w[0].port > w[1].port);
        !seq.is_empty() && one_proto && (rising || falling)
    }
}

/// Something a packet did to one source's progress on one door.
///
/// `stage` and `at_stage` count knocks completed (1 = the first knock was accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The source completed `stage` of the door's `of` knocks (`stage < of`).
    Stage {
        /// The door.
        door: DoorId,
        /// Knocks completed, `1..of`.
        stage: usize,
        /// Length of the door's sequence.
        of: usize,
    },
    /// A knock on one of the door's services that was not the expected one ended the
    /// attempt.
    Reset {
        /// The door.
        door: DoorId,
        /// Knocks the attempt had completed.
        at_stage: usize,
    },
    /// The attempt's timeout had passed when the source knocked again.
    TimedOut {
        /// The door.
        door: DoorId,
        /// Knocks the attempt had completed.
        at_stage: usize,
    },
    /// The source completed the whole sequence. Its attempt is forgotten.
    Open {
        /// The door.
        door: DoorId,
    },
}

/// Why a door set or a tracker configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// A door has no knocks.
    EmptySequence {
        /// The door.
        door: DoorId,
    },
    /// A door has more than [`MAX_KNOCKS`] knocks.
    SequenceTooLong {
        /// The door.
        door: DoorId,
        /// Its length.
        len: usize,
    },
    /// A door's timeout is under 1 ms or over [`MAX_TIMEOUT`].
    BadTimeout {
        /// The door.
        door: DoorId,
    },
    /// More than [`MAX_DOORS`] doors.
    TooManyDoors,
    /// `capacity` is below 2 or above [`MAX_CAPACITY`].
    BadCapacity,
    /// No door has this id.
    NoSuchDoor {
        /// The id asked for.
        door: DoorId,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SpecError::EmptySequence { door } => write!(f, "door {door}: the sequence is empty"),
            SpecError::SequenceTooLong { door, len } => {
                write!(f, "door {door}: {len} knocks, at most {MAX_KNOCKS} allowed")
            }
            SpecError::BadTimeout { door } => {
                write!(f, "door {door}: the timeout must be from 1 ms to 24 hours")
            }
            SpecError::TooManyDoors => write!(f, "at most {MAX_DOORS} doors are allowed"),
            SpecError::BadCapacity => {
                write!(f, "the attempt capacity must be from 2 to {MAX_CAPACITY}")
            }
            SpecError::NoSuchDoor { door } => write!(f, "there is no door {door}"),
        }
    }
}

impl std::error::Error for SpecError {}

/// Tracks every source's progress on every door. See the module docs.
#[derive(Debug)]
pub struct Tracker {
    doors: Vec<DoorSpec>,
    /// `doors[i].timeout` in ms, precomputed for the packet path.
    timeouts_ms: Vec<u32>,
    /// Which enabled doors use a service, each door once, in id order.
    index: HashMap<Service, Box<[u16]>>,
    table: Table,
    capacity: usize,
}

impl Tracker {
    /// A tracker for `doors`, holding at most `capacity` attempts.
    ///
    /// # Capacity and eviction
    /// `capacity` counts `(source, door)` attempts, not sources: one source knocking
    /// on three doors holds three. Attempts live in two generations of `capacity / 2`
    /// each. New attempts go into the current one; when it is full, the older
    /// generation is forgotten wholesale and the current one becomes the older. An
    /// attempt that progresses moves back to the current generation. In words: **when
    /// full, the attempts that have been idle longest are forgotten first; an attempt
    /// survives at least `capacity / 2` newer attempts by others after its last
    /// progress.** Eviction is O(1) amortised (one deallocation, plus initialising the
    /// next table's control bytes once per `capacity / 2` insertions). Independently,
    /// a generation whose newest attempt is older than the longest door timeout holds
    /// only expired attempts and is freed by [`Tracker::housekeeping`], so memory
    /// returns to zero within a timeout after a flood. (Packets free such generations
    /// only after twice that, so a quick retry still sees its `TimedOut`.)
    ///
    /// # Memory
    /// An attempt is a 23-byte bucket (16-byte address + 2-byte door id + 4-byte start
    /// time + 1-byte stage, all alignment 1) plus hashbrown's 1 control byte: 24
    /// bytes. hashbrown keeps at most 7/8 of the buckets full and rounds the bucket
    /// count up to a power of two, so a generation of `capacity / 2` attempts
    /// allocates between 8/7 and 16/7 buckets per attempt. At the daemon default of
    /// 1,000,000 that is 2 × 1,048,576 buckets × 24 B ≈ 50.3 MB, **≈ 50 bytes per
    /// attempt** at full capacity. The best case is ≈ 27 B, when `capacity / 2` is
    /// 7/8 of a power of two: a capacity of 1,835,008 costs the same 50.3 MB. Tables
    /// are allocated on first use and only their control bytes are written up front
    /// (the data pages of a large allocation stay untouched until used), so resident
    /// memory grows with actual use. [`Tracker::memory_bound_bytes`] computes the
    /// bound for a tracker.
    ///
    /// # Errors
    /// Any door with an empty or over-long sequence or a timeout outside 1 ms..=24 h,
    /// more than [`MAX_DOORS`] doors, or `capacity` outside `2..=`[`MAX_CAPACITY`].
    pub fn new(doors: Vec<DoorSpec>, capacity: usize) -> Result<Tracker, SpecError> {
        if doors.len() > MAX_DOORS {
            return Err(SpecError::TooManyDoors);
        }
        if !(2..=MAX_CAPACITY).contains(&capacity) {
            return Err(SpecError::BadCapacity);
        }
        let mut timeouts_ms = Vec::with_capacity(doors.len());
        for (door, spec) in doors.iter().enumerate() {
            check_sequence(door, &spec.sequence)?;
            let ms = spec.timeout.as_millis();
            if ms == 0 || spec.timeout > MAX_TIMEOUT {
                return Err(SpecError::BadTimeout { door });
            }
            timeouts_ms.push(u32::try_from(ms).map_err(|_| SpecError::BadTimeout { door })?);
        }
        let max_age_ms = timeouts_ms.iter().copied().max().map_or(0, u64::from);
        let mut t = Tracker {
            doors,
            timeouts_ms,
            index: HashMap::new(),
            table: Table::new(capacity / 2, max_age_ms),
            capacity,
        };
        t.rebuild_index();
        Ok(t)
    }

    /// Feed one packet: `src` sent to `knock` with TCP `flags` (ignored for UDP) at
    /// `now`. Events go to `emit`, for doors in id order.
    pub fn observe(
        &mut self,
        src: IpAddr,
        knock: Service,
        flags: TcpFlags,
        now: Millis,
        emit: &mut impl FnMut(Event),
    ) {
        let Some(doors) = self.index.get(&knock) else {
            return;
        };
        self.table.tick(now, self.table.max_age_ms());
        let addr = canonical(src);
        for &door in doors.iter() {
            let id = DoorId::from(door);
            let (Some(spec), Some(&timeout)) = (self.doors.get(id), self.timeouts_ms.get(id)) else {
                continue;
            };
            if knock.proto == Proto::Tcp && !spec.flags.matches(flags) {
                continue;
            }
            step(&mut self.table, Key::new(addr, door), id, spec, timeout, knock, now, emit);
        }
    }

    /// Free memory held only by expired attempts. Call about once a second; O(1)
    /// apart from deallocation.
    pub fn housekeeping(&mut self, now: Millis) {
        self.table.tick(now, 0);
    }

    /// Replace a door's sequence (`Some`, e.g. the next one-time sequence) or disable
    /// the door (`None`). Every source's progress on that door is forgotten.
    ///
    /// # Cost
    /// O(attempts held), since progress must be found to be forgotten. This is a
    /// configuration change, not packet handling: call it on reload or after an
    /// [`Event::Open`] of a one-time door, not per packet.
    ///
    /// # Errors
    /// [`SpecError::NoSuchDoor`], or the sequence errors of [`Tracker::new`].
    pub fn set_sequence(&mut self, door: DoorId, sequence: Option<Vec<Service>>) -> Result<(), SpecError> {
        let id = u16::try_from(door).map_err(|_| SpecError::NoSuchDoor { door })?;
        if door >= self.doors.len() {
            return Err(SpecError::NoSuchDoor { door });
        }
        if let Some(seq) = &sequence {
            check_sequence(door, seq)?;
        }
        self.table.forget_door(id);
        if let Some(spec) = self.doors.get_mut(door) {
            spec.sequence = sequence.unwrap_or_default();
        }
        self.rebuild_index();
        Ok(())
    }

    /// Attempts currently held, counted per `(source, door)`. Includes attempts that
    /// have timed out but not yet been noticed or aged out. Never exceeds `capacity`.
    pub fn len(&self) -> usize {
        self.table.live()
    }

    /// Whether no attempt is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Table slots in use: [`Tracker::len`] plus slots of attempts that ended but
    /// whose generation has not been freed yet. Never exceeds `capacity`.
    pub fn slots(&self) -> usize {
        self.table.slots()
    }

    /// The `capacity` given to [`Tracker::new`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Upper bound on the bytes the attempt tables can ever allocate (both
    /// generations full). Excludes the small, configuration-sized door index.
    pub fn memory_bound_bytes(&self) -> usize {
        self.table.bound_bytes()
    }

    /// Estimated bytes the attempt tables have allocated right now.
    pub fn memory_allocated_bytes(&self) -> usize {
        self.table.allocated_bytes()
    }

    /// The doors, indexed by [`DoorId`]. A disabled door has an empty `sequence`.
    pub fn doors(&self) -> &[DoorSpec] {
        &self.doors
    }

    /// Whether any enabled door uses `knock`: packets for anything else are ignored.
    pub fn wants(&self, knock: Service) -> bool {
        self.index.contains_key(&knock)
    }

    fn rebuild_index(&mut self) {
        let mut index: HashMap<Service, Vec<u16>> = HashMap::new();
        for (door, spec) in self.doors.iter().enumerate() {
            // `new` caps the door count at u16::MAX, so this never skips.
            let Ok(id) = u16::try_from(door) else {
                continue;
            };
            for &svc in &spec.sequence {
                let ids = index.entry(svc).or_default();
                // A door lists each service once even if its sequence repeats it,
                // so a packet is processed once per door.
                if ids.last() != Some(&id) {
                    ids.push(id);
                }
            }
        }
        self.index = index.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect();
    }
}

fn check_sequence(door: DoorId, seq: &[Service]) -> Result<(), SpecError> {
    match seq.len() {
        0 => Err(SpecError::EmptySequence { door }),
        len if len > MAX_KNOCKS => Err(SpecError::SequenceTooLong { door, len }),
        _ => Ok(()),
    }
}

/// IPv4 as IPv4-mapped IPv6, so both spellings of an IPv4 source share state.
fn canonical(src: IpAddr) -> [u8; 16] {
    match src {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Apply one knock (already known to pass `spec`'s flag filter and to be one of its
/// services) to one `(source, door)`.
#[allow(clippy::too_many_arguments)] // a private step function; a struct would only rename them
fn step(
    table: &mut Table,
    key: Key,
    door: DoorId,
    spec: &DoorSpec,
    timeout_ms: u32,
    knock: Service,
    now: Millis,
    emit: &mut impl FnMut(Event),
) {
    let seq = &spec.sequence;
    let of = seq.len();
    let is_first = seq.first() == Some(&knock);
    let (loc, found) = table.get(&key);
    let current = match found {
        Some(a) if a.age_ms(now) > timeout_ms => {
            table.forget(&key, loc);
            emit(Event::TimedOut { door, at_stage: usize::from(a.stage) });
            None
        }
        other => other,
    };
    match current {
        Some(a) => {
            let done = usize::from(a.stage);
            if seq.get(done) == Some(&knock) {
                if done + 1 == of {
                    table.forget(&key, loc);
                    emit(Event::Open { door });
                } else {
                    table.put(key, loc, Attempt { stage: a.stage + 1, ..a }, now);
                    emit(Event::Stage { door, stage: done + 1, of });
                }
            } else if done.checked_sub(1).and_then(|i| seq.get(i)) == Some(&knock) {
                // Retransmitted SYN or duplicate datagram of the knock just accepted.
            } else {
                table.forget(&key, loc);
                emit(Event::Reset { door, at_stage: done });
                if is_first {
                    start(table, key, loc, of, door, now, emit);
                }
            }
        }
        None if is_first => start(table, key, loc, of, door, now, emit),
        // One of the door's later knocks with nothing to advance or reset.
        None => {}
    }
}

fn start(
    table: &mut Table,
    key: Key,
    loc: Loc,
    of: usize,
    door: DoorId,
    now: Millis,
    emit: &mut impl FnMut(Event),
) {
    if of == 1 {
        emit(Event::Open { door });
    } else {
        // Truncation is intended: start times wrap at 32 bits (see MAX_TIMEOUT).
        table.put(key, loc, Attempt { stage: 1, started: now.0 as u32 }, now);
        emit(Event::Stage { door, stage: 1, of });
    }
}
