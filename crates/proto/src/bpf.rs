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

/// A forward jump target in [`Asm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The next instruction (offset 0).
    Next,
    /// A bound label.
    To(Label),
}
use Target::{Next, To};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Item {
    Bind(Label),
    Stmt(Insn),
    Cond { code: u16, k: u32, jt: Target, jf: Target },
}

/// A tiny assembler with labels. Conditional jumps whose target is more than 255
/// instructions ahead are relaxed into `jcc 0,1; ja far` forms, iterating until the layout
/// is stable (relaxing only grows the program, so this terminates).
#[derive(Debug, Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(Insn::stmt(code, k)));
    }

    fn jump(&mut self, cond: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Cond { code: op::JMP | cond | op::K, k, jt, jf });
    }

    /// Instructions a conditional jump takes: 1 if short, else one `ja` per far side.
    fn cond_len(long: bool, jt: Target, jf: Target) -> usize {
        if !long {
            1
        } else {
            1 + usize::from(jt != Next) + usize::from(jf != Next)
        }
    }

    /// Lay out, relax and encode. `None` if too long (or, defensively, if a label is
    /// unbound or a jump goes backwards, which cBPF forbids).
    fn assemble(&self) -> Option<Vec<Insn>> {
        let mut long = vec![false; self.items.len()];
        let (addr, labels) = loop {
            let (addr, labels, len) = self.layout(&long);
            if len > MAX_INSNS {
                return None;
            }
            let mut changed = false;
            for (i, item) in self.items.iter().enumerate() {
                if let Item::Cond { jt, jf, .. } = *item {
                    if long[i] {
                        continue;
                    }
                    let far = |t| match t {
                        Next => Some(false),
                        To(Label(l)) => {
                            let off = labels[l].and_then(|t| t.checked_sub(addr[i] + 1));
                            debug_assert!(off.is_some(), "unbound label or backward jump");
                            Some(off? > usize::from(u8::MAX))
                        }
                    };
                    if far(jt)? || far(jf)? {
                        long[i] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break (addr, labels);
            }
        };

        let mut out = Vec::with_capacity(addr.last().map_or(0, |a| a + 3));
        // Offset from the instruction at `from` to target `t` (forward, checked above).
        let offset = |from: usize, t: Target| match t {
            Next => Some(0),
            To(Label(l)) => labels[l]?.checked_sub(from + 1),
        };
        for (i, item) in self.items.iter().enumerate() {
            match *item {
                Item::Bind(_) => {}
                Item::Stmt(insn) => out.push(insn),
                Item::Cond { code, k, jt, jf } if !long[i] => {
                    let jt = u8::try_from(offset(addr[i], jt)?).ok()?;
                    let jf = u8::try_from(offset(addr[i], jf)?).ok()?;
                    out.push(Insn::jump(code, k, jt, jf));
                }
                Item::Cond { code, k, jt, jf } => {
                    // `jcc 0,1; ja T; ja F`, or with one side Next, `jcc 0,1; ja T` /
                    // `jcc 1,0; ja F` where skipping the single `ja` is the fallthrough.
                    let (t_skip, f_skip) = if jt == Next { (1, 0) } else { (0, 1) };
                    out.push(Insn::jump(code, k, t_skip, f_skip));
                    let mut pc = addr[i] + 1;
                    for t in [jt, jf] {
                        if t != Next {
                            let k = u32::try_from(offset(pc, t)?).ok()?;
                            out.push(Insn::stmt(op::JMP | op::JA, k));
                            pc += 1;
                        }
                    }
                }
            }
        }
        debug_assert!(out.len() <= MAX_INSNS);
        Some(out)
    }

    /// Address of each item, of each label, and the program length.
    fn layout(&self, long: &[bool]) -> (Vec<usize>, Vec<Option<usize>>, usize) {
        let mut addr = Vec::with_capacity(self.items.len());
        let mut labels = vec![None; self.labels];
        let mut pc = 0;
        for (item, &long) in self.items.iter().zip(long) {
            addr.push(pc);
            match *item {
                Item::Bind(Label(l)) => labels[l] = Some(pc),
                Item::Stmt(_) => pc += 1,
                Item::Cond { jt, jf, .. } => pc += Self::cond_len(long, jt, jf),
            }
        }
        (addr, labels, pc)
    }
}

/// Run `prog` on `pkt` like the kernel would for a packet with this `pkttype` and
/// `ethertype`, and return the filter's verdict (0 = drop).
///
/// Test support, public so that daemon tests can check the filter they install. Covers the
/// subset [`program`] emits: `ld`/`ldh`/`ldb` absolute and indirect, `ldx` immediate and
/// `4*([k]&0xf)`, `and #k`, `ja`/`jeq`/`jgt`/`jge`/`jset` with a constant, `ret #k`/`ret a`,
/// and the `pkttype`/`protocol` ancillary loads. As in the kernel, an out-of-bounds load
/// returns 0. Anything else (unknown opcode, jump out of the program, falling off the end)
/// also returns 0; the kernel would have refused such a program.
#[doc(hidden)]
pub fn interpret(prog: &[Insn], pkt: &[u8], pkttype: u32, ethertype: u16) -> u32 {
    let load = |off: u32, size: usize| -> Option<u32> {
        let start = usize::try_from(off).ok()?;
        let bytes = pkt.get(start..start.checked_add(size)?)?;
        Some(bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
    };
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    // Jumps only go forward, so this terminates after at most prog.len() steps.
    while let Some(insn) = prog.get(pc) {
        let k = insn.k;
        pc += 1;
        let size = match insn.code & 0x18 {
            op::W => 4,
            op::H => 2,
            _ => 1,
        };
        match insn.code {
            c if c & 0x07 == op::LD && c & 0xe0 == op::ABS && k >= SKF_AD_OFF => {
                a = match k - SKF_AD_OFF {
                    SKF_AD_PROTOCOL => ethertype.into(),
                    SKF_AD_PKTTYPE => pkttype,
                    _ => return 0,
                };
            }
            c if c & 0x07 == op::LD && c & 0xe0 == op::ABS && c & 0x18 != 0x18 => {
                let Some(v) = load(k, size) else { return 0 };
                a = v;
            }
            c if c & 0x07 == op::LD && c & 0xe0 == op::IND && c & 0x18 != 0x18 => {
                let Some(v) = x.checked_add(k).and_then(|off| load(off, size)) else {
                    return 0;
                };
                a = v;
            }
            c if c == op::LD | op::W | op::IMM => a = k,
            c if c == op::LDX | op::W | op::IMM => x = k,
            c if c == op::LDX | op::B | op::MSH => {
                let Some(v) = load(k, 1) else { return 0 };
                x = 4 * (v & 0x0f);
            }
            c if c == op::ALU | op::AND | op::K => a &= k,
            c if c == op::JMP | op::JA => {
                pc = match usize::try_from(k).ok().and_then(|k| pc.checked_add(k)) {
                    Some(pc) => pc,
                    None => return 0,
                };
            }
            c if c & 0x07 == op::JMP && c & 0x08 == op::K => {
                let taken = match c & 0xf0 {
                    op::JEQ => a == k,
                    op::JGT => a > k,
                    op::JGE => a >= k,
                    op::JSET => a & k != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            c if c == op::RET | op::K => return k,
            c if c == op::RET | op::A => return a,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
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
}
