//! Firewall drivers: how a grant becomes a hole in the firewall.
//!
//! Every driver owns its own piece of the firewall (a table, a chain) and never edits
//! anything else. Drivers work on portcullis' own [`Grant`] type; backend handles stay
//! inside the driver. `setup` installs or atomically replaces what the driver owns,
//! `grant`/`revoke` change only grant state, `teardown` removes everything it owns.

use std::net::IpAddr;
use std::time::Duration;

use portcullis_proto::Service;

pub mod iptables;
pub mod nft;
pub mod none;
pub mod prefix;
mod shared;

pub use prefix::Prefix;
pub use shared::Shared;

/// One hole: `addr` may open new connections to `service` for `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The address allowed in.
    pub addr: IpAddr,
    /// What it may reach.
    pub service: Service,
    /// How long from now. Drivers with kernel expiry hand this to the kernel.
    pub timeout: Duration,
}

/// A grant as the firewall currently holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveGrant {
    /// The address allowed in.
    pub addr: IpAddr,
    /// What it may reach.
    pub service: Service,
    /// Time left before the kernel closes it, if the backend knows.
    pub remaining: Option<Duration>,
    /// The full timeout it was given, if the backend knows (with `remaining`: its age).
    pub timeout: Option<Duration>,
}

/// What the driver must enforce: the services that are closed unless granted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Protected services; sorted and de-duplicated by the caller.
    pub protected: Vec<Service>,
    /// Upper bound on simultaneous grants (the kernel set size).
    pub max_grants: u32,
    /// Sources never gated (the management network): accepted before any drop.
    pub never_gate: Vec<Prefix>,
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
    fn revoke(&mut self, grants: &[(IpAddr, Service)]) -> Result<(), FirewallError>;

    /// The grants the firewall holds now.
    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError>;

    /// Remove everything this driver owns. Missing state is not an error.
    fn teardown(&mut self) -> Result<(), FirewallError>;

    /// Whether the firewall itself closes grants on time (true for nftables set
    /// timeouts), so that the daemon dying cannot leave a hole open.
    fn kernel_expiry(&self) -> bool;
}
