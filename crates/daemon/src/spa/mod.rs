//! The SPA gate: one sniffed UDP payload in, a grant decision out.
//!
//! Order, for both formats (cheapest and most-rejecting first, as in boringtun):
//! 1. shape checks (length, charset / magic, server tag) — no crypto;
//! 2. authenticate: fwknop HMAC in constant time before decrypting, native AEAD +
//!    Ed25519 signature (budgeted: only packets that pass 1. spend crypto);
//! 3. time window (symmetric skew, `max_age`);
//! 4. replay: canonical key of the decrypted request, persisted ([`replay`]);
//! 5. policy: which services this stanza/user may open, for how long, for whom.
//!
//! Steps 1 and the budget of 2 are [`SpaGate::screen`], cheap enough for the capture
//! thread's every packet; the rest is [`SpaGate::decide`], which the capture loop runs
//! in bounded slices between packet batches (see [`backlog`]), so crypto never holds up
//! knocks. [`SpaGate::handle_to`] does both at once.
//!
//! Nothing here sends anything: SPA never answers. Rejections are a typed
//! [`RejectReason`]: its variant decides the metric class, its `Display` is the log
//! text (and what fail2ban matches); attacker-controlled text in it (user names) is
//! only ever logged escaped and never steers the class.

pub mod backlog;
pub mod budget;
pub mod digest_import;
mod fwknop;
pub mod fwknopd_log;
pub mod reject;
mod reload;
pub mod replay;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use portcullis_proto::spa::native::{self, ServerKey, UserPublicKey};
use portcullis_proto::spa::window::Window;
use portcullis_proto::spa::PacketError;
use portcullis_proto::{Millis, Service};

use crate::config::spa::{CmdCycle, FwknopStanza, NativeUser, SpaConfig};
use budget::PrefixBudget;
pub use reject::{Denial, Format, RejectClass, RejectReason};
use replay::{Refusal, ReplayCache};

/// What an accepted request grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Who asked, for logs: `fwknop stanza NAME user "x"` or `user alice`.
    pub who: String,
    /// The address to let in.
    pub allow: IpAddr,
    /// What to open.
    pub services: Vec<Service>,
    /// For how long.
    pub duration: Duration,
    /// What an fwknop stanza adds to the grant (command cycle, NAT); `None` for native.
    pub fwknop: Option<FwknopGrant>,
}

/// The fwknop side of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwknopGrant {
    /// 1-based stanza number (fwknopd's `stanza #N` in logs).
    pub stanza_no: usize,
    /// Run these commands instead of opening the firewall.
    pub cycle: Option<CmdCycle>,
    /// Forward instead of (or besides) opening a local port.
    pub nat: Option<NatGrant>,
    /// The packet's source (`$PKT_SRC`).
    pub pkt_src: IpAddr,
    /// The packet's destination (`$DST`), when known.
    pub dst: Option<IpAddr>,
}

/// A NAT access grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatGrant {
    /// Inside host (127.0.0.1 for local NAT).
    pub to: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Local NAT: the requested port is redirected to `port` on this host.
    pub local: bool,
    /// Forwarded connections leave with this source (FORCE_SNAT).
    pub snat: Option<Ipv4Addr>,
    /// Forward every port (FORWARD_ALL).
    pub forward_all: bool,
    /// Add the DNAT (not with DISABLE_DNAT).
    pub dnat: bool,
}

/// The gate's answer for one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open this.
    Grant(Decision),
    /// Refused: the reason carries its metric class and its log text.
    Reject(RejectReason),
}

/// A packet that passed [`SpaGate::screen`]: it holds its crypto budget, and only
/// crypto and the decision are left ([`SpaGate::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    /// The packet's source.
    pub src: IpAddr,
    /// Its destination, when known.
    pub dst: Option<IpAddr>,
    payload: Vec<u8>,
    work: Work,
    /// The gate configuration it was screened under (a reload changes the stanzas).
    generation: u64,
}

/// What crypto a screened packet still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    /// Open the native packet.
    Native,
    /// Try these fwknop stanzas (indices), in order; their budget is spent.
    Fwknop(Vec<usize>),
}

/// Ephemeral public keys that already cost an X25519 operation. A cost optimisation
/// only: replay protection is the replay cache, and nothing security-relevant depends
/// on this set (it starts empty after a restart and junk can rotate it). A genuine native
/// packet uses a fresh ephemeral key, so a second packet with the same one is a replay
/// or a copied header with a forged body (which needs no key at all: the server tag
/// covers only the server and ephemeral public keys); either way it is dropped before
/// it can spend the crypto budget that genuine packets need. Two generations of keyed
/// 64-bit hashes, each at most [`SeenEphemeral::GENERATION`] entries, rotated every
/// `max_age` (a packet older than that is stale anyway): at most ~10 MB.
struct SeenEphemeral {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    since: Millis,
    hasher: RandomState,
}

impl SeenEphemeral {
    const GENERATION: usize = 250_000;

    fn new() -> SeenEphemeral {
        SeenEphemeral {
            current: HashSet::new(),
            previous: HashSet::new(),
            since: Millis(0),
            hasher: RandomState::new(),
        }
    }

    /// Record `eph`; false if it was seen within the window.
    fn first_sight(&mut self, eph: &[u8], now: Millis, window: Duration) -> bool {
        if now.since(self.since) >= window || self.current.len() >= Self::GENERATION {
            self.previous = std::mem::take(&mut self.current);
            self.since = now;
        }
        let h = self.hasher.hash_one(eph);
        if self.previous.contains(&h) {
            return false;
        }
        self.current.insert(h)
    }
}

/// Decides SPA packets.
pub struct SpaGate {
    ports: Vec<u16>,
    max_age: u64,
    server_key: Option<ServerKey>,
    users: HashMap<String, NativeUser>,
    user_keys: HashMap<String, UserPublicKey>,
    stanzas: Vec<FwknopStanza>,
    protected: Vec<Service>,
    replay: ReplayCache,
    budget: PrefixBudget,
    fwknop_budget: PrefixBudget,
    seen_ephemeral: SeenEphemeral,
    aging: bool,
    forwarding: bool,
    local_nat: bool,
    last: fwknop::LastFwknop,
    origins: HashMap<[u8; 32], (IpAddr, u64)>,
    dual_delivery: bool,
    recent: HashMap<(IpAddr, [u8; 32]), Millis>,
    fleet: Option<crate::fleet::gate::FleetGate>,
    /// Bumped by every reconfiguration (screened fwknop packets carry stanza indices).
    generation: u64,
    source_prefix: (u8, u8),
}

impl SpaGate {
    /// Build from config. `protected` is every service the firewall protects (what a
    /// stanza without `OPEN_PORTS` may open).
    pub fn new(cfg: &SpaConfig, protected: Vec<Service>, replay: ReplayCache) -> SpaGate {
        SpaGate {
            ports: cfg.ports.clone(),
            max_age: cfg.max_age,
            server_key: cfg.server_key.clone(),
            user_keys: cfg.users.iter().map(|(n, u)| (n.clone(), u.key)).collect(),
            users: cfg.users.clone(),
            stanzas: cfg.stanzas.clone(),
            protected,
            replay,
            budget: PrefixBudget::new(budget::with_prefix(budget::NATIVE, cfg.source_prefix)),
            fwknop_budget: PrefixBudget::new(budget::with_prefix(budget::FWKNOP, cfg.source_prefix)),
            seen_ephemeral: SeenEphemeral::new(),
            aging: cfg.aging,
            forwarding: cfg.forwarding,
            local_nat: cfg.local_nat,
            last: fwknop::LastFwknop::default(),
            origins: HashMap::new(),
            dual_delivery: cfg.udp_server.is_some(),
            recent: HashMap::new(),
            fleet: None,
            generation: 0,
            source_prefix: cfg.source_prefix,
        }
    }

    /// The source prefix `src` is budgeted (and queued) under.
    pub fn prefix_of(&self, src: IpAddr) -> budget::Prefix {
        budget::Prefix::of(src, self.source_prefix.0, self.source_prefix.1)
    }

    /// Check fleet-scoped users' requests fleet-wide too.
    pub fn with_fleet(mut self, fleet: crate::fleet::gate::FleetGate) -> SpaGate {
        self.fleet = Some(fleet);
        self
    }

    /// Whether the grant just decided is fleet-scoped and to be shared (once).
    pub fn take_fleet_share(&mut self) -> bool {
        self.fleet.as_mut().is_some_and(crate::fleet::gate::FleetGate::take_share)
    }

    /// Whether UDP to `port` is SPA.
    pub fn is_spa_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Whether this is the first delivery of `payload` from `src` within a couple of
    /// seconds: with `ENABLE_UDP_SERVER` the capture socket and the bound UDP socket
    /// both see each datagram, and the second copy must not count as a replay.
    pub fn first_delivery(&mut self, src: IpAddr, payload: &[u8], now: Millis) -> bool {
        if !self.dual_delivery {
            return true;
        }
        const WINDOW: Duration = Duration::from_secs(2);
        if self.recent.len() >= 4096 {
            self.recent.retain(|_, &mut t| now.since(t) < WINDOW);
            if self.recent.len() >= 4096 {
                self.recent.clear();
            }
        }
        let key = (src, digest_import::wire_key(payload));
        match self.recent.get(&key) {
            Some(&t) if now.since(t) < WINDOW => false,
            _ => {
                self.recent.insert(key, now);
                true
            }
        }
    }

    /// Periodic work: drop expired replay entries, fsync appended ones.
    pub fn housekeeping(&mut self, now_unix: u64) {
        self.replay.purge(now_unix);
        self.replay.sync();
    }

    /// Decide one payload sent by `src` to an unknown destination (stanzas with a
    /// `DESTINATION` do not match).
    pub fn handle(&mut self, src: IpAddr, payload: &[u8], now_unix: u64, now: Millis) -> Verdict {
        self.handle_to(src, None, payload, now_unix, now)
    }

    /// Decide one payload sent by `src` to `dst`: [`SpaGate::screen`], then
    /// [`SpaGate::decide`].
    pub fn handle_to(
        &mut self,
        src: IpAddr,
        dst: Option<IpAddr>,
        payload: &[u8],
        now_unix: u64,
        now: Millis,
    ) -> Verdict {
        match self.screen(src, dst, payload, now_unix, now) {
            Ok(s) => self.decide(&s, now_unix),
            Err(r) => Verdict::Reject(r),
        }
    }

    /// The cheap checks for one payload (shape, server tag, ephemeral key, imported
    /// replay digests, stanza source/destination filters) and its crypto budget. Costs
    /// microseconds: no crypto beyond the native server tag's hash.
    pub fn screen(
        &mut self,
        src: IpAddr,
        dst: Option<IpAddr>,
        payload: &[u8],
        now_unix: u64,
        now: Millis,
    ) -> Result<Screened, RejectReason> {
        let work = if payload.starts_with(&native::MAGIC) {
            self.screen_native(src, payload, now)?
        } else if !self.stanzas.is_empty() {
            self.screen_fwknop(src, dst, payload, now_unix, now)?
        } else {
            return Err(RejectReason::NotNative);
        };
        Ok(Screened { src, dst, payload: payload.to_vec(), work, generation: self.generation })
    }

    /// Crypto, time window, replay and policy for a screened packet. An fwknop packet
    /// screened before a reconfiguration has its stanza list worked out again.
    pub fn decide(&mut self, s: &Screened, now_unix: u64) -> Verdict {
        if s.generation != self.generation {
            // Screened before a reconfiguration: the stanza list may have changed. The
            // budget is spent already; only the cheap filters are run again.
            if let Work::Fwknop(_) = s.work {
                let stanzas = self.candidate_stanzas(s.src, s.dst, now_unix);
                return self.fwknop(s.src, s.dst, &s.payload, &stanzas, now_unix);
            }
        }
        match &s.work {
            Work::Native => self.native(s.src, &s.payload, now_unix),
            Work::Fwknop(stanzas) => self.fwknop(s.src, s.dst, &s.payload, stanzas, now_unix),
        }
    }

    /// The time window, then the replay cache, for both formats: one [`Window`] decides
    /// both whether the packet is fresh and how long its replay entry lives (for ever
    /// without aging, since the request then stays acceptable for ever).
    fn fresh_and_first(
        &mut self,
        timestamp: u64,
        key: [u8; 32],
        now_unix: u64,
        who: &str,
    ) -> Result<(), RejectReason> {
        let window = Window::new(self.max_age);
        if self.aging && !window.accepts(timestamp, now_unix) {
            return Err(RejectReason::Stale { who: who.to_owned() });
        }
        let last = if self.aging { window.last_accepted(timestamp) } else { u64::MAX };
        self.admit(key, last, now_unix)
    }

    fn admit(&mut self, key: [u8; 32], expires: u64, now_unix: u64) -> Result<(), RejectReason> {
        match self.replay.admit(key, expires, now_unix) {
            Ok(()) => Ok(()),
            Err(Refusal::Replayed) => Err(RejectReason::Replayed),
            Err(Refusal::Full) => {
                tracing::error!("spa: replay cache full of live entries; refusing SPA until entries expire");
                Err(RejectReason::ReplayCacheFull)
            }
        }
    }

    /// The fleet-wide replay claim of a fleet-scoped request this node would grant.
    fn fleet_claim(&mut self, key: [u8; 32], timestamp: u64) -> Result<(), RejectReason> {
        use crate::fleet::gate::Outcome;
        let Some(fleet) = self.fleet.as_mut() else {
            return Err(RejectReason::FleetUnavailable);
        };
        let expires = if self.aging { Window::new(self.max_age).last_accepted(timestamp) } else { u64::MAX };
        match fleet.admit(key, expires) {
            Outcome::Share | Outcome::LocalOnly => Ok(()),
            Outcome::Replayed => Err(RejectReason::Replayed),
            Outcome::Unavailable => Err(RejectReason::FleetUnavailable),
        }
    }

    fn screen_native(&mut self, src: IpAddr, payload: &[u8], now: Millis) -> Result<Work, RejectReason> {
        let Some(server) = &self.server_key else {
            return Err(RejectReason::NativeNotConfigured);
        };
        native::precheck(payload, server.public()).map_err(RejectReason::Packet)?;
        // The ephemeral public key is the last 32 bytes of the cleartext header
        // (precheck has checked the length; `get` keeps this safe on its own).
        let Some(eph) = payload.get(native::HEADER_LEN - 32..native::HEADER_LEN) else {
            return Err(RejectReason::Packet(PacketError::BadLength));
        };
        if !self.seen_ephemeral.first_sight(eph, now, Duration::from_secs(self.max_age)) {
            return Err(RejectReason::EphemeralSeen);
        }
        self.budget
            .take(src, now)
            .map_err(|exhausted| RejectReason::CryptoBudget { format: Format::Native, exhausted })?;
        Ok(Work::Native)
    }

    fn native(&mut self, src: IpAddr, payload: &[u8], now_unix: u64) -> Verdict {
        let Some(server) = &self.server_key else {
            return Verdict::Reject(RejectReason::NativeNotConfigured);
        };
        let req = match native::open(payload, server, &self.user_keys) {
            Ok(r) => r,
            Err(e) => return Verdict::Reject(RejectReason::Packet(e)),
        };
        let who = format!("user {}", req.user);
        if let Err(r) =
            self.fresh_and_first(req.timestamp, native::canonical_replay_key(&req), now_unix, &who)
        {
            return Verdict::Reject(r);
        }
        let Some(user) = self.users.get(&req.user) else {
            return Verdict::Reject(RejectReason::Packet(PacketError::UnknownUser));
        };
        let deny = |denial| Verdict::Reject(RejectReason::Denied { who: who.clone(), denial });
        if let Some(&s) = req.services.iter().find(|s| !user.open.contains(s)) {
            return deny(Denial::Service(s));
        }
        if req.duration_secs == 0 {
            return deny(Denial::ZeroDuration);
        }
        let allow = req.allow.resolve(src);
        if allow != src && !user.allow_addresses.iter().any(|c| c.contains(allow)) {
            return deny(Denial::Address(allow));
        }
        let duration = Duration::from_secs(u64::from(req.duration_secs)).min(user.max_open_for);
        if user.fleet {
            // Last, so only requests this node would grant reach the database.
            if let Err(r) = self.fleet_claim(native::canonical_replay_key(&req), req.timestamp) {
                return Verdict::Reject(r);
            }
        }
        Verdict::Grant(Decision { who, allow, services: req.services.clone(), duration, fwknop: None })
    }
}

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod fwknop_tests;
#[cfg(test)]
mod tests;
