//! The pure half of the nftables driver: what to send, never how.
//!
//! Everything here turns portcullis values ([`Plan`], [`Grant`]) into nf_tables
//! messages or into `nft` text, and decodes set-element keys back. Nothing here
//! touches a socket, so all of it is unit-tested without privileges; `netlink.rs`
//! sends the messages and `mod.rs` decides which to send when.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Hook, HookNumber, InetHookNumber, ListAttribute,
    NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementAttribute,
    SetElementList, SetElementMessage, SetFlags, SetMessage, TableAttribute, TableFlags, TableMessage,
};
use portcullis_proto::{Proto, Service};

use super::expr;
pub use super::names::{CHAIN, SET_ALLOW4, SET_ALLOW6, SET_PROTECTED, TABLE};
use super::prefix_sets::{by_set, prefix_sets, render_prefix_rules};
use crate::firewall::{Grant, Key, Plan, Prefix};

/// Hook priority `filter - 5`: just before the usual `filter` (0) chains. Order does
/// not change the outcome (our drop is final wherever it runs) but running first
/// keeps the drop of a protected port from depending on other tables.
/// <https://wiki.nftables.org/wiki-nftables/index.php/Netfilter_hooks#Priority_within_hook>
pub const CHAIN_PRIORITY: i32 = -5;

/// `NF_ACCEPT` as a chain policy.
pub(super) const POLICY_ACCEPT: u32 = 1;

/// Transaction-local set ids, so rules and elements in the setup batch can name
/// sets that do not exist yet.
pub(super) const ID_PROTECTED: u32 = 1;
pub(super) const ID_ALLOW4: u32 = 2;
pub(super) const ID_ALLOW6: u32 = 3;

/// nft datatype ids (`enum datatypes` in nftables' `datatype.h`); a concatenation's
/// type is the field types shifted together 6 bits at a time.
pub(super) const TYPE_IPADDR: u32 = 7;
pub(super) const TYPE_IP6ADDR: u32 = 8;
pub(super) const TYPE_INET_PROTOCOL: u32 = 12;
pub(super) const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

pub(super) const fn concat_type(types: &[u32]) -> u32 {
    let mut t = 0;
    let mut i = 0;
    while i < types.len() {
        t = (t << TYPE_BITS) | types[i];
        i += 1;
    }
    t
}

/// Key layouts: each concatenated field padded to a 4-byte register.
pub const KEY_LEN_PROTECTED: usize = 4 + 4;
pub const KEY_LEN_ALLOW4: usize = 4 + 4 + 4;
pub const KEY_LEN_ALLOW6: usize = 16 + 4 + 4;

/// At most this many elements go into one `NEWSETELEM`/`DELSETELEM` message: the
/// element list is a netlink attribute with a 16-bit length, so a big grant batch
/// is split into several messages (all in the same atomic batch).
pub const ELEMS_PER_MESSAGE: usize = 256;

/// One nf_tables message to send inside a batch, with what it is for error reports.
#[derive(Debug, Clone)]
pub struct Request {
    /// `"<operation>: <step>"`, reported as the failing operation if the kernel
    /// refuses this message.
    pub what: &'static str,
    /// Extra `NLM_F_*` flags (`NLM_F_REQUEST | NLM_F_ACK` are always set).
    pub flags: u16,
    /// The message; it is always sent with family `inet`.
    pub msg: NfTablesMessage,
}

/// A set element as the kernel reports it (or as we re-add it on setup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elem {
    /// Source address allowed in (a prefix grant's network address).
    pub addr: IpAddr,
    /// Prefix length: the family's width for a single address.
    pub len: u8,
    /// Service it may reach.
    pub service: Service,
    /// The element's full timeout in ms (`timeout` in `nft list`), if any.
    pub timeout_ms: Option<u64>,
    /// Time left in ms (`expires` in `nft list`), if the element has a timeout.
    pub expires_ms: Option<u64>,
}

/// A grant timeout in milliseconds for the kernel. Never 0: an element timeout of
/// 0 means "no timeout", i.e. a hole that never closes.
pub fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `inet_proto . inet_service` as 8 bytes: protocol in the first byte of its
/// register, port big-endian in the first two bytes of the next.
fn service_key(service: &Service, out: &mut Vec<u8>) {
    out.extend_from_slice(&[service.proto.number(), 0, 0, 0]);
    out.extend_from_slice(&service.port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// Key of `protected` for a service.
pub fn protected_key(service: &Service) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_LEN_PROTECTED);
    service_key(service, &mut key);
    key
}

/// Key of `allow4`/`allow6` for an address and service.
pub fn allow_key(addr: &IpAddr, service: &Service) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_LEN_ALLOW6);
    match addr {
        IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => key.extend_from_slice(&a.octets()),
    }
    service_key(service, &mut key);
    key
}

/// Decode an `allow4`/`allow6` key. `None` if the length or protocol is not one
/// we write (an element someone else added by hand).
pub fn decode_allow_key(key: &[u8]) -> Option<(IpAddr, Service)> {
    let (addr, rest): (IpAddr, &[u8]) = match key.len() {
        KEY_LEN_ALLOW4 => {
            let octets: [u8; 4] = key.get(..4)?.try_into().ok()?;
            (Ipv4Addr::from(octets).into(), key.get(4..)?)
        }
        KEY_LEN_ALLOW6 => {
            let octets: [u8; 16] = key.get(..16)?.try_into().ok()?;
            (Ipv6Addr::from(octets).into(), key.get(16..)?)
        }
        _ => return None,
    };
    let proto = Proto::from_number(*rest.first()?)?;
    let port = u16::from_be_bytes([*rest.get(4)?, *rest.get(5)?]);
    if port == 0 {
        return None;
    }
    Some((addr, Service { proto, port }))
}

fn table_msg(what: &'static str, flags: u16, add: bool) -> Request {
    let attributes = if add {
        vec![TableAttribute::Name(TABLE.into()), TableAttribute::Flags(TableFlags::empty())]
    } else {
        vec![TableAttribute::Name(TABLE.into())]
    };
    let body = TableMessage { attributes };
    let msg = if add { NfTablesMessage::NewTable(body) } else { NfTablesMessage::DeleteTable(body) };
    Request { what, flags, msg }
}

fn set_msg(
    what: &'static str,
    name: &str,
    id: u32,
    key_type: u32,
    key_len: usize,
    size: u32,
    timeout: bool,
) -> Request {
    set_in(TABLE, what, name, id, (key_type, key_len), None, size, timeout)
}

/// `add set <table> <name> { type <key> [: <data>]; [flags timeout;] [size <size>;] }`
#[allow(clippy::too_many_arguments)]
pub(super) fn set_in(
    table: &str,
    what: &'static str,
    name: &str,
    id: u32,
    key: (u32, usize),
    data: Option<(u32, usize)>,
    size: u32,
    timeout: bool,
) -> Request {
    let mut flags = if timeout { SetFlags::Timeout } else { SetFlags::empty() };
    if data.is_some() {
        flags |= SetFlags::Map;
    }
    let mut attributes = vec![
        SetAttribute::Table(table.into()),
        SetAttribute::Name(name.into()),
        SetAttribute::Flags(flags),
        SetAttribute::KeyType(key.0),
        SetAttribute::KeyLen(key.1 as u32),
        SetAttribute::Id(id),
    ];
    if let Some((ty, len)) = data {
        attributes.push(SetAttribute::DataType(ty));
        attributes.push(SetAttribute::DataLen(len as u32));
    }
    if size > 0 {
        attributes.push(SetAttribute::Description(vec![SetDescription::Size(size)]));
    }
    Request { what, flags: NLM_F_CREATE, msg: NfTablesMessage::NewSet(SetMessage { attributes }) }
}

fn rule_msg(what: &'static str, exprs: Vec<expr::Expr>) -> Request {
    rule_in(TABLE, CHAIN, what, exprs)
}

/// `add rule <table> <chain> <exprs>`
pub(super) fn rule_in(table: &str, chain: &str, what: &'static str, exprs: Vec<expr::Expr>) -> Request {
    Request {
        what,
        flags: NLM_F_CREATE | NLM_F_APPEND,
        msg: NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.into()),
                RuleAttribute::Chain(chain.into()),
                RuleAttribute::Expressions(exprs),
            ],
        }),
    }
}

/// One element: key, plus timeout and remaining time when given.
pub(super) fn element(
    key: Vec<u8>,
    timeout_ms: Option<u64>,
    expires_ms: Option<u64>,
) -> ListAttribute<SetElementAttribute> {
    let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key))];
    if let Some(t) = timeout_ms {
        attrs.push(SetElementAttribute::Timeout(t));
    }
    if let Some(e) = expires_ms {
        attrs.push(SetElementAttribute::Expiration(e));
    }
    ListAttribute::Element(attrs)
}

/// `NEWSETELEM`/`DELSETELEM` messages for `elems`, at most [`ELEMS_PER_MESSAGE`]
/// elements each.
fn element_msgs(
    what: &'static str,
    add: bool,
    set: &str,
    set_id: Option<u32>,
    elems: Vec<ListAttribute<SetElementAttribute>>,
    out: &mut Vec<Request>,
) {
    elements_in(TABLE, what, add, set, set_id, elems, out)
}

/// [`element_msgs`] for a set in any table.
pub(super) fn elements_in(
    table: &str,
    what: &'static str,
    add: bool,
    set: &str,
    set_id: Option<u32>,
    elems: Vec<ListAttribute<SetElementAttribute>>,
    out: &mut Vec<Request>,
) {
    let mut elems = elems.into_iter().peekable();
    while elems.peek().is_some() {
        let chunk: Vec<_> = elems.by_ref().take(ELEMS_PER_MESSAGE).collect();
        let mut attributes = vec![SetElementList::Table(table.into()), SetElementList::Set(set.into())];
        if let Some(id) = set_id {
            attributes.push(SetElementList::SetId(id));
        }
        attributes.push(SetElementList::Elements(chunk));
        let body = SetElementMessage { attributes };
        let (msg, flags) = if add {
            (NfTablesMessage::NewSetElement(body), NLM_F_CREATE)
        } else {
            (NfTablesMessage::DeleteSetElement(body), 0)
        };
        out.push(Request { what, flags, msg });
    }
}

/// Which live grants survive a re-install under `plan`: those whose service is
/// still protected and that have time left, at most `max_grants` per family
/// (longest remaining first), so that the new, possibly smaller sets accept them.
pub fn restorable(plan: &Plan, live: &[Elem]) -> Vec<Elem> {
    let mut keep: Vec<Elem> = live
        .iter()
        .filter(|e| plan.protected.contains(&e.service))
        .filter(|e| plan.holds(&Prefix { addr: e.addr, len: e.len }))
        .filter(|e| e.expires_ms != Some(0))
        .copied()
        .collect();
    // Longest remaining first; no timeout at all counts as longest.
    keep.sort_by_key(|e| std::cmp::Reverse(e.expires_ms.unwrap_or(u64::MAX)));
    if plan.max_grants > 0 {
        let max = plan.max_grants as usize;
        let (mut v4, mut v6) = (0usize, 0usize);
        keep.retain(|e| {
            let n = if e.addr.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            *n <= max
        });
    }
    keep
}

/// The setup batch: replace the whole table atomically and re-add `restore`.
///
/// `add table` + `delete table` first, so the delete cannot fail with ENOENT on a
/// first install; then the complete new table. All in one transaction: packets see
/// either the old ruleset or the new one, never a gap.
pub fn setup_requests(plan: &Plan, restore: &[Elem]) -> Vec<Request> {
    let mut out = vec![
        // add table inet portcullis
        table_msg("nft setup: add table", NLM_F_CREATE, true),
        // delete table inet portcullis
        table_msg("nft setup: delete old table", 0, false),
        // add table inet portcullis
        table_msg("nft setup: add table", NLM_F_CREATE, true),
        // add set inet portcullis protected { type inet_proto . inet_service; }
        set_msg(
            "nft setup: add set protected",
            SET_PROTECTED,
            ID_PROTECTED,
            concat_type(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            KEY_LEN_PROTECTED,
            0,
            false,
        ),
        // add set inet portcullis allow4 { type ipv4_addr . inet_proto . inet_service;
        //     flags timeout; size <max_grants>; }
        set_msg(
            "nft setup: add set allow4",
            SET_ALLOW4,
            ID_ALLOW4,
            concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            KEY_LEN_ALLOW4,
            plan.max_grants,
            true,
        ),
        // add set inet portcullis allow6 { type ipv6_addr . inet_proto . inet_service;
        //     flags timeout; size <max_grants>; }
        set_msg(
            "nft setup: add set allow6",
            SET_ALLOW6,
            ID_ALLOW6,
            concat_type(&[TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            KEY_LEN_ALLOW6,
            plan.max_grants,
            true,
        ),
    ];
    // add set inet portcullis allow4_24 { type ipv4_addr . inet_proto . inet_service;
    //     flags timeout; size <max_grants>; } (one per prefix length in use)
    for (v6, _, name, id) in prefix_sets(plan) {
        let (ty, len) = if v6 { (TYPE_IP6ADDR, KEY_LEN_ALLOW6) } else { (TYPE_IPADDR, KEY_LEN_ALLOW4) };
        out.push(set_in(
            TABLE,
            "nft setup: add prefix grant set",
            &name,
            id,
            (concat_type(&[ty, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), len),
            None,
            plan.max_grants,
            true,
        ));
    }
    // add element inet portcullis protected { tcp . 22, ... }
    let protected = plan.protected.iter().map(|s| element(protected_key(s), None, None)).collect();
    element_msgs(
        "nft setup: add protected services",
        true,
        SET_PROTECTED,
        Some(ID_PROTECTED),
        protected,
        &mut out,
    );

    // add chain inet portcullis input { type filter hook input priority filter - 5; policy accept; }
    out.push(Request {
        what: "nft setup: add chain input",
        flags: NLM_F_CREATE,
        msg: NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(CHAIN.into()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(InetHookNumber::LocalIn)),
                    // The kernel reads the priority as a signed 32-bit value.
                    Hook::Priority(CHAIN_PRIORITY as u32),
                ]),
                ChainAttribute::Policy(POLICY_ACCEPT),
                ChainAttribute::Type("filter".into()),
            ],
        }),
    });
    // ct state established,related accept
    out.push(rule_msg("nft setup: add rule ct state", expr::rule_established()));
    // ip saddr 192.0.2.0/24 accept (one per never_gate prefix)
    for p in &plan.never_gate {
        out.push(rule_msg("nft setup: add rule never_gate", expr::rule_never_gate(p)));
    }
    // ip saddr . meta l4proto . th dport @allow4 accept
    out.push(rule_msg("nft setup: add rule allow4", expr::rule_allow4(SET_ALLOW4, ID_ALLOW4)));
    // ip6 saddr . meta l4proto . th dport @allow6 accept
    out.push(rule_msg("nft setup: add rule allow6", expr::rule_allow6(SET_ALLOW6, ID_ALLOW6)));
    // ip saddr & 255.255.255.0 . meta l4proto . th dport @allow4_24 accept (per prefix set)
    for (v6, len, name, id) in prefix_sets(plan) {
        out.push(rule_msg(
            "nft setup: add rule for prefix grants",
            expr::rule_allow_prefix(v6, len, &name, id),
        ));
    }
    // meta l4proto . th dport @protected drop
    out.push(rule_msg("nft setup: add rule protected", expr::rule_protected(SET_PROTECTED, ID_PROTECTED)));

    // add element inet portcullis allow4 { <addr> . <proto> . <port> timeout <t> expires <left> }
    let mut ids = vec![(SET_ALLOW4.to_string(), ID_ALLOW4), (SET_ALLOW6.to_string(), ID_ALLOW6)];
    ids.extend(prefix_sets(plan).into_iter().map(|(_, _, name, id)| (name, id)));
    for (set, mine) in by_set(restore, |e| Prefix { addr: e.addr, len: e.len }) {
        // `restore` holds only what the plan has sets for (see `restorable`).
        let Some(&(_, id)) = ids.iter().find(|(name, _)| *name == set) else { continue };
        let elems = mine
            .iter()
            .map(|e| element(allow_key(&e.addr, &e.service), e.timeout_ms, e.expires_ms))
            .collect();
        element_msgs("nft setup: restore live grants", true, &set, Some(id), elems, &mut out);
    }
    out
}

/// The grant batch. Per set:
///
/// ```text
/// add element inet portcullis allow4 { <key> timeout <t> }
/// delete element inet portcullis allow4 { <key> }
/// add element inet portcullis allow4 { <key> timeout <t> }
/// ```
///
/// Whether or not the element exists, the result is a fresh element with the full
/// timeout. Kernels since 6.10 or so already refresh an existing element's timeout on
/// a plain add (6.18 does: see the `plain_add_refreshes_timeout` test), older ones
/// silently keep the old expiry; add+delete+add is correct on both. The delete
/// cannot hit ENOENT because the first add created the element, and the kernel
/// counts elements deleted in the same transaction against the set size, so
/// refreshing works in a full set too.
pub fn grant_requests(grants: &[Grant]) -> Vec<Request> {
    // Collapse duplicate keys (the last grant wins) so each element appears once.
    let mut seen = std::collections::HashSet::with_capacity(grants.len());
    let mut uniq: Vec<&Grant> = grants.iter().rev().filter(|g| seen.insert(g.key())).collect();
    uniq.reverse();

    let mut out = Vec::new();
    for (set, mine) in by_set(&uniq, |g| g.source()) {
        let set = set.as_str();
        let full = |g: &&Grant| element(allow_key(&g.addr, &g.service), Some(timeout_ms(g.timeout)), None);
        element_msgs("nft grant: add elements", true, set, None, mine.iter().map(full).collect(), &mut out);
        let keys = mine.iter().map(|g| element(allow_key(&g.addr, &g.service), None, None)).collect();
        element_msgs("nft grant: delete elements for refresh", false, set, None, keys, &mut out);
        element_msgs(
            "nft grant: re-add elements",
            true,
            set,
            None,
            mine.iter().map(full).collect(),
            &mut out,
        );
    }
    out
}

/// The revoke batch that needs no look-up: `add element` (a no-op for an existing
/// element) then `delete element`, in one atomic batch, so a missing element cannot
/// abort it with ENOENT and revoking costs the same with 1 or 100,000 grants live.
/// The add can only fail when the set is full and the element absent (ENFILE); the
/// caller then falls back to [`revoke_requests`] on what a dump shows is present.
pub fn revoke_blind_requests(grants: &[Key]) -> Vec<Request> {
    let mut out = Vec::new();
    for (set, mine) in by_set(grants, |k| k.0) {
        // add element inet portcullis allow4 { <key> timeout 1ms }
        let adds = mine.iter().map(|(p, s)| element(allow_key(&p.addr, s), Some(1), None)).collect();
        element_msgs("nft revoke: add elements (no-op if present)", true, &set, None, adds, &mut out);
        // delete element inet portcullis allow4 { <key> }
        let dels = mine.iter().map(|(p, s)| element(allow_key(&p.addr, s), None, None)).collect();
        element_msgs("nft revoke: delete elements", false, &set, None, dels, &mut out);
    }
    out
}

/// The revoke batch: `delete element` for each of `present` (which the caller has
/// checked exist; a missing one would abort the batch with ENOENT).
pub fn revoke_requests(present: &[Key]) -> Vec<Request> {
    let mut out = Vec::new();
    for (set, mine) in by_set(present, |k| k.0) {
        let keys = mine.iter().map(|(p, s)| element(allow_key(&p.addr, s), None, None)).collect();
        // delete element inet portcullis allow4 { <key>, ... }
        element_msgs("nft revoke: delete elements", false, &set, None, keys, &mut out);
    }
    out
}

/// The teardown batch: `delete table inet portcullis`.
pub fn teardown_requests() -> Vec<Request> {
    vec![table_msg("nft teardown: delete table", 0, false)]
}

/// The `nft -f` text of the table [`setup_requests`] installs (grants aside), laid out
/// the way `nft list table inet portcullis` prints it; `inner` (the optional chains) is
/// written inside the table after the input chain.
pub fn render_table(plan: &Plan, inner: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {TABLE} {{");
    let _ = writeln!(s, "\tset {SET_PROTECTED} {{");
    let _ = writeln!(s, "\t\ttype inet_proto . inet_service");
    if !plan.protected.is_empty() {
        let elems: Vec<String> =
            plan.protected.iter().map(|svc| format!("{} . {}", svc.proto, svc.port)).collect();
        let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
    }
    let _ = writeln!(s, "\t}}");
    for (name, ty) in [(SET_ALLOW4, "ipv4_addr"), (SET_ALLOW6, "ipv6_addr")] {
        let _ = writeln!(s);
        let _ = writeln!(s, "\tset {name} {{");
        let _ = writeln!(s, "\t\ttype {ty} . inet_proto . inet_service");
        if plan.max_grants > 0 {
            let _ = writeln!(s, "\t\tsize {}", plan.max_grants);
        }
        let _ = writeln!(s, "\t\tflags timeout");
        let _ = writeln!(s, "\t}}");
    }
    for (v6, _, name, _) in prefix_sets(plan) {
        let _ = writeln!(s);
        let _ = writeln!(s, "\tset {name} {{");
        let _ = writeln!(
            s,
            "\t\ttype {} . inet_proto . inet_service",
            if v6 { "ipv6_addr" } else { "ipv4_addr" }
        );
        if plan.max_grants > 0 {
            let _ = writeln!(s, "\t\tsize {}", plan.max_grants);
        }
        let _ = writeln!(s, "\t\tflags timeout");
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "\tchain {CHAIN} {{");
    let _ = writeln!(s, "\t\ttype filter hook input priority filter - {}; policy accept;", -CHAIN_PRIORITY);
    for (i, rule) in RULES.iter().enumerate() {
        let _ = writeln!(s, "\t\t{rule}");
        if i == 0 {
            s.push_str(&render_never_gate(plan));
        }
        if i == 2 {
            s.push_str(&render_prefix_rules(plan));
        }
    }
    let _ = writeln!(s, "\t}}");
    s.push_str(inner);
    let _ = writeln!(s, "}}");
    s
}

/// `ip saddr <prefix> accept` lines for the plan's never-gated sources.
pub fn render_never_gate(plan: &Plan) -> String {
    plan.never_gate
        .iter()
        .map(|p| format!("\t\t{} saddr {p} accept\n", if p.addr.is_ipv4() { "ip" } else { "ip6" }))
        .collect()
}

/// The chain's rules in `nft` syntax, in order; the same text `nft list` prints for
/// the bytecode in `expr.rs`.
pub const RULES: [&str; 4] = [
    "ct state established,related accept",
    "ip saddr . meta l4proto . th dport @allow4 accept",
    "ip6 saddr . meta l4proto . th dport @allow6 accept",
    "meta l4proto . th dport @protected drop",
];

#[cfg(test)]
#[path = "ruleset_tests.rs"]
mod tests;
