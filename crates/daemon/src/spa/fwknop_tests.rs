//! The fwknopd drop-in parts of the gate: DESTINATION, NAT requests, aging switched
//! off, imported fwknopd digests, fwknopd's log lines, double delivery.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use portcullis_proto::spa::fwknop::{self, Access, EncMode, FwknopKey, HashType, MsgType, SpaMessage};
use portcullis_proto::{Millis, Service};

use super::digest_import::wire_key;
use super::replay::ReplayCache;
use super::tests::{key, stanza_with};
use super::{Denial, RejectReason, SpaGate, Verdict};
use crate::config::spa::{Cidr, CmdCycle, FwknopStanza, SpaConfig};

const NOW: u64 = 1_795_288_322;

fn rng() -> impl FnMut(&mut [u8]) {
    let mut x = 99u8;
    move |b: &mut [u8]| {
        for v in b.iter_mut() {
            x = x.wrapping_mul(31).wrapping_add(7);
            *v = x;
        }
    }
}

fn stanza() -> FwknopStanza {
    stanza_with("access.conf:1", key())
}

fn gate(stanzas: Vec<FwknopStanza>, tweak: impl FnOnce(&mut SpaConfig)) -> SpaGate {
    let mut cfg = config(stanzas);
    tweak(&mut cfg);
    SpaGate::new(&cfg, vec![Service::tcp(22)], ReplayCache::in_memory(1000))
}

fn config(stanzas: Vec<FwknopStanza>) -> SpaConfig {
    SpaConfig { stanzas, ..SpaConfig::default() }
}

fn packet(ts: u64, nat: Option<(&str, u16)>, seed: u8) -> Vec<u8> {
    let mut r = rng();
    let mut skip = [0u8; 1];
    for _ in 0..seed {
        r(&mut skip);
    }
    let mut m = SpaMessage::new_access(
        "alice",
        ts,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::tcp(22))],
        &mut r,
    );
    if let Some((h, p)) = nat {
        m.msg_type = MsgType::NatAccess;
        m.nat_access = Some((h.to_string(), p));
    }
    fwknop::encode(&m, &key(), &mut r).unwrap().into_bytes()
}

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn reason(v: Verdict) -> RejectReason {
    match v {
        Verdict::Reject(r) => r,
        Verdict::Grant(d) => panic!("granted: {d:?}"),
    }
}

#[test]
fn destination_restricts_which_packets_a_stanza_answers() {
    let mut st = stanza();
    st.destination = vec![Cidr::parse("192.0.2.1").unwrap()];
    let mut g = gate(vec![st], |_| {});
    let p = packet(NOW, None, 1);
    assert!(matches!(
        g.handle_to(SRC, Some("198.51.100.1".parse().unwrap()), &p, NOW, Millis(0)),
        Verdict::Reject(_)
    ));
    assert!(
        matches!(g.handle_to(SRC, None, &p, NOW, Millis(0)), Verdict::Reject(_)),
        "unknown destination: fail closed"
    );
    assert!(matches!(g.handle_to(SRC, Some(DST), &p, NOW, Millis(0)), Verdict::Grant(_)));
}

#[test]
fn nat_requests_need_forwarding_and_stay_inside_the_stanza() {
    let p = packet(NOW, Some(("198.51.100.2", 8022)), 2);
    let mut g = gate(vec![stanza()], |_| {});
    let r = reason(g.handle_to(SRC, Some(DST), &p, NOW, Millis(0)));
    assert!(matches!(r, RejectReason::Denied { denial: Denial::Nat, .. }), "{r}");
    assert!(g
        .fwknopd_line(SRC, 62201, &r)
        .unwrap()
        .contains("requested NAT access, but is not enabled/supported"));

    let mut g = gate(vec![stanza()], |c| c.forwarding = true);
    match g.handle_to(SRC, Some(DST), &p, NOW, Millis(0)) {
        Verdict::Grant(d) => {
            let nat = d.fwknop.unwrap().nat.unwrap();
            assert_eq!((nat.to, nat.port, nat.dnat), (Ipv4Addr::new(198, 51, 100, 2), 8022, true));
        }
        Verdict::Reject(r) => panic!("{r}"),
    }
    // FORCE_NAT: a request for another inside host is refused with the reason.
    let mut st = stanza();
    st.nat.force_nat = Some((Ipv4Addr::new(10, 0, 0, 5), 22));
    let mut g = gate(vec![st], |c| c.forwarding = true);
    let r =
        reason(g.handle_to(SRC, Some(DST), &packet(NOW, Some(("198.51.100.2", 8022)), 3), NOW, Millis(0)));
    assert!(
        r.to_string().contains(
            "198.51.100.2:8022 is outside this stanza: it forwards only to 10.0.0.5:22 (FORCE_NAT)"
        ),
        "{r}"
    );
    // ... and a plain access request is forwarded there.
    match g.handle_to(SRC, Some(DST), &packet(NOW, None, 4), NOW, Millis(0)) {
        Verdict::Grant(d) => assert_eq!(d.fwknop.unwrap().nat.unwrap().to, Ipv4Addr::new(10, 0, 0, 5)),
        Verdict::Reject(r) => panic!("{r}"),
    }
    // Names are never resolved; loopback is no NAT destination.
    let mut g = gate(vec![stanza()], |c| c.forwarding = true);
    for (host, want) in [("inside.example", "no DNS"), ("127.0.0.1", "cannot be forwarded")] {
        let r = reason(g.handle_to(SRC, Some(DST), &packet(NOW, Some((host, 22)), 5), NOW, Millis(0)));
        assert!(r.to_string().contains(want), "{host}: {r}");
    }
}

#[test]
fn without_aging_old_packets_pass_but_never_twice() {
    let p = packet(NOW - 100_000, None, 6);
    let mut g = gate(vec![stanza()], |_| {});
    let r = reason(g.handle_to(SRC, Some(DST), &p, NOW, Millis(0)));
    assert!(matches!(r, RejectReason::Stale { .. }));
    assert!(g
        .fwknopd_line(SRC, 62201, &r)
        .unwrap()
        .contains("(stanza #1) SPA data time difference is too great (-100000 seconds)"));
    let mut g = gate(vec![stanza()], |c| c.aging = false);
    assert!(matches!(g.handle_to(SRC, Some(DST), &p, NOW, Millis(0)), Verdict::Grant(_)));
    // Years later, still a replay: the entry never expires without aging.
    let r = reason(g.handle_to(SRC, Some(DST), &p, NOW + 10_000_000, Millis(1)));
    assert_eq!(r, RejectReason::Replayed);
    let line = g.fwknopd_line(SRC, 62201, &r).unwrap();
    assert!(line.starts_with("Replay detected from source IP: 192.0.2.2, Destination proto/port: 17/62201, Original source IP: 192.0.2.2"), "{line}");
}

#[test]
fn packets_fwknopd_accepted_before_the_switch_are_replays() {
    let p = packet(NOW, None, 7);
    let mut cache = ReplayCache::in_memory(10);
    cache.admit(wire_key(&p), NOW + 500, NOW).unwrap();
    let cfg_gate = |cache| {
        let mut g = gate(vec![stanza()], |_| {});
        g.replay = cache;
        g
    };
    let mut g = cfg_gate(cache);
    assert_eq!(reason(g.handle_to(SRC, Some(DST), &p, NOW, Millis(0))), RejectReason::Replayed);
}

#[test]
fn bad_hmac_has_the_fwknopd_line_with_stanza_and_source() {
    let mut g = gate(vec![stanza()], |_| {});
    let mut p = packet(NOW, None, 8);
    p[30] = if p[30] == b'A' { b'B' } else { b'A' };
    let r = reason(g.handle_to(SRC, Some(DST), &p, NOW, Millis(0)));
    assert_eq!(
        g.fwknopd_line(SRC, 62201, &r).unwrap(),
        "[192.0.2.2] (stanza #1) Error creating fko context: Args contain invalid data: FKO_ERROR_INVALID_DATA_HMAC_COMPAREFAIL"
    );
}

#[test]
fn a_datagram_seen_by_capture_and_the_udp_socket_counts_once() {
    let p = packet(NOW, None, 9);
    let mut g = gate(vec![stanza()], |c| c.udp_server = Some(62201));
    assert!(g.first_delivery(SRC, &p, Millis(0)));
    assert!(!g.first_delivery(SRC, &p, Millis(500)), "second copy dropped quietly");
    assert!(g.first_delivery(SRC, &p, Millis(5000)), "a later resend is judged (as a replay)");
    let mut g = gate(vec![stanza()], |_| {});
    assert!(
        g.first_delivery(SRC, &p, Millis(0)) && g.first_delivery(SRC, &p, Millis(1)),
        "capture only: no dedup"
    );
}

#[test]
fn a_command_cycle_stanza_without_open_ports_lets_its_commands_decide() {
    let mut st = stanza();
    st.open_ports = Vec::new();
    st.cmd_cycle =
        Some(CmdCycle { open: vec!["/bin/true".into()], close: None, timer: Duration::from_secs(5) });
    let mut g = gate(vec![st], |_| {});
    let mut r = rng();
    let m = SpaMessage::new_access(
        "alice",
        NOW,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::udp(5353))],
        &mut r,
    );
    let p = fwknop::encode(&m, &key(), &mut r).unwrap();
    match g.handle_to(SRC, Some(DST), p.as_bytes(), NOW, Millis(0)) {
        Verdict::Grant(d) => assert!(d.fwknop.unwrap().cycle.is_some()),
        Verdict::Reject(r) => panic!("{r}"),
    }
}

#[test]
fn a_packet_screened_before_a_reload_is_tried_against_the_new_stanzas() {
    let mut cfg_stanzas = vec![stanza()];
    let mut g = gate(cfg_stanzas.clone(), |_| {});
    let p = packet(NOW, None, 7);
    let screened = g.screen(SRC, Some(DST), &p, NOW, Millis(0)).unwrap();
    // The reload puts another stanza first: the screened index 0 now names the decoy.
    let other = FwknopKey::new(b"otherkey", EncMode::Cbc, Some((HashType::Sha256, b"otherhmac"))).unwrap();
    cfg_stanzas.insert(0, stanza_with("decoy", other));
    g.reconfigure(&config(cfg_stanzas));
    match g.decide(&screened, NOW) {
        Verdict::Grant(d) => assert!(d.who.contains("access.conf:1"), "{}", d.who),
        Verdict::Reject(r) => panic!("refused: {r}"),
    }
}
