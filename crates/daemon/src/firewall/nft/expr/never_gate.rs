//! `ip saddr 192.0.2.0/24 accept` / `ip6 saddr 2001:db8::/48 accept`: the management
//! network is never gated. One rule per prefix (a handful at most), ahead of the drop.

use std::net::IpAddr;

use netlink_packet_netfilter::nftables::{Bitwise, DataAttribute, Expressions, MetaKey, Operator, Register};

use super::{
    cmp, meta, payload, verdict, Expr, NFPROTO_IPV4, NFPROTO_IPV6, NF_ACCEPT, PAYLOAD_NETWORK_HEADER,
};
use crate::firewall::Prefix;

/// `[ bitwise reg 1 = ( reg 1 & <mask> ) ^ 0 ]` over `len` bytes (network order).
pub(super) fn and_mask(mask: Vec<u8>) -> Expr {
    let zeros = vec![0u8; mask.len()];
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(mask.len() as u32),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(zeros)),
    ])
    .into()
}

/// `ip saddr <prefix> accept` (or `ip6 saddr`):
///
/// ```text
/// [ meta load nfproto => reg 1 ]
/// [ cmp eq reg 1 0x00000002 ]
/// [ payload load 4b @ network header + 12 => reg 1 ]
/// [ bitwise reg 1 = ( reg 1 & 0x00ffffff ) ^ 0x00000000 ]
/// [ cmp eq reg 1 0x000200c0 ]
/// [ immediate reg 0 accept ]
/// ```
/// (`nft` itself loads only the prefix's whole bytes when it can; the masked full
/// address is the same test for every length.)
pub(crate) fn rule_never_gate(p: &Prefix) -> Vec<Expr> {
    let (family, offset, len) = match p.addr {
        IpAddr::V4(_) => (NFPROTO_IPV4, 12, 4),
        IpAddr::V6(_) => (NFPROTO_IPV6, 8, 16),
    };
    vec![
        meta(MetaKey::Nfproto, Register::Reg1),
        cmp(Operator::Equal, Register::Reg1, vec![family]),
        payload(PAYLOAD_NETWORK_HEADER, offset, len, Register::Reg1),
        and_mask(p.mask_bytes()),
        cmp(Operator::Equal, Register::Reg1, p.network_bytes()),
        verdict(NF_ACCEPT),
    ]
}
