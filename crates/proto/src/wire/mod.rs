//! Zero-copy views over sniffed packets (smoltcp's `wire` pattern).
//!
//! Input is an L3 packet as delivered by an `AF_PACKET`/`SOCK_DGRAM` socket: the IPv4 or
//! IPv6 header is at offset 0, whatever the link type. Every byte is attacker-controlled:
//! lengths are checked before any field is read, and no function here panics or
//! allocates.
//!
//! TODO(wire helper): ipv4.rs, ipv6.rs (extension-header walk, bounded), tcp.rs, udp.rs.

use std::net::IpAddr;

use crate::{Proto, TcpFlags};

/// The packet is truncated, malformed, a non-first fragment, or not TCP/UDP.
/// Deliberately carries no detail: callers drop such packets silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

/// What the daemon needs from one sniffed TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TCP or UDP.
    pub proto: Proto,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP flags; zero for UDP.
    pub flags: TcpFlags,
    /// Transport payload (UDP data or TCP segment data), bounded by the IP length.
    pub payload: &'a [u8],
}

/// Parse an L3 packet (IPv4 or IPv6 header at offset 0) into a [`Datagram`].
pub fn parse_ip(_packet: &[u8]) -> Result<Datagram<'_>, Error> {
    Err(Error)
}
