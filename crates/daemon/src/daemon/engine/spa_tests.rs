//! The engine's SPA backlog: knocks are never held up by SPA work, the backlog is
//! worked through in slices, fairly between prefixes, and a full backlog drops from
//! the prefix with the most waiting.

use std::net::IpAddr;
use std::time::SystemTime;

use portcullis_proto::spa::fwknop::{self, SpaMessage};
use portcullis_proto::wire::Datagram;
use portcullis_proto::{Millis, Proto, Service, TcpFlags};

use super::Engine;
use crate::capture::LocalView;
use crate::config;
use crate::firewall::none::NoFirewall;
use crate::spa::replay::ReplayCache;
use crate::spa::{backlog, RejectClass, SpaGate};

const SPA_PORT: u16 = 62201;

fn rng(b: &mut [u8]) {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(1);
    for x in b {
        *x = N.fetch_add(7, Ordering::Relaxed);
    }
}

/// An engine with the ssh door and one fwknop stanza, and a packet maker for it.
fn engine() -> (Engine, impl Fn(&str) -> Vec<u8>) {
    let (k, h) = fwknop::fwknop_keygen(&mut rng);
    let text = format!(
        "[spa]\nports = [{SPA_PORT}]\n\n[[spa.fwknop]]\nname = \"laptop\"\nkey_base64 = \"{}\"\n\
         hmac_key_base64 = \"{}\"\nhmac_digest_type = \"sha256\"\nopen_ports = [\"tcp/22\"]\n\n\
         [[door]]\nname = \"ssh\"\nsequence = [7000, 8000, 9000]\nopen = [\"tcp/2222\"]\n",
        k.as_str(),
        h.as_str()
    );
    let c = config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let spa = c.spa.clone().unwrap();
    let gate = SpaGate::new(&spa, vec![Service::tcp(22), Service::tcp(2222)], ReplayCache::in_memory(1000));
    let e = Engine::new(&c, Box::new(NoFirewall::default())).unwrap().with_spa(gate);
    let key = spa.stanzas[0].key.clone();
    let packet = move |allow: &str| {
        let m = SpaMessage::new_access(
            "alice",
            now_unix(),
            allow.parse().unwrap(),
            vec![Service::tcp(22).into()],
            &mut rng,
        );
        fwknop::encode(&m, &key, &mut rng).unwrap().into_bytes()
    };
    (e, packet)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn view() -> LocalView {
    let mut v = LocalView::default();
    v.addrs.insert("192.0.2.1".parse().unwrap());
    v
}

fn send(e: &mut Engine, src: &str, proto: Proto, port: u16, payload: &[u8], t: u64) {
    let d = Datagram {
        src: src.parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        proto,
        src_port: 40000,
        dst_port: port,
        flags: TcpFlags(if proto == Proto::Tcp { TcpFlags::SYN } else { 0 }),
        payload,
    };
    e.on_datagram(&view(), 1, &d, Millis(t), SystemTime::now());
}

fn open(e: &Engine) -> Vec<(IpAddr, u16)> {
    let mut v: Vec<_> = e.granter().live().unwrap().into_iter().map(|g| (g.addr, g.service.port)).collect();
    v.sort();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A packet of the right shape whose HMAC fails: screened in, rejected by crypto.
fn junk(good: &[u8]) -> Vec<u8> {
    let mut p = good.to_vec();
    let i = p.len() / 2;
    p[i] = if p[i] == b'A' { b'B' } else { b'A' };
    p
}

#[test]
fn without_the_capture_loop_spa_is_decided_at_once() {
    let (mut e, packet) = engine();
    send(&mut e, "192.0.2.7", Proto::Udp, SPA_PORT, &packet("192.0.2.7"), 0);
    assert_eq!(open(&e), vec![(ip("192.0.2.7"), 22)]);
    assert!(!e.spa_pending());
}

#[test]
fn knocks_open_while_spa_waits_and_spa_opens_in_the_next_slice() {
    let (mut e, packet) = engine();
    e.defer_spa();
    send(&mut e, "192.0.2.7", Proto::Udp, SPA_PORT, &packet("192.0.2.7"), 0);
    assert!(e.spa_pending() && open(&e).is_empty(), "screened, not decided");
    for (i, port) in [7000, 8000, 9000].into_iter().enumerate() {
        send(&mut e, "198.51.100.4", Proto::Tcp, port, &[], 1 + i as u64);
    }
    assert_eq!(open(&e), vec![(ip("198.51.100.4"), 2222)], "the knock did not wait");
    assert!(!e.run_spa(&mut || true, Millis(5), SystemTime::now()));
    assert_eq!(open(&e), vec![(ip("192.0.2.7"), 22), (ip("198.51.100.4"), 2222)]);
    assert_eq!(e.stats().spa_accepted, 1);
}

#[test]
fn slices_stop_when_told_and_prefixes_take_turns() {
    let (mut e, packet) = engine();
    e.defer_spa();
    let bad = junk(&packet("198.18.0.1"));
    for i in 0..50 {
        send(&mut e, &format!("198.18.0.{}", i + 1), Proto::Udp, SPA_PORT, &bad, 0);
    }
    send(&mut e, "192.0.2.7", Proto::Udp, SPA_PORT, &packet("192.0.2.7"), 0);
    // One packet per slice: the flood's first, then the newcomer's.
    assert!(e.run_spa(&mut || false, Millis(1), SystemTime::now()));
    assert!(open(&e).is_empty());
    assert!(e.run_spa(&mut || false, Millis(2), SystemTime::now()));
    assert_eq!(open(&e), vec![(ip("192.0.2.7"), 22)], "decided before the flood's other 49");
    assert!(!e.run_spa(&mut || true, Millis(3), SystemTime::now()));
    assert_eq!(e.stats().spa_rejected_in(RejectClass::Auth), 50);
}

#[test]
fn a_full_backlog_drops_the_flood_not_the_newcomer() {
    let (mut e, packet) = engine();
    e.defer_spa();
    let bad = junk(&packet("198.18.0.1"));
    let flood = backlog::CAPACITY + 10;
    for i in 0..flood {
        send(&mut e, &format!("198.18.0.{}", i % 250 + 1), Proto::Udp, SPA_PORT, &bad, 0);
    }
    // Copies of one junk packet all pass screening (its replay key needs decryption).
    assert_eq!(e.stats().spa_rejected_in(RejectClass::Overload), 10, "the flood's own newcomers refused");
    send(&mut e, "192.0.2.7", Proto::Udp, SPA_PORT, &packet("192.0.2.7"), 0);
    assert_eq!(e.stats().spa_rejected_in(RejectClass::Overload), 11, "one flood packet made room");
    assert!(e.run_spa(&mut || false, Millis(1), SystemTime::now()), "a flood packet");
    assert!(e.run_spa(&mut || false, Millis(1), SystemTime::now()), "then the newcomer");
    assert_eq!(open(&e), vec![(ip("192.0.2.7"), 22)]);
}
