//! Zero-copy views over sniffed packets (smoltcp's `wire` pattern).
//!
//! Input is an L3 packet as delivered by an `AF_PACKET`/`SOCK_DGRAM` socket: the IPv4 or
//! IPv6 header is at offset 0, whatever the link type. Every byte is attacker-controlled:
//! lengths are checked before any field is read, and no function here panics or
//! allocates.
//!
//! # Layout
//! - [`ipv4`], [`ipv6`], [`tcp`], [`udp`]: one `Packet<T: AsRef<[u8]>>` view per header.
//!   `Packet::new_checked` runs `check_len`; **once `check_len` has succeeded, no accessor
//!   panics**. `new_unchecked` is for buffers whose length is already known to be fine.
//! - [`parse_ip`]: the one entry point the daemon uses. It chains the views and applies
//!   the policy below, returning a [`Datagram`].
//!
//! # Policy (what `parse_ip` refuses)
//! - Anything but IPv4/IPv6 carrying TCP or UDP, and any length field that disagrees with
//!   the buffer. The IP length bounds the packet: trailing link-layer padding is ignored.
//! - Non-first fragments: they carry no transport header, so no ports.
//!   First fragments are accepted when the whole transport header is present; their
//!   `payload` is then only the part carried in this fragment.
//! - IPv6 jumbograms, ESP, no-next-header, unknown extension headers, hop-by-hop anywhere
//!   but first, and chains of more than [`ipv6::MAX_EXT_HEADERS`] extension headers.
//! - Source or destination port 0: never a valid knock.
//!
//! Addresses come out in [canonical](crate::addr::canonical) form: an IPv6 header carrying
//! IPv4-mapped addresses (`::ffff:a.b.c.d`) yields the IPv4 addresses, so every table
//! downstream compares one spelling.
//!
//! Checksums (IP, TCP, UDP) are **not** verified. We sniff a copy of the packet before
//! the stack has looked at it; a packet with a bad checksum is dropped by the kernel, so
//! it opens no connection, and an attacker able to forge a knock can equally forge a
//! correct checksum. Verifying would cost a pass over every payload for no security gain.

use std::net::IpAddr;

use crate::addr::canonical;
use crate::{Proto, TcpFlags};

pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

#[cfg(test)]
pub(crate) mod build;

/// A byte range of a header field, as in smoltcp.
pub type Field = core::ops::Range<usize>;

/// The packet is truncated, malformed, a non-first fragment, or not TCP/UDP.
/// Deliberately carries no detail: callers drop such packets silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed or unsupported packet")
    }
}

impl std::error::Error for Error {}

/// Result of parsing a wire view.
pub type Result<T> = core::result::Result<T, Error>;

/// What the daemon needs from one sniffed TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Source address, in [canonical](crate::addr::canonical) form.
    pub src: IpAddr,
    /// Destination address, in [canonical](crate::addr::canonical) form.
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
    /// For a first fragment, only the part carried in this fragment.
    pub payload: &'a [u8],
}

/// Parse an L3 packet (IPv4 or IPv6 header at offset 0) into a [`Datagram`].
///
/// The IP version is taken from the first nibble. See the module docs for what is
/// refused. Never panics, never allocates.
pub fn parse_ip(packet: &[u8]) -> Result<Datagram<'_>> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(packet),
        Some(6) => parse_ipv6(packet),
        _ => Err(Error),
    }
}

fn parse_ipv4(packet: &[u8]) -> Result<Datagram<'_>> {
    let ip = ipv4::Packet::new_checked(packet)?;
    if ip.version() != 4 || ip.frag_offset() != 0 {
        return Err(Error);
    }
    let proto = Proto::from_number(ip.protocol()).ok_or(Error)?;
    let src = IpAddr::V4(ip.src_addr());
    let dst = IpAddr::V4(ip.dst_addr());
    parse_transport(src, dst, proto, ip.payload(), ip.more_frags())
}

fn parse_ipv6(packet: &[u8]) -> Result<Datagram<'_>> {
    let ip = ipv6::Packet::new_checked(packet)?;
    if ip.version() != 6 {
        return Err(Error);
    }
    let payload = ip.payload();
    let upper = ipv6::walk_ext_headers(ip.next_header(), payload)?;
    let proto = Proto::from_number(upper.protocol).ok_or(Error)?;
    let l4 = payload.get(upper.offset..).ok_or(Error)?;
    let src = canonical(IpAddr::V6(ip.src_addr()));
    let dst = canonical(IpAddr::V6(ip.dst_addr()));
    parse_transport(src, dst, proto, l4, upper.fragmented)
}

/// `fragmented`: this is a first fragment, so the transport segment continues in other
/// fragments and a UDP length larger than what we have is expected.
fn parse_transport(
    src: IpAddr,
    dst: IpAddr,
    proto: Proto,
    l4: &[u8],
    fragmented: bool,
) -> Result<Datagram<'_>> {
    let (src_port, dst_port, flags, payload) = match proto {
        Proto::Tcp => {
            let tcp = tcp::Packet::new_checked(l4)?;
            (tcp.src_port(), tcp.dst_port(), tcp.flags(), tcp.payload())
        }
        Proto::Udp => {
            let udp = udp::Packet::new_unchecked(l4);
            if fragmented {
                udp.check_len_fragment()?;
            } else {
                udp.check_len()?;
            }
            (udp.src_port(), udp.dst_port(), TcpFlags(0), udp.payload())
        }
    };
    if src_port == 0 || dst_port == 0 {
        return Err(Error);
    }
    Ok(Datagram { src, dst, proto, src_port, dst_port, flags, payload })
}

/// Big-endian `u16` from the first two bytes. Callers pass a slice taken with a
/// [`Field`] of length 2 after `check_len`, so the indexing cannot fail.
fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests;
