//! Classic BPF program generation for the knock sniffer.
//!
//! TODO(wire helper): generate a program for an `AF_PACKET`/`SOCK_DGRAM` socket that
//! accepts only incoming (PACKET_HOST) IPv4/IPv6 TCP/UDP packets to the configured
//! ports (with TCP flag filters), so unrelated traffic never reaches user space.

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

/// Build the filter program. Until implemented, accepts everything.
pub fn program(_matches: &[Match]) -> Vec<Insn> {
    vec![Insn { code: 0x06, jt: 0, jf: 0, k: 0x0004_0000 }]
}
