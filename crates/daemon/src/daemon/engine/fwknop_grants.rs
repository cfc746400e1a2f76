//! What an fwknop stanza adds to an SPA grant, kept out of `engine.rs`: command cycles
//! (`CMD_CYCLE_OPEN`/`CLOSE`, run by the command runner instead of a firewall grant),
//! NAT grants (through the firewall backend), and fwknopd's own log lines for grants,
//! their expiry and rejections, next to ours.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use portcullis_proto::Millis;

use super::Engine;
use crate::actions::subst::{fwknop_argv, FwknopVars};
use crate::actions::Queued;
use crate::config::{CommandLine, Commands};
use crate::firewall::NatGrant as FwNat;
use crate::grants::{Origin, OriginKind};
use crate::spa::fwknopd_log;
use crate::spa::{Decision, FwknopGrant, RejectReason};

/// Grants whose fwknopd-style "Removed rule" line is still to be written.
const MAX_PENDING_LINES: usize = 100_000;

/// Engine state for fwknop grants.
#[derive(Debug, Default)]
pub(super) struct FwknopExt {
    /// Our chain's name, as fwknopd's lines name `FWKNOP_INPUT`.
    pub chain: String,
    /// (expiry) of grants whose removal line is due.
    removals: BinaryHeap<Reverse<SystemTime>>,
}

impl FwknopExt {
    pub(super) fn new(chain: &str) -> FwknopExt {
        FwknopExt { chain: chain.to_string(), removals: BinaryHeap::new() }
    }
}

impl Engine {
    /// An accepted fwknop request: a command cycle, a NAT grant, or an ordinary grant
    /// (done by the caller when this returns false).
    pub(super) fn fwknop_grant(
        &mut self,
        src: IpAddr,
        dec: &Decision,
        fg: &FwknopGrant,
        wall: SystemTime,
    ) -> bool {
        let label = format!("spa: {}", dec.who);
        if let Some(cycle) = &fg.cycle {
            let Some(actions) = self.ext.actions() else {
                tracing::error!("{src}: {label}: NOT run: the command runner is not started");
                return true;
            };
            for s in &dec.services {
                let vars = FwknopVars {
                    ip: dec.allow,
                    pkt_src: fg.pkt_src,
                    dst: fg.dst,
                    port: s.port,
                    proto: s.proto,
                    timeout: cycle.timer.as_secs(),
                };
                let open = CommandLine::Argv(fwknop_argv(&cycle.open, &vars));
                let close = cycle.close.as_ref().map(|c| CommandLine::Argv(fwknop_argv(c, &vars)));
                let cmds = Commands {
                    start4: Some(open.clone()),
                    start6: Some(open),
                    stop4: close.clone(),
                    stop6: close,
                    cmd_timeout: cycle.timer,
                };
                let key = format!("fwknop stanza #{} {s}", fg.stanza_no);
                match actions.open(&key, dec.allow, &cmds, wall) {
                    Queued::Yes => {
                        self.stats.opened += 1;
                        tracing::info!(
                            "{src}: {label}: OPEN SESAME: CMD_CYCLE_OPEN for {} {s} queued, close in {}s",
                            dec.allow,
                            cycle.timer.as_secs()
                        );
                        tracing::info!(
                            "[{src}] (stanza #{}) Running command '{}'",
                            fg.stanza_no,
                            cycle.open.join(" ")
                        );
                    }
                    Queued::Full => {
                        tracing::error!("{src}: {label}: command queue full (flood?): CMD_CYCLE_OPEN dropped")
                    }
                    Queued::Nothing => {}
                }
            }
            return true;
        }
        if let Some(nat) = fg.nat {
            let to = SocketAddr::new(IpAddr::V4(nat.to), nat.port);
            let grants: Vec<FwNat> = dec
                .services
                .iter()
                .map(|&service| FwNat { addr: dec.allow, service, to, timeout: dec.duration })
                .collect();
            let what = dec.services.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
            tracing::info!("{src}: {label}: OPEN SESAME (NAT)");
            // The NAT grant forwards the flow; the ordinary grant lets it past the gate on
            // the service (before DNAT) and records it. NAT first: a backend that cannot
            // forward refuses before anything is opened.
            let origin = Origin { kind: OriginKind::Spa, detail: dec.who.clone() };
            let r = self.granter.with_driver(|d| d.grant_nat(&grants)).and_then(|()| {
                self.granter.grant(origin, dec.allow, &dec.services, dec.duration).inspect_err(|_| {
                    let _ = self.granter.with_driver(|d| d.revoke_nat(&grants));
                })
            });
            match r {
                Ok(()) => {
                    self.stats.opened += 1;
                    let exp = wall + dec.duration;
                    tracing::info!(
                        "{src}: {label}: forwarding {what} for {} to {to} for {}s",
                        dec.allow,
                        dec.duration.as_secs()
                    );
                    for s in &dec.services {
                        tracing::info!(
                            "Added DNAT rule to {} for {} -> 0.0.0.0/0 {s}, expires at {}",
                            self.fwknop.chain,
                            dec.allow,
                            unix(exp)
                        );
                        self.note_removal(exp);
                    }
                }
                Err(e) => {
                    self.stats.grant_failures += 1;
                    tracing::error!("{src}: {label}: NAT refused: {e}");
                }
            }
            return true;
        }
        false
    }

    /// fwknopd's "Added access rule" lines for an ordinary grant that succeeded.
    pub(super) fn fwknop_added(&mut self, dec: &Decision, wall: SystemTime) {
        let exp = wall + dec.duration;
        for &s in &dec.services {
            tracing::info!("{}", fwknopd_log::added(&self.fwknop.chain, dec.allow, s, exp));
            self.note_removal(exp);
        }
    }

    /// fwknopd's line for a rejection, after ours.
    pub(super) fn fwknop_rejected(&self, src: IpAddr, dport: u16, reason: &RejectReason) {
        if let Some(line) = self.spa.as_ref().and_then(|g| g.fwknopd_line(src, dport, reason)) {
            tracing::info!("{line}");
        }
    }

    fn note_removal(&mut self, exp: SystemTime) {
        if self.fwknop.removals.len() < MAX_PENDING_LINES {
            self.fwknop.removals.push(Reverse(exp));
        }
    }

    /// Write fwknopd's "Removed rule" line for grants whose time is up (the firewall
    /// or the grant scheduler closes them; this is only the line watchers expect).
    pub(super) fn fwknop_expired(&mut self, wall: SystemTime, _now: Millis) {
        while let Some(Reverse(exp)) = self.fwknop.removals.peek().copied() {
            if exp > wall {
                break;
            }
            self.fwknop.removals.pop();
            tracing::info!("{}", fwknopd_log::removed(&self.fwknop.chain, exp));
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
