//! Pure part of the iptables driver: the `iptables-restore` batches we send and the
//! `iptables-save` lines we read back. No I/O, so every rule is unit-tested as text.
//!
//! Layout, per family (`iptables` and `ip6tables`), in table `filter`:
//!
//! ```text
//! -I INPUT 1 -j PORTCULLIS                                  (added once, kept first)
//! -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//! -A PORTCULLIS -s 192.0.2.2/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires=1732212345 -j RETURN
//! -A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP            (one per protected service)
//! ```
//!
//! Like the nftables table, the chain only ever drops: a granted or established packet
//! `RETURN`s to `INPUT`, where the host's own rules still decide. One rule per grant,
//! carrying its expiry as Unix seconds so a restarted daemon can tell expired grants.

use std::net::IpAddr;

use portcullis_proto::{Proto, Service};

/// Our chain in table `filter`, jumped to from `INPUT`.
pub const CHAIN: &str = "PORTCULLIS";
/// Comment prefix that marks a grant rule; the expiry epoch follows.
pub const COMMENT: &str = "portcullis:expires=";

/// A grant rule as found in (or written to) the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantRule {
    /// Source allowed.
    pub addr: IpAddr,
    /// Service reachable.
    pub service: Service,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

fn host(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn proto(p: Proto) -> &'static str {
    p.as_str()
}

/// The rule spec of a grant (after `-A CHAIN` / `-D CHAIN` / `-I CHAIN n`).
pub fn grant_spec(g: &GrantRule) -> String {
    let p = proto(g.service.proto);
    format!(
        "-s {} -p {p} -m {p} --dport {} -m comment --comment {COMMENT}{} -j RETURN",
        host(g.addr),
        g.service.port,
        g.expires
    )
}

fn drop_spec(s: &Service) -> String {
    let p = proto(s.proto);
    format!("-p {p} -m {p} --dport {} -j DROP", s.port)
}

const ESTABLISHED: &str = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN";

/// The batch that (re)builds the chain with `protected` drops and the `keep` grants,
/// and adds the jump from `INPUT` unless `jump_present`. Declaring the chain in
/// `--noflush` mode creates it or flushes it, so the whole chain is replaced in one
/// commit.
pub fn setup_batch(protected: &[Service], keep: &[GrantRule], jump_present: bool) -> String {
    setup_batch_with(protected, &[], keep, jump_present)
}

/// [`setup_batch`] with `never_gate` sources (of this family) returned before any drop.
pub fn setup_batch_with(
    protected: &[Service],
    never_gate: &[crate::firewall::Prefix],
    keep: &[GrantRule],
    jump_present: bool,
) -> String {
    let mut b = format!("*filter\n:{CHAIN} - [0:0]\n-A {CHAIN} {ESTABLISHED}\n");
    for p in never_gate {
        b.push_str(&format!("-A {CHAIN} -s {p} -j RETURN\n"));
    }
    for g in keep {
        b.push_str(&format!("-A {CHAIN} {}\n", grant_spec(g)));
    }
    for s in protected {
        b.push_str(&format!("-A {CHAIN} {}\n", drop_spec(s)));
    }
    if !jump_present {
        b.push_str(&format!("-I INPUT 1 -j {CHAIN}\n"));
    }
    b.push_str("COMMIT\n");
    b
}

/// Add `add` (after the conntrack rule, before the drops) and delete `del`, in one commit.
pub fn update_batch(add: &[GrantRule], del: &[GrantRule]) -> String {
    let mut b = String::from("*filter\n");
    for g in del {
        b.push_str(&format!("-D {CHAIN} {}\n", grant_spec(g)));
    }
    for g in add {
        b.push_str(&format!("-I {CHAIN} 2 {}\n", grant_spec(g)));
    }
    b.push_str("COMMIT\n");
    b
}

/// Remove the jump and the chain.
pub fn teardown_batch(jump_present: bool) -> String {
    let mut b = String::from("*filter\n");
    if jump_present {
        b.push_str(&format!("-D INPUT -j {CHAIN}\n"));
    }
    b.push_str(&format!("-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"));
    b
}

/// What `iptables-save -t filter` says about us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// `-A INPUT -j PORTCULLIS` is present.
    pub jump: bool,
    /// Our chain exists.
    pub chain: bool,
    /// Grant rules in the chain.
    pub grants: Vec<GrantRule>,
}

/// Read the parts of `iptables-save` output that concern us. Lines we did not write
/// (or cannot parse) are ignored: they are replaced at the next setup.
pub fn parse_save(text: &str) -> Saved {
    let mut s = Saved::default();
    for line in text.lines() {
        if line == format!(":{CHAIN} - [0:0]") || line.starts_with(&format!(":{CHAIN} ")) {
            s.chain = true;
        } else if line == format!("-A INPUT -j {CHAIN}") {
            s.jump = true;
        } else if let Some(rest) = line.strip_prefix(&format!("-A {CHAIN} ")) {
            if let Some(g) = parse_grant(rest) {
                s.grants.push(g);
            }
        }
    }
    s
}

fn parse_grant(spec: &str) -> Option<GrantRule> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1)).copied();
    let src = after("-s")?;
    let addr: IpAddr = src.split('/').next()?.parse().ok()?;
    let proto = match after("-p")? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let port: u16 = after("--dport")?.parse().ok()?;
    let comment = after("--comment")?.trim_matches('"');
    let expires: u64 = comment.strip_prefix(COMMENT)?.parse().ok()?;
    if after("-j")? != "RETURN" {
        return None;
    }
    Some(GrantRule { addr, service: Service { proto, port }, expires })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(a: &str, s: Service, e: u64) -> GrantRule {
        GrantRule { addr: a.parse().unwrap(), service: s, expires: e }
    }

    #[test]
    fn batches_are_what_the_module_doc_says() {
        let b = setup_batch(
            &[Service::tcp(22), Service::udp(53)],
            &[g("192.0.2.2", Service::tcp(22), 99)],
            false,
        );
        assert_eq!(
            b,
            "*filter\n:PORTCULLIS - [0:0]\n\
             -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
             -A PORTCULLIS -s 192.0.2.2/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires=99 -j RETURN\n\
             -A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP\n\
             -A PORTCULLIS -p udp -m udp --dport 53 -j DROP\n\
             -I INPUT 1 -j PORTCULLIS\nCOMMIT\n"
        );
        assert!(!setup_batch(&[], &[], true).contains("INPUT"));
        let u =
            update_batch(&[g("2001:db8::2", Service::udp(53), 7)], &[g("2001:db8::2", Service::udp(53), 5)]);
        assert_eq!(
            u,
            "*filter\n\
             -D PORTCULLIS -s 2001:db8::2/128 -p udp -m udp --dport 53 -m comment --comment portcullis:expires=5 -j RETURN\n\
             -I PORTCULLIS 2 -s 2001:db8::2/128 -p udp -m udp --dport 53 -m comment --comment portcullis:expires=7 -j RETURN\n\
             COMMIT\n"
        );
        assert_eq!(
            teardown_batch(true),
            "*filter\n-D INPUT -j PORTCULLIS\n-F PORTCULLIS\n-X PORTCULLIS\nCOMMIT\n"
        );
    }

    #[test]
    fn reads_back_save_output_of_both_variants() {
        let text = "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\n\
            :PORTCULLIS - [0:0]\n-A INPUT -j PORTCULLIS\n\
            -A PORTCULLIS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
            -A PORTCULLIS -s 192.0.2.2/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires=123 -j RETURN\n\
            -A PORTCULLIS -s 2001:db8::2/128 -p udp -m udp --dport 53 -m comment --comment \"portcullis:expires=9\" -j RETURN\n\
            -A PORTCULLIS -s 192.0.2.3/32 -p tcp -m tcp --dport 22 -m comment --comment \"someone else\" -j RETURN\n\
            -A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n";
        let s = parse_save(text);
        assert!(s.jump && s.chain);
        assert_eq!(
            s.grants,
            vec![g("192.0.2.2", Service::tcp(22), 123), g("2001:db8::2", Service::udp(53), 9)]
        );
        assert_eq!(parse_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"), Saved::default());
    }
}
