use proptest::prelude::*;

use super::*;
use crate::wire::build::{Builder, Ext};
use crate::wire::parse_ip;
use crate::TcpFlags;

const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;

fn tcp(port: u16, flags: FlagFilter) -> Match {
    Match { proto: Proto::Tcp, port, flags }
}

fn udp(port: u16) -> Match {
    Match { proto: Proto::Udp, port, flags: FlagFilter::ANY }
}

/// The ethertype the kernel would report for this packet, as a well-formed link
/// layer would carry.
fn ethertype(pkt: &[u8]) -> u16 {
    match pkt.first().map(|b| b >> 4) {
        Some(6) => ETH_P_IPV6,
        _ => ETH_P_IP,
    }
}

fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    interpret(prog, pkt, PACKET_HOST, ethertype(pkt))
}

fn user_accepts(matches: &[Match], pkt: &[u8]) -> bool {
    parse_ip(pkt).is_ok_and(|d| matches.iter().any(|m| m.accepts(&d)))
}

/// What the kernel's `bpf_check_classic` would refuse, for the opcodes we emit.
fn assert_valid(prog: &[Insn]) {
    assert!(!prog.is_empty() && prog.len() <= MAX_INSNS, "length {}", prog.len());
    let last = prog[prog.len() - 1];
    assert_eq!(last.code & 0x07, op::RET, "must end in ret");
    for (pc, i) in prog.iter().enumerate() {
        let known = [
            op::LD | op::W | op::ABS,
            op::LD | op::H | op::ABS,
            op::LD | op::B | op::ABS,
            op::LD | op::H | op::IND,
            op::LD | op::B | op::IND,
            op::LDX | op::IMM,
            op::LDX | op::B | op::MSH,
            op::ALU | op::AND | op::K,
            op::JMP | op::JA,
            op::JMP | op::JEQ | op::K,
            op::JMP | op::JGT | op::K,
            op::JMP | op::JSET | op::K,
            op::RET | op::K,
        ];
        assert!(known.contains(&i.code), "pc {pc}: opcode {:#x}", i.code);
        if i.code == op::JMP | op::JA {
            assert!(pc + 1 + (i.k as usize) < prog.len(), "pc {pc}: ja out of program");
        } else if i.code & 0x07 == op::JMP {
            let far = usize::from(i.jt.max(i.jf));
            assert!(pc + 1 + far < prog.len(), "pc {pc}: jump out of program");
        }
    }
}

fn packet(v6: bool, proto: Proto, port: u16, flags: u8) -> Vec<u8> {
    Builder::new(v6, proto, port, flags).build()
}

#[test]
fn empty_match_list_drops_everything() {
    let prog = program(&[]);
    assert_eq!(prog, vec![Insn::stmt(op::RET | op::K, 0)]);
    assert_eq!(run(&prog, &packet(false, Proto::Tcp, 7000, SYN)), 0);
    // Nothing matchable is as good as nothing.
    let bogus = FlagFilter { set: SYN, clear: SYN };
    assert_eq!(program(&[tcp(0, FlagFilter::ANY), udp(0), tcp(1, bogus)]), prog);
}

#[test]
fn accepts_syn_to_knock_port_and_rejects_syn_ack() {
    let prog = program(&[tcp(7000, FlagFilter::SYN_ONLY)]);
    assert_valid(&prog);
    for v6 in [false, true] {
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 7000, SYN)), ACCEPT);
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 7000, SYN | ACK)), 0);
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 7000, ACK)), 0);
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 7001, SYN)), 0);
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 6999, SYN)), 0);
        assert_eq!(run(&prog, &packet(v6, Proto::Udp, 7000, 0)), 0);
    }
}

#[test]
fn accepts_udp_port_whatever_the_flags_byte() {
    let prog = program(&[udp(62201), tcp(22, FlagFilter::SYN_ONLY)]);
    assert_valid(&prog);
    for v6 in [false, true] {
        assert_eq!(run(&prog, &packet(v6, Proto::Udp, 62201, 0)), ACCEPT);
        assert_eq!(run(&prog, &packet(v6, Proto::Udp, 22, 0)), 0);
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 62201, SYN)), 0);
        assert_eq!(run(&prog, &packet(v6, Proto::Tcp, 22, SYN)), ACCEPT);
    }
    // A UDP payload whose 6th byte (offset 13 from the header) looks like SYN|ACK.
    let mut b = Builder::new(false, Proto::Udp, 62201, 0);
    b.payload = vec![0x12; 16];
    assert_eq!(run(&prog, &b.build()), ACCEPT);
}

#[test]
fn rejects_other_packet_types_and_ethertypes() {
    let prog = program(&[tcp(7000, FlagFilter::ANY)]);
    let pkt = packet(false, Proto::Tcp, 7000, SYN);
    assert_eq!(interpret(&prog, &pkt, PACKET_HOST, ETH_P_IP), ACCEPT);
    for pkttype in [1, 2, 3, PACKET_OUTGOING] {
        assert_eq!(interpret(&prog, &pkt, pkttype, ETH_P_IP), 0, "pkttype {pkttype}");
    }
    assert_eq!(interpret(&prog, &pkt, PACKET_HOST, 0x0806), 0);
    // The version nibble must agree with the ethertype.
    assert_eq!(interpret(&prog, &pkt, PACKET_HOST, ETH_P_IPV6), 0);
    let pkt6 = packet(true, Proto::Tcp, 7000, SYN);
    assert_eq!(interpret(&prog, &pkt6, PACKET_HOST, ETH_P_IP), 0);
}

#[test]
fn ipv6_extension_headers_are_passed_to_user_space() {
    let prog = program(&[tcp(7000, FlagFilter::SYN_ONLY)]);
    let mut b = Builder::new(true, Proto::Tcp, 7000, SYN);
    b.ext = vec![Ext::HopByHop(0)];
    assert_eq!(run(&prog, &b.build()), ACCEPT);
    // Even to the wrong port: the filter does not walk the chain.
    b.dst_port = 7001;
    assert_eq!(run(&prog, &b.build()), ACCEPT);
    for first in [Ext::Routing(0), Ext::DestOpts(1), Ext::Auth(1)] {
        b.ext = vec![first];
        assert_eq!(run(&prog, &b.build()), ACCEPT, "{first:?}");
    }
    b.ext = vec![Ext::Fragment { offset: 0, more: true }];
    assert_eq!(run(&prog, &b.build()), ACCEPT);
    // ESP (50) and no-next-header (59) are not.
    let mut esp = packet(true, Proto::Tcp, 7000, SYN);
    esp[6] = 50;
    assert_eq!(run(&prog, &esp), 0);
    esp[6] = 59;
    assert_eq!(run(&prog, &esp), 0);
}

#[test]
fn rejects_nonfirst_ipv4_fragment_and_accepts_first() {
    let prog = program(&[udp(62201)]);
    let mut b = Builder::new(false, Proto::Udp, 62201, 0);
    b.more_frags = true;
    assert_eq!(run(&prog, &b.build()), ACCEPT);
    b.frag_offset = 1;
    assert_eq!(run(&prog, &b.build()), 0);
    b.more_frags = false;
    assert_eq!(run(&prog, &b.build()), 0);
}

#[test]
fn follows_ipv4_header_length() {
    let prog = program(&[tcp(7000, FlagFilter::SYN_ONLY)]);
    let mut b = Builder::new(false, Proto::Tcp, 7000, SYN);
    for words in 0..=10 {
        b.ip_options = words;
        assert_eq!(run(&prog, &b.build()), ACCEPT, "{words} option words");
    }
}

#[test]
fn truncated_packets_are_dropped_without_out_of_bounds() {
    let prog = program(&[tcp(7000, FlagFilter::SYN_ONLY)]);
    let p = packet(false, Proto::Tcp, 7000, SYN);
    // The flags byte is at 20 + 13: any shorter prefix fails a load.
    for n in 0..34 {
        assert_eq!(run(&prog, &p[..n]), 0, "prefix {n}");
    }
}

#[test]
fn same_port_in_several_doors_with_different_filters() {
    let fin = FlagFilter { set: TcpFlags::FIN, clear: 0 };
    let psh_ack = FlagFilter { set: TcpFlags::PSH | ACK, clear: TcpFlags::RST };
    let no_rst = FlagFilter { set: 0, clear: TcpFlags::RST };
    let m = [tcp(7000, FlagFilter::SYN_ONLY), tcp(7000, fin), tcp(7000, psh_ack), tcp(8000, no_rst)];
    let prog = program(&m);
    assert_valid(&prog);
    for flags in 0..=u8::MAX {
        for port in [7000, 8000] {
            let pkt = packet(false, Proto::Tcp, port, flags);
            assert_eq!(run(&prog, &pkt) != 0, user_accepts(&m, &pkt), "{port} {flags:#x}");
        }
    }
}

#[test]
fn five_hundred_ports_give_a_valid_exact_program() {
    // Every 7th port from 1000, alternating protocols, some with flag filters.
    let m: Vec<Match> = (0..500u16)
        .map(|i| match i % 3 {
            0 => udp(1000 + 7 * i),
            1 => tcp(1000 + 7 * i, FlagFilter::SYN_ONLY),
            _ => tcp(1000 + 7 * i, FlagFilter::ANY),
        })
        .collect();
    let (prog, precision) = program_with_precision(&m);
    assert_eq!(precision, Precision::Exact);
    assert_valid(&prog);
    for port in (990..1000 + 7 * 500 + 10).step_by(3) {
        for (proto, flags) in [(Proto::Tcp, SYN), (Proto::Tcp, SYN | ACK), (Proto::Udp, 0)] {
            for v6 in [false, true] {
                let pkt = packet(v6, proto, port, flags);
                let want = user_accepts(&m, &pkt);
                assert_eq!(run(&prog, &pkt) != 0, want, "{proto}/{port} {flags:#x} v6={v6}");
            }
        }
    }
}

#[test]
fn many_filters_on_one_port_exercise_long_jumps() {
    // 200 distinct filters (5 instructions each) on one port: the port's body is far
    // longer than an 8-bit jump.
    let filters: Vec<FlagFilter> = (0..=u8::MAX)
        .flat_map(|set| [FlagFilter { set, clear: !set & 0x3f }])
        .filter(|f| f.set & f.clear == 0 && f.clear != 0 && f.set != 0)
        .take(200)
        .collect();
    let mut m: Vec<Match> = filters.iter().map(|&f| tcp(7000, f)).collect();
    m.extend((1..=20).map(|p| tcp(p * 1000 + 1, FlagFilter::SYN_ONLY)));
    let (prog, precision) = program_with_precision(&m);
    assert_eq!(precision, Precision::Exact);
    assert_valid(&prog);
    assert!(prog.len() > 1000);
    assert!(prog.iter().any(|i| i.code == op::JMP | op::JA), "no relaxed jump");
    for flags in 0..=u8::MAX {
        for port in [7000, 20001, 20000] {
            let pkt = packet(true, Proto::Tcp, port, flags);
            assert_eq!(run(&prog, &pkt) != 0, user_accepts(&m, &pkt), "{port} {flags:#x}");
        }
    }
}

#[test]
fn oversized_configurations_fall_back_soundly() {
    // 1500 TCP ports, each with its own flag filter: exact does not fit, ports-only
    // does.
    let filters = [FlagFilter::SYN_ONLY, FlagFilter { set: TcpFlags::FIN, clear: 0 }];
    let m: Vec<Match> = (1..=1500).map(|p| tcp(p * 40, filters[usize::from(p % 2)])).collect();
    let (prog, precision) = program_with_precision(&m);
    assert_eq!(precision, Precision::PortsOnly);
    assert_valid(&prog);
    assert_eq!(run(&prog, &packet(false, Proto::Tcp, 60000, SYN)), ACCEPT);
    assert_eq!(run(&prog, &packet(false, Proto::Tcp, 60000, ACK)), ACCEPT);
    assert_eq!(run(&prog, &packet(false, Proto::Tcp, 60001, SYN)), 0);
    assert_eq!(run(&prog, &packet(false, Proto::Udp, 60000, 0)), 0);

    // Every TCP port: coarse. UDP, absent from the config, is still dropped.
    let m: Vec<Match> = (1..=u16::MAX).map(|p| tcp(p, FlagFilter::SYN_ONLY)).collect();
    let (prog, precision) = program_with_precision(&m);
    assert_eq!(precision, Precision::Coarse);
    assert_valid(&prog);
    assert_eq!(run(&prog, &packet(true, Proto::Tcp, 12345, ACK)), ACCEPT);
    assert_eq!(run(&prog, &packet(true, Proto::Udp, 12345, 0)), 0);
    assert_eq!(interpret(&prog, &packet(true, Proto::Tcp, 1, SYN), PACKET_OUTGOING, ETH_P_IPV6), 0);
}

#[test]
fn interpreter_matches_kernel_on_basic_opcodes() {
    let p = [0x12, 0x34, 0x56, 0x78, 0x45];
    let ld = |code, k| interpret(&[Insn::stmt(code, k), Insn::stmt(op::RET | op::A, 0)], &p, 0, 0);
    assert_eq!(ld(op::LD | op::W | op::ABS, 0), 0x1234_5678);
    assert_eq!(ld(op::LD | op::H | op::ABS, 3), 0x7845);
    assert_eq!(ld(op::LD | op::B | op::ABS, 4), 0x45);
    assert_eq!(ld(op::LD | op::W | op::ABS, 2), 0, "out of bounds returns 0");
    assert_eq!(ld(op::LD | op::B | op::ABS, u32::MAX - 0x1000), 0);
    assert_eq!(ld(op::LD | op::W | op::ABS, SKF_AD_OFF + 8), 0, "unsupported ancillary");
    let msh = [Insn::stmt(op::LDX | op::B | op::MSH, 4), Insn::stmt(op::LD | op::B | op::IND, 0)];
    assert_eq!(interpret(&[msh[0], msh[1], Insn::stmt(op::RET | op::A, 0)], &[0; 21], 0, 0), 0);
    assert_eq!(interpret(&msh, &p, 0, 0), 0, "falling off the end drops");
}

fn arb_matches() -> impl Strategy<Value = Vec<Match>> {
    // Mostly ports 1..=3 so that random packets (below) often hit them.
    let port = prop_oneof![6 => 1u16..=3, 1 => Just(0), 1 => any::<u16>()];
    let filter = prop_oneof![
        Just(FlagFilter::ANY),
        Just(FlagFilter::SYN_ONLY),
        (any::<u8>(), any::<u8>()).prop_map(|(set, clear)| FlagFilter { set, clear: clear & !set }),
        (any::<u8>(), any::<u8>()).prop_map(|(set, clear)| FlagFilter { set, clear }),
    ];
    let m = (any::<bool>(), port, filter).prop_map(|(is_tcp, port, flags)| Match {
        proto: if is_tcp { Proto::Tcp } else { Proto::Udp },
        port,
        flags,
    });
    proptest::collection::vec(m, 0..12)
}

fn flags() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![Just(SYN), Just(SYN | ACK), Just(ACK), Just(TcpFlags::FIN), any::<u8>()]
}

fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    let ext = prop_oneof![
        (0u8..3).prop_map(Ext::HopByHop),
        (0u8..3).prop_map(Ext::Routing),
        (0u8..3).prop_map(Ext::DestOpts),
        (0u16..2, any::<bool>()).prop_map(|(offset, more)| Ext::Fragment { offset, more }),
        (0u8..5).prop_map(Ext::Auth),
    ];
    let built = (
        (any::<bool>(), any::<bool>(), prop_oneof![4 => 1u16..=3, 1 => any::<u16>()], flags()),
        (0u8..=3, 0u8..=3, 0u16..=2, any::<bool>()),
        proptest::collection::vec(ext, 0..3),
        (proptest::collection::vec(any::<u8>(), 0..24), 0usize..8),
    )
        .prop_map(|((v6, is_tcp, port, flags), (ipo, tcpo, off, mf), ext, (payload, pad))| {
            let proto = if is_tcp { Proto::Tcp } else { Proto::Udp };
            let mut b = Builder::new(v6, proto, port, flags);
            (b.ip_options, b.tcp_options, b.frag_offset, b.more_frags) = (ipo, tcpo, off, mf);
            if v6 {
                b.ext = ext;
            }
            b.payload = payload;
            b.padding = pad;
            b.build()
        });
    // Then damage some: overwrite bytes and/or truncate.
    let edits = proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
    let damaged = (built.clone(), edits, proptest::option::of(any::<prop::sample::Index>())).prop_map(
        |(mut p, edits, cut)| {
            for (at, byte) in edits {
                let i = at.index(p.len());
                p[i] = byte;
            }
            if let Some(cut) = cut {
                p.truncate(cut.index(p.len() + 1));
            }
            p
        },
    );
    prop_oneof![
        3 => built,
        2 => damaged,
        1 => proptest::collection::vec(any::<u8>(), 0..80),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The key property: whatever the packet, if user space would accept it as a
    /// matching knock, the kernel filter passes it.
    #[test]
    fn filter_never_drops_what_user_space_accepts(m in arb_matches(), pkt in arb_packet()) {
        let prog = program(&m);
        assert_valid(&prog);
        if user_accepts(&m, &pkt) {
            prop_assert_ne!(run(&prog, &pkt), 0);
        }
    }

    /// And it is exact where it claims to be: for well-formed packets without IPv6
    /// extension headers, it passes exactly what user space accepts.
    #[test]
    fn exact_filter_agrees_with_user_space(
        m in arb_matches(),
        v6 in any::<bool>(),
        is_tcp in any::<bool>(),
        port in 1u16..=6,
        flags in flags(),
    ) {
        let proto = if is_tcp { Proto::Tcp } else { Proto::Udp };
        let pkt = packet(v6, proto, port, flags);
        let (prog, precision) = program_with_precision(&m);
        prop_assert_eq!(precision, Precision::Exact);
        prop_assert_eq!(run(&prog, &pkt) != 0, user_accepts(&m, &pkt));
    }
}

proptest! {
    // Each case builds a program for thousands of ports: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The same through the fallbacks: pad the config with many filtered ports.
    #[test]
    fn fallback_filters_never_drop_what_user_space_accepts(
        mut m in arb_matches(),
        coarse in any::<bool>(),
        pkt in arb_packet(),
    ) {
        let (n, want) = if coarse { (6000, Precision::Coarse) } else { (1500, Precision::PortsOnly) };
        let filters = [FlagFilter::SYN_ONLY, FlagFilter { set: TcpFlags::FIN, clear: 0 }];
        m.extend((0..n).map(|i| tcp(10_000 + i, filters[usize::from(i % 2)])));
        let (prog, precision) = program_with_precision(&m);
        prop_assert_eq!(precision, want);
        assert_valid(&prog);
        if user_accepts(&m, &pkt) {
            prop_assert_ne!(run(&prog, &pkt), 0);
        }
    }
}
