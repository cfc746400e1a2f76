//! Prefix grant sets (carrier-grade NAT): which set holds a grant, the sets and rules a
//! plan with prefix lengths adds, and grouping keys by set. Pure, like `ruleset.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::names::{allow_set, ID_PREFIX_BASE, SET_ALLOW4, SET_ALLOW6};
use crate::firewall::{Plan, Prefix};

/// The set holding grants for `p`: `allow4`/`allow6` for a single address, else the
/// set of its prefix length (`allow4_24`, `allow6_64`), whose keys are network
/// addresses and whose rule masks the source before the lookup. One exact-match hash
/// set per length keeps kernel timeouts and leaves single-address grants as they were.
pub fn set_for(p: &Prefix) -> String {
    if p.is_host() {
        allow_set(&p.addr).to_string()
    } else {
        prefix_set(p.addr.is_ipv6(), p.len)
    }
}

/// Name of the set for `len`-bit prefix grants.
pub fn prefix_set(v6: bool, len: u8) -> String {
    format!("allow{}_{len}", if v6 { 6 } else { 4 })
}

/// The prefix grant sets of `plan`: (IPv6?, length, name, transaction id).
pub fn prefix_sets(plan: &Plan) -> Vec<(bool, u8, String, u32)> {
    let v4 = plan.prefix_v4.iter().map(|&l| (false, l, prefix_set(false, l), ID_PREFIX_BASE + u32::from(l)));
    let v6 =
        plan.prefix_v6.iter().map(|&l| (true, l, prefix_set(true, l), ID_PREFIX_BASE + 200 + u32::from(l)));
    v4.chain(v6).collect()
}

/// Every set a grant may be in under `plan`, with the prefix length it holds.
pub fn grant_sets(plan: &Plan) -> Vec<(String, Option<u8>)> {
    let mut out = vec![(SET_ALLOW4.to_string(), None), (SET_ALLOW6.to_string(), None)];
    out.extend(prefix_sets(plan).into_iter().map(|(_, l, name, _)| (name, Some(l))));
    out
}

/// Group items by the set that holds them (family, then prefix length); the set's name
/// is made once per group, not per item.
pub(super) fn by_set<T: Copy>(items: &[T], source: impl Fn(&T) -> Prefix) -> Vec<(String, Vec<T>)> {
    let mut groups: std::collections::BTreeMap<(bool, u8), Vec<T>> = std::collections::BTreeMap::new();
    for it in items {
        let p = source(it);
        groups.entry((p.addr.is_ipv6(), p.len)).or_default().push(*it);
    }
    groups.into_values().filter_map(|v| Some((set_for(&source(v.first()?)), v))).collect()
}

/// `ip saddr & 255.255.255.0 . meta l4proto . th dport @allow4_24 accept` lines for the
/// plan's prefix grant sets.
pub fn render_prefix_rules(plan: &Plan) -> String {
    prefix_sets(plan)
        .into_iter()
        .map(|(v6, len, name, _)| {
            let (fam, any) = if v6 {
                ("ip6", IpAddr::from(Ipv6Addr::UNSPECIFIED))
            } else {
                ("ip", Ipv4Addr::UNSPECIFIED.into())
            };
            let mask = Prefix { addr: any, len }.mask_bytes();
            let mask = match mask.len() {
                4 => Ipv4Addr::from(<[u8; 4]>::try_from(mask.as_slice()).unwrap_or_default()).to_string(),
                _ => Ipv6Addr::from(<[u8; 16]>::try_from(mask.as_slice()).unwrap_or_default()).to_string(),
            };
            format!("\t\t{fam} saddr & {mask} . meta l4proto . th dport @{name} accept\n")
        })
        .collect()
}
