//! Fixture, truncation and property tests for [`parse_ip`].
//!
//! Fixtures were generated with real checksums (even though we do not verify them) and
//! are grouped one header per line block.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::build::{Builder, Ext};
use super::*;

#[rustfmt::skip]
static IPV4_TCP_SYN: [u8; 44] = [
    0x45, 0x00, 0x00, 0x2c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x32, 0x34,
    0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x14,
    0xc9, 0x3a, 0x1b, 0x58, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00,
    0x60, 0x02, 0xfa, 0xf0, 0x87, 0xea, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
];
#[rustfmt::skip]
static IPV4_OPTIONS_TCP: [u8; 48] = [
    0x46, 0x00, 0x00, 0x30, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x9d, 0x2b,
    0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x14, 0x94, 0x04, 0x00, 0x00,
    0xc9, 0x3b, 0x1b, 0x59, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
    0x50, 0x18, 0xfa, 0xf0, 0xf7, 0xc1, 0x00, 0x00, 0x6b, 0x6e, 0x6f, 0x6b,
];
#[rustfmt::skip]
static IPV4_UDP_PADDED: [u8; 46] = [
    0x45, 0x00, 0x00, 0x20, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x32, 0x35,
    0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x14,
    0x9c, 0x40, 0xf2, 0xf9, 0x00, 0x0c, 0xef, 0xd7,
    0x53, 0x50, 0x41, 0x21,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00,
];
#[rustfmt::skip]
static IPV6_TCP_SYN: [u8; 64] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02,
    0xc9, 0x3a, 0x1b, 0x58, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00,
    0x60, 0x02, 0xfa, 0xf0, 0x18, 0xc8, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
];
#[rustfmt::skip]
static IPV6_EXT_CHAIN_UDP_FRAG: [u8; 84] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02,
    0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
    0x2c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
    0x11, 0x00, 0x00, 0x01, 0xca, 0xfe, 0xba, 0xbe,
    0x9c, 0x40, 0xf2, 0xf9, 0x04, 0xb8, 0x00, 0x00,
    0x53, 0x50, 0x41, 0x2d, 0x66, 0x72, 0x61, 0x67, 0x6d, 0x65, 0x6e, 0x74,
];
#[rustfmt::skip]
static IPV6_AH_TCP: [u8; 84] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x33, 0x40, 0x20, 0x01, 0x0d, 0xb8,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02,
    0x06, 0x04, 0x00, 0x00, 0x00, 0x00, 0x10, 0x01, 0x00, 0x00, 0x00, 0x07,
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
    0xc9, 0x3a, 0x1b, 0x58, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x01,
    0x50, 0x10, 0xfa, 0xf0, 0x30, 0x75, 0x00, 0x00,
];

const V4_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const V4_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));
const V6_SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const V6_DST: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

const FIXTURES: [&[u8]; 6] = [
    &IPV4_TCP_SYN,
    &IPV4_OPTIONS_TCP,
    &IPV4_UDP_PADDED,
    &IPV6_TCP_SYN,
    &IPV6_EXT_CHAIN_UDP_FRAG,
    &IPV6_AH_TCP,
];

fn patched(fixture: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut p = fixture.to_vec();
    p[at..at + bytes.len()].copy_from_slice(bytes);
    p
}

#[test]
fn parses_ipv4_tcp_syn() {
    let d = parse_ip(&IPV4_TCP_SYN).unwrap();
    assert_eq!(
        d,
        Datagram {
            src: V4_SRC,
            dst: V4_DST,
            proto: Proto::Tcp,
            src_port: 51514,
            dst_port: 7000,
            flags: TcpFlags(TcpFlags::SYN),
            payload: &[],
        }
    );
}

#[test]
fn parses_ipv4_with_options() {
    let d = parse_ip(&IPV4_OPTIONS_TCP).unwrap();
    assert_eq!((d.src, d.dst, d.proto), (V4_SRC, V4_DST, Proto::Tcp));
    assert_eq!((d.src_port, d.dst_port), (51515, 7001));
    assert_eq!(d.flags, TcpFlags(TcpFlags::PSH | TcpFlags::ACK));
    assert_eq!(d.payload, b"knok");
}

#[test]
fn parses_ipv4_udp_and_ignores_link_padding() {
    let d = parse_ip(&IPV4_UDP_PADDED).unwrap();
    assert_eq!((d.src, d.dst, d.proto), (V4_SRC, V4_DST, Proto::Udp));
    assert_eq!((d.src_port, d.dst_port, d.flags), (40000, 62201, TcpFlags(0)));
    assert_eq!(d.payload, b"SPA!");
}

#[test]
fn parses_ipv6_tcp_syn() {
    let d = parse_ip(&IPV6_TCP_SYN).unwrap();
    assert_eq!((d.src, d.dst, d.proto), (V6_SRC, V6_DST, Proto::Tcp));
    assert_eq!((d.src_port, d.dst_port), (51514, 7000));
    assert_eq!(d.flags, TcpFlags(TcpFlags::SYN));
    assert!(d.payload.is_empty());
}

#[test]
fn parses_ipv6_ext_chain_first_fragment() {
    // HBH -> dest opts -> fragment (offset 0, M) -> UDP whose length (1208) spans
    // later fragments: accepted, with the payload this fragment carries.
    let d = parse_ip(&IPV6_EXT_CHAIN_UDP_FRAG).unwrap();
    assert_eq!((d.src, d.dst, d.proto), (V6_SRC, V6_DST, Proto::Udp));
    assert_eq!((d.src_port, d.dst_port), (40000, 62201));
    assert_eq!(d.payload, b"SPA-fragment");
}

#[test]
fn parses_ipv6_auth_header_in_4_byte_units() {
    // AH "Payload Len" 4 means (4 + 2) * 4 = 24 bytes; read as 8-byte units it would be 40.
    let d = parse_ip(&IPV6_AH_TCP).unwrap();
    assert_eq!((d.src_port, d.dst_port), (51514, 7000));
    assert_eq!(d.flags, TcpFlags(TcpFlags::ACK));
}

#[test]
fn every_truncation_is_rejected_without_panicking() {
    for fixture in FIXTURES {
        // The IP length field covers the whole fixture except the UDP link padding.
        let ip_len = if fixture == IPV4_UDP_PADDED.as_slice() { 32 } else { fixture.len() };
        for n in 0..fixture.len() {
            let r = parse_ip(&fixture[..n]);
            assert_eq!(r.is_ok(), n >= ip_len, "prefix {n} of {fixture:02x?}");
        }
        assert!(parse_ip(fixture).is_ok());
    }
}

#[test]
fn rejects_bad_ihl() {
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 0, &[0x44])), Err(Error));
    // IHL 15 = 60 bytes, more than total_length.
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 0, &[0x4f])), Err(Error));
    // IHL 6 on a packet without options: the TCP header is read 4 bytes late, so its
    // data offset lands on the checksum byte 0x87 (32 bytes), beyond the packet.
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 0, &[0x46])), Err(Error));
}

#[test]
fn rejects_ipv4_total_length_inconsistent_with_buffer() {
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 2, &[0, 45])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 2, &[0xff, 0xff])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 2, &[0, 19])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 2, &[0, 0])), Err(Error));
    // Shorter than the buffer: the rest is padding, and here it cuts the MSS option.
    let p = patched(&IPV4_TCP_SYN, 2, &[0, 40]);
    assert_eq!(parse_ip(&p), Err(Error));
    // Without options (data offset 5) the header fits and the option bytes are padding.
    let p = patched(&p, 32, &[0x50]);
    assert_eq!(parse_ip(&p).map(|d| (d.dst_port, d.payload)), Ok((7000, &[][..])));
}

#[test]
fn rejects_nonfirst_fragment_v4_but_accepts_first() {
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 6, &[0x00, 0x01])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 6, &[0x3f, 0xff])), Err(Error));
    // MF set, offset 0: first fragment with the TCP header present.
    assert!(parse_ip(&patched(&IPV4_TCP_SYN, 6, &[0x20, 0x00])).is_ok());
}

#[test]
fn accepts_first_fragment_udp_longer_than_fragment_only_when_fragmented() {
    // UDP length 1000 > 12 bytes present.
    let long = patched(&IPV4_UDP_PADDED, 24, &[0x03, 0xe8]);
    assert_eq!(parse_ip(&long), Err(Error));
    let first_frag = patched(&long, 6, &[0x20, 0x00]);
    assert_eq!(parse_ip(&first_frag).map(|d| d.payload), Ok(&b"SPA!"[..]));
    // Even in a fragment, the length must cover the UDP header.
    assert_eq!(parse_ip(&patched(&first_frag, 24, &[0, 7])), Err(Error));
}

#[test]
fn rejects_first_fragment_without_full_transport_header() {
    let mut b = Builder::new(false, Proto::Tcp, 7000, TcpFlags::SYN);
    b.more_frags = true;
    let p = b.build();
    assert!(parse_ip(&p).is_ok());
    // Cut the packet (and its total length) inside the TCP header.
    let mut cut = p[..30].to_vec();
    cut[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(parse_ip(&cut), Err(Error));
}

#[test]
fn rejects_nonfirst_fragment_v6() {
    // Fragment header offset field at 40 + 8 + 8 + 2: offset 1 (8 bytes), M set.
    let p = patched(&IPV6_EXT_CHAIN_UDP_FRAG, 58, &[0x00, 0x09]);
    assert_eq!(parse_ip(&p), Err(Error));
    // Offset 0 and M clear (atomic fragment): a whole datagram, but here the UDP
    // length (1208) then exceeds the packet.
    let p = patched(&IPV6_EXT_CHAIN_UDP_FRAG, 58, &[0x00, 0x00]);
    assert_eq!(parse_ip(&p), Err(Error));
}

#[test]
fn accepts_eight_ext_headers_and_rejects_nine() {
    for v6_proto in [Proto::Tcp, Proto::Udp] {
        let mut b = Builder::new(true, v6_proto, 7000, TcpFlags::SYN);
        b.ext = vec![Ext::HopByHop(0)];
        b.ext.extend([Ext::DestOpts(1), Ext::Routing(0), Ext::Auth(1)].repeat(2));
        b.ext.push(Ext::Fragment { offset: 0, more: false });
        assert_eq!(b.ext.len(), 8);
        assert_eq!(parse_ip(&b.build()).unwrap().dst_port, 7000);
        b.ext.push(Ext::DestOpts(0));
        assert_eq!(parse_ip(&b.build()), Err(Error));
    }
}

#[test]
fn rejects_esp_no_next_header_and_unknown() {
    for next in [50, 59, 1, 58, 135, 255] {
        assert_eq!(parse_ip(&patched(&IPV6_TCP_SYN, 6, &[next])), Err(Error), "{next}");
    }
    // The same inside a chain: dest-opts' next header at 48.
    assert_eq!(parse_ip(&patched(&IPV6_EXT_CHAIN_UDP_FRAG, 48, &[50])), Err(Error));
}

#[test]
fn rejects_hop_by_hop_after_first() {
    let mut b = Builder::new(true, Proto::Tcp, 7000, TcpFlags::SYN);
    b.ext = vec![Ext::DestOpts(0), Ext::HopByHop(0)];
    assert_eq!(parse_ip(&b.build()), Err(Error));
}

#[test]
fn rejects_ipv6_jumbogram_and_bad_payload_length() {
    assert_eq!(parse_ip(&patched(&IPV6_TCP_SYN, 4, &[0, 0])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV6_TCP_SYN, 4, &[0, 25])), Err(Error));
    // Extension header longer than the payload.
    assert_eq!(parse_ip(&patched(&IPV6_EXT_CHAIN_UDP_FRAG, 41, &[9])), Err(Error));
}

#[test]
fn rejects_port_zero() {
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 20, &[0, 0])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 22, &[0, 0])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_UDP_PADDED, 22, &[0, 0])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV6_TCP_SYN, 42, &[0, 0])), Err(Error));
}

#[test]
fn rejects_bad_tcp_data_offset() {
    for off in [0x00, 0x40, 0x70, 0xf0] {
        assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 32, &[off])), Err(Error), "{off:#x}");
    }
    // Data offset 5 makes the MSS option payload.
    let p = patched(&IPV4_TCP_SYN, 32, &[0x50]);
    assert_eq!(parse_ip(&p).unwrap().payload, &[2, 4, 5, 0xb4]);
}

#[test]
fn rejects_bad_udp_length() {
    for len in [0u16, 7, 13, 0xffff] {
        let p = patched(&IPV4_UDP_PADDED, 24, &len.to_be_bytes());
        assert_eq!(parse_ip(&p), Err(Error), "{len}");
    }
    // Shorter than the IP payload: trimmed, like the kernel does.
    let p = patched(&IPV4_UDP_PADDED, 24, &10u16.to_be_bytes());
    assert_eq!(parse_ip(&p).map(|d| d.payload), Ok(&b"SP"[..]));
}

#[test]
fn rejects_other_protocols_and_versions() {
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 9, &[1])), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 9, &[132])), Err(Error));
    for v in [0x05, 0x55, 0x65, 0xf5] {
        assert_eq!(parse_ip(&patched(&IPV4_TCP_SYN, 0, &[v])), Err(Error), "{v:#x}");
    }
    assert_eq!(parse_ip(&[]), Err(Error));
    assert_eq!(parse_ip(&patched(&IPV6_TCP_SYN, 0, &[0x40])), Err(Error));
}

#[test]
fn ipv4_mapped_ipv6_addresses_come_out_as_ipv4() {
    let mut b = Builder::new(true, Proto::Udp, 62201, 0);
    b.src = "::ffff:192.0.2.7".parse().unwrap();
    b.dst = "::ffff:198.51.100.1".parse().unwrap();
    b.payload = b"knock".to_vec();
    let p = b.build();
    let d = parse_ip(&p).unwrap();
    assert_eq!(d.src, "192.0.2.7".parse::<IpAddr>().unwrap());
    assert_eq!(d.dst, "198.51.100.1".parse::<IpAddr>().unwrap());
    // Only mapped addresses fold: a v6 address that merely ends in an IPv4 one stays.
    b.src = "::192.0.2.7".parse().unwrap();
    let p = b.build();
    assert_eq!(parse_ip(&p).unwrap().src, b.src);
}

fn arb_ext_chain() -> impl Strategy<Value = Vec<Ext>> {
    let ext = prop_oneof![
        (0u8..4).prop_map(Ext::Routing),
        (0u8..4).prop_map(Ext::DestOpts),
        any::<bool>().prop_map(|more| Ext::Fragment { offset: 0, more }),
        (1u8..8).prop_map(Ext::Auth),
    ];
    (proptest::option::of(0u8..4), proptest::collection::vec(ext, 0..=7))
        .prop_map(|(hbh, rest)| hbh.map(Ext::HopByHop).into_iter().chain(rest).collect())
}

fn arb_builder() -> impl Strategy<Value = Builder> {
    (
        (any::<bool>(), prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]),
        (1..=u16::MAX, 1..=u16::MAX, any::<u8>()),
        (any::<[u8; 16]>(), any::<[u8; 16]>()),
        (0u8..=10, 0u8..=10, any::<bool>(), arb_ext_chain()),
        (proptest::collection::vec(any::<u8>(), 0..64), 0usize..16),
    )
        .prop_map(|((v6, proto), (sp, dp, flags), (s, d), (ipo, tcpo, mf, ext), (payload, pad))| {
            let mut b = Builder::new(v6, proto, dp, flags);
            b.src_port = sp;
            if v6 {
                b.src = IpAddr::V6(Ipv6Addr::from(s));
                b.dst = IpAddr::V6(Ipv6Addr::from(d));
                b.ext = ext;
            } else {
                b.src = IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3]));
                b.dst = IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]));
                b.ip_options = ipo;
                b.more_frags = mf;
            }
            b.tcp_options = tcpo;
            b.payload = payload;
            b.padding = pad;
            b
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_ip(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic(
        b in arb_builder(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut p = b.build();
        for (at, byte) in edits {
            let i = at.index(p.len());
            p[i] = byte;
        }
        let n = cut.index(p.len() + 1);
        let _ = parse_ip(&p[..n]);
        let _ = parse_ip(&p);
    }

    #[test]
    fn parse_round_trips_built_packets(b in arb_builder()) {
        let p = b.build();
        let d = parse_ip(&p).unwrap();
        let flags = if b.proto == Proto::Tcp { b.flags } else { 0 };
        prop_assert_eq!(d, Datagram {
            src: canonical(b.src),
            dst: canonical(b.dst),
            proto: b.proto,
            src_port: b.src_port,
            dst_port: b.dst_port,
            flags: TcpFlags(flags),
            payload: &b.payload,
        });
    }
}
