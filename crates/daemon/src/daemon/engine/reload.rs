//! Switching a running engine to a new config (SIGHUP), see `daemon/reload.rs`.

use super::Engine;
use crate::daemon::reload::SpaUpdate;

impl Engine {
    /// Become the running engine in place of `old`: knock attempts in progress are kept
    /// for every door group (same target) whose doors are all unchanged, in the same
    /// order; counters, log budgets, the command runner and the SPA replay cache carry
    /// over. Returns how many door groups kept their attempts.
    pub fn take_over(&mut self, mut old: Engine, spa: SpaUpdate) -> usize {
        let mut kept = 0;
        for g in &mut self.groups {
            let same = old.groups.iter().position(|o| {
                o.target == g.target
                    && o.doors.len() == g.doors.len()
                    && o.doors.iter().zip(&g.doors).all(|(&oi, &ni)| old.doors[oi] == self.doors[ni])
            });
            if let Some(i) = same {
                std::mem::swap(&mut g.tracker, &mut old.groups[i].tracker);
                kept += 1;
            }
        }
        self.limiter = old.limiter;
        self.open_limiter = old.open_limiter;
        self.reported_suppressed = old.reported_suppressed;
        self.stats = old.stats;
        self.ext = old.ext;
        self.spa = match spa {
            SpaUpdate::Off => None,
            SpaUpdate::Fresh(gate) => Some(*gate),
            SpaUpdate::Reconfigure(cfg) => old.spa.map(|mut gate| {
                gate.reconfigure(&cfg);
                gate
            }),
        };
        kept
    }
}
