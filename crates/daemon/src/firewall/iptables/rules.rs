//! Pure part of the iptables driver: the `iptables-restore` batches we send at setup
//! and teardown, and the `iptables-save` lines we read back. No I/O, so every rule is
//! unit-tested as text. Grants never touch these rules: they live in ipsets.
//!
//! Layout, per family (`iptables` with set `portcullis4`, `ip6tables` with
//! `portcullis6`), `CHAIN` being `PORTCULLIS` unless configured:
//!
//! ```text
//! *filter
//! -I INPUT <position> -j CHAIN
//! -A CHAIN -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//! (gate)   -A CHAIN -p tcp -m tcp --dport 22 -m set ! --match-set portcullis4 src,dst -j DROP
//! (accept) -A CHAIN -p tcp -m tcp --dport 22 -m set --match-set portcullis4 src,dst -j ACCEPT
//!          -A CHAIN -p tcp -m tcp --dport 22 -j DROP
//! (forward gating)
//! *mangle
//! -I PREROUTING 1 -j CHAIN
//! -A CHAIN -m conntrack ! --ctstate NEW -j RETURN
//! -A CHAIN -m addrtype ! --dst-type LOCAL -j RETURN
//! -A CHAIN -p tcp -m tcp --dport 22 -m set ! --match-set portcullis4 src,dst -j DROP
//! ```
//!
//! One rule per protected service; the set is keyed `source, proto:port`, so a
//! grant is one ipset entry. Forwarded services: an ipset lookup can only read the
//! packet's current port, which DNAT has already rewritten by the forward hook, so
//! new connections are gated in `mangle PREROUTING`, before DNAT, while their
//! destination is still this host's address and protected port; whether they are
//! then delivered locally or forwarded, the same grant decides.
//!
//! NAT grants (one set per inside destination, keyed by source):
//!
//! ```text
//! *nat
//! -I PREROUTING 1 -j CHAIN
//! -A CHAIN -p tcp -m tcp --dport 2222 -m set --match-set pn40a000003t2222-22 src -j DNAT --to-destination 10.0.0.3:22
//! *filter
//! -I FORWARD 1 -j CHAIN-FWD
//! -A CHAIN-FWD -p tcp -d 10.0.0.3/32 -m tcp --dport 22 -m conntrack --ctstate DNAT -m set --match-set pn40a000003t2222-22 src -j ACCEPT
//! ```

use std::net::{IpAddr, SocketAddr};

use portcullis_proto::{Proto, Service};

use crate::firewall::{Mode, Plan};

/// The grant sets, per family.
pub const SET4: &str = "portcullis4";
/// IPv6 grants.
pub const SET6: &str = "portcullis6";
/// IPv4 prefix grants (`hash:net,port`), only when the plan has prefix lengths.
pub const NET4: &str = "portcullis4n";
/// IPv6 prefix grants.
pub const NET6: &str = "portcullis6n";
/// Comment prefix of the grant rules older versions wrote (one rule per grant);
/// `setup` moves them into the sets.
pub const COMMENT: &str = "portcullis:expires=";

/// The set for `addr`'s family.
pub fn set_for(addr: &IpAddr) -> &'static str {
    if addr.is_ipv6() {
        SET6
    } else {
        SET4
    }
}

/// Forward-accept chain for NAT grants.
pub fn fwd_chain(chain: &str) -> String {
    format!("{chain}-FWD")
}

/// The set that holds the sources forwarded to `to` via `service`: one set per
/// destination, so a NAT grant is one ipset entry too. At most 31 characters.
pub fn nat_set(service: &Service, to: &SocketAddr) -> String {
    let fam = if to.is_ipv6() { '6' } else { '4' };
    let ip = match to.ip() {
        IpAddr::V4(a) => format!("{:08x}", u32::from(a)),
        // 64 bits of the address keep the name within the kernel's 31 characters.
        IpAddr::V6(a) => format!("{:016x}", fold(u128::from(a))),
    };
    let p = if service.proto == Proto::Tcp { 't' } else { 'u' };
    format!("pn{fam}{ip}{p}{}-{}", service.port, to.port())
}

fn fold(v: u128) -> u64 {
    (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
}

/// A grant rule an older version left in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyGrant {
    /// Source allowed.
    pub addr: IpAddr,
    /// Service reachable.
    pub service: Service,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

fn proto(p: Proto) -> &'static str {
    p.as_str()
}

fn service_match(s: &Service) -> String {
    let p = proto(s.proto);
    format!("-p {p} -m {p} --dport {}", s.port)
}

/// Whether this plan wants a mangle chain.
fn wants_mangle(plan: &Plan) -> bool {
    plan.forward && !plan.protected.is_empty()
}

/// A NAT destination with its set, as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRoute {
    /// Port on this host.
    pub service: Service,
    /// Inside host.
    pub to: SocketAddr,
}

impl NatRoute {
    /// Its source set.
    pub fn set(&self) -> String {
        nat_set(&self.service, &self.to)
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn to_dest(to: &SocketAddr) -> String {
    match to {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The whole batch for one family (`v6`): filter (and mangle, nat) chains rebuilt in
/// one `--noflush` restore, jumps added where missing (`saved` says which exist),
/// chains we no longer need removed.
pub fn setup_batch(plan: &Plan, v6: bool, routes: &[NatRoute], saved: &Saved) -> String {
    let chain = &plan.chain;
    let set = if v6 { SET6 } else { SET4 };
    let net = if v6 { NET6 } else { NET4 };
    let prefixes = !if v6 { &plan.prefix_v6 } else { &plan.prefix_v4 }.is_empty();
    // Not granted: in neither the address set nor (with prefix grants) the prefix set.
    let ungranted = if prefixes {
        format!("-m set ! --match-set {set} src,dst -m set ! --match-set {net} src,dst")
    } else {
        format!("-m set ! --match-set {set} src,dst")
    };
    let fwd = fwd_chain(chain);
    let routes: Vec<&NatRoute> = routes.iter().filter(|r| r.to.is_ipv6() == v6).collect();

    let mut b = format!(
        "*filter\n:{chain} - [0:0]\n-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
    );
    // never_gate: the management network returns before any of our drops (here and in
    // the mangle chain).
    let never_gate: Vec<_> = plan.never_gate.iter().filter(|p| p.addr.is_ipv6() == v6).collect();
    for p in &never_gate {
        b.push_str(&format!("-A {chain} -s {p} -j RETURN\n"));
    }
    for s in &plan.protected {
        let m = service_match(s);
        match plan.mode {
            Mode::Gate => b.push_str(&format!("-A {chain} {m} {ungranted} -j DROP\n")),
            Mode::Accept => {
                b.push_str(&format!("-A {chain} {m} -m set --match-set {set} src,dst -j ACCEPT\n"));
                if prefixes {
                    b.push_str(&format!("-A {chain} {m} -m set --match-set {net} src,dst -j ACCEPT\n"));
                }
                b.push_str(&format!("-A {chain} {m} -j DROP\n"));
            }
        }
    }
    if !saved.filter.jump {
        b.push_str(&format!("-I INPUT {} -j {chain}\n", plan.jump_position.max(1)));
    }
    if routes.is_empty() {
        if saved.filter_fwd.jump {
            b.push_str(&format!("-D FORWARD -j {fwd}\n"));
        }
        if saved.filter_fwd.chain {
            b.push_str(&format!(":{fwd} - [0:0]\n-X {fwd}\n"));
        }
    } else {
        b.push_str(&format!(":{fwd} - [0:0]\n"));
        for r in &routes {
            b.push_str(&format!(
                "-A {fwd} {} -d {} -m {} --dport {} -m conntrack --ctstate DNAT -m set --match-set {} src -j ACCEPT\n",
                format_args!("-p {}", proto(r.service.proto)),
                host(r.to.ip()),
                proto(r.service.proto),
                r.to.port(),
                r.set()
            ));
        }
        if !saved.filter_fwd.jump {
            b.push_str(&format!("-I FORWARD 1 -j {fwd}\n"));
        }
    }
    b.push_str("COMMIT\n");

    if wants_mangle(plan) {
        b.push_str(&format!(
            "*mangle\n:{chain} - [0:0]\n-A {chain} -m conntrack ! --ctstate NEW -j RETURN\n\
             -A {chain} -m addrtype ! --dst-type LOCAL -j RETURN\n"
        ));
        for p in &never_gate {
            b.push_str(&format!("-A {chain} -s {p} -j RETURN\n"));
        }
        for s in &plan.protected {
            b.push_str(&format!("-A {chain} {} {ungranted} -j DROP\n", service_match(s)));
        }
        if !saved.mangle.jump {
            b.push_str(&format!("-I PREROUTING 1 -j {chain}\n"));
        }
        b.push_str("COMMIT\n");
    } else if saved.mangle.chain {
        b.push_str(&remove("mangle", "PREROUTING", chain, &saved.mangle));
    }

    if !routes.is_empty() {
        b.push_str(&format!("*nat\n:{chain} - [0:0]\n"));
        for r in &routes {
            b.push_str(&format!(
                "-A {chain} {} -m set --match-set {} src -j DNAT --to-destination {}\n",
                service_match(&r.service),
                r.set(),
                to_dest(&r.to)
            ));
        }
        if !saved.nat.jump {
            b.push_str(&format!("-I PREROUTING 1 -j {chain}\n"));
        }
        b.push_str("COMMIT\n");
    } else if saved.nat.chain {
        b.push_str(&remove("nat", "PREROUTING", chain, &saved.nat));
    }
    b
}

fn remove(table: &str, hook: &str, chain: &str, t: &SavedChain) -> String {
    let mut b = format!("*{table}\n");
    if t.jump {
        b.push_str(&format!("-D {hook} -j {chain}\n"));
    }
    if t.chain {
        b.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    b.push_str("COMMIT\n");
    b
}

/// Remove every jump and chain we own (whatever `saved` shows).
pub fn teardown_batch(chain: &str, saved: &Saved) -> String {
    let fwd = fwd_chain(chain);
    let mut b = String::from("*filter\n");
    if saved.filter.jump {
        b.push_str(&format!("-D INPUT -j {chain}\n"));
    }
    if saved.filter_fwd.jump {
        b.push_str(&format!("-D FORWARD -j {fwd}\n"));
    }
    for (present, c) in [(saved.filter.chain, chain.to_string()), (saved.filter_fwd.chain, fwd)] {
        if present {
            b.push_str(&format!("-F {c}\n-X {c}\n"));
        }
    }
    b.push_str("COMMIT\n");
    if saved.mangle.chain || saved.mangle.jump {
        b.push_str(&remove("mangle", "PREROUTING", chain, &saved.mangle));
    }
    if saved.nat.chain || saved.nat.jump {
        b.push_str(&remove("nat", "PREROUTING", chain, &saved.nat));
    }
    b
}

/// One of our chains as `iptables-save` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SavedChain {
    /// The chain exists.
    pub chain: bool,
    /// The hook chain jumps to it.
    pub jump: bool,
}

/// What `iptables-save` says about us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// `filter`: our chain and the jump from `INPUT`.
    pub filter: SavedChain,
    /// `filter`: the NAT forward chain and the jump from `FORWARD`.
    pub filter_fwd: SavedChain,
    /// `mangle`: the forward gate and the jump from `PREROUTING`.
    pub mangle: SavedChain,
    /// `nat`: the DNAT chain and the jump from `PREROUTING`.
    pub nat: SavedChain,
    /// Per-grant rules an older version left in the filter chain.
    pub legacy: Vec<LegacyGrant>,
    /// NAT destinations installed in the nat chain.
    pub routes: Vec<NatRoute>,
}

/// Read the parts of `iptables-save` output that concern chain `chain`. Lines we
/// did not write (or cannot parse) are ignored: they are replaced at the next setup.
pub fn parse_save(text: &str, chain: &str) -> Saved {
    let fwd = fwd_chain(chain);
    let mut s = Saved::default();
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = match t {
                "filter" => "filter",
                "mangle" => "mangle",
                "nat" => "nat",
                _ => "",
            };
            continue;
        }
        let declares = |c: &str| line.strip_prefix(':').and_then(|r| r.split_whitespace().next()) == Some(c);
        let jumps = |hook: &str, c: &str| line == format!("-A {hook} -j {c}");
        match table {
            "filter" => {
                s.filter.chain |= declares(chain);
                s.filter.jump |= jumps("INPUT", chain);
                s.filter_fwd.chain |= declares(&fwd);
                s.filter_fwd.jump |= jumps("FORWARD", &fwd);
                if let Some(g) = line.strip_prefix(&format!("-A {chain} ")).and_then(parse_legacy) {
                    s.legacy.push(g);
                }
            }
            "mangle" => {
                s.mangle.chain |= declares(chain);
                s.mangle.jump |= jumps("PREROUTING", chain);
            }
            "nat" => {
                s.nat.chain |= declares(chain);
                s.nat.jump |= jumps("PREROUTING", chain);
                if let Some(r) = line.strip_prefix(&format!("-A {chain} ")).and_then(parse_route) {
                    s.routes.push(r);
                }
            }
            _ => {}
        }
    }
    s
}

/// The words of a rule spec, and the word after a flag.
struct Words<'a>(Vec<&'a str>);

impl<'a> Words<'a> {
    fn after(&self, flag: &str) -> Option<&'a str> {
        self.0.iter().position(|w| *w == flag).and_then(|i| self.0.get(i + 1)).copied()
    }

    fn service(&self) -> Option<Service> {
        let proto = match self.after("-p")? {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        };
        Some(Service { proto, port: self.after("--dport")?.parse().ok()? })
    }
}

fn parse_route(spec: &str) -> Option<NatRoute> {
    let w = Words(spec.split_whitespace().collect());
    let route = NatRoute { service: w.service()?, to: w.after("--to-destination")?.parse().ok()? };
    (w.after("--match-set")? == route.set()).then_some(route)
}

fn parse_legacy(spec: &str) -> Option<LegacyGrant> {
    let w = Words(spec.split_whitespace().collect());
    let after = |flag: &str| w.after(flag);
    let addr: IpAddr = after("-s")?.split('/').next()?.parse().ok()?;
    let service = w.service()?;
    let expires: u64 = after("--comment")?.trim_matches('"').strip_prefix(COMMENT)?.parse().ok()?;
    Some(LegacyGrant { addr, service, expires })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, forward: bool) -> Plan {
        Plan {
            protected: vec![Service::tcp(22), Service::udp(53)],
            max_grants: 16,
            mode,
            forward,
            ..Plan::default()
        }
    }

    #[test]
    fn gate_batch_is_what_the_module_doc_says() {
        let b = setup_batch(&plan(Mode::Gate, false), false, &[], &Saved::default());
        assert_eq!(
            b,
            "*filter\n:PORTCULLIS - [0:0]\n\
             -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
             -A PORTCULLIS -p tcp -m tcp --dport 22 -m set ! --match-set portcullis4 src,dst -j DROP\n\
             -A PORTCULLIS -p udp -m udp --dport 53 -m set ! --match-set portcullis4 src,dst -j DROP\n\
             -I INPUT 1 -j PORTCULLIS\nCOMMIT\n"
        );
        let present = Saved { filter: SavedChain { chain: true, jump: true }, ..Saved::default() };
        assert!(!setup_batch(&plan(Mode::Gate, false), true, &[], &present).contains("INPUT"));
    }

    #[test]
    fn prefix_grants_add_the_prefix_set_to_every_drop_of_their_family() {
        let p = Plan { prefix_v4: vec![24], ..plan(Mode::Gate, true) };
        let v4 = setup_batch(&p, false, &[], &Saved::default());
        let both =
            "-m set ! --match-set portcullis4 src,dst -m set ! --match-set portcullis4n src,dst -j DROP";
        // filter and mangle, for both services.
        assert_eq!(v4.matches(both).count(), 4, "{v4}");
        let v6 = setup_batch(&p, true, &[], &Saved::default());
        assert!(!v6.contains("portcullis6n"), "no IPv6 prefix lengths: {v6}");
        assert_eq!(v6, setup_batch(&plan(Mode::Gate, true), true, &[], &Saved::default()));
    }

    #[test]
    fn accept_forward_and_nat_batches() {
        let mut p = plan(Mode::Accept, true);
        p.chain = "FWKNOP_INPUT".into();
        p.jump_position = 3;
        let route = NatRoute { service: Service::tcp(2222), to: "10.0.0.3:22".parse().unwrap() };
        let b = setup_batch(&p, false, std::slice::from_ref(&route), &Saved::default());
        for line in [
            "-A FWKNOP_INPUT -p tcp -m tcp --dport 22 -m set --match-set portcullis4 src,dst -j ACCEPT\n",
            "-A FWKNOP_INPUT -p tcp -m tcp --dport 22 -j DROP\n",
            "-I INPUT 3 -j FWKNOP_INPUT\n",
            "*mangle\n:FWKNOP_INPUT - [0:0]\n",
            "-A FWKNOP_INPUT -m addrtype ! --dst-type LOCAL -j RETURN\n",
            "-A FWKNOP_INPUT -p udp -m udp --dport 53 -m set ! --match-set portcullis4 src,dst -j DROP\n",
            "-I PREROUTING 1 -j FWKNOP_INPUT\n",
            "-A FWKNOP_INPUT-FWD -p tcp -d 10.0.0.3/32 -m tcp --dport 22 -m conntrack --ctstate DNAT -m set --match-set pn40a000003t2222-22 src -j ACCEPT\n",
            "-A FWKNOP_INPUT -p tcp -m tcp --dport 2222 -m set --match-set pn40a000003t2222-22 src -j DNAT --to-destination 10.0.0.3:22\n",
        ] {
            assert!(b.contains(line), "missing {line:?} in\n{b}");
        }
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:FWKNOP_INPUT - [0:0]\n-A PREROUTING -j FWKNOP_INPUT\n\
            -A FWKNOP_INPUT -p tcp -m tcp --dport 2222 -m set --match-set pn40a000003t2222-22 src -j DNAT --to-destination 10.0.0.3:22\n";
        assert_eq!(parse_save(saved, "FWKNOP_INPUT").routes, std::slice::from_ref(&route));
        // The IPv6 batch leaves the IPv4 route out.
        assert!(!setup_batch(&p, true, &[route], &Saved::default()).contains("DNAT"));
    }

    #[test]
    fn nat_set_names_fit_the_kernel() {
        let s = nat_set(&Service::udp(65535), &"[2001:db8::ffff:1]:65535".parse().unwrap());
        assert!(s.len() <= super::super::ipset::MAX_NAME, "{s}");
    }

    #[test]
    fn save_output_round_trip_and_teardown() {
        let text = "# Generated by iptables-save v1.8.9 (nf_tables)\n*mangle\n:PREROUTING ACCEPT [0:0]\n\
            :PORTCULLIS - [0:0]\n-A PREROUTING -j PORTCULLIS\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n\
            :PORTCULLIS - [0:0]\n-A INPUT -j PORTCULLIS\n\
            -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
            -A PORTCULLIS -s 192.0.2.2/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires=123 -j RETURN\n\
            -A PORTCULLIS -s 192.0.2.3/32 -p tcp -m tcp --dport 22 -m comment --comment \"someone else\" -j RETURN\n\
            COMMIT\n";
        let s = parse_save(text, "PORTCULLIS");
        assert_eq!(s.filter, SavedChain { chain: true, jump: true });
        assert_eq!(s.mangle, SavedChain { chain: true, jump: true });
        assert_eq!(s.nat, SavedChain::default());
        assert_eq!(
            s.legacy,
            [LegacyGrant { addr: "192.0.2.2".parse().unwrap(), service: Service::tcp(22), expires: 123 }]
        );
        assert_eq!(
            teardown_batch("PORTCULLIS", &s),
            "*filter\n-D INPUT -j PORTCULLIS\n-F PORTCULLIS\n-X PORTCULLIS\nCOMMIT\n\
             *mangle\n-D PREROUTING -j PORTCULLIS\n-F PORTCULLIS\n-X PORTCULLIS\nCOMMIT\n"
        );
        // Forward gating switched off: the mangle chain goes.
        let b = setup_batch(&plan(Mode::Gate, false), false, &[], &s);
        assert!(
            b.contains("*mangle\n-D PREROUTING -j PORTCULLIS\n-F PORTCULLIS\n-X PORTCULLIS\nCOMMIT\n"),
            "{b}"
        );
        assert_eq!(parse_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "PORTCULLIS"), Saved::default());
    }
}
