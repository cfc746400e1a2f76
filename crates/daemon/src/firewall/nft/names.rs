//! The names and ids of what we install: shared by the ruleset and the prefix grant sets.

use std::net::IpAddr;

/// The one table we own: `table inet portcullis`.
pub const TABLE: &str = "portcullis";
/// Our base chain.
pub const CHAIN: &str = "input";
/// `inet_proto . inet_service` of every protected service.
pub const SET_PROTECTED: &str = "protected";
/// IPv4 grants: `ipv4_addr . inet_proto . inet_service`, with timeouts.
pub const SET_ALLOW4: &str = "allow4";
/// IPv6 grants: `ipv6_addr . inet_proto . inet_service`, with timeouts.
pub const SET_ALLOW6: &str = "allow6";

/// Prefix grant sets: this plus the prefix length (IPv4), plus 200 (IPv6); clear of
/// the ids in `ruleset.rs` and `compose.rs`.
pub(super) const ID_PREFIX_BASE: u32 = 100;

/// The set holding single-address grants for this address family.
pub fn allow_set(addr: &IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => SET_ALLOW4,
        IpAddr::V6(_) => SET_ALLOW6,
    }
}
