//! knockd drop-in glue for the [`Engine`] (issue 3), kept out of `engine.rs` so the
//! packet path there stays readable:
//! - start/stop commands of a door are handed to the command driver ([`crate::actions`]);
//! - one-time sequences are consumed and the next one armed ([`crate::actions::onetime`]);
//! - grants of drivers without kernel expiry (iptables, none) are closed by the daemon.
//!   Normally the grant store's scheduler does that for every grant, whatever made it
//!   ([`crate::store`]). Only when there is no store (it could not be opened) does the
//!   engine keep its own min-heap of deadlines, checked by [`Engine::expire`] from the
//!   capture loop, so a hole still closes on time. Exactly one of the two runs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

use portcullis_proto::knock::Tracker;
use portcullis_proto::Service;

use super::Engine;
use crate::actions::{onetime, ActionsHandle, Queued};
use crate::config::Door;
use crate::firewall::{FirewallError, Grant};

/// Engine state added for the knockd drop-in.
#[derive(Debug, Default)]
pub(super) struct Ext {
    actions: Option<ActionsHandle>,
    /// (deadline, grant); stale entries (refreshed grants) are skipped when popped.
    heap: BinaryHeap<Reverse<(SystemTime, IpAddr, Service)>>,
    deadlines: HashMap<(IpAddr, Service), SystemTime>,
}

/// The sequence to give the tracker for `d`: a disabled one-time door (file used up)
/// gets a placeholder that [`disable_exhausted`] removes right after construction.
pub(super) fn tracker_sequence(d: &Door) -> Vec<Service> {
    if d.sequence.is_empty() {
        vec![Service::tcp(1)]
    } else {
        d.sequence.clone()
    }
}

/// Disable the doors of `tracker` (config indexes `doors`) whose one-time file is used up.
pub(super) fn disable_exhausted(tracker: &mut Tracker, doors: &[usize], config: &[Door]) {
    for (ti, &ci) in doors.iter().enumerate() {
        if config[ci].sequence.is_empty() {
            let _ = tracker.set_sequence(ti, None);
        }
    }
}

impl Engine {
    /// Hand start/stop commands to this command driver (without one, doors with
    /// commands only log that they would run them).
    pub fn set_actions(&mut self, actions: ActionsHandle) {
        self.ext.actions = Some(actions);
    }

    /// Schedule daemon-side expiry for grants the driver already holds (after `setup`
    /// at start). Grants whose time passed while we were down are closed at once.
    pub fn adopt_live_grants(&mut self, wall: SystemTime) -> Result<usize, FirewallError> {
        if !self.engine_expires() {
            return Ok(0);
        }
        let live = self.granter.live()?;
        for g in &live {
            let left = g.remaining.unwrap_or_default();
            self.schedule(g.addr, g.service, wall + left);
        }
        self.expire(wall);
        Ok(live.len())
    }

    /// Whether the engine itself must close grants at expiry: the driver does not, and
    /// there is no store scheduler to do it.
    fn engine_expires(&self) -> bool {
        !self.granter.kernel_expiry() && self.granter.store().is_err()
    }

    pub(super) fn schedule_expiry(&mut self, grants: &[Grant], wall: SystemTime) {
        if !self.engine_expires() {
            return;
        }
        for g in grants {
            self.schedule(g.addr, g.service, wall + g.timeout);
        }
    }

    fn schedule(&mut self, addr: IpAddr, service: Service, at: SystemTime) {
        self.ext.deadlines.insert((addr, service), at);
        self.ext.heap.push(Reverse((at, addr, service)));
    }

    /// Close daemon-expired grants whose deadline is at or before `wall`. Cheap when
    /// nothing is due (one heap peek): call it on every loop turn.
    pub fn expire(&mut self, wall: SystemTime) {
        let mut due = Vec::new();
        while let Some(Reverse((at, addr, service))) = self.ext.heap.peek().copied() {
            if at > wall {
                break;
            }
            self.ext.heap.pop();
            if self.ext.deadlines.get(&(addr, service)) == Some(&at) {
                self.ext.deadlines.remove(&(addr, service));
                due.push((addr, service));
            }
        }
        if due.is_empty() {
            return;
        }
        match self.granter.with_driver(|d| d.revoke(&due)) {
            Ok(()) => {
                for (addr, service) in &due {
                    tracing::info!("{addr}: closed {service} (expired) via {}", self.granter.driver_name());
                }
            }
            Err(e) => {
                // Retry soon rather than leave a hole open.
                tracing::error!("closing {} expired grant(s) FAILED: {e}; retrying", due.len());
                for (addr, service) in due {
                    self.schedule(addr, service, wall + std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// After a completed sequence: run the door's commands and arm its next one-time
    /// sequence. `log` says whether the grant lines are within the log budget.
    pub(super) fn after_open(&mut self, src: IpAddr, door: usize, wall: SystemTime, log: bool) {
        let d = &self.doors[door];
        let name = d.name.clone();
        if let Some(cmds) = &d.commands {
            match self.ext.actions.as_ref().map(|a| a.open(&name, src, cmds, wall)) {
                Some(Queued::Yes) => {
                    if d.open.is_empty() {
                        self.stats.opened += 1;
                    }
                    if log {
                        tracing::info!(
                            "{src}: {name}: running start command; stop command in {}s",
                            cmds.cmd_timeout.as_secs()
                        );
                    }
                }
                Some(Queued::Nothing) => {
                    if log {
                        tracing::info!("{src}: {name}: no start command for this address family");
                    }
                }
                Some(Queued::Full) => {
                    self.stats.grant_failures += 1;
                    tracing::error!("{src}: {name}: command queue full (flood?); start command NOT run");
                }
                None => tracing::warn!("{src}: {name}: commands are not enabled in this mode; nothing run"),
            }
        }
        let Some(ot) = self.doors[door].one_time.clone() else { return };
        let Some((gi, ti)) = self
            .groups
            .iter()
            .enumerate()
            .find_map(|(gi, g)| g.doors.iter().position(|&c| c == door).map(|ti| (gi, ti)))
        else {
            return;
        };
        let used = self.groups[gi].tracker.doors()[ti].sequence.clone();
        let next = match onetime::consume(&ot.path, &used) {
            Ok(next) => next,
            Err(e) => {
                // Fail closed: a sequence that could not be marked used must not be replayable.
                tracing::error!("{name}: one-time sequences: {e}; door disabled");
                None
            }
        };
        let armed = next.is_some();
        if let Err(e) = self.groups[gi].tracker.set_sequence(ti, next) {
            tracing::error!("{name}: next one-time sequence refused: {e:?}; door disabled");
            let _ = self.groups[gi].tracker.set_sequence(ti, None);
        } else if armed {
            tracing::info!("{name}: one-time sequence used; next sequence from {} armed", ot.path.display());
        } else {
            tracing::warn!("{name}: one-time sequences in {} used up; door disabled", ot.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config;
    use crate::firewall::none::NoFirewall;

    #[test]
    fn daemon_side_expiry_closes_grants_and_refresh_moves_the_deadline() {
        let c = config::parse(
            "[[door]]\nname='a'\nsequence=[7000, 9000, 8000]\nopen=['tcp/22']\nopen_for=30\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut e = Engine::new(&c, Box::new(NoFirewall::default())).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let grants = [Grant { addr: ip, service: Service::tcp(22), timeout: Duration::from_secs(30) }];
        e.granter().with_driver(|d| d.grant(&grants)).unwrap();
        e.schedule_expiry(&grants, t0);
        e.schedule_expiry(&grants, t0 + Duration::from_secs(10)); // a repeat knock
        e.expire(t0 + Duration::from_secs(31));
        assert_eq!(e.granter().live().unwrap().len(), 1, "the refreshed deadline counts");
        e.expire(t0 + Duration::from_secs(40));
        assert!(e.granter().live().unwrap().is_empty());
        // Grants found at start are adopted with their remaining time.
        e.granter().with_driver(|d| d.grant(&grants)).unwrap();
        assert_eq!(e.adopt_live_grants(t0).unwrap(), 1);
        e.expire(t0 + Duration::from_secs(29));
        assert_eq!(e.granter().live().unwrap().len(), 1);
        e.expire(t0 + Duration::from_secs(30));
        assert!(e.granter().live().unwrap().is_empty());
    }

    #[test]
    fn with_a_grant_store_only_the_store_schedules_expiry() {
        let c = config::parse(
            "[[door]]\nname='a'\nsequence=[7000, 9000, 8000]\nopen=['tcp/22']\nopen_for=30\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plan = crate::daemon::plan_for(&c);
        let granter = crate::grants::start(dir.path(), &plan, Box::new(NoFirewall::default())).unwrap();
        assert!(granter.store().is_ok() && !granter.kernel_expiry());
        let mut e = Engine::with_granter(&c, granter).unwrap();
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        e.grant(ip, &[Service::tcp(22)], Duration::from_secs(30)).unwrap();
        assert!(e.ext.heap.is_empty(), "the store's scheduler closes it; the engine must not as well");
        assert_eq!(e.adopt_live_grants(SystemTime::now()).unwrap(), 0);
        // Without a store the engine is the only scheduler.
        let mut e = Engine::new(&c, Box::new(NoFirewall::default())).unwrap();
        e.grant(ip, &[Service::tcp(22)], Duration::from_secs(30)).unwrap();
        assert_eq!(e.ext.heap.len(), 1);
    }
}
