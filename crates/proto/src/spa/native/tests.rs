//! Tests for the native format. Test vectors are the ones printed in
//! `docs/spa-native.md` §9; `kat_*` regenerate them and compare byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::codec::{encode_fields, parse_fields};
use super::packet::{open_body, seal_body, seal_fields};
use super::*;
use crate::service::Service;
use crate::spa::KeyError;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `[start, start+1, …]` (wrapping), 32 bytes.
fn seq32(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// An "RNG" that hands out these bytes, then panics if asked for more.
fn fixed_rng(bytes: Vec<u8>) -> impl FnMut(&mut [u8]) {
    let mut pos = 0;
    move |buf: &mut [u8]| {
        buf.copy_from_slice(&bytes[pos..pos + buf.len()]);
        pos += buf.len();
    }
}

/// A deterministic non-repeating byte stream (xorshift), for tests that need many draws.
fn test_rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed | 1;
    move |buf: &mut [u8]| {
        for b in buf {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
    }
}

fn server() -> ServerKey {
    ServerKey::from_bytes(seq32(0x10))
}

fn user_key() -> UserKey {
    UserKey::from_bytes(&seq32(0x40))
}

fn users() -> BTreeMap<String, UserPublicKey> {
    ["alice", "bob.ops-2", "carol_x"].into_iter().map(|u| (u.to_owned(), user_key().public())).collect()
}

fn alice_request() -> Request {
    Request {
        user: "alice".into(),
        timestamp: 1_700_000_000,
        nonce: std::array::from_fn(|i| i as u8),
        allow: AllowAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        services: vec![Service::tcp(22)],
        duration_secs: 30,
    }
}

fn sealed_alice() -> Vec<u8> {
    seal(&alice_request(), server().public(), &user_key(), &mut fixed_rng(seq32(0x70).to_vec())).unwrap()
}

/// The canonical fields region of `req`, for tests that then tamper with it.
fn fields_of(req: &Request) -> ([u8; FIELDS_LEN], usize) {
    let mut f = [0u8; FIELDS_LEN];
    let n = encode_fields(req, &mut f).unwrap();
    (f, n)
}

/// Seal a (possibly malformed) fields region with a valid signature and AEAD, and open it.
fn open_fields(fields: &[u8; FIELDS_LEN]) -> Result<Request, PacketError> {
    let pkt = seal_fields(fields, server().public(), &user_key(), seq32(0x70)).unwrap();
    open(&pkt, &server(), &users())
}

// ---------------------------------------------------------------- test vectors

struct Vector {
    req: Request,
    eph: [u8; 32],
    packet: &'static str,
    replay_key: &'static str,
}

fn vectors() -> Vec<Vector> {
    vec![
        Vector { req: alice_request(), eph: seq32(0x70), packet: KAT1_PACKET, replay_key: KAT1_REPLAY },
        Vector {
            req: Request {
                user: "bob.ops-2".into(),
                timestamp: 1_767_225_600,
                nonce: [0xee; 16],
                allow: AllowAddr::V6("2001:db8::42".parse().unwrap()),
                services: vec![Service::tcp(22), Service::tcp(443), Service::udp(51820)],
                duration_secs: 3600,
            },
            eph: seq32(0x90),
            packet: KAT2_PACKET,
            replay_key: KAT2_REPLAY,
        },
        Vector {
            req: Request {
                user: "carol_x".into(),
                timestamp: 1_800_000_000,
                nonce: [0x5a; 16],
                allow: AllowAddr::Source,
                services: vec![Service::udp(53)],
                duration_secs: 1,
            },
            eph: seq32(0xb0),
            packet: KAT3_PACKET,
            replay_key: KAT3_REPLAY,
        },
    ]
}

const KAT_SERVER_SECRET: &str = "pcs1-sec-EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi-TW0YV";
const KAT_SERVER_PUBLIC: &str = "pcs1-pub-2J47rXlDfb7Z-ENBgwT0YP8Fx_6B_kqVd6gEy5Nn_2Z2ZGiR";
const KAT_USER_SECRET: &str = "pcu1-sec-QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8nQRsF";
const KAT_USER_PUBLIC: &str = "pcu1-pub-JUO5L_EJVRFHatyDadtt3JM2ZaEZeN2hQE7hBmypVZ03nsZG";
const KAT1_PACKET: &str = "70636e015514c47f23b7bb8c91ae008711fb12846780bcdf1e065f821bdfec49\
    f57e7c7dcd4c4823fd8772e74859f0765eeca6a5f305f7246907c131c3ff0a97\
    834dea4bf96f827cd2cc969ec158822abb2426e71823a33d632c829b015f2725\
    46162f2d86db545c295b581ac98fb5769dd2faddb59e6205ce4d7e9813f7f13d\
    6fb48b6e4bdccd76ef4fc8a37c9008756843ddb50c021546faa0f1f9c281c80e\
    cd9e5be10ecec3d6d72669562b13a9eae0bac424b9854e250fcbca815d3f34f2\
    aa01e4658e3714ea9bc7ca82c501c56fcbd2db11349125fdddf5305f937123d0\
    c9c5b0869a8142d3a0df6a7439ca440bcdb8884f7c86794a23e06cabd563b4e6";
const KAT1_REPLAY: &str = "f026d21a34cc0095b53d2bba102886653eb528caf6ee5ea186c507fe8a8c66bb";
const KAT2_PACKET: &str = "70636e0152e206a09fd7ad6dcff4298dd3f96d5b1b2af910a0535b1488d7f8fa\
    bb349a982880b615d2ea02c75110b55740d9447f1764290d96236626dd0206d4\
    3da6517b7e8dd96a5c1c780be6de1e8466206b8e834b221a0e6204371e7ae8d0\
    e30c8ec74cd8c3e93b3ff58dc8d8b48ccfac6ffb0ce1973fd191ce4a0048389e\
    5b76ec0b070d704e4c4286b0fbc0ca731a820dd639af5896f391ff36202d2015\
    5e0b3e47f47e60f0cc9761f960a653549a79d8e9c062f53165b1a351a0608af6\
    a44ff8aa4d5dc2fa35d4df23194486e7842589ac8e0967d1f85d6bc4f4fc78af\
    5b2f4ca2bf94d12408cc3561988a134fb9a21a4970e70219191a0a8edf9176f9";
const KAT2_REPLAY: &str = "96b485f2deca6c8948a6519ffb532e96a899963c37ee0aeee859a72f2cc5ce29";
const KAT3_PACKET: &str = "70636e016630544f3f3e5f6d86926c9c128cf84581574f96840d98ee5ab53b1e\
    c3b76e2bb25b945e17e6057e2f9efa8650d3eac0a7a398b40b31ca7b1359685c\
    f4855288a8b7df1056d04e2177d4de2a81560958da1e44bea9e0e2bf1cfd0898\
    256ee59537ece959c65e820fa5ad78fff1386b1877053db77123ec29806390a6\
    a717f1d8d50a18ab5a2eed7ca77d0ecda0c148a62e59e1e2bafda2e2f1dd83d3\
    52432299470a0f8a665ff8f8d2054c704c92f44eee8b0f2582c4a2b60203c7d7\
    5ff9c3f89a0aa43ec4b7426fb3d52656dfd6df4edb11a4d4b8101fb1866dc5a9\
    7039fd57f0a202a2769dfa74fb321e7083430fcd76c1b240d1d57af69e183037";
const KAT3_REPLAY: &str = "678b72643c0ed4a24fa67ef25b55ed9693f2e37f7c9f4a43fc5a2a6f1ff78b16";

#[test]
fn kat_keys_text_forms() {
    let s = server();
    let u = user_key();
    let got =
        [s.to_text().to_string(), s.public().to_string(), u.to_text().to_string(), u.public().to_string()];
    println!("keys: {got:#?}");
    assert_eq!(got, [KAT_SERVER_SECRET, KAT_SERVER_PUBLIC, KAT_USER_SECRET, KAT_USER_PUBLIC]);
    assert_eq!(ServerKey::from_text(KAT_SERVER_SECRET).unwrap().public(), s.public());
    assert_eq!(KAT_SERVER_PUBLIC.parse::<ServerPublicKey>().unwrap(), *s.public());
    assert_eq!(UserKey::from_text(KAT_USER_SECRET).unwrap().public(), u.public());
    assert_eq!(KAT_USER_PUBLIC.parse::<UserPublicKey>().unwrap(), u.public());
}

#[test]
fn kat_packets_regenerate_and_open() {
    let vs = vectors();
    let got: Vec<(String, String)> = vs
        .iter()
        .map(|v| {
            let pkt = seal(&v.req, server().public(), &user_key(), &mut fixed_rng(v.eph.to_vec())).unwrap();
            (hex(&pkt), hex(&canonical_replay_key(&v.req)))
        })
        .collect();
    for (i, (pkt, rk)) in got.iter().enumerate() {
        println!("vector {}:\npacket {pkt}\nreplay {rk}", i + 1);
    }
    for (i, (v, (pkt, rk))) in vs.into_iter().zip(got).enumerate() {
        assert_eq!(pkt, v.packet.split_whitespace().collect::<String>(), "vector {}", i + 1);
        assert_eq!(rk, v.replay_key, "vector {}", i + 1);
        assert_eq!(open(&unhex(v.packet), &server(), &users()), Ok(v.req), "vector {}", i + 1);
    }
}

#[test]
fn kat_vectors_are_the_ones_in_the_spec() {
    let doc = include_str!("../../../../../docs/spa-native.md");
    for text in [KAT_SERVER_SECRET, KAT_SERVER_PUBLIC, KAT_USER_SECRET, KAT_USER_PUBLIC] {
        assert!(doc.contains(text), "{text}");
    }
    for (i, v) in vectors().iter().enumerate() {
        assert!(doc.contains(&format!("{}  {}", i + 1, v.replay_key)), "replay key {}", i + 1);
        let packet: String = v.packet.split_whitespace().collect();
        let block: Vec<String> = packet
            .as_bytes()
            .chunks(64)
            .enumerate()
            .map(|(j, c)| format!("{:04x}  {}", j * 32, std::str::from_utf8(c).unwrap()))
            .collect();
        assert!(doc.contains(&format!("--- vector {}\n{}", i + 1, block.join("\n"))), "packet {}", i + 1);
    }
}

// ---------------------------------------------------------------- round trips

fn arb_allow() -> impl Strategy<Value = AllowAddr> {
    prop_oneof![
        Just(AllowAddr::Source),
        any::<u32>().prop_filter("unspecified", |a| *a != 0).prop_map(|a| AllowAddr::V4(Ipv4Addr::from(a))),
        any::<u128>()
            .prop_map(Ipv6Addr::from)
            .prop_filter("unspecified/mapped", |a| !a.is_unspecified() && a.to_ipv4_mapped().is_none())
            .prop_map(AllowAddr::V6),
    ]
}

fn arb_service() -> impl Strategy<Value = Service> {
    (any::<bool>(), 1u16..).prop_map(|(udp, p)| if udp { Service::udp(p) } else { Service::tcp(p) })
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        "[A-Za-z0-9_.-]{1,32}",
        any::<u64>(),
        any::<[u8; 16]>(),
        arb_allow(),
        prop::collection::vec(arb_service(), 1..=MAX_SERVICES),
        1u32..,
    )
        .prop_map(|(user, timestamp, nonce, allow, services, duration_secs)| {
            let mut r = Request::new(&user, timestamp, allow, services, duration_secs, &mut |_| {}).unwrap();
            r.nonce = nonce;
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn seal_then_open_is_identity(req in arb_request(), eph in any::<[u8; 32]>()) {
        let mut map = HashMap::new();
        map.insert(req.user.clone(), user_key().public());
        let pkt = seal(&req, server().public(), &user_key(), &mut fixed_rng(eph.to_vec())).unwrap();
        prop_assert_eq!(pkt.len(), PACKET_LEN);
        prop_assert_eq!(precheck(&pkt, server().public()), Ok(()));
        prop_assert_eq!(open(&pkt, &server(), &map), Ok(req));
    }

    #[test]
    fn fields_encode_then_parse_is_identity(req in arb_request()) {
        let (f, n) = fields_of(&req);
        prop_assert!(n <= MAX_FIELDS_ENCODED);
        prop_assert_eq!(parse_fields(&f), Ok(req));
    }

    #[test]
    fn fuzz_open_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzz_open(&data);
    }

    #[test]
    fn fuzz_open_never_panics_near_valid(idx in 0..PACKET_LEN, val in any::<u8>(), cut in 0..=PACKET_LEN) {
        let mut pkt = sealed_alice();
        pkt[idx] = val;
        pkt.truncate(cut);
        fuzz_open(&pkt);
    }
}

#[test]
fn round_trips_each_address_kind_and_service_count() {
    let allows = [
        AllowAddr::Source,
        AllowAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        AllowAddr::V6("2001:db8:ffff::1".parse().unwrap()),
    ];
    let mut rng = test_rng(7);
    for allow in allows {
        for n in [1usize, 2, 15, 16] {
            let services =
                (0..n as u16).map(|i| if i % 2 == 0 { Service::tcp(1000 + i) } else { Service::udp(i + 1) });
            let req = Request::new("alice", 1, allow, services, 60, &mut rng).unwrap();
            assert_eq!(req.services.len(), n);
            let pkt = seal(&req, server().public(), &user_key(), &mut rng).unwrap();
            assert_eq!(pkt.len(), PACKET_LEN, "length never depends on the request");
            assert_eq!(open(&pkt, &server(), &users()), Ok(req));
        }
    }
}

#[test]
fn longest_request_fits() {
    let services = (1..=16).map(|p| Service::udp(60000 + p));
    let req = Request::new(
        &"x".repeat(32),
        u64::MAX,
        AllowAddr::V6(Ipv6Addr::LOCALHOST),
        services,
        u32::MAX,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(fields_of(&req).1, MAX_FIELDS_ENCODED);
    let mut map = BTreeMap::new();
    map.insert(req.user.clone(), user_key().public());
    let pkt = seal(&req, server().public(), &user_key(), &mut test_rng(1)).unwrap();
    assert_eq!(open(&pkt, &server(), &map), Ok(req));
}

// ---------------------------------------------------------------- cheap stage

#[test]
fn rejects_truncation_at_every_length() {
    let pkt = sealed_alice();
    for len in 0..PACKET_LEN {
        assert_eq!(open(&pkt[..len], &server(), &users()), Err(PacketError::BadLength), "len {len}");
        assert_eq!(precheck(&pkt[..len], server().public()), Err(PacketError::BadLength), "len {len}");
    }
}

#[test]
fn rejects_oversized() {
    let pkt = sealed_alice();
    for extra in [1usize, 2, 16, MAX_DATAGRAM_LEN - PACKET_LEN, MAX_DATAGRAM_LEN - PACKET_LEN + 1, 1500] {
        let mut long = pkt.clone();
        long.resize(PACKET_LEN + extra, 0);
        assert_eq!(open(&long, &server(), &users()), Err(PacketError::BadLength), "+{extra}");
    }
}

#[test]
fn rejects_bad_magic_and_version() {
    let pkt = sealed_alice();
    for (i, v) in [(0, b'P'), (1, 0), (2, b'x')] {
        let mut p = pkt.clone();
        p[i] = v;
        assert_eq!(open(&p, &server(), &users()), Err(PacketError::BadMagic));
    }
    for v in [0u8, 2, 0x81, 0xff] {
        let mut p = pkt.clone();
        p[3] = v;
        assert_eq!(open(&p, &server(), &users()), Err(PacketError::BadVersion));
    }
    // An unknown version of any length is reported as such, not as a bad length.
    let mut future = pkt[..4].to_vec();
    future[3] = 2;
    future.resize(300, 0);
    assert_eq!(open(&future, &server(), &users()), Err(PacketError::BadVersion));
    assert_eq!(open(b"GET / HTTP/1.1\r\n", &server(), &users()), Err(PacketError::BadMagic));
}

#[test]
fn rejects_every_single_bit_flip() {
    let pkt = sealed_alice();
    let (s, u) = (server(), users());
    for bit in 0..PACKET_LEN * 8 {
        let mut p = pkt.clone();
        p[bit / 8] ^= 1 << (bit % 8);
        let want = match bit / 8 {
            0..=2 => PacketError::BadMagic,
            3 => PacketError::BadVersion,
            // tag or ephemeral key: the recomputed tag no longer matches
            4..=39 => PacketError::WrongServer,
            // ciphertext or Poly1305 tag
            _ => PacketError::DecryptFailed,
        };
        assert_eq!(open(&p, &s, &u), Err(want), "bit {bit}");
    }
}

#[test]
fn header_is_bound_by_the_aead_even_with_a_valid_tag() {
    // Swap in another ephemeral key and fix up the server tag: passes the cheap
    // check, but the key and the associated data both change, so the AEAD fails.
    let mut p = sealed_alice();
    let other = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32])).to_bytes();
    p[8..40].copy_from_slice(&other);
    let tag = server().public().tag_for(&other);
    p[4..8].copy_from_slice(&tag);
    assert_eq!(precheck(&p, server().public()), Ok(()));
    assert_eq!(open(&p, &server(), &users()), Err(PacketError::DecryptFailed));
}

#[test]
fn rejects_small_order_ephemeral_keys() {
    // u = 0 and u = 1 are small-order points; X25519 with them yields zero.
    for u in [[0u8; 32], {
        let mut a = [0u8; 32];
        a[0] = 1;
        a
    }] {
        let mut p = sealed_alice();
        p[8..40].copy_from_slice(&u);
        let tag = server().public().tag_for(&u);
        p[4..8].copy_from_slice(&tag);
        assert_eq!(open(&p, &server(), &users()), Err(PacketError::DecryptFailed));
    }
}

#[test]
fn rejects_packet_for_another_server_key_cheaply() {
    let other = ServerKey::from_bytes(seq32(0x11));
    assert_eq!(precheck(&sealed_alice(), other.public()), Err(PacketError::WrongServer));
    assert_eq!(open(&sealed_alice(), &other, &users()), Err(PacketError::WrongServer));
}

// ---------------------------------------------------------------- authentication

#[test]
fn server_a_cannot_mint_packets_for_server_b() {
    // Server A's whole configuration: its X25519 secret and the users' public keys.
    // With it, A decrypts a genuine packet, then re-encrypts the signed body to B
    // (valid tag, valid AEAD). B refuses it: the signature names A's public key.
    let a = server();
    let b = ServerKey::from_bytes(seq32(0xc0));
    let pkt_for_a = sealed_alice();
    let (_, body) = open_body(&pkt_for_a, &a).unwrap();
    let forged = seal_body(&body, b.public(), seq32(0x01)).unwrap();
    assert_eq!(precheck(&forged, b.public()), Ok(()));
    assert_eq!(open(&forged, &b, &users()), Err(PacketError::BadSignature));
    // Even re-encrypting for A itself under a new ephemeral key fails: the signature
    // also covers the header.
    let again = seal_body(&body, a.public(), seq32(0x02)).unwrap();
    assert_eq!(open(&again, &a, &users()), Err(PacketError::BadSignature));
}

#[test]
fn rejects_unknown_user() {
    let mut only_bob = BTreeMap::new();
    only_bob.insert("bob".to_owned(), user_key().public());
    assert_eq!(open(&sealed_alice(), &server(), &only_bob), Err(PacketError::UnknownUser));
    let empty: HashMap<String, UserPublicKey> = HashMap::new();
    assert_eq!(open(&sealed_alice(), &server(), &empty), Err(PacketError::UnknownUser));
}

#[test]
fn rejects_wrong_user_key() {
    let mallory = UserKey::from_bytes(&seq32(0x99));
    let pkt = seal(&alice_request(), server().public(), &mallory, &mut test_rng(3)).unwrap();
    assert_eq!(open(&pkt, &server(), &users()), Err(PacketError::BadSignature));
    // And alice's genuine packet against a table listing another key for alice.
    let mut table = BTreeMap::new();
    table.insert("alice".to_owned(), mallory.public());
    assert_eq!(open(&sealed_alice(), &server(), &table), Err(PacketError::BadSignature));
}

#[test]
fn user_key_table_via_trait_object() {
    let table = users();
    let dynamic: &dyn UserLookup = &table;
    assert_eq!(open(&sealed_alice(), &server(), dynamic), Ok(alice_request()));
}

// ---------------------------------------------------------------- plaintext parsing

#[test]
fn rejects_trailing_bytes_inside_plaintext() {
    let (f, n) = fields_of(&alice_request());
    assert_eq!(open_fields(&f), Ok(alice_request()));
    for at in [n, n + 1, FIELDS_LEN - 1] {
        let mut g = f;
        g[at] = 0x01;
        assert!(matches!(open_fields(&g), Err(PacketError::TrailingData(_))), "at {at}");
    }
}

#[test]
fn rejects_non_canonical_and_duplicated_fields() {
    // alice: [5]alice [8]ts [16]nonce [1]kind=4 [4]addr [4]duration [1]n [3]service
    let (f, n) = fields_of(&alice_request());
    let kind_at = 1 + 5 + 8 + 16;
    let dur_at = kind_at + 1 + 4;
    let count_at = dur_at + 4;
    let svc_at = count_at + 1;
    assert_eq!(n, svc_at + 3);

    let set = |edits: &[(usize, &[u8])]| {
        let mut g = f;
        for (at, bytes) in edits {
            g[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        g
    };
    let cases: Vec<(&str, [u8; FIELDS_LEN], PacketError)> = vec![
        // the same service twice (a duplicated field)
        (
            "dup service",
            set(&[(count_at, &[2, 6, 0, 22, 6, 0, 22])]),
            PacketError::BadField("services not sorted and distinct"),
        ),
        (
            "unsorted",
            set(&[(count_at, &[2, 6, 1, 187, 6, 0, 22])]),
            PacketError::BadField("services not sorted and distinct"),
        ),
        (
            "udp before tcp",
            set(&[(count_at, &[2, 17, 0, 53, 6, 0, 22])]),
            PacketError::BadField("services not sorted and distinct"),
        ),
        ("count 0", set(&[(count_at, &[0])]), PacketError::BadField("service count")),
        ("count 17", set(&[(count_at, &[17])]), PacketError::BadField("service count")),
        ("count overruns", set(&[(count_at, &[2])]), PacketError::BadField("service protocol")),
        ("icmp", set(&[(svc_at, &[1])]), PacketError::BadField("service protocol")),
        ("port 0", set(&[(svc_at, &[6, 0, 0])]), PacketError::BadField("service port")),
        ("duration 0", set(&[(dur_at, &[0, 0, 0, 0])]), PacketError::BadField("duration")),
        ("allow kind 5", set(&[(kind_at, &[5])]), PacketError::BadField("allow kind")),
        ("0.0.0.0 for source", set(&[(kind_at, &[4, 0, 0, 0, 0])]), PacketError::BadField("allow address")),
        ("user len 0", set(&[(0, &[0])]), PacketError::BadField("user length")),
        ("user len 33", set(&[(0, &[33])]), PacketError::BadField("user length")),
        ("user space", set(&[(1, b"al ce")]), PacketError::BadField("user")),
        ("user slash", set(&[(1, b"../ab")]), PacketError::BadField("user")),
        ("user nul", set(&[(1, b"alic\0")]), PacketError::BadField("user")),
        ("user utf-8", set(&[(1, "al\u{e9}c".as_bytes())]), PacketError::BadField("user")),
    ];
    for (what, g, want) in cases {
        assert_eq!(open_fields(&g), Err(want), "{what}");
    }

    // IPv6 re-spellings of "source" and of IPv4 addresses.
    for (addr, what) in [("::", "unspecified"), ("::ffff:203.0.113.7", "v4-mapped")] {
        let mut r = alice_request();
        r.allow = AllowAddr::Source;
        let (mut g, _) = fields_of(&r);
        let mut rest = vec![6u8];
        rest.extend_from_slice(&addr.parse::<Ipv6Addr>().unwrap().octets());
        rest.extend_from_slice(&g[kind_at + 1..kind_at + 1 + 8]); // duration, n, service
        g[kind_at..kind_at + rest.len()].copy_from_slice(&rest);
        assert_eq!(open_fields(&g), Err(PacketError::BadField("allow address")), "{what}");
    }
}

#[test]
fn seal_refuses_requests_that_break_invariants() {
    let base = alice_request();
    let mut cases: Vec<Request> = Vec::new();
    let mut push = |f: &dyn Fn(&mut Request)| {
        let mut r = base.clone();
        f(&mut r);
        cases.push(r);
    };
    push(&|r| r.user = String::new());
    push(&|r| r.user = "a".repeat(33));
    push(&|r| r.user = "al ice".into());
    push(&|r| r.user = "älice".into());
    push(&|r| r.services.clear());
    push(&|r| r.services = (1..=17).map(Service::tcp).collect());
    push(&|r| r.services = vec![Service::tcp(22), Service::tcp(22)]);
    push(&|r| r.services = vec![Service::tcp(443), Service::tcp(22)]);
    push(&|r| r.services = vec![Service::tcp(0)]);
    push(&|r| r.duration_secs = 0);
    push(&|r| r.allow = AllowAddr::V4(Ipv4Addr::UNSPECIFIED));
    push(&|r| r.allow = AllowAddr::V6(Ipv6Addr::UNSPECIFIED));
    push(&|r| r.allow = AllowAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()));
    for r in cases {
        let got = seal(&r, server().public(), &user_key(), &mut test_rng(5));
        assert!(matches!(got, Err(EncodeError::InvalidMessage(_))), "{r:?}: {got:?}");
        assert_eq!(r.validate(), got.map(|_| ()));
    }
}

#[test]
fn request_new_sorts_and_dedups_services() {
    let svc = [Service::udp(53), Service::tcp(443), Service::tcp(22), Service::udp(53)];
    let r = Request::new("alice", 5, AllowAddr::Source, svc, 10, &mut fixed_rng(vec![7; 16])).unwrap();
    assert_eq!(r.services, vec![Service::tcp(22), Service::tcp(443), Service::udp(53)]);
    assert_eq!(r.nonce, [7; 16]);
    let too_many = (1..=17).map(Service::tcp);
    assert!(matches!(
        Request::new("alice", 5, AllowAddr::Source, too_many, 10, &mut |_| {}),
        Err(EncodeError::InvalidMessage(_))
    ));
}

// ---------------------------------------------------------------- time and replay

#[test]
fn check_time_window_edges() {
    let mut r = alice_request();
    let ts = r.timestamp;
    assert_eq!(check_time(&r, ts, 0), Ok(()));
    assert_eq!(check_time(&r, ts + 1, 0), Err(PacketError::Stale));
    assert_eq!(check_time(&r, ts + 30, 30), Ok(()));
    assert_eq!(check_time(&r, ts - 30, 30), Ok(()));
    assert_eq!(check_time(&r, ts + 31, 30), Err(PacketError::Stale));
    assert_eq!(check_time(&r, ts - 31, 30), Err(PacketError::Stale));
    assert_eq!(check_time(&r, 0, u64::MAX), Ok(()));
    r.timestamp = u64::MAX;
    assert_eq!(check_time(&r, 0, u64::MAX - 1), Err(PacketError::Stale));
    assert_eq!(check_time(&r, u64::MAX, 0), Ok(()));
    assert_eq!(replay_key_expiry(&r, 60), u64::MAX);
    r.timestamp = 0;
    assert_eq!(check_time(&r, u64::MAX, u64::MAX), Ok(()));
    assert_eq!(replay_key_expiry(&r, 60), 60);
}

#[test]
fn replay_key_depends_on_the_request_not_the_wire() {
    let req = alice_request();
    let a = seal(&req, server().public(), &user_key(), &mut test_rng(11)).unwrap();
    let b = seal(&req, server().public(), &user_key(), &mut test_rng(12)).unwrap();
    assert_ne!(a, b, "fresh ephemeral key, different bytes");
    let (ra, rb) = (open(&a, &server(), &users()).unwrap(), open(&b, &server(), &users()).unwrap());
    assert_eq!(canonical_replay_key(&ra), canonical_replay_key(&rb), "same request is a replay");

    // A fresh nonce makes a new request with a new key; so does every other field.
    let k = canonical_replay_key(&req);
    type Edit = Box<dyn Fn(&mut Request)>;
    let variants: Vec<Edit> = vec![
        Box::new(|r| r.nonce[15] ^= 1),
        Box::new(|r| r.user = "alicf".into()),
        Box::new(|r| r.timestamp += 1),
        Box::new(|r| r.allow = AllowAddr::Source),
        Box::new(|r| r.allow = AllowAddr::V4(Ipv4Addr::new(203, 0, 113, 8))),
        Box::new(|r| r.duration_secs += 1),
        Box::new(|r| r.services = vec![Service::udp(22)]),
        Box::new(|r| r.services.push(Service::tcp(23))),
    ];
    for (i, f) in variants.iter().enumerate() {
        let mut r = req.clone();
        f(&mut r);
        assert_ne!(canonical_replay_key(&r), k, "variant {i}");
    }
}

// ---------------------------------------------------------------- keys

#[test]
fn key_text_round_trips() {
    let mut rng = test_rng(99);
    for _ in 0..8 {
        let s = ServerKey::generate(&mut rng);
        let u = UserKey::generate(&mut rng);
        assert_eq!(ServerKey::from_text(&s.to_text()).unwrap().public(), s.public());
        assert_eq!(s.public().to_string().parse::<ServerPublicKey>().unwrap(), *s.public());
        assert_eq!(UserKey::from_text(&u.to_text()).unwrap().public(), u.public());
        assert_eq!(u.public().to_string().parse::<UserPublicKey>().unwrap(), u.public());
        assert_eq!(s.public().to_string().len(), SERVER_PUBLIC_PREFIX.len() + 48);
    }
}

#[test]
fn key_text_parsing_is_strict() {
    let s = server();
    let u = user_key();
    let texts =
        [s.to_text().to_string(), s.public().to_string(), u.to_text().to_string(), u.public().to_string()];
    type Parser = fn(&str) -> Result<(), KeyError>;
    let parsers: [Parser; 4] = [
        |t| ServerKey::from_text(t).map(|_| ()),
        |t| t.parse::<ServerPublicKey>().map(|_| ()),
        |t| UserKey::from_text(t).map(|_| ()),
        |t| t.parse::<UserPublicKey>().map(|_| ()),
    ];
    // Every kind is accepted only by its own parser.
    for (i, t) in texts.iter().enumerate() {
        for (j, p) in parsers.iter().enumerate() {
            assert_eq!(p(t).is_ok(), i == j, "text {i} parser {j}");
        }
    }
    let good = &texts[1];
    let body = &good[SERVER_PUBLIC_PREFIX.len()..];
    let bad = [
        format!("{good}\n"),
        format!(" {good}"),
        format!("{good}="),
        good.to_uppercase(),
        good.replacen("pcs1-pub-", "PCS1-PUB-", 1),
        good.replacen("pcs1-", "pcs2-", 1),
        good[..good.len() - 1].to_owned(),
        format!("{good}A"),
        body.to_owned(),
        String::new(),
        format!("pcs1-pub-{}", body.replace('-', "+").replace('_', "/")),
    ];
    for t in bad {
        if t == *good {
            continue; // a replace that changed nothing
        }
        assert!(matches!(t.parse::<ServerPublicKey>(), Err(KeyError(_))), "{t:?}");
    }
    // A one-character typo is caught by the check bytes.
    for i in 0..48 {
        let mut chars: Vec<char> = good.chars().collect();
        let at = SERVER_PUBLIC_PREFIX.len() + i;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let t: String = chars.into_iter().collect();
        assert!(t.parse::<ServerPublicKey>().is_err(), "typo at {i}");
    }
}

#[test]
fn refuses_small_order_public_keys() {
    let mut one = [0u8; 32];
    one[0] = 1;
    for u in [[0u8; 32], one] {
        assert!(matches!(ServerPublicKey::from_bytes(u), Err(KeyError(_))));
    }
    // Ed25519 identity point (small order) and a non-point.
    assert!(matches!(UserPublicKey::from_bytes(&one), Err(KeyError(_))));
    // y = 2^255 - 1 ≡ 18 (mod p): a non-canonical spelling of a point.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[31] = 0x7f;
    assert_eq!(
        UserPublicKey::from_bytes(&non_canonical),
        Err(KeyError("user public key is not canonically encoded"))
    );
    // Some small y have no x on the curve.
    let not_points = (2u8..64)
        .filter(|&y| {
            let mut b = [0u8; 32];
            b[0] = y;
            UserPublicKey::from_bytes(&b) == Err(KeyError("user public key is not a valid Ed25519 point"))
        })
        .count();
    assert!(not_points > 0);
}

#[test]
fn debug_output_redacts_secrets() {
    let s = format!("{:?} {:?}", server(), user_key());
    assert!(s.contains("<redacted>"));
    assert!(!s.contains(&*server().to_text()));
    assert!(!s.contains(&*user_key().to_text()));
    assert!(!s.contains("pcs1-sec-") && !s.contains("pcu1-sec-"));
}

#[test]
fn fuzz_open_handles_edge_inputs() {
    for data in [&[][..], &[0u8; 1], &sealed_alice()[..], &[0xff; 512], &[0; PACKET_LEN], &[0; FIELDS_LEN]] {
        fuzz_open(data);
    }
}

// ---------------------------------------------------------------- measurement

/// One-off cost measurement for the spec (`cargo test --release -p portcullis-proto
/// -- --ignored --nocapture measure_reject_rates`). Not a benchmark; not timed in CI.
#[test]
#[ignore]
fn measure_reject_rates() {
    use std::time::Instant;
    let s = server();
    let u = users();
    let genuine = sealed_alice();
    let rate = |name: &str, pkt: &[u8], want: PacketError, n: u32| {
        let t = Instant::now();
        for _ in 0..n {
            assert_eq!(open(std::hint::black_box(pkt), &s, &u), Err(want));
        }
        let per = t.elapsed() / n;
        println!("{name:<48} {per:>10.2?}/packet  {:>10.0} packets/s", 1.0 / per.as_secs_f64());
    };
    let mut junk = genuine.clone();
    junk[4] ^= 1;
    rate("wrong magic", b"junkjunkjunk", PacketError::BadMagic, 2_000_000);
    rate("valid magic, wrong server tag", &junk, PacketError::WrongServer, 2_000_000);
    let mut bad_ct = genuine.clone();
    bad_ct[100] ^= 1;
    rate("valid tag, AEAD fails (X25519+HKDF+Poly1305)", &bad_ct, PacketError::DecryptFailed, 20_000);
    let mallory = UserKey::from_bytes(&seq32(0x99));
    let forged = seal(&alice_request(), s.public(), &mallory, &mut test_rng(4)).unwrap();
    rate("AEAD ok, signature fails (+Ed25519 verify)", &forged, PacketError::BadSignature, 20_000);
    let t = Instant::now();
    for _ in 0..20_000 {
        assert!(open(std::hint::black_box(&genuine), &s, &u).is_ok());
    }
    println!("{:<48} {:>10.2?}/packet", "genuine packet accepted", t.elapsed() / 20_000);
}
