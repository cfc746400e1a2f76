//! The knock engine: sniffed datagram in, log lines and firewall grants out.
//!
//! No sockets and no clock here: the caller passes the time, so every decision is
//! testable with [`crate::firewall::none::NoFirewall`]. Doors are grouped by their
//! `target` (knocks must be addressed to that IP) so the state machine itself never
//! needs to know destination addresses; almost every config has a single group.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_proto::knock::{DoorSpec, Event, Tracker};
use portcullis_proto::ratelimit::TokenBucket;
use portcullis_proto::wire::Datagram;
use portcullis_proto::{Millis, Proto, Service};

use crate::capture::LocalView;
use crate::config::{Config, Door};
use crate::firewall::FirewallDriver;
use crate::grants::{Granter, OpenError, Origin, OriginKind};
use crate::spa::SpaGate;
use crate::stats::Stats;
use portcullis_proto::addr::canonical as fold;

mod door_actions;
mod refusals;
mod reload;

use refusals::{Failure, RefusalLog};
// fwknop stanzas: command cycles, NAT grants, fwknopd's log lines.
mod fwknop_grants;
mod rotation;
// SPA: screened on arrival, decided in slices.
mod spa;

struct Group {
    target: Option<IpAddr>,
    tracker: Tracker,
    /// Tracker door index → config door index (a rotating door has two tracker doors).
    doors: Vec<usize>,
    /// Tracker door index → the rotating slot it is, `None` for a fixed door.
    slots: Vec<Option<rotation::Slot>>,
}

/// Per-knock log lines per second, and their burst: a flood of spoofed first knocks
/// must not turn into a flood of log lines.
const LOG_PER_SEC: u32 = 100;
const LOG_BURST: u32 = 500;

/// Everything between a parsed packet and the firewall.
pub struct Engine {
    doors: Vec<Door>,
    groups: Vec<Group>,
    granter: Arc<Granter>,
    limiter: TokenBucket,
    /// Grant lines have their own, separate budget: a flood of knocks can never
    /// crowd them out, and a 1-knock door hit by a flood cannot flood the log.
    open_limiter: TokenBucket,
    reported_suppressed: u64,
    stats: Stats,
    spa: Option<SpaGate>,
    /// Door commands and one-time sequences, see `engine/door_actions.rs`.
    ext: door_actions::Ext,
    /// Opens refused or failed: budgeted lines and summaries.
    refusals: RefusalLog,
    fwknop: fwknop_grants::FwknopExt,
    /// Rotating doors: completed sequences per step, see `engine/rotation.rs`.
    burnt: rotation::Burnt,
    /// Unix time of the next step boundary of any rotating door (`None`: not armed yet).
    rotation_due: Option<u64>,
    /// Bumped whenever a rotating sequence changes (the capture filter follows).
    rotation_generation: u64,
    /// Fleet membership: fleet-scoped SPA grants are shared through it.
    fleet: Option<Arc<crate::fleet::node::Fleet>>,
    /// Screened SPA packets waiting for [`Engine::run_spa`]; `None`: decided at once.
    spa_backlog: Option<crate::spa::backlog::Backlog<spa::Waiting>>,
}

impl Engine {
    /// Build trackers for the configured doors, granting through `driver` without records
    /// (tests, dry runs). `max_tracked` is shared between target groups.
    pub fn new(config: &Config, driver: Box<dyn FirewallDriver>) -> anyhow::Result<Engine> {
        Engine::with_granter(config, Granter::unrecorded(driver)?)
    }

    /// Like [`Engine::new`], granting through the shared (recording) grant path.
    pub fn with_granter(config: &Config, granter: Arc<Granter>) -> anyhow::Result<Engine> {
        granter.set_limits(config.limits.clone());
        let mut targets: Vec<Option<IpAddr>> = Vec::new();
        for d in &config.doors {
            let t = d.target.map(fold);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let per_group = (config.daemon.max_tracked / targets.len().max(1)).max(2);
        let mut groups = Vec::with_capacity(targets.len());
        for target in targets {
            let mut doors = Vec::new();
            let mut slots = Vec::new();
            for i in (0..config.doors.len()).filter(|&i| config.doors[i].target.map(fold) == target) {
                if config.doors[i].rotating.is_some() {
                    // Two slots, disabled below until `follow_rotation` arms them.
                    for parity in [0, 1] {
                        doors.push(i);
                        slots.push(Some(rotation::Slot { parity, step: None }));
                    }
                } else {
                    doors.push(i);
                    slots.push(None);
                }
            }
            let specs = doors
                .iter()
                .map(|&i| {
                    let d = &config.doors[i];
                    DoorSpec {
                        sequence: door_actions::tracker_sequence(d),
                        timeout: d.seq_timeout,
                        flags: d.flags,
                    }
                })
                .collect();
            let mut tracker = Tracker::new(specs, per_group)
                .map_err(|e| anyhow::anyhow!("invalid door definition: {e:?}"))?;
            door_actions::disable_exhausted(&mut tracker, &doors, &config.doors);
            groups.push(Group { target, tracker, doors, slots });
        }
        Ok(Engine {
            doors: config.doors.clone(),
            groups,
            granter,
            limiter: TokenBucket::new(LOG_PER_SEC, LOG_BURST),
            open_limiter: TokenBucket::new(LOG_PER_SEC, LOG_BURST),
            reported_suppressed: 0,
            stats: Stats::default(),
            spa: None,
            ext: door_actions::Ext::default(),
            refusals: RefusalLog::default(),
            fwknop: fwknop_grants::FwknopExt::new(&config.daemon.firewall.iptables_chain),
            burnt: rotation::Burnt::default(),
            rotation_due: None,
            rotation_generation: 0,
            fleet: None,
            spa_backlog: None,
        })
    }

    /// Add single-packet authorization on the gate's UDP ports.
    pub fn with_fleet(mut self, fleet: Arc<crate::fleet::node::Fleet>) -> Engine {
        self.fleet = Some(fleet);
        self
    }

    /// Add the SPA gate.
    pub fn with_spa(mut self, gate: SpaGate) -> Engine {
        self.spa = Some(gate);
        self
    }

    /// The shared grant path (driver and store).
    pub fn granter(&self) -> &Arc<Granter> {
        &self.granter
    }

    /// Changes whenever a rotating door's sequences change (rebuild the capture filter).
    pub fn rotation_generation(&self) -> u64 {
        self.rotation_generation
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Add kernel-side capture drops to the counters (the capture loop reads them).
    pub fn count_capture_drops(&mut self, n: u64) {
        self.stats.capture_drops += n;
    }

    /// Handle one parsed datagram that arrived on `ifindex` at `now` (monotonic) /
    /// `wall` (for log timestamps of grant expiry).
    pub fn on_datagram(
        &mut self,
        view: &LocalView,
        ifindex: u32,
        d: &Datagram<'_>,
        now: Millis,
        wall: SystemTime,
    ) {
        self.stats.packets += 1;
        self.follow_rotation(wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        if view.ifindexes.as_ref().is_some_and(|s| !s.contains(&ifindex)) {
            return;
        }
        // The wire parser hands out canonical addresses.
        let (src, dst) = (d.src, d.dst);
        if d.proto == Proto::Udp && self.spa.as_ref().is_some_and(|g| g.is_spa_port(d.dst_port)) {
            if view.addrs.contains(&dst) {
                self.stats.for_us += 1;
                self.on_spa(src, Some(dst), d.dst_port, d.payload, now, wall);
            }
            return;
        }
        let knock = Service { proto: d.proto, port: d.dst_port };
        let mut counted = false;
        for gi in 0..self.groups.len() {
            let addressed = match self.groups[gi].target {
                Some(t) => t == dst,
                None => view.addrs.contains(&dst),
            };
            if !addressed {
                continue;
            }
            if !counted {
                self.stats.for_us += 1;
                counted = true;
            }
            let mut events: [Option<Event>; 8] = [None; 8];
            let mut overflow = Vec::new();
            let mut n = 0;
            self.groups[gi].tracker.observe(src, knock, d.flags, now, &mut |e| {
                if n < events.len() {
                    events[n] = Some(e);
                    n += 1;
                } else {
                    overflow.push(e);
                }
            });
            for e in events.into_iter().flatten().chain(overflow) {
                let ti = event_door(&e);
                let door = self.groups[gi].doors[ti];
                if matches!(e, Event::Open { .. }) && !self.burn_check(gi, ti, door, src) {
                    continue;
                }
                self.on_event(src, door, e, now, wall);
            }
        }
        self.report_suppressed();
    }

    fn on_event(&mut self, src: IpAddr, door: usize, e: Event, now: Millis, wall: SystemTime) {
        let name = &self.doors[door].name;
        match e {
            Event::Stage { stage, of, .. } => {
                if self.limiter.take(now) {
                    tracing::info!("{src}: {name}: Stage {stage} (of {of})");
                } else {
                    self.stats.suppressed_logs += 1;
                }
            }
            Event::Reset { at_stage, .. } => {
                self.stats.knock_resets += 1;
                if self.limiter.take(now) {
                    tracing::info!("{src}: {name}: sequence broken at stage {at_stage}, reset");
                } else {
                    self.stats.suppressed_logs += 1;
                }
            }
            Event::TimedOut { at_stage, .. } => {
                self.stats.knock_timeouts += 1;
                if self.limiter.take(now) {
                    tracing::info!("{src}: {name}: sequence timeout at stage {at_stage}");
                } else {
                    self.stats.suppressed_logs += 1;
                }
            }
            Event::Open { .. } => self.open(src, door, now, wall),
        }
    }

    fn open(&mut self, src: IpAddr, door: usize, now: Millis, wall: SystemTime) {
        let d = &self.doors[door];
        let n = d.rotating.as_ref().map_or(d.sequence.len(), |r| r.rotation.count());
        let (label, services, duration, fleet) = (d.name.clone(), d.open.clone(), d.open_for, d.fleet);
        self.stats.knock_completed += 1;
        let origin = Origin { kind: OriginKind::Door, detail: label.clone() };
        let stage = format!("{src}: {label}: Stage {n} (of {n})");
        let before = self.stats.opened;
        if let Some(log) =
            self.apply_grant(src, &label, Some(stage), origin.clone(), src, &services, duration, now, wall)
        {
            if fleet && self.stats.opened > before {
                self.share_fleet(src, &services, duration, &origin);
            }
            self.after_open(src, door, wall, log);
        }
    }

    /// Share a fleet-scoped grant this node just made with the other nodes.
    fn share_fleet(&self, allow: IpAddr, services: &[Service], duration: Duration, origin: &Origin) {
        if let Some(f) = &self.fleet {
            f.share(crate::fleet::node::Outgoing::new(allow, services, duration, origin));
        }
    }

    /// The capture thread's grant path, for doors and SPA: log, open through
    /// [`Granter::grant`] (which arms expiry and records), log the result. The grant
    /// lines (`stage`, OPEN SESAME, opened) are written once the open is admitted, within
    /// their own budget, so refused floods never spend it. Returns `None` if a bound
    /// refused the open (then nothing else may happen for it: no door commands), else
    /// whether its lines were logged.
    #[allow(clippy::too_many_arguments)]
    fn apply_grant(
        &mut self,
        src: IpAddr,
        label: &str,
        stage: Option<String>,
        origin: Origin,
        allow: IpAddr,
        services: &[Service],
        duration: Duration,
        now: Millis,
        wall: SystemTime,
    ) -> Option<bool> {
        let what = services.iter().map(Service::to_string).collect::<Vec<_>>().join(",");
        let shown = self.granter.source_for(&origin, allow);
        let for_whom =
            if shown.is_host() && allow == src { String::new() } else { format!(" for {}", shown.short()) };
        // A knockd door may open nothing itself and only run commands.
        let result = if services.is_empty() {
            Ok(())
        } else if origin.kind == OriginKind::Door {
            self.granter.open_door(origin, src, allow, services, duration)
        } else {
            self.granter.grant(origin, allow, services, duration).map_err(OpenError::from)
        };
        if let Err(OpenError::Refused(why)) = result {
            self.stats.opens_refused += 1;
            if self.refusals.count(Failure::Refused(why), now) {
                tracing::warn!("{src}: {label}: NOT opened {what}{for_whom}: {why}");
            }
            return None;
        }
        let log = self.open_limiter.take(now);
        if log {
            if let Some(stage) = stage {
                tracing::info!("{stage}");
            }
            tracing::info!("{src}: {label}: OPEN SESAME");
        } else {
            self.stats.suppressed_logs += 1;
        }
        match result {
            Ok(()) if services.is_empty() => {}
            Ok(()) => {
                self.stats.opened += 1;
                if log {
                    let until = humantime::format_rfc3339_seconds(wall + duration);
                    tracing::info!(
                        "{src}: {label}: opened {what}{for_whom} until {until} ({}s) via {}",
                        duration.as_secs(),
                        self.granter.driver_name()
                    );
                }
            }
            Err(OpenError::Firewall(err)) => {
                self.stats.grant_failures += 1;
                if self.refusals.count(Failure::Firewall, now) {
                    tracing::error!("{src}: {label}: FAILED to open {what}{for_whom}: {err}");
                }
            }
            Err(OpenError::Refused(_)) => {}
        }
        Some(log)
    }

    fn report_suppressed(&mut self) {
        // Summarise suppressed lines at most once per thousand, so floods stay visible.
        if self.stats.suppressed_logs >= self.reported_suppressed + 1000 {
            tracing::warn!(
                "knock log rate limit: {} per-knock lines suppressed so far (flood?)",
                self.stats.suppressed_logs
            );
            self.reported_suppressed = self.stats.suppressed_logs;
        }
    }

    /// Periodic work: lets trackers drop expired generations so memory returns after a flood.
    pub fn housekeeping(&mut self, now: Millis, wall: SystemTime) {
        if let Some(line) = self.refusals.summary(now) {
            tracing::warn!("{line}");
        }
        for g in &mut self.groups {
            g.tracker.housekeeping(now);
        }
        if let Some(gate) = self.spa.as_mut() {
            gate.housekeeping(wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        }
        self.fwknop_expired(wall, now);
    }
}

fn event_door(e: &Event) -> usize {
    match *e {
        Event::Stage { door, .. }
        | Event::Reset { door, .. }
        | Event::TimedOut { door, .. }
        | Event::Open { door } => door,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod rotating_tests;

#[cfg(test)]
mod spa_tests;
