//! Unit tests of the pure nftables ruleset half.

use super::*;
use crate::firewall::nft::render;

fn plan() -> Plan {
    Plan { protected: vec![Service::tcp(22), Service::udp(53)], max_grants: 1024, ..Plan::default() }
}

#[test]
fn render_matches_nft_list_layout() {
    let want = "\
table inet portcullis {
\tset protected {
\t\ttype inet_proto . inet_service
\t\telements = { tcp . 22, udp . 53 }
\t}

\tset allow4 {
\t\ttype ipv4_addr . inet_proto . inet_service
\t\tsize 1024
\t\tflags timeout
\t}

\tset allow6 {
\t\ttype ipv6_addr . inet_proto . inet_service
\t\tsize 1024
\t\tflags timeout
\t}

\tchain input {
\t\ttype filter hook input priority filter - 5; policy accept;
\t\tct state established,related accept
\t\tip saddr . meta l4proto . th dport @allow4 accept
\t\tip6 saddr . meta l4proto . th dport @allow6 accept
\t\tmeta l4proto . th dport @protected drop
\t}
}
";
    assert_eq!(render(&plan()), want);
}

#[test]
fn render_puts_never_gate_right_after_established() {
    let p = Plan {
        never_gate: vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/48".parse().unwrap()],
        ..plan()
    };
    let text = render(&p);
    assert!(
        text.contains(
            "\t\tct state established,related accept\n\t\tip saddr 192.0.2.0/24 accept\n\
             \t\tip6 saddr 2001:db8::/48 accept\n\t\tip saddr . meta l4proto"
        ),
        "{text}"
    );
}

#[test]
fn render_empty_plan_has_no_elements_or_size() {
    let text = render(&Plan::default());
    assert!(!text.contains("elements"), "{text}");
    assert!(!text.contains("size"), "{text}");
}

#[test]
fn type_ids_match_nft() {
    // Seen in `nft --debug=mnl`: protected has key type 0x30d.
    assert_eq!(concat_type(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 0x30d);
    assert_eq!(concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), (0x1cc << 6) | 13);
}

#[test]
fn keys_are_register_padded_and_round_trip() {
    // `nft --debug=netlink`: element 00000006 00001600 for tcp . 22
    assert_eq!(protected_key(&Service::tcp(22)), [6, 0, 0, 0, 0, 22, 0, 0]);
    let a: IpAddr = "192.0.2.7".parse().unwrap();
    let k = allow_key(&a, &Service::udp(0x1234));
    assert_eq!(k, [192, 0, 2, 7, 17, 0, 0, 0, 0x12, 0x34, 0, 0]);
    assert_eq!(decode_allow_key(&k), Some((a, Service::udp(0x1234))));
    let a6: IpAddr = "2001:db8::7".parse().unwrap();
    let k6 = allow_key(&a6, &Service::tcp(443));
    assert_eq!(k6.len(), KEY_LEN_ALLOW6);
    assert_eq!(decode_allow_key(&k6), Some((a6, Service::tcp(443))));
    // Wrong length, unknown protocol, port 0: not ours.
    assert_eq!(decode_allow_key(&k6[..20]), None);
    assert_eq!(decode_allow_key(&[192, 0, 2, 7, 1, 0, 0, 0, 0, 22, 0, 0]), None);
    assert_eq!(decode_allow_key(&[192, 0, 2, 7, 6, 0, 0, 0, 0, 0, 0, 0]), None);
}

#[test]
fn timeouts_never_become_zero() {
    assert_eq!(timeout_ms(Duration::ZERO), 1);
    assert_eq!(timeout_ms(Duration::from_micros(300)), 1);
    assert_eq!(timeout_ms(Duration::from_secs(30)), 30_000);
    assert_eq!(timeout_ms(Duration::MAX), u64::MAX);
}

#[test]
fn setup_batch_shape() {
    let reqs = setup_requests(&plan(), &[]);
    let whats: Vec<&str> = reqs.iter().map(|r| r.what).collect();
    assert_eq!(
        whats,
        [
            "nft setup: add table",
            "nft setup: delete old table",
            "nft setup: add table",
            "nft setup: add set protected",
            "nft setup: add set allow4",
            "nft setup: add set allow6",
            "nft setup: add protected services",
            "nft setup: add chain input",
            "nft setup: add rule ct state",
            "nft setup: add rule allow4",
            "nft setup: add rule allow6",
            "nft setup: add rule protected",
        ]
    );
    // No protected services: no element message (an empty list would be refused).
    let empty = setup_requests(&Plan::default(), &[]);
    assert_eq!(empty.len(), reqs.len() - 1);
}

#[test]
fn restore_keeps_only_protected_with_time_left_and_fits_the_set() {
    let a = |i: u8| IpAddr::from([10, 0, 0, i]);
    let e = |i: u8, svc, left| Elem {
        addr: a(i),
        len: 32,
        service: svc,
        timeout_ms: Some(60_000),
        expires_ms: left,
    };
    let live = [
        e(1, Service::tcp(22), Some(5_000)),
        e(2, Service::tcp(2222), Some(5_000)), // no longer protected
        e(3, Service::udp(53), Some(0)),       // expired
        e(4, Service::udp(53), Some(50_000)),
        e(5, Service::tcp(22), Some(1_000)),
    ];
    let mut p = plan();
    let got = restorable(&p, &live);
    assert_eq!(got, [live[3], live[0], live[4]]);
    p.max_grants = 2;
    let got = restorable(&p, &live);
    assert_eq!(got, [live[3], live[0]], "longest remaining kept when the set shrinks");
}

#[test]
fn big_batches_are_chunked_and_deduplicated() {
    let grants: Vec<Grant> = (0..1000u32)
        .map(|i| {
            Grant::host(
                IpAddr::from(0x0a00_0000u32.wrapping_add(i).to_be_bytes()),
                Service::tcp(22),
                Duration::from_secs(30),
            )
        })
        .collect();
    let reqs = grant_requests(&grants);
    // 1000 elements = 4 messages of <= 256, times add/delete/add.
    assert_eq!(reqs.len(), 12);
    let mut twice = grants[..3].to_vec();
    twice.push(grants[0]);
    let reqs = grant_requests(&twice);
    let NfTablesMessage::NewSetElement(m) = &reqs[0].msg else { panic!("not NEWSETELEM") };
    let n = m
        .attributes
        .iter()
        .find_map(|a| match a {
            SetElementList::Elements(e) => Some(e.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(n, 3);
}
