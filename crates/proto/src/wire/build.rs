//! Test-only packet builder: emits IPv4/IPv6 + TCP/UDP packets from a few fields so
//! tests can check that parsing returns what was built. Not hardened: sizes are trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ipv6::next_header as nh;
use crate::Proto;

/// One IPv6 extension header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ext {
    /// Hop-by-hop options with this "Hdr Ext Len" (8-byte units beyond the first).
    HopByHop(u8),
    /// Routing header, same length unit.
    Routing(u8),
    /// Destination options, same length unit.
    DestOpts(u8),
    /// Fragment header: offset in 8-byte units, M flag.
    Fragment { offset: u16, more: bool },
    /// Authentication header with this "Payload Len" (4-byte units minus 2).
    Auth(u8),
}

impl Ext {
    fn kind(self) -> u8 {
        match self {
            Ext::HopByHop(_) => nh::HOP_BY_HOP,
            Ext::Routing(_) => nh::ROUTING,
            Ext::DestOpts(_) => nh::DEST_OPTS,
            Ext::Fragment { .. } => nh::FRAGMENT,
            Ext::Auth(_) => nh::AUTH,
        }
    }

    fn emit(self, next: u8, out: &mut Vec<u8>) {
        match self {
            Ext::HopByHop(n) | Ext::Routing(n) | Ext::DestOpts(n) => {
                out.extend([next, n]);
                // Zero bytes are Pad1 options; for routing, type 0 with 0 segments left.
                out.resize(out.len() + (usize::from(n) + 1) * 8 - 2, 0);
            }
            Ext::Fragment { offset, more } => {
                out.extend([next, 0]);
                out.extend(((offset << 3) | u16::from(more)).to_be_bytes());
                out.extend([0xde, 0xad, 0xbe, 0xef]);
            }
            Ext::Auth(n) => {
                out.extend([next, n]);
                out.resize(out.len() + (usize::from(n) + 2) * 4 - 2, 0xa5);
            }
        }
    }
}

/// Fields of a packet to build. `src` and `dst` must be the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Builder {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (ignored for UDP).
    pub flags: u8,
    /// IPv4 options, in 4-byte words (at most 10).
    pub ip_options: u8,
    /// TCP options, in 4-byte words (at most 10).
    pub tcp_options: u8,
    /// IPv4 fragment offset in 8-byte units.
    pub frag_offset: u16,
    /// IPv4 "more fragments" flag.
    pub more_frags: bool,
    /// IPv6 extension headers, in order.
    pub ext: Vec<Ext>,
    pub payload: Vec<u8>,
    /// Link-layer padding appended after the IP packet.
    pub padding: usize,
}

impl Builder {
    pub(crate) fn new(v6: bool, proto: Proto, dst_port: u16, flags: u8) -> Builder {
        let (src, dst) = if v6 {
            (
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            )
        } else {
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)))
        };
        Builder {
            src,
            dst,
            proto,
            src_port: 40000,
            dst_port,
            flags,
            ip_options: 0,
            tcp_options: 0,
            frag_offset: 0,
            more_frags: false,
            ext: Vec::new(),
            payload: Vec::new(),
            padding: 0,
        }
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let l4 = self.transport();
        let mut out = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => self.ipv4(src, dst, &l4),
            (IpAddr::V6(src), IpAddr::V6(dst)) => self.ipv6(src, dst, &l4),
            _ => panic!("builder: mixed address families"),
        };
        out.resize(out.len() + self.padding, 0);
        out
    }

    fn transport(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.src_port.to_be_bytes());
        out.extend(self.dst_port.to_be_bytes());
        match self.proto {
            Proto::Tcp => {
                out.extend(1u32.to_be_bytes()); // seq
                out.extend(0u32.to_be_bytes()); // ack
                out.extend([(5 + self.tcp_options) << 4, self.flags]);
                out.extend([0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
                out.resize(out.len() + usize::from(self.tcp_options) * 4, 1); // NOPs
            }
            Proto::Udp => {
                let len = u16::try_from(8 + self.payload.len()).expect("builder: UDP too long");
                out.extend(len.to_be_bytes());
                out.extend([0, 0]); // checksum
            }
        }
        out.extend(&self.payload);
        out
    }

    fn ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
        let header_len = 20 + usize::from(self.ip_options) * 4;
        let total = u16::try_from(header_len + l4.len()).expect("builder: IPv4 too long");
        let flg_off = (u16::from(self.more_frags) << 13) | self.frag_offset;
        let mut out = vec![0x40 | (5 + self.ip_options), 0];
        out.extend(total.to_be_bytes());
        out.extend([0x12, 0x34]); // identification
        out.extend(flg_off.to_be_bytes());
        out.extend([64, self.proto.number(), 0, 0]); // ttl, protocol, checksum
        out.extend(src.octets());
        out.extend(dst.octets());
        out.resize(header_len, 1); // NOP options
        let sum = checksum(&out);
        out[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend(l4);
        out
    }

    fn ipv6(&self, src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]) -> Vec<u8> {
        let mut chain = Vec::new();
        let kinds: Vec<u8> = self.ext.iter().map(|e| e.kind()).chain([self.proto.number()]).collect();
        for (i, e) in self.ext.iter().enumerate() {
            e.emit(kinds[i + 1], &mut chain);
        }
        chain.extend(l4);
        let len = u16::try_from(chain.len()).expect("builder: IPv6 too long");
        let mut out = vec![0x60, 0, 0, 0];
        out.extend(len.to_be_bytes());
        out.extend([kinds[0], 64]);
        out.extend(src.octets());
        out.extend(dst.octets());
        out.extend(chain);
        out
    }
}

/// The Internet checksum (RFC 1071) over `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
