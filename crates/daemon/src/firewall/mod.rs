//! Firewall drivers: how a grant becomes a hole in the firewall.
//!
//! Every driver owns its own piece of the firewall (a table, a chain) and never edits
//! anything else. Drivers work on portcullis' own [`Grant`] type; backend handles stay
//! inside the driver. `setup` installs or atomically replaces what the driver owns,
//! `grant`/`revoke` change only grant state, `teardown` removes everything it owns.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use portcullis_proto::Service;

pub mod iptables;
pub mod nft;
pub mod none;
pub mod prefix;
pub mod remote;
mod shared;

pub use prefix::Prefix;
pub use shared::Shared;

/// One hole: `addr/len` may open new connections to `service` for `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The address allowed in (the network address of a prefix grant).
    pub addr: IpAddr,
    /// Prefix length: 32 or 128 for the single address `addr`, less for every address
    /// of its network (carrier-grade NAT).
    pub len: u8,
    /// What it may reach.
    pub service: Service,
    /// How long from now. Drivers with kernel expiry hand this to the kernel.
    pub timeout: Duration,
}

impl Grant {
    /// A grant for the single address `addr`.
    pub fn host(addr: IpAddr, service: Service, timeout: Duration) -> Grant {
        Grant { addr, len: Prefix::host(addr).len, service, timeout }
    }

    /// What is let in.
    pub fn source(&self) -> Prefix {
        Prefix { addr: self.addr, len: self.len }
    }

    /// The key that names this grant in the firewall.
    pub fn key(&self) -> Key {
        (self.source(), self.service)
    }
}

/// What names a grant: its source (an address or a prefix) and service. A prefix grant
/// and a host grant inside that prefix are different keys.
pub type Key = (Prefix, Service);

/// A grant as the firewall currently holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveGrant {
    /// The address allowed in (the network address of a prefix grant).
    pub addr: IpAddr,
    /// Prefix length (32/128: the single address).
    pub len: u8,
    /// What it may reach.
    pub service: Service,
    /// Time left before the kernel closes it, if the backend knows.
    pub remaining: Option<Duration>,
    /// The full timeout it was given, if the backend knows (with `remaining`: its age).
    pub timeout: Option<Duration>,
}

impl LiveGrant {
    /// What is let in.
    pub fn source(&self) -> Prefix {
        Prefix { addr: self.addr, len: self.len }
    }

    /// The key that names this grant in the firewall.
    pub fn key(&self) -> Key {
        (self.source(), self.service)
    }
}

/// A NAT grant: connections from `addr` to this host's `service` are forwarded to
/// `to` (DNAT, plus a forward accept for exactly that flow) for `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatGrant {
    /// The only source that gets forwarded.
    pub addr: IpAddr,
    /// The port it connects to on this host.
    pub service: Service,
    /// The inside host and port (same address family as `addr`).
    pub to: SocketAddr,
    /// How long from now; the kernel closes it.
    pub timeout: Duration,
}

/// What a grant does to a protected service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Only drop: ungranted sources are dropped, granted ones are left to the host's
    /// own rules (which must accept the service).
    #[default]
    Gate,
    /// Drop ungranted sources and accept granted ones, so a grant opens the port on
    /// a default-drop host (fwknopd's `FWKNOP_INPUT` behaviour).
    Accept,
}

impl Mode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Gate => "gate",
            Mode::Accept => "accept",
        }
    }
}

/// An nftables table the admin owns, named as `family name` (`inet filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTable {
    /// `inet`, `ip` or `ip6`.
    pub family: String,
    /// The table's name.
    pub name: String,
}

/// What the driver must enforce: the services that are closed unless granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Protected services; sorted and de-duplicated by the caller.
    pub protected: Vec<Service>,
    /// Upper bound on simultaneous grants (the kernel set size).
    pub max_grants: u32,
    /// Sources never gated (the management network): accepted before any drop.
    pub never_gate: Vec<Prefix>,
    /// Gate only, or gate and accept.
    pub mode: Mode,
    /// Also gate forwarded connections whose original destination was a protected
    /// service of this host (DNAT to containers, VMs, inside hosts).
    pub forward: bool,
    /// iptables: our chain in `filter` (and `mangle`, `nat`), and the 1-based position
    /// of its jump in `INPUT`.
    pub chain: String,
    /// iptables: where the jump from `INPUT` goes (1 = first).
    pub jump_position: u32,
    /// nftables accept mode: the admin's table that gets our accepting chain.
    pub accept_table: Option<AdminTable>,
    /// Install what NAT grants need (nftables: maps and a nat chain).
    pub nat: bool,
    /// Prefix lengths below 32 that grants may cover (IPv4), sorted and unique; each
    /// gets its own set. Empty: single addresses only.
    pub prefix_v4: Vec<u8>,
    /// The same for IPv6, below 128.
    pub prefix_v6: Vec<u8>,
}

impl Plan {
    /// Whether grants for `len`-bit prefixes of `addr`'s family can be held.
    pub fn holds(&self, p: &Prefix) -> bool {
        p.is_host() || if p.addr.is_ipv4() { &self.prefix_v4 } else { &self.prefix_v6 }.contains(&p.len)
    }
}

/// The plan for `protected` services under the config's firewall settings.
pub fn plan(protected: Vec<Service>, max_grants: u32, f: &crate::config::FirewallSettings) -> Plan {
    Plan {
        protected,
        max_grants,
        mode: if f.accept { Mode::Accept } else { Mode::Gate },
        forward: f.gate_forward,
        chain: f.iptables_chain.clone(),
        jump_position: f.iptables_jump,
        accept_table: f
            .accept_table
            .as_ref()
            .map(|(family, name)| AdminTable { family: family.clone(), name: name.clone() }),
        nat: f.nat,
        never_gate: Vec::new(),
        prefix_v4: Vec::new(),
        prefix_v6: Vec::new(),
    }
}

/// Default iptables chain name.
pub const DEFAULT_CHAIN: &str = "PORTCULLIS";

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            protected: Vec::new(),
            max_grants: 0,
            mode: Mode::Gate,
            forward: false,
            chain: DEFAULT_CHAIN.to_string(),
            jump_position: 1,
            accept_table: None,
            nat: false,
            never_gate: Vec::new(),
            prefix_v4: Vec::new(),
            prefix_v6: Vec::new(),
        }
    }
}

/// A driver failure. The message says what was attempted and what the backend said.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The kernel (netlink) refused or failed an operation.
    #[error("{op}: {source}")]
    Kernel {
        /// What we were doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The backend answered something we could not interpret.
    #[error("{0}")]
    Protocol(String),
}

/// A firewall backend.
pub trait FirewallDriver: Send {
    /// Short name for logs: `nftables`, `iptables`, `none`.
    fn name(&self) -> &'static str;

    /// Install or atomically replace everything this driver owns so that `plan` is
    /// enforced. Live grants for services that stay protected are kept with their
    /// remaining time (a daemon restart must not close or extend open holes).
    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError>;

    /// Add grants, or refresh the timeout of existing ones, in one atomic update.
    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError>;

    /// Remove grants in one atomic update. Missing ones are not an error.
    fn revoke(&mut self, grants: &[Key]) -> Result<(), FirewallError>;

    /// The grants the firewall holds now.
    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError>;

    /// Remove everything this driver owns. Missing state is not an error.
    fn teardown(&mut self) -> Result<(), FirewallError>;

    /// Whether the firewall itself closes grants on time (true for nftables set
    /// timeouts), so that the daemon dying cannot leave a hole open.
    fn kernel_expiry(&self) -> bool;

    /// Check that what `setup(plan)` installed is still in place (someone may have
    /// flushed or edited it). `Ok(None)`: intact; `Ok(Some(what))`: what is missing or
    /// changed. Grants are not checked here (the grant lifecycle compares them with
    /// its schedule). The default knows nothing and says intact.
    fn verify(&mut self, _plan: &Plan) -> Result<Option<String>, FirewallError> {
        Ok(None)
    }

    /// A source of change notifications for what this driver owns, if the backend
    /// has one (nftables: netlink events). Without one, the daemon relies on periodic
    /// [`FirewallDriver::verify`].
    fn watch(&self) -> Result<Option<Box<dyn Watch>>, FirewallError> {
        Ok(None)
    }

    /// Remember `plan` without touching the firewall, so that `teardown` from another
    /// process (`portcullisd teardown`) knows what was installed under it.
    fn adopt(&mut self, plan: &Plan) {
        let _ = plan;
    }

    /// Add NAT grants (or refresh them). Backends without NAT refuse.
    fn grant_nat(&mut self, grants: &[NatGrant]) -> Result<(), FirewallError> {
        let _ = grants;
        Err(FirewallError::Protocol(format!("the {} backend cannot forward (NAT) grants", self.name())))
    }

    /// Remove NAT grants; missing ones are not an error.
    fn revoke_nat(&mut self, grants: &[NatGrant]) -> Result<(), FirewallError> {
        let _ = grants;
        Ok(())
    }
}

/// Notifications of changes made by others to what a driver owns.
pub trait Watch: Send {
    /// Wait up to `timeout`. `Ok(Some(what))`: someone else changed our firewall state
    /// (the driver's own changes are never reported); `Ok(None)`: nothing happened;
    /// `Err`: notifications may have been lost (verify instead).
    fn wait(&mut self, timeout: Duration) -> Result<Option<String>, FirewallError>;
}

/// What `check` prints about the firewall for `plan` on `backend`: the mode in force
/// and what the host must still do itself. One line per item.
pub fn describe(backend: &str, plan: &Plan) -> Vec<String> {
    let services: Vec<String> = plan.protected.iter().map(|s| s.to_string()).collect();
    let services = if services.is_empty() { "nothing".to_string() } else { services.join(", ") };
    let mut out = Vec::new();
    if backend == "none" {
        out.push("firewall: none (dry run): nothing is dropped or opened".into());
        return out;
    }
    match plan.mode {
        Mode::Gate => {
            out.push(format!(
                "firewall mode: gate ({backend}): new connections to {services} are dropped unless granted"
            ));
            out.push(
                "the host's own rules must still accept these services (a grant only stops the drop)".into(),
            );
        }
        Mode::Accept if backend.starts_with("iptables") => {
            out.push(format!(
                "firewall mode: accept ({backend}): chain {} (jumped to from INPUT position {}) accepts granted \
                 sources for {services} and drops the rest",
                plan.chain, plan.jump_position
            ));
            out.push(
                "the host must still accept established,related traffic (any default-drop host does)".into(),
            );
        }
        Mode::Accept => match &plan.accept_table {
            Some(t) => {
                out.push(format!(
                    "firewall mode: accept ({backend}): table inet {} drops {services} unless granted; chain {} in \
                     table {} {} accepts granted sources",
                    nft::TABLE,
                    nft::ACCEPT_CHAIN,
                    t.family,
                    t.name
                ));
                out.push(format!(
                    "the input chain of table {} {} must `jump {}` before its final drop, and accept established,related",
                    t.family,
                    t.name,
                    nft::ACCEPT_CHAIN
                ));
            }
            None => out.push("firewall mode: accept, but no accept_table is set for nftables".into()),
        },
    }
    if plan.forward {
        out.push(format!("forwarded connections DNAT'd from {services} on this host are gated too"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_says_which_mode_and_what_the_host_must_do() {
        let mut plan = Plan { protected: vec![Service::tcp(22)], forward: true, ..Plan::default() };
        let text = describe("nftables", &plan).join("\n");
        assert!(text.contains("mode: gate") && text.contains("must still accept"), "{text}");
        assert!(text.contains("DNAT"), "{text}");
        plan.mode = Mode::Accept;
        plan.chain = "FWKNOP_INPUT".into();
        let text = describe("iptables-nft", &plan).join("\n");
        assert!(text.contains("mode: accept") && text.contains("FWKNOP_INPUT"), "{text}");
        assert!(text.contains("established,related"), "{text}");
        plan.accept_table = Some(AdminTable { family: "inet".into(), name: "filter".into() });
        let text = describe("nftables", &plan).join("\n");
        assert!(text.contains("jump portcullis") && text.contains("inet filter"), "{text}");
        assert!(describe("none", &plan).join("\n").contains("dry run"));
    }
}
