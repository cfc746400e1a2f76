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

/// `NFTA_CT_DREG` / `NFTA_CT_KEY` and `NFT_CT_STATE`: the crate has no `ct` expression.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
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
