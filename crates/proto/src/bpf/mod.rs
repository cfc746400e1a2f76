//! Classic BPF program generation for the knock sniffer.
//!
//! [`program`] builds a filter for an `AF_PACKET`/`SOCK_DGRAM` socket (packet offset 0 is
//! the network header) that passes only incoming IPv4/IPv6 TCP/UDP packets to a
//! configured port, with TCP flags matching one of that port's [`FlagFilter`]s. It is an
//! optimisation, not a security boundary: user space re-parses and re-checks every packet
//! it receives ([`crate::wire::parse_ip`], [`Match::accepts`]). The one property that
//! matters is **soundness**: the filter never drops a packet that user space would accept
//! as a matching knock. It may pass more than user space accepts.
//!
//! Roughly, in tcpdump syntax (`P` = TCP ports, `U` = UDP ports, `F(p)` = port `p`'s
//! filters):
//!
//! ```text
//! inbound and (
//!     (ip and ip[0] & 0xf0 == 0x40 and ip[6:2] & 0x1fff == 0 and
//!         ((tcp and tcp dst port in P and tcp[13] matches F(port)) or
//!          (udp and udp dst port in U)))
//!  or (ip6 and ip6[0] & 0xf0 == 0x60 and
//!         ((ip6[6] == 6 and ip6[42:2] in P and ip6[53] matches F(port)) or
//!          (ip6[6] == 17 and ip6[42:2] in U) or
//!          ip6[6] in {0, 43, 44, 51, 60})))
//! ```
//!
//! where `inbound` is `pkttype == PACKET_HOST` (our own outgoing packets and other hosts'
//! traffic seen in promiscuous mode are dropped).
//!
//! # Trade-offs
//! - IPv6 packets with an extension header (hop-by-hop, routing, fragment, AH, destination
//!   options) are passed without looking further: cBPF has no loops, so walking a chain of
//!   up to 8 headers would cost hundreds of instructions per packet. Such packets are
//!   rare and user space walks the chain with a bound.
//! - Ports are found by binary search (`jgt`) down to small linear leaves (`jeq`), so a
//!   packet costs O(log ports) instructions. Jump offsets are 8-bit: an internal assembler
//!   rewrites any conditional jump that would go further into a short jump over an
//!   unconditional `ja` (32-bit offset).
//! - If the exact program exceeds [`MAX_INSNS`] (thousands of ports, or a port with many
//!   distinct flag filters), we fall back to [`Precision::PortsOnly`] (TCP flags not
//!   checked), then to [`Precision::Coarse`] (every incoming TCP/UDP packet of the
//!   configured protocols). Both are supersets, so still sound; user space does the rest.
//! - The version nibble must agree with the link-layer protocol, as the kernel's IP input
//!   requires; such a mismatched packet would be dropped by the stack anyway.

mod asm;
mod interp;

use asm::{
    Asm, Label,
    Target::{Next, To},
};
pub use interp::interpret;

use crate::wire::Datagram;
use crate::{FlagFilter, Proto};

/// One classic BPF instruction, laid out like `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

impl Insn {
    /// A non-jump instruction, like the C macro `BPF_STMT`.
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn { code, jt: 0, jf: 0, k }
    }

    /// A conditional jump, like the C macro `BPF_JUMP`.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }
}

/// A packet the filter should let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// TCP or UDP.
    pub proto: Proto,
    /// Destination port.
    pub port: u16,
    /// TCP flag filter (ignored for UDP).
    pub flags: FlagFilter,
}

impl Match {
    /// The user-space check the filter approximates: same protocol and destination port,
    /// and for TCP, flags passing the filter.
    pub fn accepts(&self, d: &Datagram<'_>) -> bool {
        d.proto == self.proto
            && d.dst_port == self.port
            && (self.proto == Proto::Udp || self.flags.matches(d.flags))
    }
}

/// Opcode constants from `linux/filter.h` / `linux/bpf_common.h`, for the subset we use.
pub mod op {
    /// Load into A.
    pub const LD: u16 = 0x00;
    /// Load into X.
    pub const LDX: u16 = 0x01;
    /// Arithmetic on A.
    pub const ALU: u16 = 0x04;
    /// Jump.
    pub const JMP: u16 = 0x05;
    /// Return.
    pub const RET: u16 = 0x06;
    /// 32-bit word.
    pub const W: u16 = 0x00;
    /// 16-bit half word.
    pub const H: u16 = 0x08;
    /// Byte.
    pub const B: u16 = 0x10;
    /// Immediate operand.
    pub const IMM: u16 = 0x00;
    /// Absolute packet offset `k`.
    pub const ABS: u16 = 0x20;
    /// Packet offset `X + k`.
    pub const IND: u16 = 0x40;
    /// `X = 4 * (pkt[k] & 0xf)`: the IPv4 header-length idiom.
    pub const MSH: u16 = 0xa0;
    /// Bitwise and.
    pub const AND: u16 = 0x50;
    /// Unconditional jump by `k`.
    pub const JA: u16 = 0x00;
    /// Jump if `A == k`.
    pub const JEQ: u16 = 0x10;
    /// Jump if `A > k`.
    pub const JGT: u16 = 0x20;
    /// Jump if `A >= k`.
    pub const JGE: u16 = 0x30;
    /// Jump if `A & k != 0`.
    pub const JSET: u16 = 0x40;
    /// Operand is the constant `k`.
    pub const K: u16 = 0x00;
    /// Operand is X.
    pub const X: u16 = 0x08;
    /// Return operand is A.
    pub const A: u16 = 0x10;
}

/// Start of the ancillary-data load area (`SKF_AD_OFF`, i.e. -0x1000).
pub const SKF_AD_OFF: u32 = 0xffff_f000;
/// Ancillary load: `skb->protocol`, the ethertype in host order.
pub const SKF_AD_PROTOCOL: u32 = 0;
/// Ancillary load: `skb->pkt_type`.
pub const SKF_AD_PKTTYPE: u32 = 4;
/// `PACKET_HOST`: addressed to this host.
pub const PACKET_HOST: u32 = 0;
/// `PACKET_OUTGOING`: sent by this host.
pub const PACKET_OUTGOING: u32 = 4;
/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Kernel limit on program length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Return value for accepted packets: bytes to keep, more than any packet we care about.
pub const ACCEPT: u32 = 0x0004_0000;

/// How closely a generated program follows the matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Ports and TCP flags are checked.
    Exact,
    /// Ports are checked, TCP flags are not (the exact program was too large).
    PortsOnly,
    /// Only pkttype, IP version, non-first fragments and TCP/UDP are checked.
    Coarse,
}

/// Build the filter program. An empty `matches` (or one where nothing can match) gives a
/// program that drops everything. See the module docs for what is passed.
pub fn program(matches: &[Match]) -> Vec<Insn> {
    program_with_precision(matches).0
}

/// Like [`program`], also saying whether a coarser fallback was needed, so the daemon can
/// log it.
pub fn program_with_precision(matches: &[Match]) -> (Vec<Insn>, Precision) {
    let table = Table::new(matches);
    if table.is_empty() {
        return (vec![Insn::stmt(op::RET | op::K, 0)], Precision::Exact);
    }
    if let Some(p) = generate(&table) {
        return (p, Precision::Exact);
    }
    if let Some(p) = generate(&table.without_flags()) {
        return (p, Precision::PortsOnly);
    }
    let coarse = Table { coarse: true, ..table.without_flags() };
    match generate(&coarse) {
        Some(p) => (p, Precision::Coarse),
        // The coarse program is a few dozen instructions; if it ever failed to assemble,
        // accepting everything is still sound.
        None => (vec![Insn::stmt(op::RET | op::K, ACCEPT)], Precision::Coarse),
    }
}

/// What a port accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flags {
    Any,
    /// Non-empty, deduplicated, none of them `ANY`.
    OneOf(Vec<FlagFilter>),
}

/// Normalised matches: per protocol, sorted distinct ports with their flag filters.
#[derive(Debug, Clone)]
struct Table {
    tcp: Vec<(u16, Flags)>,
    udp: Vec<(u16, Flags)>,
    /// Skip port checks entirely.
    coarse: bool,
}

impl Table {
    fn new(matches: &[Match]) -> Table {
        let mut tcp: Vec<(u16, FlagFilter)> = Vec::new();
        let mut udp: Vec<(u16, FlagFilter)> = Vec::new();
        for m in matches {
            // Port 0 never parses, and a filter that both requires and forbids a bit never
            // matches: leaving them out cannot drop an acceptable packet.
            if m.port == 0 {
                continue;
            }
            match m.proto {
                Proto::Tcp if m.flags.set & m.flags.clear == 0 => tcp.push((m.port, m.flags)),
                Proto::Tcp => {}
                Proto::Udp => udp.push((m.port, FlagFilter::ANY)),
            }
        }
        Table { tcp: group(tcp), udp: group(udp), coarse: false }
    }

    fn without_flags(&self) -> Table {
        let any = |v: &[(u16, Flags)]| v.iter().map(|&(p, _)| (p, Flags::Any)).collect();
        Table { tcp: any(&self.tcp), udp: any(&self.udp), coarse: self.coarse }
    }

    fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }
}

/// Sort, deduplicate, and fold filters per port (`ANY` absorbs the others).
fn group(mut v: Vec<(u16, FlagFilter)>) -> Vec<(u16, Flags)> {
    v.sort_by_key(|&(p, f)| (p, f.set, f.clear));
    v.dedup();
    let mut out: Vec<(u16, Flags)> = Vec::new();
    for (port, f) in v {
        let any = f == FlagFilter::ANY;
        match out.last_mut() {
            Some((p, flags)) if *p == port => match flags {
                Flags::Any => {}
                Flags::OneOf(_) if any => *flags = Flags::Any,
                Flags::OneOf(list) => list.push(f),
            },
            _ => out.push((port, if any { Flags::Any } else { Flags::OneOf(vec![f]) })),
        }
    }
    out
}

/// Ports per binary-search leaf: a leaf is a linear `jeq` chain.
const LEAF: usize = 4;

/// IPv6 next-header values that mean "extension header follows": passed to user space.
const V6_EXT_HEADERS: [u32; 5] = [0, 43, 44, 51, 60];

fn generate(t: &Table) -> Option<Vec<Insn>> {
    let mut a = Asm::default();
    let drop = a.label();
    let accept = a.label();
    let v4 = a.label();
    let v6 = a.label();
    let tcp = if t.tcp.is_empty() { drop } else { a.label() };
    let udp = if t.udp.is_empty() { drop } else { a.label() };

    // Incoming only: PACKET_HOST.
    a.stmt(op::LD | op::W | op::ABS, SKF_AD_OFF + SKF_AD_PKTTYPE);
    a.jump(op::JEQ, PACKET_HOST, Next, To(drop));
    a.stmt(op::LD | op::W | op::ABS, SKF_AD_OFF + SKF_AD_PROTOCOL);
    a.jump(op::JEQ, ETH_P_IP.into(), To(v4), Next);
    a.jump(op::JEQ, ETH_P_IPV6.into(), To(v6), To(drop));

    // IPv4: version, first fragment only, X = header length, then the protocol.
    a.bind(v4);
    a.stmt(op::LD | op::B | op::ABS, 0);
    a.stmt(op::ALU | op::AND | op::K, 0xf0);
    a.jump(op::JEQ, 0x40, Next, To(drop));
    a.stmt(op::LD | op::H | op::ABS, 6);
    a.jump(op::JSET, 0x1fff, To(drop), Next);
    a.stmt(op::LDX | op::B | op::MSH, 0);
    a.stmt(op::LD | op::B | op::ABS, 9);
    a.jump(op::JEQ, 6, To(tcp), Next);
    a.jump(op::JEQ, 17, To(udp), To(drop));

    // IPv6: version, X = 40, then the next header.
    a.bind(v6);
    a.stmt(op::LD | op::B | op::ABS, 0);
    a.stmt(op::ALU | op::AND | op::K, 0xf0);
    a.jump(op::JEQ, 0x60, Next, To(drop));
    a.stmt(op::LDX | op::IMM, 40);
    a.stmt(op::LD | op::B | op::ABS, 6);
    a.jump(op::JEQ, 6, To(tcp), Next);
    a.jump(op::JEQ, 17, To(udp), Next);
    for (i, nh) in V6_EXT_HEADERS.iter().enumerate() {
        let last = i + 1 == V6_EXT_HEADERS.len();
        a.jump(op::JEQ, *nh, To(accept), if last { To(drop) } else { Next });
    }

    a.bind(drop);
    a.stmt(op::RET | op::K, 0);
    a.bind(accept);
    a.stmt(op::RET | op::K, ACCEPT);

    // Transport sections, shared by both families: X = transport header offset.
    for (label, ports) in [(tcp, &t.tcp), (udp, &t.udp)] {
        if ports.is_empty() {
            continue;
        }
        a.bind(label);
        if t.coarse {
            a.stmt(op::RET | op::K, ACCEPT);
        } else {
            a.stmt(op::LD | op::H | op::IND, 2); // destination port
            search(&mut a, ports);
        }
    }
    a.assemble()
}

/// Binary search over sorted `ports` (A = destination port; X = transport offset).
fn search(a: &mut Asm, ports: &[(u16, Flags)]) {
    if ports.len() <= LEAF {
        return leaf(a, ports);
    }
    let mid = ports.len() / 2;
    let (left, right) = ports.split_at(mid);
    let right_label = a.label();
    let last_left = left.last().map_or(0, |&(p, _)| p);
    a.jump(op::JGT, last_left.into(), To(right_label), Next);
    search(a, left);
    a.bind(right_label);
    search(a, right);
}

/// A linear chain of `jeq`, then the flag checks. Ports of the leaf with the same filter
/// list share one body (typically all of them use `syn,!ack`).
fn leaf(a: &mut Asm, ports: &[(u16, Flags)]) {
    let accept = a.label();
    let mut bodies: Vec<(&[FlagFilter], Label)> = Vec::new();
    for (port, flags) in ports {
        let target = match flags {
            Flags::Any => accept,
            Flags::OneOf(filters) => match bodies.iter().find(|(f, _)| *f == filters.as_slice()) {
                Some(&(_, body)) => body,
                None => {
                    let body = a.label();
                    bodies.push((filters, body));
                    body
                }
            },
        };
        a.jump(op::JEQ, (*port).into(), To(target), Next);
    }
    a.stmt(op::RET | op::K, 0);
    a.bind(accept);
    a.stmt(op::RET | op::K, ACCEPT);
    for (filters, body) in bodies {
        a.bind(body);
        // Jumps only go forward, so each body gets its own accept.
        let accept = a.label();
        for f in filters {
            // flags & clear == 0 && flags & set == set. `and` clobbers A, so the flags
            // byte is reloaded for each filter.
            let next = a.label();
            a.stmt(op::LD | op::B | op::IND, 13);
            if f.clear != 0 {
                let no = if f.set != 0 { Next } else { To(accept) };
                a.jump(op::JSET, f.clear.into(), To(next), no);
            }
            if f.set != 0 {
                a.stmt(op::ALU | op::AND | op::K, f.set.into());
                a.jump(op::JEQ, f.set.into(), To(accept), To(next));
            }
            a.bind(next);
        }
        a.stmt(op::RET | op::K, 0);
        a.bind(accept);
        a.stmt(op::RET | op::K, ACCEPT);
    }
}

#[cfg(test)]
mod tests;
