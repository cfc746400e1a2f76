//! Gate decisions for both formats, with packets built by the proto encoders.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use portcullis_proto::spa::fwknop::{self, Access, EncMode, FwknopKey, HashType, SpaMessage};
use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey};
use portcullis_proto::spa::PacketError;
use portcullis_proto::{Millis, Service};

use super::replay::ReplayCache;
use super::{Denial, RejectClass, RejectReason, SpaGate, Verdict};
use crate::config::spa::{Cidr, FwknopStanza, NativeUser, SpaConfig};

const NOW: u64 = 1_795_288_322;

fn rng() -> impl FnMut(&mut [u8]) {
    seeded(7)
}

/// A deterministic test generator (splitmix64); distinct seeds give unrelated streams.
fn seeded(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed;
    move |b: &mut [u8]| {
        for chunk in b.chunks_mut(8) {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A fresh seed per call, so every sealed packet has its own ephemeral key.
fn next_seed() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(super) fn key() -> FwknopKey {
    FwknopKey::new(b"fwknoptest", EncMode::Cbc, Some((HashType::Sha256, b"hmactest"))).unwrap()
}

fn stanza() -> FwknopStanza {
    stanza_with("laptop", key())
}

/// A fwknop stanza for tcp/22 with default limits: the fixture every SPA test module uses.
pub(super) fn stanza_with(name: &str, key: FwknopKey) -> FwknopStanza {
    FwknopStanza {
        name: name.into(),
        source: Vec::new(),
        key,
        open_ports: vec![Service::tcp(22)],
        restrict_ports: Vec::new(),
        fw_access_timeout: Duration::from_secs(30),
        max_fw_timeout: Duration::from_secs(120),
        require_username: None,
        require_source_address: false,
        expires: None,
        destination: Vec::new(),
        cmd_cycle: None,
        nat: Default::default(),
        fleet: false,
    }
}

struct Fixture {
    gate: SpaGate,
    server: ServerKey,
    alice: UserKey,
}

fn fixture(stanzas: Vec<FwknopStanza>) -> Fixture {
    let mut r = rng();
    let server = ServerKey::generate(&mut r);
    let alice = UserKey::generate(&mut r);
    let mut users = HashMap::new();
    users.insert(
        "alice".to_string(),
        NativeUser {
            key: alice.public(),
            open: vec![Service::tcp(22)],
            max_open_for: Duration::from_secs(60),
            allow_addresses: vec![Cidr::parse("2001:db8:9::/64").unwrap()],
            fleet: false,
        },
    );
    let cfg = SpaConfig { server_key: Some(server.clone()), users, stanzas, ..SpaConfig::default() };
    let gate = SpaGate::new(&cfg, vec![Service::tcp(22), Service::tcp(443)], ReplayCache::in_memory(1000));
    Fixture { gate, server, alice }
}

fn fwknop_packet(allow: Ipv4Addr, access: &[Service], timeout: Option<u32>, ts: u64) -> Vec<u8> {
    let mut r = rng();
    let mut m =
        SpaMessage::new_access("alice", ts, allow, access.iter().map(|&s| Access::from(s)).collect(), &mut r);
    m.client_timeout = timeout;
    fwknop::encode(&m, &key(), &mut r).unwrap().into_bytes()
}

fn src() -> IpAddr {
    "192.0.2.2".parse().unwrap()
}

fn granted(v: &Verdict) -> (IpAddr, Vec<Service>, Duration) {
    match v {
        Verdict::Grant(d) => (d.allow, d.services.clone(), d.duration),
        Verdict::Reject(r) => panic!("rejected: {r}"),
    }
}

fn rejected(v: &Verdict) -> &RejectReason {
    match v {
        Verdict::Reject(r) => r,
        Verdict::Grant(d) => panic!("granted {d:?}"),
    }
}

#[test]
fn fwknop_access_opens_for_the_source_and_refuses_the_replay() {
    let mut f = fixture(vec![stanza()]);
    let p = fwknop_packet(Ipv4Addr::UNSPECIFIED, &[Service::tcp(22)], None, NOW);
    let v = f.gate.handle(src(), &p, NOW, Millis(0));
    assert_eq!(granted(&v), (src(), vec![Service::tcp(22)], Duration::from_secs(30)));
    assert_eq!(*rejected(&f.gate.handle(src(), &p, NOW + 1, Millis(1))), RejectReason::Replayed);
    // Re-encrypting the same request (what a key holder could do) is still a replay.
    let mut r = rng();
    let mut m = SpaMessage::new_access(
        "alice",
        NOW,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::tcp(22))],
        &mut r,
    );
    m.rand = fwknop::decode(&p, &key()).unwrap().rand;
    let again = fwknop::encode(&m, &key(), &mut seeded(99)).unwrap();
    assert_ne!(again.as_bytes(), &p[..]);
    assert_eq!(*rejected(&f.gate.handle(src(), again.as_bytes(), NOW, Millis(2))), RejectReason::Replayed);
}

#[test]
fn fwknop_allow_ip_and_client_timeout_are_honoured_and_capped() {
    let mut f = fixture(vec![stanza()]);
    let p = fwknop_packet(Ipv4Addr::new(203, 0, 113, 9), &[Service::tcp(22)], Some(9999), NOW);
    let (allow, _, d) = granted(&f.gate.handle(src(), &p, NOW, Millis(0)));
    assert_eq!(allow, "203.0.113.9".parse::<IpAddr>().unwrap());
    assert_eq!(d, Duration::from_secs(120), "capped by MAX_FW_TIMEOUT");
}

#[test]
fn fwknop_policy_refusals() {
    let mut f = fixture(vec![stanza()]);
    let p = fwknop_packet(Ipv4Addr::UNSPECIFIED, &[Service::tcp(443)], None, NOW);
    assert!(matches!(
        rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Denied { denial: Denial::Service(_), .. }
    ));
    let p = fwknop_packet(Ipv4Addr::UNSPECIFIED, &[Service::tcp(22)], None, NOW - 500);
    assert!(matches!(rejected(&f.gate.handle(src(), &p, NOW, Millis(0))), RejectReason::Stale { .. }));

    let mut st = stanza();
    st.require_source_address = true;
    st.require_username = Some("bob".into());
    let mut f = fixture(vec![st]);
    let p = fwknop_packet(Ipv4Addr::UNSPECIFIED, &[Service::tcp(22)], None, NOW);
    assert!(matches!(
        rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Denied { denial: Denial::Username, .. }
    ));

    let mut st = stanza();
    st.source = vec![Cidr::parse("198.51.100.0/24").unwrap()];
    let mut f = fixture(vec![st]);
    let p = fwknop_packet(Ipv4Addr::UNSPECIFIED, &[Service::tcp(22)], None, NOW);
    assert_eq!(
        *rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Packet(PacketError::BadMac),
        "no stanza for this source"
    );
}

#[test]
fn fwknop_command_and_nat_messages_are_refused() {
    let mut f = fixture(vec![stanza()]);
    let mut r = rng();
    let m = SpaMessage::new_command("alice", NOW, Ipv4Addr::new(192, 0, 2, 2), "touch /tmp/pwned", &mut r);
    let p = fwknop::encode(&m, &key(), &mut r).unwrap();
    assert!(matches!(
        rejected(&f.gate.handle(src(), p.as_bytes(), NOW, Millis(0))),
        RejectReason::Denied { denial: Denial::Command, .. }
    ));
    let mut m = SpaMessage::new_access(
        "alice",
        NOW,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::tcp(22))],
        &mut r,
    );
    m.msg_type = fwknop::MsgType::NatAccess;
    m.nat_access = Some(("192.0.2.50".into(), 22));
    let p = fwknop::encode(&m, &key(), &mut r).unwrap();
    assert!(matches!(
        rejected(&f.gate.handle(src(), p.as_bytes(), NOW, Millis(1))),
        RejectReason::Denied { denial: Denial::Nat, .. }
    ));
}

#[test]
fn fwknop_wrong_key_and_junk_are_refused() {
    let mut f = fixture(vec![stanza()]);
    let mut r = rng();
    let m = SpaMessage::new_access(
        "alice",
        NOW,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::tcp(22))],
        &mut r,
    );
    let other = FwknopKey::new(b"otherkey", EncMode::Cbc, Some((HashType::Sha256, b"otherhmac"))).unwrap();
    let p = fwknop::encode(&m, &other, &mut r).unwrap();
    assert_eq!(
        *rejected(&f.gate.handle(src(), p.as_bytes(), NOW, Millis(0))),
        RejectReason::Packet(PacketError::BadMac)
    );
    let short = f.gate.handle(src(), &[b'A'; 10], NOW, Millis(0));
    assert_eq!(*rejected(&short), RejectReason::Packet(PacketError::BadLength));
    let junk = f.gate.handle(src(), &[0xff; 300], NOW, Millis(0));
    assert_eq!(*rejected(&junk), RejectReason::Packet(PacketError::BadCharset));
}

fn native_packet(
    f: &Fixture,
    user: &UserKey,
    name: &str,
    allow: AllowAddr,
    svc: &[Service],
    secs: u32,
) -> Vec<u8> {
    let mut r = seeded(next_seed());
    let req = Request::new(name, NOW, allow, svc.iter().copied(), secs, &mut r).unwrap();
    native::seal(&req, f.server.public(), user, &mut r).unwrap()
}

#[test]
fn native_request_opens_and_cannot_be_replayed() {
    let mut f = fixture(Vec::new());
    let alice = f.alice.clone();
    let allow: IpAddr = "2001:db8:9::7".parse().unwrap();
    let IpAddr::V6(v6) = allow else { unreachable!() };
    let p = native_packet(&f, &alice, "alice", AllowAddr::V6(v6), &[Service::tcp(22)], 600);
    let (a, s, d) = granted(&f.gate.handle(src(), &p, NOW, Millis(0)));
    assert_eq!((a, s, d), (allow, vec![Service::tcp(22)], Duration::from_secs(60)), "capped by max_open_for");
    // The same packet again: its ephemeral key gives it away before any crypto.
    assert_eq!(*rejected(&f.gate.handle(src(), &p, NOW, Millis(1))), RejectReason::EphemeralSeen);
}

#[test]
fn native_refuses_wrong_user_key_unknown_user_and_forbidden_services() {
    let mut f = fixture(Vec::new());
    let mallory = UserKey::generate(&mut seeded(200));
    let p = native_packet(&f, &mallory, "alice", AllowAddr::Source, &[Service::tcp(22)], 30);
    assert_eq!(
        *rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Packet(PacketError::BadSignature)
    );
    let p = native_packet(&f, &mallory, "mallory", AllowAddr::Source, &[Service::tcp(22)], 30);
    assert_eq!(
        *rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Packet(PacketError::UnknownUser)
    );
    let alice = f.alice.clone();
    let p = native_packet(&f, &alice, "alice", AllowAddr::Source, &[Service::tcp(443)], 30);
    assert!(matches!(
        rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Denied { denial: Denial::Service(_), .. }
    ));
    // Sealed for another server.
    let other = ServerKey::generate(&mut |b: &mut [u8]| b.fill(3));
    let req = Request::new("alice", NOW, AllowAddr::Source, [Service::tcp(22)], 30, &mut rng()).unwrap();
    let p = native::seal(&req, other.public(), &alice, &mut rng()).unwrap();
    assert_eq!(
        *rejected(&f.gate.handle(src(), &p, NOW, Millis(0))),
        RejectReason::Packet(PacketError::WrongServer)
    );
}

/// Forged packets with fresh ephemeral keys, as someone holding the server public key
/// could send: they pass the server tag, so only the budget bounds their cost.
#[test]
fn native_crypto_budget_bounds_work_per_second() {
    let mut f = fixture(Vec::new());
    let alice = f.alice.clone();
    let forged = || {
        let mut p = native_packet(&f, &alice, "alice", AllowAddr::Source, &[Service::tcp(22)], 30);
        let last = p.len() - 1;
        p[last] ^= 1; // passes the cheap checks, fails the AEAD
        p
    };
    let packets: Vec<Vec<u8>> = (0..600).map(|_| forged()).collect();
    let budget = |exhausted| RejectReason::CryptoBudget { format: super::Format::Native, exhausted };
    let mut spent = 0;
    for p in &packets[..100] {
        if *rejected(&f.gate.handle(src(), p, NOW, Millis(0))) != budget(super::budget::Exhausted::Prefix) {
            spent += 1;
        }
    }
    assert_eq!(spent, 20, "one prefix: its burst, then its budget");
    // From many prefixes, the global ceiling holds.
    let mut spent = 0;
    for (i, p) in packets[100..].iter().enumerate() {
        let from = IpAddr::from([10, (i / 256) as u8, (i % 256) as u8, 1]);
        if *rejected(&f.gate.handle(from, p, NOW, Millis(0))) != budget(super::budget::Exhausted::Global) {
            spent += 1;
        }
    }
    let reserve = super::budget::NATIVE.reserve.burst;
    assert_eq!(
        spent,
        super::budget::NATIVE.global.burst - 20 + reserve,
        "global burst shared by every prefix, plus the reserve for new ones"
    );
}

#[test]
fn copied_native_header_cannot_drain_the_budget() {
    let mut f = fixture(Vec::new());
    let alice = f.alice.clone();
    let genuine = native_packet(&f, &alice, "alice", AllowAddr::Source, &[Service::tcp(22)], 30);
    // An on-path attacker copies the header of one genuine packet and floods forged bodies.
    let mut forged = genuine.clone();
    let mut reasons = Vec::new();
    for i in 0..5000u32 {
        forged[native::HEADER_LEN..native::HEADER_LEN + 4].copy_from_slice(&i.to_be_bytes());
        reasons.push(rejected(&f.gate.handle(src(), &forged, NOW, Millis(0))).clone());
    }
    assert!(reasons[1..].iter().all(|r| *r == RejectReason::EphemeralSeen), "{:?}", &reasons[..3]);
    // A genuine packet (fresh ephemeral key) still gets through at once, and the
    // genuine packet itself, replayed, is refused before any crypto.
    let fresh = native_packet(&f, &alice, "alice", AllowAddr::Source, &[Service::tcp(22)], 31);
    granted(&f.gate.handle(src(), &fresh, NOW, Millis(0)));
    assert_eq!(*rejected(&f.gate.handle(src(), &genuine, NOW, Millis(0))), RejectReason::EphemeralSeen);
}

fn class_of(v: &Verdict) -> RejectClass {
    rejected(v).class()
}

fn fwknop_from(user: &str, access: &[Service], ts: u64, seed: u64) -> Vec<u8> {
    let mut r = seeded(seed);
    let m = SpaMessage::new_access(
        user,
        ts,
        Ipv4Addr::UNSPECIFIED,
        access.iter().map(|&s| Access::from(s)).collect(),
        &mut r,
    );
    fwknop::encode(&m, &key(), &mut r).unwrap().into_bytes()
}

#[test]
fn every_rejection_class_is_reached() {
    let mut f = fixture(vec![stanza()]);
    // auth: another stanza's keys.
    let other = FwknopKey::new(b"otherkey", EncMode::Cbc, Some((HashType::Sha256, b"otherhmac"))).unwrap();
    let m = SpaMessage::new_access(
        "alice",
        NOW,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::tcp(22))],
        &mut rng(),
    );
    let p = fwknop::encode(&m, &other, &mut rng()).unwrap();
    assert_eq!(class_of(&f.gate.handle(src(), p.as_bytes(), NOW, Millis(0))), RejectClass::Auth);
    // replay: the same request twice.
    let p = fwknop_from("alice", &[Service::tcp(22)], NOW, 1);
    granted(&f.gate.handle(src(), &p, NOW, Millis(0)));
    assert_eq!(class_of(&f.gate.handle(src(), &p, NOW, Millis(0))), RejectClass::Replay);
    // window: authentic but old.
    let p = fwknop_from("alice", &[Service::tcp(22)], NOW - 121, 2);
    assert_eq!(class_of(&f.gate.handle(src(), &p, NOW, Millis(0))), RejectClass::Window);
    // policy: authentic and fresh, but a service the stanza does not open.
    let p = fwknop_from("alice", &[Service::tcp(443)], NOW, 3);
    assert_eq!(class_of(&f.gate.handle(src(), &p, NOW, Millis(0))), RejectClass::Policy);
    // malformed: junk.
    assert_eq!(class_of(&f.gate.handle(src(), &[b'A'; 10], NOW, Millis(0))), RejectClass::Malformed);
    // other: only an internal error lands there.
    assert_eq!(RejectReason::Packet(PacketError::Internal("test")).class(), RejectClass::Other);
}

#[test]
fn overload_is_its_own_class() {
    let mut f = fixture(vec![stanza()]);
    f.gate.replay = ReplayCache::in_memory(1);
    granted(&f.gate.handle(src(), &fwknop_from("alice", &[Service::tcp(22)], NOW, 4), NOW, Millis(0)));
    let full = f.gate.handle(src(), &fwknop_from("alice", &[Service::tcp(22)], NOW, 5), NOW, Millis(0));
    assert_eq!(*rejected(&full), RejectReason::ReplayCacheFull);
    assert_eq!(class_of(&full), RejectClass::Overload);
    let budget = RejectReason::CryptoBudget {
        format: super::Format::Fwknop,
        exhausted: super::budget::Exhausted::Prefix,
    };
    assert_eq!(budget.class(), RejectClass::Overload);
}

/// Both texts contain "nat" (of "native"); substring matching counted them as NAT
/// policy refusals. Neither is a policy decision: the server cannot read the packet.
#[test]
fn packets_in_a_format_not_configured_are_malformed_not_policy() {
    let mut f = fixture(Vec::new());
    let v = f.gate.handle(src(), &fwknop_from("alice", &[Service::tcp(22)], NOW, 6), NOW, Millis(0));
    assert_eq!(*rejected(&v), RejectReason::NotNative);
    assert_eq!(class_of(&v), RejectClass::Malformed);

    let alice = f.alice.clone();
    let p = native_packet(&f, &alice, "alice", AllowAddr::Source, &[Service::tcp(22)], 30);
    f.gate.server_key = None;
    let v = f.gate.handle(src(), &p, NOW, Millis(0));
    assert_eq!(*rejected(&v), RejectReason::NativeNotConfigured);
    assert_eq!(class_of(&v), RejectClass::Malformed);
}

/// The user name is the sender's choice and appears in the log text; it must not
/// move a rejection to another class.
#[test]
fn sender_chosen_user_name_does_not_steer_the_class() {
    let mut st = stanza();
    st.require_username = Some("alice".into());
    let mut f = fixture(vec![st]);
    for (i, user) in
        ["alice", "nat", "replayed", "hmac", "NAT-replay-HMAC-window-key"].into_iter().enumerate()
    {
        let seed = 100 + 10 * i as u64;
        let stale =
            f.gate.handle(src(), &fwknop_from(user, &[Service::tcp(22)], NOW - 500, seed), NOW, Millis(0));
        assert!(rejected(&stale).to_string().contains(user), "the log names the user");
        assert_eq!(class_of(&stale), RejectClass::Window, "user {user:?}");
        let p = fwknop_from(user, &[Service::tcp(443)], NOW, seed + 1);
        assert_eq!(class_of(&f.gate.handle(src(), &p, NOW, Millis(0))), RejectClass::Policy, "user {user:?}");
    }
    let p = fwknop_from("hmac-replay", &[Service::tcp(22)], NOW, 200);
    let v = f.gate.handle(src(), &p, NOW, Millis(0));
    assert!(matches!(rejected(&v), RejectReason::Denied { denial: Denial::Username, .. }));
    assert_eq!(class_of(&v), RejectClass::Policy);
}

#[test]
fn class_labels_are_distinct_and_indexes_match_all() {
    for (i, c) in RejectClass::ALL.into_iter().enumerate() {
        assert_eq!(c.index(), i);
        assert_eq!(RejectClass::ALL.iter().filter(|d| d.label() == c.label()).count(), 1);
    }
}
