//! `grant_prefix_v4` / `grant_prefix_v6` on a door or native SPA user: grant the
//! source's whole prefix instead of the single address, for clients behind
//! carrier-grade NAT whose address changes within a pool between knock and connect.
//! Off by default (a single /32 or /128).

use std::collections::BTreeMap;
use std::net::IpAddr;

use toml::Spanned;

use super::limits::Bad;
use super::raw::RawConfig;
use crate::firewall::Prefix;

/// Shortest IPv4 prefix a grant may cover.
pub const MIN_V4: u8 = 16;
/// Shortest IPv6 prefix a grant may cover.
pub const MIN_V6: u8 = 48;

/// How much of its source a grant covers, per address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantPrefix {
    /// IPv4 prefix length, [`MIN_V4`]..=32.
    pub v4: u8,
    /// IPv6 prefix length, [`MIN_V6`]..=128.
    pub v6: u8,
}

impl Default for GrantPrefix {
    fn default() -> GrantPrefix {
        GrantPrefix { v4: 32, v6: 128 }
    }
}

impl GrantPrefix {
    /// Whether this grants single addresses only (the default).
    pub fn is_single(&self) -> bool {
        *self == GrantPrefix::default()
    }

    /// What a grant for `addr` covers.
    pub fn source(&self, addr: IpAddr) -> Prefix {
        Prefix::covering(addr, if addr.is_ipv4() { self.v4 } else { self.v6 })
    }
}

/// The doors and native SPA users that grant prefixes; everyone else grants single
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantPrefixes {
    /// By door name.
    pub doors: BTreeMap<String, GrantPrefix>,
    /// By native SPA user name.
    pub users: BTreeMap<String, GrantPrefix>,
}

impl GrantPrefixes {
    /// What door `name` grants.
    pub fn door(&self, name: &str) -> GrantPrefix {
        self.doors.get(name).copied().unwrap_or_default()
    }

    /// What native SPA user `name` grants.
    pub fn user(&self, name: &str) -> GrantPrefix {
        self.users.get(name).copied().unwrap_or_default()
    }

    /// Whether nobody grants prefixes.
    pub fn is_empty(&self) -> bool {
        self.doors.is_empty() && self.users.is_empty()
    }

    /// The prefix lengths in use below a single address: (IPv4, IPv6), sorted, unique.
    /// The firewall makes room for exactly these.
    pub fn lens(&self) -> (Vec<u8>, Vec<u8>) {
        let all = || self.doors.values().chain(self.users.values());
        let mut v4: Vec<u8> = all().map(|p| p.v4).filter(|&l| l < 32).collect();
        let mut v6: Vec<u8> = all().map(|p| p.v6).filter(|&l| l < 128).collect();
        for v in [&mut v4, &mut v6] {
            v.sort_unstable();
            v.dedup();
        }
        (v4, v6)
    }

    /// One warning per door or user that grants prefixes: everyone sharing the prefix
    /// (the whole NAT pool) can reach the port while the grant lasts.
    pub fn warnings(&self) -> Vec<String> {
        let kinds = [("door", &self.doors), ("spa user", &self.users)];
        kinds
            .into_iter()
            .flat_map(|(kind, m)| m.iter().map(move |(name, p)| (kind, name, p)))
            .map(|(kind, name, p)| {
                format!(
                    "{kind} {name}: grants /{} (IPv4) and /{} (IPv6) prefixes, not single addresses: every host \
                     sharing the knocker's prefix (the whole carrier-grade NAT pool) can reach the opened ports \
                     while the grant lasts",
                    p.v4, p.v6
                )
            })
            .collect()
    }
}

/// Take every door's and native SPA user's keys out of `raw` and check them; also the
/// place of the first one that grants a prefix (for refusals that depend on other keys).
pub(super) fn take(raw: &mut RawConfig) -> Result<(GrantPrefixes, Option<std::ops::Range<usize>>), Bad> {
    let mut out = GrantPrefixes::default();
    let mut at = None;
    let mut one = |v4: Option<Spanned<i64>>, v6: Option<Spanned<i64>>| -> Result<Option<GrantPrefix>, Bad> {
        let span = v4.as_ref().or(v6.as_ref()).map(|v| v.span());
        let p = parse(v4, v6)?;
        if p.is_single() {
            return Ok(None);
        }
        at = at.take().or(span);
        Ok(Some(p))
    };
    for d in &mut raw.doors {
        let d = d.get_mut();
        if let Some(p) = one(d.grant_prefix_v4.take(), d.grant_prefix_v6.take())? {
            out.doors.insert(d.name.get_ref().clone(), p);
        }
    }
    for u in raw.spa.as_mut().map(|s| s.get_mut().user.iter_mut()).into_iter().flatten() {
        let u = u.get_mut();
        if let Some(p) = one(u.grant_prefix_v4.take(), u.grant_prefix_v6.take())? {
            out.users.insert(u.name.get_ref().clone(), p);
        }
    }
    Ok((out, at))
}

/// Check a door's or user's `grant_prefix_v4` / `grant_prefix_v6` (absent: single address).
pub(super) fn parse(v4: Option<Spanned<i64>>, v6: Option<Spanned<i64>>) -> Result<GrantPrefix, Bad> {
    let mut p = GrantPrefix::default();
    if let Some(v) = v4 {
        p.v4 = len(v, MIN_V4, 32, "grant_prefix_v4")?;
    }
    if let Some(v) = v6 {
        p.v6 = len(v, MIN_V6, 128, "grant_prefix_v6")?;
    }
    Ok(p)
}

fn len(v: Spanned<i64>, min: u8, max: u8, what: &str) -> Result<u8, Bad> {
    match u8::try_from(*v.get_ref()) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err((v.span(), format!("{what} must be between {min} and {max} (prefix length in bits)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(v: i64) -> Option<Spanned<i64>> {
        #[derive(serde::Deserialize)]
        struct W {
            v: Spanned<i64>,
        }
        Some(toml::from_str::<W>(&format!("v = {v}")).unwrap().v)
    }

    #[test]
    fn lengths_are_checked_strictly_per_family() {
        assert_eq!(parse(None, None).unwrap(), GrantPrefix::default());
        assert!(parse(None, None).unwrap().is_single());
        assert_eq!(parse(sp(24), None).unwrap(), GrantPrefix { v4: 24, v6: 128 });
        assert_eq!(parse(sp(16), sp(48)).unwrap(), GrantPrefix { v4: 16, v6: 48 });
        assert_eq!(parse(sp(32), sp(128)).unwrap(), GrantPrefix::default());
        for bad in [15, 33, 0, -1, 64, 256] {
            let (_, m) = parse(sp(bad), None).unwrap_err();
            assert_eq!(m, "grant_prefix_v4 must be between 16 and 32 (prefix length in bits)", "{bad}");
        }
        for bad in [47, 129, 0, 24, -64] {
            let (_, m) = parse(None, sp(bad)).unwrap_err();
            assert_eq!(m, "grant_prefix_v6 must be between 48 and 128 (prefix length in bits)", "{bad}");
        }
    }

    #[test]
    fn a_grant_covers_the_source_prefix() {
        let p = GrantPrefix { v4: 24, v6: 64 };
        assert_eq!(p.source("10.1.2.3".parse().unwrap()).to_string(), "10.1.2.0/24");
        assert_eq!(p.source("2001:db8:0:7:1::2".parse().unwrap()).to_string(), "2001:db8:0:7::/64");
        let one = GrantPrefix::default().source("10.1.2.3".parse().unwrap());
        assert!(one.is_host() && one.short() == "10.1.2.3");
    }

    #[test]
    fn lens_and_warnings_name_only_prefix_grants() {
        let mut g = GrantPrefixes::default();
        assert_eq!(g.lens(), (vec![], vec![]));
        assert!(g.warnings().is_empty());
        g.doors.insert("ssh".into(), GrantPrefix { v4: 24, v6: 128 });
        g.users.insert("alice".into(), GrantPrefix { v4: 24, v6: 64 });
        g.users.insert("bob".into(), GrantPrefix { v4: 20, v6: 56 });
        assert_eq!(g.lens(), (vec![20, 24], vec![56, 64]));
        let w = g.warnings();
        assert_eq!(w.len(), 3);
        assert!(w[0].starts_with("door ssh: grants /24 (IPv4)") && w[0].contains("NAT pool"), "{w:?}");
        assert!(w[1].starts_with("spa user alice:"), "{w:?}");
        assert_eq!(g.door("web"), GrantPrefix::default());
        assert_eq!(g.user("bob").v4, 20);
    }
}
