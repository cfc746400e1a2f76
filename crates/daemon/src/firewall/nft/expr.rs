//! nf_tables expression bytecode: the few expressions our four rules need.
//!
//! netlink-packet-netfilter has no rule builder, so each rule is written out as the
//! list of expressions `nft` itself generates for the same text (checked with
//! `nft --debug=netlink` inside a network namespace; see the `bytecode_matches_nft`
//! test). Every rule has its `nft` syntax and the `--debug=netlink` listing in a
//! comment above it.
//!
//! Registers: `Reg1`/`Reg2` are the 16-byte registers; `Reg32_nn` are the 32-bit
//! ones, which overlap them (`Reg1` = `Reg32_00..03`, `Reg2` = `Reg32_04..07`).
//! A concatenated lookup key occupies consecutive 32-bit registers starting at the
//! lookup's source register, each field padded to 4 bytes.

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute, Lookup, Meta,
    MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};

mod never_gate;
pub(crate) use never_gate::rule_never_gate;

/// One expression of a rule, as sent in `NFTA_RULE_EXPRESSIONS`.
pub(crate) type Expr = ListAttribute<ExpressionAttribute>;

/// `NF_DROP` and `NF_ACCEPT`: the crate's `Verdict` has no named variants for them.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// `NFPROTO_IPV4` / `NFPROTO_IPV6`, as `meta nfproto` loads them (one byte).
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;

/// `enum nft_payload_bases`.
const PAYLOAD_NETWORK_HEADER: u32 = 1;
const PAYLOAD_TRANSPORT_HEADER: u32 = 2;

/// `NFTA_CT_*` and `NFT_CT_*` keys: the crate has no `ct` expression.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NFT_CT_PROTO_DST: u32 = 12;
/// `IP_CT_DIR_ORIGINAL`.
const CT_DIR_ORIGINAL: u8 = 0;
/// `IPS_DST_NAT`: the connection was DNAT'd.
const CT_STATUS_DST_NAT: u32 = 1 << 5;

/// `NFTA_NAT_*`: the crate has no `nat` expression either.
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_DNAT: u32 = 1;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_STATE_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);

/// `[ meta load <key> => reg <dreg> ]`
fn meta(key: MetaKey, dreg: Register) -> Expr {
    Expressions::Meta(vec![Meta::DestinationRegister(dreg), Meta::Key(key)]).into()
}

/// `[ payload load <len>b @ <base> header + <offset> => reg <dreg> ]`
fn payload(base: u32, offset: u32, len: u32, dreg: Register) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(dreg),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

/// `[ cmp <op> reg <sreg> <data> ]`
fn cmp(op: Operator, sreg: Register, data: Vec<u8>) -> Expr {
    Expressions::Cmp(vec![Cmp::SourceRegister(sreg), Cmp::Op(op), Cmp::Data(DataAttribute::Value(data))])
        .into()
}

/// `[ lookup reg <sreg> set <set> ]`
fn lookup(set: &str, set_id: u32, sreg: Register) -> Expr {
    Expressions::Lookup(vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(sreg),
        Lookup::SetId(set_id),
    ])
    .into()
}

/// `[ immediate reg 0 accept|drop ]`
fn verdict(code: u32) -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Other(code))])),
    ])
    .into()
}

/// `[ ct load state => reg <dreg> ]`
fn ct_state(dreg: Register) -> Expr {
    Expressions::Other {
        expression_type: "ct".to_string(),
        attributes: vec![
            DefaultNla::new(NFTA_CT_KEY, NFT_CT_STATE.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_CT_DREG, u32::from(dreg).to_be_bytes().to_vec()),
        ],
    }
    .into()
}

/// `[ ct load <key> => reg <dreg> , dir original ]`
fn ct_original(key: u32, dreg: Register) -> Expr {
    Expressions::Other {
        expression_type: "ct".to_string(),
        attributes: vec![
            DefaultNla::new(NFTA_CT_KEY, key.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_CT_DREG, u32::from(dreg).to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_CT_DIRECTION, vec![CT_DIR_ORIGINAL]),
        ],
    }
    .into()
}

/// `[ ct load status => reg <dreg> ]`
fn ct_status(dreg: Register) -> Expr {
    Expressions::Other {
        expression_type: "ct".to_string(),
        attributes: vec![
            DefaultNla::new(NFTA_CT_KEY, NFT_CT_STATUS.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_CT_DREG, u32::from(dreg).to_be_bytes().to_vec()),
        ],
    }
    .into()
}

/// `[ lookup reg <sreg> set <map> dreg <dreg> ]`
fn map_lookup(set: &str, set_id: u32, sreg: Register, dreg: Register) -> Expr {
    Expressions::Lookup(vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(sreg),
        Lookup::DestinationRegister(dreg),
        Lookup::SetId(set_id),
    ])
    .into()
}

/// `[ nat dnat <family> addr_min reg <addr> proto_min reg <port> ]`
fn dnat(family: u8, addr: Register, port: Register) -> Expr {
    Expressions::Other {
        expression_type: "nat".to_string(),
        attributes: vec![
            DefaultNla::new(NFTA_NAT_TYPE, NFT_NAT_DNAT.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_NAT_FAMILY, u32::from(family).to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_NAT_REG_ADDR_MIN, u32::from(addr).to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_NAT_REG_PROTO_MIN, u32::from(port).to_be_bytes().to_vec()),
        ],
    }
    .into()
}

/// `[ bitwise reg <r> = ( reg <r> & <mask> ) ^ 0x00000000 ]` on a 4-byte
/// host-endian register value.
fn and_mask_u32(reg: Register, mask: u32) -> Expr {
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(reg),
        Bitwise::DestinationRegister(reg),
        Bitwise::Length(4),
        Bitwise::Mask(DataAttribute::Value(mask.to_ne_bytes().to_vec())),
        Bitwise::Xor(DataAttribute::Value(0u32.to_ne_bytes().to_vec())),
    ])
    .into()
}

/// `ct state established,related accept`
///
/// ```text
/// [ ct load state => reg 1 ]
/// [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ]
/// [ cmp neq reg 1 0x00000000 ]
/// [ immediate reg 0 accept ]
/// ```
pub(crate) fn rule_established() -> Vec<Expr> {
    vec![
        ct_state(Register::Reg1),
        and_mask_u32(Register::Reg1, CT_STATE_ESTABLISHED_RELATED),
        cmp(Operator::NotEqual, Register::Reg1, 0u32.to_ne_bytes().to_vec()),
        verdict(NF_ACCEPT),
    ]
}

/// `ip saddr . meta l4proto . th dport @allow4 accept`
///
/// ```text
/// [ meta load nfproto => reg 1 ]
/// [ cmp eq reg 1 0x00000002 ]
/// [ payload load 4b @ network header + 12 => reg 1 ]
/// [ meta load l4proto => reg 9 ]
/// [ payload load 2b @ transport header + 2 => reg 10 ]
/// [ lookup reg 1 set allow4 ]
/// [ immediate reg 0 accept ]
/// ```
pub(crate) fn rule_allow4(set: &str, set_id: u32) -> Vec<Expr> {
    vec![
        meta(MetaKey::Nfproto, Register::Reg1),
        cmp(Operator::Equal, Register::Reg1, vec![NFPROTO_IPV4]),
        payload(PAYLOAD_NETWORK_HEADER, 12, 4, Register::Reg1),
        meta(MetaKey::L4Proto, Register::Reg32_01),
        payload(PAYLOAD_TRANSPORT_HEADER, 2, 2, Register::Reg32_02),
        lookup(set, set_id, Register::Reg1),
        verdict(NF_ACCEPT),
    ]
}

/// `ip6 saddr . meta l4proto . th dport @allow6 accept`
///
/// ```text
/// [ meta load nfproto => reg 1 ]
/// [ cmp eq reg 1 0x0000000a ]
/// [ payload load 16b @ network header + 8 => reg 1 ]
/// [ meta load l4proto => reg 2 ]
/// [ payload load 2b @ transport header + 2 => reg 13 ]
/// [ lookup reg 1 set allow6 ]
/// [ immediate reg 0 accept ]
/// ```
/// (`reg 2` is the 16-byte register starting at 32-bit register 4, right after
/// the address; `nft` names it that way, so we do too.)
pub(crate) fn rule_allow6(set: &str, set_id: u32) -> Vec<Expr> {
    vec![
        meta(MetaKey::Nfproto, Register::Reg1),
        cmp(Operator::Equal, Register::Reg1, vec![NFPROTO_IPV6]),
        payload(PAYLOAD_NETWORK_HEADER, 8, 16, Register::Reg1),
        meta(MetaKey::L4Proto, Register::Reg2),
        payload(PAYLOAD_TRANSPORT_HEADER, 2, 2, Register::Reg32_05),
        lookup(set, set_id, Register::Reg1),
        verdict(NF_ACCEPT),
    ]
}

/// `ip saddr & 255.255.255.0 . meta l4proto . th dport @allow4_24 accept` (or `ip6`):
/// [`rule_allow4`]/[`rule_allow6`] with the source masked to `len` bits before the
/// lookup, so the set's keys are network addresses.
///
/// ```text
/// [ meta load nfproto => reg 1 ]
/// [ cmp eq reg 1 0x00000002 ]
/// [ payload load 4b @ network header + 12 => reg 1 ]
/// [ bitwise reg 1 = ( reg 1 & 0x00ffffff ) ^ 0x00000000 ]
/// [ meta load l4proto => reg 9 ]
/// [ payload load 2b @ transport header + 2 => reg 10 ]
/// [ lookup reg 1 set allow4_24 ]
/// [ immediate reg 0 accept ]
/// ```
pub(crate) fn rule_allow_prefix(v6: bool, len: u8, set: &str, set_id: u32) -> Vec<Expr> {
    let mut rule = if v6 { rule_allow6(set, set_id) } else { rule_allow4(set, set_id) };
    let any: std::net::IpAddr =
        if v6 { std::net::Ipv6Addr::UNSPECIFIED.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() };
    let mask = crate::firewall::Prefix { addr: any, len }.mask_bytes();
    // After the address load (third expression), before the service is loaded next to it.
    rule.insert(3, never_gate::and_mask(mask));
    rule
}

/// `meta l4proto . th dport @protected drop`
///
/// ```text
/// [ meta load l4proto => reg 1 ]
/// [ payload load 2b @ transport header + 2 => reg 9 ]
/// [ lookup reg 1 set protected ]
/// [ immediate reg 0 drop ]
/// ```
pub(crate) fn rule_protected(set: &str, set_id: u32) -> Vec<Expr> {
    vec![
        meta(MetaKey::L4Proto, Register::Reg1),
        payload(PAYLOAD_TRANSPORT_HEADER, 2, 2, Register::Reg32_01),
        lookup(set, set_id, Register::Reg1),
        verdict(NF_DROP),
    ]
}

/// `ip saddr . meta l4proto . ct original proto-dst @<set> accept` (IPv4) or the
/// `ip6` version: the destination port before any DNAT.
///
/// ```text
/// [ meta load nfproto => reg 1 ]
/// [ cmp eq reg 1 0x00000002 ]
/// [ payload load 4b @ network header + 12 => reg 1 ]
/// [ meta load l4proto => reg 9 ]
/// [ ct load proto_dst => reg 10 , dir original ]
/// [ lookup reg 1 set <set> ]
/// [ immediate reg 0 accept ]
/// ```
pub(crate) fn rule_allow_original(v6: bool, set: &str, set_id: u32) -> Vec<Expr> {
    let mut r = if v6 { rule_allow6(set, set_id) } else { rule_allow4(set, set_id) };
    // The port load is the fifth expression in both.
    r[4] = ct_original(NFT_CT_PROTO_DST, if v6 { Register::Reg32_05 } else { Register::Reg32_02 });
    r
}

/// `ct status dnat meta l4proto . ct original proto-dst @protected drop`
///
/// ```text
/// [ ct load status => reg 1 ]
/// [ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ]
/// [ cmp neq reg 1 0x00000000 ]
/// [ meta load l4proto => reg 1 ]
/// [ ct load proto_dst => reg 9 , dir original ]
/// [ lookup reg 1 set protected ]
/// [ immediate reg 0 drop ]
/// ```
pub(crate) fn rule_protected_dnat(set: &str, set_id: u32) -> Vec<Expr> {
    vec![
        ct_status(Register::Reg1),
        and_mask_u32(Register::Reg1, CT_STATUS_DST_NAT),
        cmp(Operator::NotEqual, Register::Reg1, 0u32.to_ne_bytes().to_vec()),
        meta(MetaKey::L4Proto, Register::Reg1),
        ct_original(NFT_CT_PROTO_DST, Register::Reg32_01),
        lookup(set, set_id, Register::Reg1),
        verdict(NF_DROP),
    ]
}

/// `dnat ip to ip saddr . meta l4proto . th dport map @nat4` (or the `ip6` version):
/// the map's data is `addr . port`, loaded into the registers after the address.
///
/// ```text
/// [ meta load nfproto => reg 1 ]
/// [ cmp eq reg 1 0x00000002 ]
/// [ payload load 4b @ network header + 12 => reg 1 ]
/// [ meta load l4proto => reg 9 ]
/// [ payload load 2b @ transport header + 2 => reg 10 ]
/// [ lookup reg 1 set nat4 dreg 1 ]
/// [ nat dnat ip addr_min reg 1 proto_min reg 9 ]
/// ```
pub(crate) fn rule_dnat(v6: bool, map: &str, map_id: u32) -> Vec<Expr> {
    let mut r = if v6 { rule_allow6(map, map_id) } else { rule_allow4(map, map_id) };
    r.truncate(5);
    r.push(map_lookup(map, map_id, Register::Reg1, Register::Reg1));
    if v6 {
        r.push(dnat(NFPROTO_IPV6, Register::Reg1, Register::Reg2));
    } else {
        r.push(dnat(NFPROTO_IPV4, Register::Reg1, Register::Reg32_01));
    }
    r
}
