//! What the privileged part allows, derived from the config *it* loaded: which
//! services may be opened and for how long at most, which doors have commands or
//! one-time sequences. Every request is checked here before it reaches the firewall
//! or the command runner. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use portcullis_proto::Service;

use super::codec::{WireGrant, WireKey, WireService};
use crate::config::{Commands, Config};
use crate::firewall::{Grant, Key, Prefix};

/// Why a request was refused (logged by the privileged part, answered to the other).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A service no door, SPA user or stanza opens.
    #[error("{0} is not a protected service in the config")]
    NotProtected(String),
    /// Longer than anything in the config may grant.
    #[error("{service} for {ms} ms is longer than the config allows ({max_ms} ms)")]
    TooLong {
        /// The service.
        service: String,
        /// Asked.
        ms: u64,
        /// Allowed.
        max_ms: u64,
    },
    /// A zero timeout.
    #[error("a grant of 0 ms")]
    Zero,
    /// Not an address a grant can be for.
    #[error("{0} is not a unicast address")]
    BadAddress(IpAddr),
    /// A prefix wider than every door and user that opens the service may grant, or
    /// not a network address.
    #[error("a grant for {prefix} to {service} is wider than the config allows (/{min} at most)")]
    TooWide {
        /// What was asked.
        prefix: String,
        /// The service.
        service: String,
        /// The shortest prefix length allowed.
        min: u8,
    },
    /// An invalid protocol or port.
    #[error("invalid service (protocol {0}, port {1})")]
    BadService(u8, u16),
    /// A door that does not exist, or has no commands / one-time sequences.
    #[error("door {0:?} has no {1} in the config")]
    NoSuchDoor(String, &'static str),
    /// A config page of a generation not on offer (or not on a character boundary).
    #[error("no config bundle of generation {0} on offer at that offset")]
    NoOffer(u64),
    /// Out of sequence (replayed or skipped).
    #[error("request {got} out of sequence (expected {expected})")]
    Sequence {
        /// Received.
        got: u64,
        /// Expected.
        expected: u64,
    },
}

/// The privileged part's view of the config.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Protected services and the longest grant for each.
    limits: BTreeMap<Service, Duration>,
    /// Services some door or user opens for a prefix: the shortest (IPv4, IPv6) length.
    widest: BTreeMap<Service, (u8, u8)>,
    commands: HashMap<String, Commands>,
    one_time: HashMap<String, PathBuf>,
}

impl Policy {
    /// Derive the policy from `config`: a service may be opened if it is protected, for
    /// at most the longest duration any door, SPA user, fwknop stanza or the API may give it.
    pub fn from_config(config: &Config) -> Policy {
        let mut limits: BTreeMap<Service, Duration> = BTreeMap::new();
        let mut allow = |s: Service, d: Duration| {
            let e = limits.entry(s).or_default();
            *e = (*e).max(d);
        };
        let mut widest: BTreeMap<Service, (u8, u8)> = BTreeMap::new();
        let mut widen = |s: Service, p: crate::config::GrantPrefix| {
            if !p.is_single() {
                let e = widest.entry(s).or_insert((32, 128));
                *e = (e.0.min(p.v4), e.1.min(p.v6));
            }
        };
        let prefixes = &config.limits.grant_prefix;
        let protected = config.protected();
        for d in &config.doors {
            for &s in &d.open {
                allow(s, d.open_for);
                widen(s, prefixes.door(&d.name));
            }
        }
        if let Some(spa) = &config.spa {
            for (name, u) in &spa.users {
                for &s in &u.open {
                    allow(s, u.max_open_for);
                    widen(s, prefixes.user(name));
                }
            }
            // A stanza may grant any service SPA protects (its open_ports narrow that at
            // decode time); bound by its longest timeout.
            for st in &spa.stanzas {
                for &s in &protected {
                    allow(s, st.fw_access_timeout.max(st.max_fw_timeout));
                }
            }
        }
        if let Some(api) = &config.api {
            for &s in &protected {
                allow(s, api.max_duration);
            }
        }
        for &s in &protected {
            allow(s, Duration::ZERO);
        }
        let commands =
            config.doors.iter().filter_map(|d| Some((d.name.clone(), d.commands.clone()?))).collect();
        let one_time = config
            .doors
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.one_time.as_ref()?.path.clone())))
            .collect();
        Policy { limits, widest, commands, one_time }
    }

    /// What either `self` or `next` allows: used while a reload is being taken up by
    /// the unprivileged part, so that neither its old nor its new engine is refused for
    /// the few milliseconds the switch takes. `next`'s commands and files win.
    pub fn union(&self, next: &Policy) -> Policy {
        let mut u = self.clone();
        for (&s, &d) in &next.limits {
            let e = u.limits.entry(s).or_default();
            *e = (*e).max(d);
        }
        for (&s, &(v4, v6)) in &next.widest {
            let e = u.widest.entry(s).or_insert((32, 128));
            *e = (e.0.min(v4), e.1.min(v6));
        }
        u.commands.extend(next.commands.iter().map(|(k, v)| (k.clone(), v.clone())));
        u.one_time.extend(next.one_time.iter().map(|(k, v)| (k.clone(), v.clone())));
        u
    }

    fn service(s: WireService) -> Result<Service, Refusal> {
        s.service().ok_or(Refusal::BadService(s.proto, s.port))
    }

    fn protected(&self, s: WireService) -> Result<(Service, Duration), Refusal> {
        let service = Policy::service(s)?;
        let max = self.limits.get(&service).ok_or_else(|| Refusal::NotProtected(service.to_string()))?;
        Ok((service, *max))
    }

    /// A grant the config allows, or why not.
    pub fn grant(&self, g: &WireGrant) -> Result<Grant, Refusal> {
        let (service, max) = self.protected(g.service)?;
        if g.timeout_ms == 0 {
            return Err(Refusal::Zero);
        }
        let max_ms = super::codec::millis(max);
        if g.timeout_ms > max_ms {
            return Err(Refusal::TooLong { service: service.to_string(), ms: g.timeout_ms, max_ms });
        }
        if !unicast(g.addr) {
            return Err(Refusal::BadAddress(g.addr));
        }
        let src = self.source(g.addr, g.prefix, service)?;
        Ok(Grant { addr: src.addr, len: src.len, service, timeout: Duration::from_millis(g.timeout_ms) })
    }

    /// The source a grant or key names, if no wider than some door or user opening
    /// `service` may grant, and a network address.
    fn source(&self, addr: IpAddr, prefix: Option<u8>, service: Service) -> Result<Prefix, Refusal> {
        let src = super::codec::source(addr, prefix);
        let (v4, v6) = self.widest.get(&service).copied().unwrap_or((32, 128));
        let min = if addr.is_ipv4() { v4 } else { v6 };
        let width = Prefix::host(addr).len;
        if src.len < min || src.len > width || Prefix::covering(addr, src.len) != src {
            return Err(Refusal::TooWide { prefix: src.to_string(), service: service.to_string(), min });
        }
        Ok(src)
    }

    /// A revocation key for a protected service, or why not.
    pub fn revoke(&self, k: &WireKey) -> Result<Key, Refusal> {
        let service = self.protected(k.service)?.0;
        Ok((self.source(k.addr, k.prefix, service)?, service))
    }

    /// The door's own commands (never anything the request carries).
    pub fn commands(&self, door: &str) -> Result<&Commands, Refusal> {
        self.commands.get(door).ok_or_else(|| Refusal::NoSuchDoor(door.to_string(), "commands"))
    }

    /// The door's one-time sequences file.
    pub fn one_time(&self, door: &str) -> Result<&PathBuf, Refusal> {
        self.one_time.get(door).ok_or_else(|| Refusal::NoSuchDoor(door.to_string(), "one-time sequences"))
    }

    /// Services as sent, validated (for one-time sequences).
    pub fn services(list: &[WireService]) -> Result<Vec<Service>, Refusal> {
        list.iter().map(|&s| Policy::service(s)).collect()
    }
}

fn unicast(a: IpAddr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || matches!(a, IpAddr::V4(v) if v.is_broadcast()))
}

/// Strictly increasing request numbers: the next one must be exactly `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    expected: u64,
}

impl Default for Sequence {
    fn default() -> Sequence {
        Sequence { expected: 1 }
    }
}

impl Sequence {
    /// Accept `got` if it is the next number; a replay or a gap is refused and does not
    /// move the counter.
    pub fn check(&mut self, got: u64) -> Result<(), Refusal> {
        if got == self.expected {
            self.expected = self.expected.saturating_add(1);
            Ok(())
        } else {
            Err(Refusal::Sequence { got, expected: self.expected })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const CONF: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, 8000, 9000]
open = ["tcp/22"]
open_for = 30

[[door]]
name = "web"
sequence = [7100, 7200]
open = ["tcp/443", "tcp/22"]
open_for = 60
"#;

    fn policy() -> Policy {
        Policy::from_config(&config::parse(CONF, std::path::Path::new("t.toml")).unwrap())
    }

    fn g(port: u16, ms: u64) -> WireGrant {
        WireGrant {
            addr: "192.0.2.2".parse().unwrap(),
            prefix: None,
            service: Service::tcp(port).into(),
            timeout_ms: ms,
        }
    }

    #[test]
    fn grants_only_protected_services_within_the_longest_duration() {
        let p = policy();
        assert!(p.grant(&g(22, 60_000)).is_ok());
        assert!(p.grant(&g(443, 60_000)).is_ok());
        assert_eq!(
            p.grant(&g(22, 60_001)),
            Err(Refusal::TooLong { service: "tcp/22".into(), ms: 60_001, max_ms: 60_000 })
        );
        assert_eq!(p.grant(&g(23, 1)), Err(Refusal::NotProtected("tcp/23".into())));
        assert_eq!(p.grant(&g(22, 0)), Err(Refusal::Zero));
        let mut bad = g(22, 1);
        bad.addr = "0.0.0.0".parse().unwrap();
        assert!(matches!(p.grant(&bad), Err(Refusal::BadAddress(_))));
        bad.service = WireService { proto: 6, port: 0 };
        assert!(matches!(p.grant(&bad), Err(Refusal::BadService(6, 0))));
        let k =
            WireKey { addr: "192.0.2.2".parse().unwrap(), prefix: None, service: Service::udp(22).into() };
        assert!(p.revoke(&k).is_err());
        assert!(p.commands("ssh").is_err(), "no commands configured");
        assert!(p.one_time("nope").is_err());
    }

    #[test]
    fn prefix_grants_are_no_wider_than_the_config_allows() {
        let conf = CONF.replacen("open_for = 30\n", "open_for = 30\ngrant_prefix_v4 = 24\n", 1);
        let p = Policy::from_config(&config::parse(&conf, std::path::Path::new("t.toml")).unwrap());
        let mut w = g(22, 1000);
        w.addr = "192.0.2.0".parse().unwrap();
        w.prefix = Some(24);
        let got = p.grant(&w).unwrap();
        assert_eq!((got.addr, got.len), (w.addr, 24));
        w.prefix = Some(28);
        assert!(p.grant(&w).is_ok(), "narrower than allowed");
        w.prefix = Some(23);
        assert!(matches!(p.grant(&w), Err(Refusal::TooWide { min: 24, .. })), "{:?}", p.grant(&w));
        w.prefix = Some(33);
        assert!(p.grant(&w).is_err(), "longer than an address");
        w.addr = "192.0.2.7".parse().unwrap();
        w.prefix = Some(24);
        assert!(p.grant(&w).is_err(), "host bits set");
        let mut web = g(443, 1000);
        web.addr = "192.0.2.0".parse().unwrap();
        web.prefix = Some(24);
        assert!(matches!(p.grant(&web), Err(Refusal::TooWide { min: 32, .. })), "no prefix for tcp/443");
        let k = WireKey {
            addr: "192.0.2.0".parse().unwrap(),
            prefix: Some(24),
            service: Service::tcp(22).into(),
        };
        assert_eq!(p.revoke(&k).unwrap().0.to_string(), "192.0.2.0/24");
    }

    #[test]
    fn a_union_allows_what_either_allows_and_nothing_more() {
        let old = policy();
        let new = Policy::from_config(
            &config::parse(&CONF.replace("open_for = 60", "open_for = 90"), std::path::Path::new("t.toml"))
                .unwrap(),
        );
        let u = old.union(&new);
        assert!(u.grant(&g(443, 90_000)).is_ok());
        assert!(old.grant(&g(443, 90_000)).is_err());
        assert!(u.grant(&g(443, 90_001)).is_err());
        assert!(u.grant(&g(23, 1)).is_err());
    }

    #[test]
    fn sequence_numbers_refuse_replays_and_gaps() {
        let mut s = Sequence::default();
        assert!(s.check(1).is_ok());
        assert!(s.check(2).is_ok());
        assert!(s.check(2).is_err(), "replay");
        assert!(s.check(4).is_err(), "gap");
        assert!(s.check(3).is_ok());
    }
}
