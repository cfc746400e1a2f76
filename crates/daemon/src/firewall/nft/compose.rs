//! The optional parts of the nftables ruleset (pure, like `ruleset.rs`): forward
//! gating, NAT grants, and the accepting chain in the admin's table.
//!
//! ```text
//! table inet portcullis {
//!     ...                                   (see the module doc of `nft`)
//!     chain forward {                       (gate_forward = true)
//!         type filter hook forward priority filter - 5; policy accept;
//!         ct state established,related accept
//!         ip saddr . meta l4proto . ct original proto-dst @allow4 accept
//!         ip6 saddr . meta l4proto . ct original proto-dst @allow6 accept
//!         ip saddr . meta l4proto . ct original proto-dst @natfwd4 accept     (nat = true)
//!         ip6 saddr . meta l4proto . ct original proto-dst @natfwd6 accept
//!         ct status dnat meta l4proto . ct original proto-dst @protected drop
//!     }
//!     map nat4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; flags timeout; }
//!     map nat6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; flags timeout; }
//!     set natfwd4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//!     set natfwd6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
//!     chain prerouting {                    (nat = true)
//!         type nat hook prerouting priority dstnat - 5; policy accept;
//!         dnat ip to ip saddr . meta l4proto . th dport map @nat4
//!         dnat ip6 to ip6 saddr . meta l4proto . th dport map @nat6
//!     }
//! }
//! table inet <admin's table> {              (mode = "accept", accept_table)
//!     set portcullis_allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//!     set portcullis_allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
//!     chain portcullis {
//!         ip saddr . meta l4proto . ct original proto-dst @portcullis_allow4 accept
//!         ip6 saddr . meta l4proto . ct original proto-dst @portcullis_allow6 accept
//!     }
//! }
//! ```
//!
//! Forwarded services: after DNAT the packet's port is the inside one, so the
//! forward chain matches the connection's *original* destination port; `ct status
//! dnat` limits the drop to connections that were addressed to this host (a router's
//! plain forwarding to other hosts is none of our business).
//!
//! Accept mode: an `accept` is final only within its own table, so the accepting
//! rules live in a chain inside the admin's table, which their input (and, for NAT,
//! forward) chain jumps to. `ct original proto-dst` equals the packet's port when there
//! was no DNAT, so the same rules serve both hooks. Grants go into both tables' sets
//! in one batch and expire in the kernel together. If the admin never adds the jump,
//! nothing opens (fail closed) and our table still drops.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Hook, HookNumber, InetHookNumber, ListAttribute,
    NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute, SetMessage,
};

use super::expr;
use super::ruleset::{
    allow_key, concat_type, element, elements_in, rule_in, set_in, timeout_ms, Request, CHAIN_PRIORITY,
    ID_ALLOW4, ID_ALLOW6, ID_PROTECTED, KEY_LEN_ALLOW4, KEY_LEN_ALLOW6, POLICY_ACCEPT, SET_ALLOW4,
    SET_ALLOW6, SET_PROTECTED, TABLE, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_IP6ADDR, TYPE_IPADDR,
};
use crate::firewall::{AdminTable, Grant, NatGrant, Plan};

/// Our forward base chain.
pub const CHAIN_FORWARD: &str = "forward";
/// Our NAT base chain.
pub const CHAIN_NAT: &str = "prerouting";
/// NAT maps: `source . proto . port : inside address . inside port`.
pub const MAP_NAT4: &str = "nat4";
/// IPv6 NAT map.
pub const MAP_NAT6: &str = "nat6";
/// NAT grants' forward keys (`source . proto . original port`).
pub const SET_NATFWD4: &str = "natfwd4";
/// IPv6 NAT forward keys.
pub const SET_NATFWD6: &str = "natfwd6";
/// Our chain in the admin's table.
pub const ACCEPT_CHAIN: &str = "portcullis";
/// Grant sets in the admin's table.
pub const ADMIN_SET4: &str = "portcullis_allow4";
/// IPv6 grant set in the admin's table.
pub const ADMIN_SET6: &str = "portcullis_allow6";

const ID_NAT4: u32 = 4;
const ID_NAT6: u32 = 5;
const ID_NATFWD4: u32 = 6;
const ID_NATFWD6: u32 = 7;
const ID_ADMIN4: u32 = 8;
const ID_ADMIN6: u32 = 9;

/// `dstnat - 5`: before the usual DNAT chains (`dstnat` = -100), so a NAT grant
/// wins over the admin's own port forwards for its source.
const NAT_PRIORITY: i32 = -105;

fn allow_type(v6: bool) -> (u32, usize) {
    if v6 {
        (concat_type(&[TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), KEY_LEN_ALLOW6)
    } else {
        (concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), KEY_LEN_ALLOW4)
    }
}

fn nat_data_type(v6: bool) -> (u32, usize) {
    if v6 {
        (concat_type(&[TYPE_IP6ADDR, TYPE_INET_SERVICE]), 16 + 4)
    } else {
        (concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE]), 4 + 4)
    }
}

/// `inside address . inside port`, each field padded to a 4-byte register.
pub fn nat_data(to: &SocketAddr) -> Vec<u8> {
    let mut d = match to.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    d.extend_from_slice(&to.port().to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d
}

fn base_chain(what: &'static str, name: &str, hook: InetHookNumber, priority: i32, ty: &str) -> Request {
    Request {
        what,
        flags: NLM_F_CREATE,
        msg: NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(name.into()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(hook)),
                    // The kernel reads the priority as a signed 32-bit value.
                    Hook::Priority(priority as u32),
                ]),
                ChainAttribute::Policy(POLICY_ACCEPT),
                ChainAttribute::Type(ty.into()),
            ],
        }),
    }
}

/// The forward chain and, with NAT, the maps and the prerouting chain; appended to
/// the setup batch after our table's sets exist.
pub fn optional_requests(plan: &Plan) -> Vec<Request> {
    let mut out = Vec::new();
    if plan.nat {
        for (v6, map, map_id, set, set_id) in [
            (false, MAP_NAT4, ID_NAT4, SET_NATFWD4, ID_NATFWD4),
            (true, MAP_NAT6, ID_NAT6, SET_NATFWD6, ID_NATFWD6),
        ] {
            out.push(set_in(
                TABLE,
                "nft setup: add NAT map",
                map,
                map_id,
                allow_type(v6),
                Some(nat_data_type(v6)),
                plan.max_grants,
                true,
            ));
            out.push(set_in(
                TABLE,
                "nft setup: add NAT forward set",
                set,
                set_id,
                allow_type(v6),
                None,
                plan.max_grants,
                true,
            ));
        }
        out.push(base_chain(
            "nft setup: add chain prerouting (nat)",
            CHAIN_NAT,
            InetHookNumber::PreRouting,
            NAT_PRIORITY,
            "nat",
        ));
        for (v6, map, id) in [(false, MAP_NAT4, ID_NAT4), (true, MAP_NAT6, ID_NAT6)] {
            out.push(rule_in(TABLE, CHAIN_NAT, "nft setup: add dnat rule", expr::rule_dnat(v6, map, id)));
        }
    }
    if plan.forward || plan.nat {
        out.push(base_chain(
            "nft setup: add chain forward",
            CHAIN_FORWARD,
            InetHookNumber::Forward,
            CHAIN_PRIORITY,
            "filter",
        ));
        out.push(rule_in(
            TABLE,
            CHAIN_FORWARD,
            "nft setup: add forward rule ct state",
            expr::rule_established(),
        ));
        for p in &plan.never_gate {
            out.push(rule_in(
                TABLE,
                CHAIN_FORWARD,
                "nft setup: add forward rule never_gate",
                expr::rule_never_gate(p),
            ));
        }
        let mut sets = Vec::new();
        if plan.forward {
            sets.extend([(false, SET_ALLOW4, ID_ALLOW4), (true, SET_ALLOW6, ID_ALLOW6)]);
        }
        if plan.nat {
            sets.extend([(false, SET_NATFWD4, ID_NATFWD4), (true, SET_NATFWD6, ID_NATFWD6)]);
        }
        for (v6, set, id) in sets {
            out.push(rule_in(
                TABLE,
                CHAIN_FORWARD,
                "nft setup: add forward allow rule",
                expr::rule_allow_original(v6, set, id),
            ));
        }
        if plan.forward {
            out.push(rule_in(
                TABLE,
                CHAIN_FORWARD,
                "nft setup: add forward protected rule",
                expr::rule_protected_dnat(SET_PROTECTED, ID_PROTECTED),
            ));
        }
    }
    out
}

/// One element with map data.
fn element_data(key: Vec<u8>, data: Vec<u8>, timeout_ms: u64) -> ListAttribute<SetElementAttribute> {
    ListAttribute::Element(vec![
        SetElementAttribute::Key(DataAttribute::Value(key)),
        SetElementAttribute::Data(DataAttribute::Value(data)),
        SetElementAttribute::Timeout(timeout_ms),
    ])
}

/// What to write into one set: (key, map data, timeout in ms).
type Keyed = (Vec<u8>, Option<Vec<u8>>, u64);

fn full(k: &Keyed) -> ListAttribute<SetElementAttribute> {
    match &k.1 {
        Some(d) => element_data(k.0.clone(), d.clone(), k.2),
        None => element(k.0.clone(), Some(k.2), None),
    }
}

/// add + delete + add: a fresh element with the full timeout whether it existed or
/// not (see [`super::ruleset::grant_requests`]).
fn refresh(table: &str, what: &'static str, set: &str, items: &[Keyed], out: &mut Vec<Request>) {
    if items.is_empty() {
        return;
    }
    elements_in(table, what, true, set, None, items.iter().map(full).collect(), out);
    let keys = items.iter().map(|k| element(k.0.clone(), None, None)).collect();
    elements_in(table, what, false, set, None, keys, out);
    elements_in(table, what, true, set, None, items.iter().map(full).collect(), out);
}

/// add (a no-op if present) + delete: gone whether it existed or not.
fn remove(table: &str, what: &'static str, set: &str, items: &[Keyed], out: &mut Vec<Request>) {
    if items.is_empty() {
        return;
    }
    let tiny: Vec<Keyed> = items.iter().map(|k| (k.0.clone(), k.1.clone(), 1)).collect();
    elements_in(table, what, true, set, None, tiny.iter().map(full).collect(), out);
    let keys = items.iter().map(|k| element(k.0.clone(), None, None)).collect();
    elements_in(table, what, false, set, None, keys, out);
}

/// The NAT grant (or, with `revoke`, revoke) batch: the map element and the forward
/// key in our table, and the forward key in the admin's set in accept mode.
pub fn nat_requests(grants: &[NatGrant], admin: Option<&AdminTable>, revoke: bool) -> Vec<Request> {
    let mut out = Vec::new();
    for (v6, map, fwd, admin_set) in
        [(false, MAP_NAT4, SET_NATFWD4, ADMIN_SET4), (true, MAP_NAT6, SET_NATFWD6, ADMIN_SET6)]
    {
        let mine: Vec<&NatGrant> = grants.iter().filter(|g| g.addr.is_ipv6() == v6).collect();
        let mapped: Vec<Keyed> = mine
            .iter()
            .map(|g| (allow_key(&g.addr, &g.service), Some(nat_data(&g.to)), timeout_ms(g.timeout)))
            .collect();
        let keys: Vec<Keyed> =
            mine.iter().map(|g| (allow_key(&g.addr, &g.service), None, timeout_ms(g.timeout))).collect();
        let op = if revoke { remove } else { refresh };
        op(TABLE, "nft nat grant: map elements", map, &mapped, &mut out);
        op(TABLE, "nft nat grant: forward elements", fwd, &keys, &mut out);
        if let Some(t) = admin {
            op(&t.name, "nft nat grant: admin table elements", admin_set, &keys, &mut out);
        }
    }
    out
}

/// The admin-table part of a grant batch (accept mode; single addresses only, the
/// config refuses prefix grants in accept mode).
pub fn admin_grant_requests(t: &AdminTable, grants: &[Grant]) -> Vec<Request> {
    let mut out = Vec::new();
    for (v6, set) in [(false, ADMIN_SET4), (true, ADMIN_SET6)] {
        let items: Vec<Keyed> = grants
            .iter()
            .filter(|g| g.addr.is_ipv6() == v6 && g.source().is_host())
            .map(|g| (allow_key(&g.addr, &g.service), None, timeout_ms(g.timeout)))
            .collect();
        refresh(&t.name, "nft grant: admin table elements", set, &items, &mut out);
    }
    out
}

/// The admin-table part of a revoke batch (accept mode).
pub fn admin_revoke_requests(t: &AdminTable, grants: &[crate::firewall::Key]) -> Vec<Request> {
    let mut out = Vec::new();
    for (v6, set) in [(false, ADMIN_SET4), (true, ADMIN_SET6)] {
        let items: Vec<Keyed> = grants
            .iter()
            .filter(|(p, _)| p.addr.is_ipv6() == v6 && p.is_host())
            .map(|(p, s)| (allow_key(&p.addr, s), None, 1))
            .collect();
        remove(&t.name, "nft revoke: admin table elements", set, &items, &mut out);
    }
    out
}

fn flush_chain(t: &AdminTable, what: &'static str) -> Request {
    Request {
        what,
        flags: 0,
        msg: NfTablesMessage::DeleteRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(t.name.clone()), RuleAttribute::Chain(ACCEPT_CHAIN.into())],
        }),
    }
}

fn admin_set_msg(t: &AdminTable, what: &'static str, name: &str, delete: bool) -> Request {
    let body =
        SetMessage { attributes: vec![SetAttribute::Table(t.name.clone()), SetAttribute::Name(name.into())] };
    Request {
        what,
        flags: 0,
        msg: if delete { NfTablesMessage::DeleteSet(body) } else { NfTablesMessage::NewSet(body) },
    }
}

fn admin_chain_msg(t: &AdminTable, what: &'static str, delete: bool) -> Request {
    let body = ChainMessage {
        attributes: vec![ChainAttribute::Table(t.name.clone()), ChainAttribute::Name(ACCEPT_CHAIN.into())],
    };
    if delete {
        Request { what, flags: 0, msg: NfTablesMessage::DeleteChain(body) }
    } else {
        Request { what, flags: NLM_F_CREATE, msg: NfTablesMessage::NewChain(body) }
    }
}

/// The admin-table part of the setup batch: our chain (created if missing, kept if
/// the admin's rules jump to it, emptied), our sets replaced at the new size, the
/// two accepting rules, and the live grants (`restore`: key and timeouts).
pub fn admin_setup_requests(t: &AdminTable, plan: &Plan, restore: &[super::ruleset::Elem]) -> Vec<Request> {
    let mut out = vec![
        admin_chain_msg(
            t,
            "nft setup: add chain portcullis to the accept_table (does the table exist?)",
            false,
        ),
        flush_chain(t, "nft setup: flush chain portcullis in the accept_table"),
    ];
    for (v6, set, id) in [(false, ADMIN_SET4, ID_ADMIN4), (true, ADMIN_SET6, ID_ADMIN6)] {
        out.push(set_in(
            &t.name,
            "nft setup: add set in the accept_table",
            set,
            id,
            allow_type(v6),
            None,
            0,
            true,
        ));
        out.push(admin_set_msg(t, "nft setup: delete old set in the accept_table", set, true));
        out.push(set_in(
            &t.name,
            "nft setup: add set in the accept_table",
            set,
            id,
            allow_type(v6),
            None,
            plan.max_grants,
            true,
        ));
    }
    for (v6, set, id) in [(false, ADMIN_SET4, ID_ADMIN4), (true, ADMIN_SET6, ID_ADMIN6)] {
        out.push(rule_in(
            &t.name,
            ACCEPT_CHAIN,
            "nft setup: add accepting rule in the accept_table",
            expr::rule_allow_original(v6, set, id),
        ));
        let elems = restore
            .iter()
            .filter(|e| {
                e.addr.is_ipv6() == v6 && crate::firewall::Prefix { addr: e.addr, len: e.len }.is_host()
            })
            .map(|e| element(allow_key(&e.addr, &e.service), e.timeout_ms, e.expires_ms))
            .collect();
        elements_in(
            &t.name,
            "nft setup: restore live grants in the accept_table",
            true,
            set,
            Some(id),
            elems,
            &mut out,
        );
    }
    out
}

/// Remove our chain and sets from the admin's table. With `keep_chain` the chain
/// stays (emptied): the admin's rules still jump to it.
pub fn admin_teardown_requests(t: &AdminTable, keep_chain: bool) -> Vec<Request> {
    let mut out = vec![flush_chain(t, "nft teardown: flush chain portcullis in the accept_table")];
    for set in [ADMIN_SET4, ADMIN_SET6] {
        out.push(admin_set_msg(t, "nft teardown: delete set in the accept_table", set, true));
    }
    if !keep_chain {
        out.push(admin_chain_msg(t, "nft teardown: delete chain portcullis in the accept_table", true));
    }
    out
}

/// The `nft` text of [`optional_requests`], inside `table inet portcullis`.
pub fn render_optional(plan: &Plan) -> String {
    let mut s = String::new();
    if plan.forward || plan.nat {
        s.push_str("\n\tchain forward {\n\t\ttype filter hook forward priority filter - 5; policy accept;\n");
        s.push_str("\t\tct state established,related accept\n");
        s.push_str(&super::ruleset::render_never_gate(plan));
        let mut sets = Vec::new();
        if plan.forward {
            sets.extend([("ip", SET_ALLOW4), ("ip6", SET_ALLOW6)]);
        }
        if plan.nat {
            sets.extend([("ip", SET_NATFWD4), ("ip6", SET_NATFWD6)]);
        }
        for (fam, set) in sets {
            s.push_str(&format!("\t\t{fam} saddr . meta l4proto . ct original proto-dst @{set} accept\n"));
        }
        if plan.forward {
            s.push_str(&format!(
                "\t\tct status dnat meta l4proto . ct original proto-dst @{SET_PROTECTED} drop\n"
            ));
        }
        s.push_str("\t}\n");
    }
    if plan.nat {
        for (map, set, ty) in [(MAP_NAT4, SET_NATFWD4, "ipv4_addr"), (MAP_NAT6, SET_NATFWD6, "ipv6_addr")] {
            s.push_str(&format!(
                "\n\tmap {map} {{\n\t\ttype {ty} . inet_proto . inet_service : {ty} . inet_service\n\t\tflags timeout\n\t}}\n"
            ));
            s.push_str(&format!(
                "\n\tset {set} {{\n\t\ttype {ty} . inet_proto . inet_service\n\t\tflags timeout\n\t}}\n"
            ));
        }
        s.push_str(
            "\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat - 5; policy accept;\n",
        );
        s.push_str("\t\tdnat ip to ip saddr . meta l4proto . th dport map @nat4\n");
        s.push_str("\t\tdnat ip6 to ip6 saddr . meta l4proto . th dport map @nat6\n\t}\n");
    }
    s
}

/// The `nft` text of what accept mode keeps in the admin's table.
pub fn render_admin(t: &AdminTable) -> String {
    let mut s = format!("table {} {} {{\n", t.family, t.name);
    for (set, ty) in [(ADMIN_SET4, "ipv4_addr"), (ADMIN_SET6, "ipv6_addr")] {
        s.push_str(&format!(
            "\tset {set} {{\n\t\ttype {ty} . inet_proto . inet_service\n\t\tflags timeout\n\t}}\n\n"
        ));
    }
    s.push_str(&format!("\tchain {ACCEPT_CHAIN} {{\n"));
    for (fam, set) in [("ip", ADMIN_SET4), ("ip6", ADMIN_SET6)] {
        s.push_str(&format!("\t\t{fam} saddr . meta l4proto . ct original proto-dst @{set} accept\n"));
    }
    s.push_str("\t}\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_proto::Service;

    #[test]
    fn optional_parts_follow_the_plan() {
        let mut p = Plan { protected: vec![Service::tcp(22)], max_grants: 16, ..Plan::default() };
        assert!(optional_requests(&p).is_empty());
        p.forward = true;
        let whats: Vec<&str> = optional_requests(&p).iter().map(|r| r.what).collect();
        assert_eq!(
            whats,
            [
                "nft setup: add chain forward",
                "nft setup: add forward rule ct state",
                "nft setup: add forward allow rule",
                "nft setup: add forward allow rule",
                "nft setup: add forward protected rule",
            ]
        );
        assert!(render_optional(&p)
            .contains("ct status dnat meta l4proto . ct original proto-dst @protected drop"));
        p.nat = true;
        assert_eq!(optional_requests(&p).len(), 5 + 4 + 1 + 2 + 2);
        assert!(render_optional(&p).contains("dnat ip to ip saddr . meta l4proto . th dport map @nat4"));
    }

    #[test]
    fn nat_data_is_register_padded() {
        assert_eq!(nat_data(&"10.0.0.3:22".parse().unwrap()), [10, 0, 0, 3, 0, 22, 0, 0]);
        assert_eq!(nat_data(&"[2001:db8::3]:443".parse().unwrap()).len(), 20);
    }

    #[test]
    fn admin_batches_name_the_admin_table() {
        let t = AdminTable { family: "inet".into(), name: "filter".into() };
        let reqs = admin_setup_requests(&t, &Plan::default(), &[]);
        assert!(reqs.iter().all(|r| match &r.msg {
            NfTablesMessage::NewRule(m) => m.attributes.contains(&RuleAttribute::Table("filter".into())),
            _ => true,
        }));
        assert_eq!(admin_teardown_requests(&t, true).len(), 3);
        assert!(render_admin(&t).starts_with("table inet filter {"));
        assert_eq!(admin_teardown_requests(&t, false).len(), 4);
    }
}
