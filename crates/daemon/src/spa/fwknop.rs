//! The fwknop half of the gate: stanza selection (SOURCE, DESTINATION, expiry, keys),
//! time window, replay, then policy, including command cycles and NAT requests.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use portcullis_proto::spa::fwknop::{self, MsgType, SpaMessage};
use portcullis_proto::spa::PacketError;
use portcullis_proto::Millis;

use super::digest_import::wire_key;
use super::reject::{Denial, Format, RejectReason};
use super::{Decision, FwknopGrant, NatGrant, SpaGate, Verdict, Work};
use crate::config::spa::FwknopStanza;

/// What the last fwknop packet looked like, for the fwknopd-style log line
/// ([`SpaGate::fwknopd_line`]).
#[derive(Debug, Clone, Default)]
pub(super) struct LastFwknop {
    /// 1-based number of the stanza the verdict is about.
    pub stanza_no: usize,
    /// Packet time minus our time, for stale packets.
    pub time_diff: i64,
    /// Original (source, time) of a replayed request, when still remembered.
    pub original: Option<(IpAddr, u64)>,
}

impl SpaGate {
    /// The cheap part: shape, imported digests, the stanzas that may apply (source,
    /// destination, expiry) and one unit of budget for each of them, all or none: a
    /// packet that cannot pay for every stanza it would be tried against is refused
    /// before any, having spent nothing of the ceiling.
    pub(super) fn screen_fwknop(
        &mut self,
        src: IpAddr,
        dst: Option<IpAddr>,
        payload: &[u8],
        now_unix: u64,
        now: Millis,
    ) -> Result<Work, RejectReason> {
        self.last = LastFwknop::default();
        fwknop::precheck(payload).map_err(RejectReason::Packet)?;
        // A packet fwknopd accepted before the switch (imported digest cache).
        if self.replay.contains(&wire_key(payload), now_unix) {
            return Err(RejectReason::Replayed);
        }
        let stanzas = self.candidate_stanzas(src, dst, now_unix);
        let units = u32::try_from(stanzas.len()).unwrap_or(u32::MAX);
        self.fwknop_budget
            .take_n(src, units, now)
            .map_err(|exhausted| RejectReason::CryptoBudget { format: Format::Fwknop, exhausted })?;
        Ok(Work::Fwknop(stanzas))
    }

    /// Stanzas whose source, destination and expiry admit a packet from `src` to `dst`.
    pub(super) fn candidate_stanzas(&self, src: IpAddr, dst: Option<IpAddr>, now_unix: u64) -> Vec<usize> {
        let admits = |st: &FwknopStanza| {
            (st.source.is_empty() || st.source.iter().any(|c| c.contains(src)))
                && (st.destination.is_empty()
                    || dst.is_some_and(|d| st.destination.iter().any(|c| c.contains(d))))
                && st.expires.is_none_or(|e| now_unix <= e)
        };
        self.stanzas.iter().enumerate().filter(|(_, st)| admits(st)).map(|(i, _)| i).collect()
    }

    /// The costly part: try `stanzas` in order, then time window, replay and policy.
    pub(super) fn fwknop(
        &mut self,
        src: IpAddr,
        dst: Option<IpAddr>,
        payload: &[u8],
        stanzas: &[usize],
        now_unix: u64,
    ) -> Verdict {
        self.last = LastFwknop::default();
        // First stanza whose keys authenticate wins (fwknopd). For the log: a MAC failure
        // on an HMAC stanza is the meaningful reason; what a no-HMAC stanza made of the
        // same bytes is secondary.
        let mut bad_mac = None;
        let mut other: Option<PacketError> = None;
        let mut found = None;
        for &i in stanzas {
            let Some(st) = self.stanzas.get(i) else { continue };
            match fwknop::decode(payload, &st.key) {
                Ok(m) => {
                    found = Some((i, m));
                    break;
                }
                Err(PacketError::BadMac) => {
                    bad_mac.get_or_insert(i);
                }
                Err(e) => {
                    other.get_or_insert(e);
                }
            }
        }
        let Some((i, msg)) = found else {
            self.last.stanza_no = bad_mac.map_or(0, |i| i + 1);
            return Verdict::Reject(match (bad_mac.is_some(), other) {
                (true, Some(e)) => RejectReason::NoStanzaKey(e),
                (_, Some(e)) => RejectReason::Packet(e),
                // No stanza for this source (or only HMAC stanzas): nobody's keys match.
                (_, None) => RejectReason::Packet(PacketError::BadMac),
            });
        };
        self.last.stanza_no = i + 1;
        let st = &self.stanzas[i];
        let who = format!("fwknop stanza {} user {}", st.name, msg.user.escape_debug());
        let key = fwknop::canonical_replay_key(&msg);
        if let Err(r) = self.fresh_and_first(msg.timestamp, key, now_unix, &who) {
            if let RejectReason::Stale { .. } = r {
                self.last.time_diff = i64::try_from(msg.timestamp).unwrap_or(i64::MAX)
                    - i64::try_from(now_unix).unwrap_or(i64::MAX);
            } else {
                self.last.original = self.origins.get(&key).copied();
            }
            return Verdict::Reject(r);
        }
        self.remember_origin(key, src, now_unix);
        let verdict = self.policy(i, &msg, src, dst, who);
        if matches!(verdict, Verdict::Grant(_)) && self.stanzas[i].fleet {
            // Last, so only requests this node would grant reach the database.
            if let Err(r) = self.fleet_claim(key, msg.timestamp) {
                return Verdict::Reject(r);
            }
        }
        verdict
    }

    fn policy(&self, i: usize, msg: &SpaMessage, src: IpAddr, dst: Option<IpAddr>, who: String) -> Verdict {
        let st = &self.stanzas[i];
        let deny = |denial| Verdict::Reject(RejectReason::Denied { who: who.clone(), denial });
        let nat_msg = match msg.msg_type {
            MsgType::Access | MsgType::ClientTimeoutAccess => false,
            MsgType::Command => return deny(Denial::Command),
            _ => true,
        };
        if let Some(u) = &st.require_username {
            if *u != msg.user {
                return deny(Denial::Username);
            }
        }
        let allow = if msg.allow_ip == Ipv4Addr::UNSPECIFIED {
            if st.require_source_address {
                return deny(Denial::SourceAddressRequired);
            }
            src
        } else {
            IpAddr::V4(msg.allow_ip)
        };
        let mut services = Vec::with_capacity(msg.access.len());
        for a in &msg.access {
            let Some(s) = a.service() else {
                return deny(Denial::NotTcpUdp(*a));
            };
            // Without OPEN_PORTS: what we protect, or for a command cycle (whose commands
            // decide what opens) whatever is asked, as fwknopd does.
            let permitted = if st.open_ports.is_empty() {
                st.cmd_cycle.is_some() || self.protected.contains(&s)
            } else {
                st.open_ports.contains(&s)
            };
            if !permitted || st.restrict_ports.contains(&s) {
                return deny(Denial::Service(s));
            }
            services.push(s);
        }
        if services.is_empty() {
            return deny(Denial::NothingToOpen);
        }
        let duration = match msg.client_timeout {
            Some(t) if t > 0 => Duration::from_secs(u64::from(t)).min(st.max_fw_timeout),
            _ => st.fw_access_timeout,
        };
        let nat = if nat_msg || st.nat.force_nat.is_some() {
            match self.nat(st, msg) {
                Ok(n) => Some(n),
                Err(d) => return deny(d),
            }
        } else {
            None
        };
        let fwknop = FwknopGrant { stanza_no: i + 1, cycle: st.cmd_cycle.clone(), nat, pkt_src: src, dst };
        Verdict::Grant(Decision { who, allow, services, duration, fwknop: Some(fwknop) })
    }

    /// The NAT a request gets, or why not.
    fn nat(&self, st: &FwknopStanza, msg: &SpaMessage) -> Result<NatGrant, Denial> {
        let local = matches!(msg.msg_type, MsgType::LocalNatAccess | MsgType::ClientTimeoutLocalNatAccess);
        if !(if local { self.local_nat } else { self.forwarding }) {
            return Err(Denial::Nat);
        }
        let asked = match &msg.nat_access {
            None => None,
            Some((host, port)) => match host.parse::<Ipv4Addr>() {
                Ok(ip) => Some((ip, *port)),
                // fwknopd may resolve names (ENABLE_NAT_DNS); we never do DNS on the packet path.
                Err(_) => return Err(Denial::NatTarget(format!("{host:?} is not an IPv4 address (no DNS)"))),
            },
        };
        let (to, port) = match (st.nat.force_nat, asked) {
            (Some(forced), None) => forced,
            (Some(forced), Some(a)) if local || a == forced => forced,
            (Some((fip, fport)), Some((ip, p))) => {
                return Err(Denial::NatTarget(format!(
                    "{ip}:{p} is outside this stanza: it forwards only to {fip}:{fport} (FORCE_NAT)"
                )))
            }
            (None, Some(a)) => a,
            (None, None) => return Err(Denial::NatTarget("no NAT destination in the request".into())),
        };
        if !local && (to.is_loopback() || to.is_unspecified() || to.is_multicast() || to.is_broadcast()) {
            return Err(Denial::NatTarget(format!("{to} cannot be forwarded to")));
        }
        if port == 0 {
            return Err(Denial::NatTarget("port 0".into()));
        }
        Ok(NatGrant {
            to: if local { Ipv4Addr::LOCALHOST } else { to },
            port,
            local,
            snat: st.nat.force_snat,
            forward_all: st.nat.forward_all,
            dnat: !st.nat.disable_dnat,
        })
    }

    fn remember_origin(&mut self, key: [u8; 32], src: IpAddr, now_unix: u64) {
        if self.origins.len() >= ORIGINS {
            self.origins.clear();
        }
        self.origins.insert(key, (src, now_unix));
    }
}

/// Accepted requests whose origin is remembered for the replay log line.
const ORIGINS: usize = 65_536;
