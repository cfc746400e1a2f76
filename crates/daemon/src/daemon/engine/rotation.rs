//! Rotating doors in the engine. Each rotating door is two tracker doors ("slots"):
//! slot 0 holds the even steps' sequence, slot 1 the odd ones', so the current and the
//! previous step are accepted at once. At a step boundary only the slot the new step
//! takes over is re-armed (its stale progress forgotten); knocks in progress on the
//! previous step carry on. A completed sequence is burnt for its step: the first source
//! to complete it owns it, and the same sequence completed by any other source is
//! refused, so a sniffed sequence cannot be replayed from elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Engine;

/// Which step a tracker door holds, for a rotating door's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// 0: even steps, 1: odd steps.
    pub parity: u64,
    /// The step whose sequence the tracker door holds now (`None` until first armed;
    /// the tracker door is disabled until then).
    pub step: Option<u64>,
}

/// Sequences completed per (config door, step), with the source that completed them.
#[derive(Debug, Default)]
pub(super) struct Burnt {
    owners: HashMap<(usize, u64), IpAddr>,
}

/// What to do with a completed rotating sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Burn {
    /// First completion of this step's sequence (now burnt for `src`), or `src` again.
    Grant,
    /// Another source completed it first in this step: a replay.
    Replay(IpAddr),
}

impl Burnt {
    /// Record `src` completing door `door`'s sequence of `step`.
    pub fn complete(&mut self, door: usize, step: u64, src: IpAddr) -> Burn {
        match self.owners.entry((door, step)) {
            std::collections::hash_map::Entry::Occupied(e) if *e.get() != src => Burn::Replay(*e.get()),
            std::collections::hash_map::Entry::Occupied(_) => Burn::Grant,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(src);
                Burn::Grant
            }
        }
    }

    /// Forget door `door`'s steps older than `oldest` (no longer accepted anyway).
    pub fn prune(&mut self, door: usize, oldest: u64) {
        self.owners.retain(|&(d, s), _| d != door || s >= oldest);
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.owners.len()
    }
}

impl Engine {
    /// Follow the clock: arm each rotating slot with the step it must hold at Unix time
    /// `unix` (the current step if its parity matches, else the previous one). Returns
    /// true if any sequence changed, i.e. the capture filter must be rebuilt. Cheap
    /// when no boundary has passed since the last call.
    pub fn follow_rotation(&mut self, unix: u64) -> bool {
        if self.rotation_due.is_some_and(|due| unix < due) {
            return false;
        }
        let mut changed = false;
        let mut due: Option<u64> = None;
        for g in &mut self.groups {
            for ti in 0..g.doors.len() {
                let Some(slot) = g.slots[ti] else { continue };
                let ci = g.doors[ti];
                let Some(r) = self.doors[ci].rotating.as_ref() else { continue };
                let cur = r.rotation.step_at(unix);
                let want = if cur % 2 == slot.parity { Some(cur) } else { cur.checked_sub(1) };
                let next = r.rotation.step_start(cur + 1);
                due = Some(due.map_or(next, |d| d.min(next)));
                if slot.step == want {
                    continue;
                }
                let seq = want.map(|s| r.rotation.sequence(s));
                match g.tracker.set_sequence(ti, seq) {
                    Ok(()) => g.slots[ti] = Some(Slot { parity: slot.parity, step: want }),
                    Err(e) => {
                        // Fail closed: a slot that cannot take its sequence stays disabled.
                        tracing::error!(
                            "{}: rotating sequence refused: {e}; slot disabled",
                            self.doors[ci].name
                        );
                        let _ = g.tracker.set_sequence(ti, None);
                        g.slots[ti] = Some(Slot { parity: slot.parity, step: None });
                    }
                }
                self.burnt.prune(ci, cur.saturating_sub(1));
                changed = true;
            }
        }
        // No rotating door: never look again (the packet path stays O(1)).
        self.rotation_due = Some(due.unwrap_or(u64::MAX));
        if changed {
            self.rotation_generation += 1;
        }
        changed
    }

    /// After tracker door `ti` of group `gi` (config door `door`) opened for `src`:
    /// whether to grant. Fixed doors always; rotating doors unless the step's sequence
    /// was burnt by another source.
    pub(super) fn burn_check(&mut self, gi: usize, ti: usize, door: usize, src: IpAddr) -> bool {
        let Some(Slot { step: Some(step), .. }) = self.groups[gi].slots[ti] else {
            return true;
        };
        match self.burnt.complete(door, step, src) {
            Burn::Grant => true,
            Burn::Replay(owner) => {
                self.stats.knock_resets += 1;
                tracing::warn!(
                    "{src}: {}: sequence of step {step} already used by {owner}: refused (replayed sequence?)",
                    self.doors[door].name
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_burnt_for_every_other_source() {
        let mut b = Burnt::default();
        let (a, x): (IpAddr, IpAddr) = ("192.0.2.2".parse().unwrap(), "198.51.100.2".parse().unwrap());
        assert_eq!(b.complete(0, 10, a), Burn::Grant);
        assert_eq!(b.complete(0, 10, a), Burn::Grant, "the owner may knock again");
        assert_eq!(b.complete(0, 10, x), Burn::Replay(a));
        assert_eq!(b.complete(1, 10, x), Burn::Grant, "doors are independent");
        assert_eq!(b.complete(0, 11, x), Burn::Grant, "steps are independent");
        b.prune(0, 11);
        assert_eq!(b.len(), 2);
        assert_eq!(b.complete(0, 10, x), Burn::Grant, "pruned steps are forgotten (no longer accepted)");
    }
}
