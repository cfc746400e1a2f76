//! Crafted IPv4/IPv6 + TCP/UDP packets for the raw-socket flooder, with correct
//! checksums (the kernel fills in neither the TCP/UDP checksum nor, for IPv6, anything
//! at all on an `IPPROTO_RAW` socket).

use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv4 header length we emit (no options).
pub const IPV4_HDR: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_HDR: usize = 40;
/// TCP header length we emit (no options).
pub const TCP_HDR: usize = 20;
/// UDP header length.
pub const UDP_HDR: usize = 8;
/// TCP SYN flag.
pub const SYN: u8 = 0x02;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Streaming Internet checksum (RFC 1071) over several byte slices, as if they were
/// concatenated (an odd byte at the end of one slice pairs with the next slice).
#[derive(Debug, Default, Clone, Copy)]
pub struct Checksum {
    sum: u64,
    odd: Option<u8>,
}

impl Checksum {
    /// Add bytes.
    pub fn add(&mut self, mut data: &[u8]) -> &mut Self {
        if let Some(hi) = self.odd.take() {
            match data.split_first() {
                Some((&lo, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([hi, lo]));
                    data = rest;
                }
                None => {
                    self.odd = Some(hi);
                    return self;
                }
            }
        }
        let mut pairs = data.chunks_exact(2);
        for p in &mut pairs {
            self.sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            self.odd = Some(*last);
        }
        self
    }

    /// The one's-complement checksum of everything added.
    pub fn finish(&self) -> u16 {
        let mut sum = self.sum;
        if let Some(hi) = self.odd {
            sum += u64::from(u16::from_be_bytes([hi, 0]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

/// Checksum of the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut c = Checksum::default();
    for p in parts {
        c.add(p);
    }
    c.finish()
}

fn ipv4_header(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total: usize, id: u16) {
    buf[0] = 0x45;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    buf[4..6].copy_from_slice(&id.to_be_bytes());
    buf[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
    buf[8] = 64;
    buf[9] = proto;
    buf[10..12].copy_from_slice(&[0, 0]);
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&buf[..IPV4_HDR]]);
    buf[10..12].copy_from_slice(&c.to_be_bytes());
}

fn ipv6_header(buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: usize) {
    buf[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
    buf[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    buf[6] = next;
    buf[7] = 64;
    buf[8..24].copy_from_slice(&src.octets());
    buf[24..40].copy_from_slice(&dst.octets());
}

/// Write a bare TCP header with `flags` into `seg[..20]` (checksum zero).
fn tcp_header(seg: &mut [u8], sport: u16, dport: u16, seq: u32, flags: u8) {
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&[0; 4]);
    seg[12] = 5 << 4;
    seg[13] = flags;
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    seg[16..20].copy_from_slice(&[0; 4]);
}

fn udp_header(seg: &mut [u8], sport: u16, dport: u16, len: usize) {
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    seg[6..8].copy_from_slice(&[0, 0]);
}

fn v4_pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn v6_pseudo(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0..16].copy_from_slice(&src.octets());
    p[16..32].copy_from_slice(&dst.octets());
    p[32..36].copy_from_slice(&(len as u32).to_be_bytes());
    p[39] = next;
    p
}

/// An IPv4 TCP SYN (40 bytes) into `buf`.
pub fn tcp_syn_v4(buf: &mut [u8; 40], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) {
    ipv4_header(&mut buf[..IPV4_HDR], src, dst, PROTO_TCP, 40, (seq >> 16) as u16);
    let seg = &mut buf[IPV4_HDR..];
    tcp_header(seg, sport, dport, seq, SYN);
    let c = checksum(&[&v4_pseudo(src, dst, PROTO_TCP, TCP_HDR), seg]);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
}

/// An IPv6 TCP SYN (60 bytes) into `buf`.
pub fn tcp_syn_v6(buf: &mut [u8; 60], src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, seq: u32) {
    ipv6_header(&mut buf[..IPV6_HDR], src, dst, PROTO_TCP, TCP_HDR);
    let seg = &mut buf[IPV6_HDR..];
    tcp_header(seg, sport, dport, seq, SYN);
    let c = checksum(&[&v6_pseudo(src, dst, PROTO_TCP, TCP_HDR), seg]);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 UDP datagram carrying `payload`, replacing the contents of `buf`.
pub fn udp_v4(buf: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) {
    let ulen = UDP_HDR + payload.len();
    buf.clear();
    buf.resize(IPV4_HDR + ulen, 0);
    ipv4_header(&mut buf[..IPV4_HDR], src, dst, PROTO_UDP, IPV4_HDR + ulen, sport);
    let seg = &mut buf[IPV4_HDR..];
    udp_header(seg, sport, dport, ulen);
    seg[UDP_HDR..].copy_from_slice(payload);
    let c = match checksum(&[&v4_pseudo(src, dst, PROTO_UDP, ulen), seg]) {
        0 => 0xffff, // zero means "no checksum" in UDP
        c => c,
    };
    seg[6..8].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_proto::{wire, Proto};

    #[test]
    fn checksum_matches_rfc1071_example_and_known_header() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d.
        assert_eq!(checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), 0x220d);
        // A classic IPv4 header with its checksum field zeroed: b861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&hdr]), 0xb861);
    }

    #[test]
    fn checksum_pairs_odd_bytes_across_slices() {
        let whole = [1u8, 2, 3, 4, 5, 6, 7];
        assert_eq!(checksum(&[&whole[..3], &whole[3..4], &whole[4..]]), checksum(&[&whole]));
        assert_eq!(checksum(&[&whole[..1], &[], &whole[1..]]), checksum(&[&whole]));
    }

    #[test]
    fn built_syn_v4_parses_and_verifies() {
        let (src, dst) = (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(192, 0, 2, 1));
        let mut b = [0u8; 40];
        tcp_syn_v4(&mut b, src, dst, 40000, 7000, 0xdead_beef);
        assert_eq!(checksum(&[&b[..20]]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&[&v4_pseudo(src, dst, 6, 20), &b[20..]]), 0, "TCP checksum");
        let d = wire::parse_ip(&b).unwrap();
        assert_eq!(
            (d.src, d.dst, d.proto, d.src_port, d.dst_port),
            (src.into(), dst.into(), Proto::Tcp, 40000, 7000)
        );
        assert_eq!(b[33], SYN);
    }

    #[test]
    fn built_syn_v6_parses_and_verifies() {
        let src: Ipv6Addr = "2001:db8:ff00::1234".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let mut b = [0u8; 60];
        tcp_syn_v6(&mut b, src, dst, 1234, 7000, 7);
        assert_eq!(checksum(&[&v6_pseudo(src, dst, 6, 20), &b[40..]]), 0);
        let d = wire::parse_ip(&b).unwrap();
        assert_eq!((d.src, d.dst, d.dst_port), (src.into(), dst.into(), 7000));
    }

    #[test]
    fn built_udp_v4_parses_and_verifies() {
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 9), Ipv4Addr::new(192, 0, 2, 1));
        let mut b = Vec::new();
        udp_v4(&mut b, src, dst, 5555, 62201, b"junk!");
        assert_eq!(b.len(), 20 + 8 + 5);
        assert_eq!(checksum(&[&b[..20]]), 0);
        assert_eq!(checksum(&[&v4_pseudo(src, dst, 17, 13), &b[20..]]), 0);
        let d = wire::parse_ip(&b).unwrap();
        assert_eq!((d.proto, d.dst_port, d.payload), (Proto::Udp, 62201, &b"junk!"[..]));
    }
}
