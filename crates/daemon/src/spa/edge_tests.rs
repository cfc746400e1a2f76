//! The gate at the edges: the last second of the time window (both formats, across
//! restarts with the persisted replay cache), the per-prefix crypto budgets under a
//! flood, and the native address rule.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use portcullis_proto::spa::fwknop::{self, Access, EncMode, FwknopKey, HashType, SpaMessage};
use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey};
use portcullis_proto::{Millis, Service};

use super::budget::{self, Exhausted};
use super::replay::{self, ReplayCache};
use super::tests::stanza_with;
use super::{Denial, Format, RejectReason, SpaGate, Verdict};
use crate::config::spa::{Cidr, FwknopStanza, NativeUser, SpaConfig};

const T: u64 = 1_800_000_000;
const MAX_AGE: u64 = 30;

fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed;
    move |b: &mut [u8]| {
        for chunk in b.chunks_mut(8) {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            chunk.copy_from_slice(&(z ^ (z >> 29)).to_le_bytes()[..chunk.len()]);
        }
    }
}

fn fwknop_key(n: u8) -> FwknopKey {
    FwknopKey::new(&[b'k', n], EncMode::Cbc, Some((HashType::Sha256, &[b'h', n]))).unwrap()
}

fn stanza(n: u8) -> FwknopStanza {
    stanza_with(&format!("s{n}"), fwknop_key(n))
}

struct Keys {
    server: ServerKey,
    alice: UserKey,
}

fn keys() -> Keys {
    let mut r = rng(1);
    Keys { server: ServerKey::generate(&mut r), alice: UserKey::generate(&mut r) }
}

fn config(k: &Keys, stanzas: Vec<FwknopStanza>, allow_addresses: Vec<Cidr>) -> SpaConfig {
    let mut users = HashMap::new();
    let user = NativeUser {
        key: k.alice.public(),
        open: vec![Service::tcp(22)],
        max_open_for: Duration::from_secs(60),
        allow_addresses,
        fleet: false,
    };
    users.insert("alice".to_string(), user);
    SpaConfig {
        max_age: MAX_AGE,
        server_key: Some(k.server.clone()),
        users,
        stanzas,
        persist_replay: true,
        ..SpaConfig::default()
    }
}

/// A gate as the daemon builds it at start: replay cache restored from `path` at `now`.
fn start(cfg: &SpaConfig, path: &Path, now: u64) -> SpaGate {
    let replay = ReplayCache::open(path, replay::DEFAULT_CAPACITY, now).unwrap();
    SpaGate::new(cfg, vec![Service::tcp(22)], replay)
}

fn native_at(k: &Keys, ts: u64, allow: AllowAddr, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let req = Request::new("alice", ts, allow, [Service::tcp(22)], 30, &mut r).unwrap();
    native::seal(&req, k.server.public(), &k.alice, &mut r).unwrap()
}

fn fwknop_at(ts: u64, seed: u64, key: &FwknopKey) -> Vec<u8> {
    let mut r = rng(seed);
    let m = SpaMessage::new_access(
        "alice",
        ts,
        Ipv4Addr::UNSPECIFIED,
        vec![Access::from(Service::tcp(22))],
        &mut r,
    );
    fwknop::encode(&m, key, &mut r).unwrap().into_bytes()
}

fn src() -> IpAddr {
    "192.0.2.2".parse().unwrap()
}

fn reason(v: Verdict) -> RejectReason {
    match v {
        Verdict::Reject(r) => r,
        Verdict::Grant(d) => panic!("granted {d:?}"),
    }
}

fn is_grant(v: &Verdict) -> bool {
    matches!(v, Verdict::Grant(_))
}

/// Accept one packet at `accepted_at`, then replay the captured bytes after a restart
/// at every second from then to one past the window: refused as a replay while the
/// window would accept it, as stale after. Never granted.
fn replay_after_restarts(cfg: &SpaConfig, packet: &[u8], ts: u64, accepted_at: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spa-replay");
    let mut gate = start(cfg, &path, accepted_at);
    assert!(is_grant(&gate.handle(src(), packet, accepted_at, Millis(0))), "genuine packet at {accepted_at}");
    drop(gate);
    for now in accepted_at..=ts + MAX_AGE + 1 {
        // A fresh process each time: the ephemeral-key set is empty, only the
        // persisted replay cache stands between the capture and a grant.
        let mut gate = start(cfg, &path, now);
        let r = reason(gate.handle(src(), packet, now, Millis(0)));
        if now <= ts + MAX_AGE {
            assert_eq!(r, RejectReason::Replayed, "now = ts + {}", now as i64 - ts as i64);
        } else {
            assert!(matches!(r, RejectReason::Stale { .. }), "now = ts + {}: {r}", now - ts);
        }
    }
}

#[test]
fn native_replay_is_refused_through_the_last_second_of_the_window_after_restarts() {
    let k = keys();
    let cfg = config(&k, Vec::new(), Vec::new());
    // Accepted at the far past edge (client clock ahead), in the middle, and in the
    // very last second; replays follow up to and past the far edge.
    for (i, accepted_at) in [T - MAX_AGE, T - 1, T, T + MAX_AGE - 1, T + MAX_AGE].into_iter().enumerate() {
        let p = native_at(&k, T, AllowAddr::Source, 100 + i as u64);
        replay_after_restarts(&cfg, &p, T, accepted_at);
    }
}

#[test]
fn fwknop_replay_is_refused_through_the_last_second_of_the_window_after_restarts() {
    let k = keys();
    let cfg = config(&k, vec![stanza(0)], Vec::new());
    for (i, accepted_at) in [T - MAX_AGE, T, T + MAX_AGE].into_iter().enumerate() {
        let p = fwknop_at(T, 200 + i as u64, &fwknop_key(0));
        replay_after_restarts(&cfg, &p, T, accepted_at);
    }
}

#[test]
fn the_window_edges_are_inclusive_and_one_second_past_is_stale() {
    let k = keys();
    let cfg = config(&k, vec![stanza(0)], Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let mut gate = start(&cfg, &dir.path().join("r"), T);
    let mut seed = 300;
    let mut next = || {
        seed += 1;
        seed
    };
    for now in [T - MAX_AGE, T + MAX_AGE] {
        assert!(is_grant(&gate.handle(src(), &native_at(&k, T, AllowAddr::Source, next()), now, Millis(0))));
        assert!(is_grant(&gate.handle(src(), &fwknop_at(T, next(), &fwknop_key(0)), now, Millis(0))));
    }
    for now in [T - MAX_AGE - 1, T + MAX_AGE + 1] {
        let r = reason(gate.handle(src(), &native_at(&k, T, AllowAddr::Source, next()), now, Millis(0)));
        assert!(matches!(r, RejectReason::Stale { .. }), "{r}");
        let r = reason(gate.handle(src(), &fwknop_at(T, next(), &fwknop_key(0)), now, Millis(0)));
        assert!(matches!(r, RejectReason::Stale { .. }), "{r}");
    }
}

/// Re-sealing the captured request under a fresh ephemeral key needs the user's key;
/// what an eavesdropper can do is send the same bytes. Junk that rotates the
/// ephemeral-key set changes nothing: the replay cache alone refuses.
#[test]
fn junk_that_rotates_the_ephemeral_set_does_not_reopen_a_replay() {
    let k = keys();
    let cfg = config(&k, Vec::new(), Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let mut gate = start(&cfg, &dir.path().join("r"), T);
    let p = native_at(&k, T, AllowAddr::Source, 400);
    assert!(is_grant(&gate.handle(src(), &p, T, Millis(0))));
    // Fresh-ephemeral valid-tag junk, spread over a window's worth of monotonic time.
    for i in 0..3u64 {
        let mut junk = native_at(&k, T, AllowAddr::Source, 500 + i);
        junk[255] ^= 1;
        let _ = gate.handle("203.0.113.9".parse().unwrap(), &junk, T, Millis(i * 1000 * MAX_AGE));
    }
    let r = reason(gate.handle(src(), &p, T + MAX_AGE, Millis(4 * 1000 * MAX_AGE)));
    assert!(matches!(r, RejectReason::Replayed | RejectReason::EphemeralSeen), "{r}");
}

#[test]
fn native_users_open_for_the_source_unless_allow_addresses_lists_more() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let v6 = |s: &str| -> Ipv6Addr { s.parse().unwrap() };
    let mut gate = start(&config(&k, Vec::new(), Vec::new()), &dir.path().join("a"), T);
    let open = |g: &mut SpaGate, allow, seed| g.handle(src(), &native_at(&k, T, allow, seed), T, Millis(0));
    assert!(is_grant(&open(&mut gate, AllowAddr::Source, 600)));
    assert!(
        is_grant(&open(&mut gate, AllowAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 601)),
        "its own source, spelled out"
    );
    let r = reason(open(&mut gate, AllowAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 602));
    assert_eq!(
        r,
        RejectReason::Denied {
            who: "user alice".into(),
            denial: Denial::Address("192.0.2.3".parse().unwrap())
        }
    );
    assert_eq!(r.class(), super::RejectClass::Policy);
    assert!(r.to_string().contains("allow_addresses"), "{r}");

    let listed = vec![Cidr::parse("198.51.100.0/24").unwrap(), Cidr::parse("2001:db8:2::/64").unwrap()];
    let mut gate = start(&config(&k, Vec::new(), listed), &dir.path().join("b"), T);
    assert!(is_grant(&open(&mut gate, AllowAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 603)));
    assert!(is_grant(&open(&mut gate, AllowAddr::V6(v6("2001:db8:2::9")), 604)));
    assert!(is_grant(&open(&mut gate, AllowAddr::Source, 605)), "the source is always allowed");
    for (allow, seed) in
        [(AllowAddr::V4(Ipv4Addr::new(198, 51, 101, 2)), 606), (AllowAddr::V6(v6("2001:db8:3::9")), 607)]
    {
        assert!(matches!(
            reason(open(&mut gate, allow, seed)),
            RejectReason::Denied { denial: Denial::Address(_), .. }
        ));
    }
}

#[test]
fn fwknop_junk_from_one_prefix_cannot_starve_a_client_elsewhere() {
    let k = keys();
    let stanzas: Vec<FwknopStanza> = (0..20).map(stanza).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut gate = start(&config(&k, stanzas, Vec::new()), &dir.path().join("r"), T);
    // Base64 junk: passes the charset/length precheck, fails every HMAC.
    let junk = fwknop_at(T, 700, &fwknop_key(99));
    let attacker: IpAddr = "198.51.100.7".parse().unwrap();
    let mut refused = 0;
    for _ in 0..1000 {
        match reason(gate.handle(attacker, &junk, T, Millis(0))) {
            RejectReason::CryptoBudget { format: Format::Fwknop, exhausted: Exhausted::Prefix } => {
                refused += 1
            }
            RejectReason::Packet(_) | RejectReason::NoStanzaKey(_) => {}
            r => panic!("{r}"),
        }
    }
    let burst = budget::FWKNOP.per_prefix.burst as usize;
    assert_eq!(1000 - refused, burst / 20, "20 HMACs a packet out of the prefix's burst");
    // The last stanza's client, from another prefix, at the same instant.
    let genuine = fwknop_at(T, 701, &fwknop_key(19));
    assert!(is_grant(&gate.handle(src(), &genuine, T, Millis(0))));
}

#[test]
fn stanzas_filtered_by_source_cost_nothing() {
    let k = keys();
    let mut stanzas: Vec<FwknopStanza> = (0..20).map(stanza).collect();
    for st in &mut stanzas[..19] {
        st.source = vec![Cidr::parse("203.0.113.0/24").unwrap()];
    }
    let dir = tempfile::tempdir().unwrap();
    let mut gate = start(&config(&k, stanzas, Vec::new()), &dir.path().join("r"), T);
    let junk = fwknop_at(T, 800, &fwknop_key(99));
    let attacker: IpAddr = "198.51.100.7".parse().unwrap();
    let spent = (0..1000)
        .filter(|_| {
            !matches!(reason(gate.handle(attacker, &junk, T, Millis(0))), RejectReason::CryptoBudget { .. })
        })
        .count();
    assert_eq!(
        spent,
        budget::FWKNOP.per_prefix.burst as usize,
        "one HMAC a packet: the other 19 never match"
    );
}

#[test]
fn native_flood_from_one_prefix_leaves_others_their_budget() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let mut gate = start(&config(&k, Vec::new(), Vec::new()), &dir.path().join("r"), T);
    let attacker: IpAddr = "2001:db8:bad:ff::1".parse().unwrap();
    let mut by_budget = 0;
    for i in 0..200u64 {
        let mut junk = native_at(&k, T, AllowAddr::Source, 900 + i);
        junk[255] ^= 1;
        if let RejectReason::CryptoBudget { exhausted, .. } =
            reason(gate.handle(attacker, &junk, T, Millis(0)))
        {
            assert_eq!(exhausted, Exhausted::Prefix);
            by_budget += 1;
        }
    }
    assert_eq!(200 - by_budget, budget::NATIVE.per_prefix.burst as usize);
    // Another host in the same /56 is the same prefix; a host elsewhere is not.
    let mut junk = native_at(&k, T, AllowAddr::Source, 1200);
    junk[255] ^= 1;
    let r = reason(gate.handle("2001:db8:bad:1::1".parse().unwrap(), &junk, T, Millis(0)));
    assert!(matches!(r, RejectReason::CryptoBudget { exhausted: Exhausted::Prefix, .. }), "{r}");
    assert!(is_grant(&gate.handle(src(), &native_at(&k, T, AllowAddr::Source, 1201), T, Millis(0))));
}
