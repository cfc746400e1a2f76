//! SPA in the engine: screened on arrival, decided (crypto, policy, grant) in slices.
//!
//! A datagram on an SPA port is screened at once ([`SpaGate::screen`]: shape, server
//! tag, crypto budget; microseconds). In the capture loop what passes waits in a
//! [`Backlog`], fair between source prefixes, which the loop works through in bounded
//! slices between packet batches ([`Engine::run_spa`]): a flood of crypto-costly junk
//! delays a knock by at most one slice, never by its own length. Without the capture
//! loop (tests, dry runs) the engine decides each packet at once.
//!
//! [`SpaGate::screen`]: crate::spa::SpaGate::screen

use std::net::IpAddr;
use std::time::SystemTime;

use portcullis_proto::addr::canonical as fold;
use portcullis_proto::Millis;

use super::Engine;
use crate::grants::{Origin, OriginKind};
use crate::spa::backlog::{self, Backlog};
use crate::spa::{RejectReason, Screened, Verdict};

/// A screened packet waiting for its slice, with the port it was sent to (for logs).
pub(super) type Waiting = (Screened, u16);

impl Engine {
    /// Hold screened SPA packets for [`Engine::run_spa`] instead of deciding each at
    /// once: the capture loop's mode.
    pub fn defer_spa(&mut self) {
        if self.spa_backlog.is_none() {
            self.spa_backlog = Some(Backlog::new(backlog::CAPACITY));
        }
    }

    /// Whether UDP to `port` is SPA.
    pub fn is_spa_port(&self, port: u16) -> bool {
        self.spa.as_ref().is_some_and(|g| g.is_spa_port(port))
    }

    /// Whether screened SPA packets are waiting for [`Engine::run_spa`].
    pub fn spa_pending(&self) -> bool {
        self.spa_backlog.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// Decide waiting SPA packets, fairly between source prefixes, until none is left
    /// or `more()` says the slice is over (asked after each packet, so at least one is
    /// decided). Returns whether packets are still waiting.
    pub fn run_spa(&mut self, more: &mut dyn FnMut() -> bool, now: Millis, wall: SystemTime) -> bool {
        loop {
            let Some((s, dport)) = self.spa_backlog.as_mut().and_then(Backlog::pop) else { return false };
            self.decide_spa(&s, dport, now, wall);
            if !more() {
                return self.spa_pending();
            }
        }
    }

    /// An SPA datagram read from the bound UDP socket (fwknopd `ENABLE_UDP_SERVER`).
    pub fn on_spa_socket(
        &mut self,
        src: IpAddr,
        dst: Option<IpAddr>,
        dport: u16,
        payload: &[u8],
        now: Millis,
        wall: SystemTime,
    ) {
        self.stats.packets += 1;
        self.stats.for_us += 1;
        self.on_spa(fold(src), dst.map(fold), dport, payload, now, wall);
    }

    pub(super) fn on_spa(
        &mut self,
        src: IpAddr,
        dst: Option<IpAddr>,
        dport: u16,
        payload: &[u8],
        now: Millis,
        wall: SystemTime,
    ) {
        let Some(gate) = self.spa.as_mut() else { return };
        // The same datagram seen by both the capture socket and the UDP server socket.
        if !gate.first_delivery(src, payload, now) {
            return;
        }
        let screened = gate.screen(src, dst, payload, unix(wall), now);
        let prefix = gate.prefix_of(src);
        match (screened, self.spa_backlog.as_mut()) {
            (Err(reason), _) => self.spa_verdict(src, dport, Verdict::Reject(reason), now, wall),
            (Ok(s), None) => self.decide_spa(&s, dport, now, wall),
            (Ok(s), Some(b)) => {
                if let Some((dropped, dport)) = b.push(prefix, (s, dport)) {
                    let reason = Verdict::Reject(RejectReason::BacklogFull);
                    self.spa_verdict(dropped.src, dport, reason, now, wall);
                }
            }
        }
    }

    fn decide_spa(&mut self, s: &Screened, dport: u16, now: Millis, wall: SystemTime) {
        let Some(gate) = self.spa.as_mut() else { return };
        let verdict = gate.decide(s, unix(wall));
        self.spa_verdict(s.src, dport, verdict, now, wall);
    }

    fn spa_verdict(&mut self, src: IpAddr, dport: u16, verdict: Verdict, now: Millis, wall: SystemTime) {
        match verdict {
            Verdict::Grant(dec) => {
                let share = self.spa.as_mut().is_some_and(|g| g.take_fleet_share());
                self.stats.spa_accepted += 1;
                if let Some(fg) = dec.fwknop.clone() {
                    if self.fwknop_grant(src, &dec, &fg, wall) {
                        return;
                    }
                }
                let label = format!("spa: {}", dec.who);
                let origin = Origin { kind: OriginKind::Spa, detail: dec.who.clone() };
                let before = self.stats.opened;
                let log = self
                    .apply_grant(
                        src,
                        &label,
                        None,
                        origin.clone(),
                        dec.allow,
                        &dec.services,
                        dec.duration,
                        now,
                        wall,
                    )
                    .unwrap_or(false);
                if share && self.stats.opened > before {
                    self.share_fleet(dec.allow, &dec.services, dec.duration, &origin);
                }
                if dec.fwknop.is_some() && self.stats.opened > before && log {
                    self.fwknop_added(&dec, wall);
                }
            }
            Verdict::Reject(reason) => {
                self.stats.count_spa_reject(reason.class());
                if self.limiter.take(now) {
                    tracing::info!("{src}: spa: rejected: {}", reason.to_string().escape_debug());
                    self.fwknop_rejected(src, dport, &reason);
                } else {
                    self.stats.suppressed_logs += 1;
                }
            }
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
