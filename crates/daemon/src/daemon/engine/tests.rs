//! Unit tests of the engine: which knocks count and who gets the grant.

use std::net::Ipv4Addr;

use portcullis_proto::{Proto, TcpFlags};

use super::*;
use crate::config;
use crate::firewall::none::NoFirewall;

const CONF: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
seq_timeout = 5
open = ["tcp/22"]
open_for = 30

[[door]]
name = "vip"
sequence = [7000, 7100, 7200]
open = ["tcp/443"]
target = "192.0.2.99"
"#;

fn view() -> LocalView {
    let mut v = LocalView::default();
    v.addrs.insert("192.0.2.1".parse().unwrap());
    v
}

fn dgram(src: [u8; 4], dst: [u8; 4], proto: Proto, port: u16) -> Datagram<'static> {
    Datagram {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        proto,
        src_port: 40000,
        dst_port: port,
        flags: TcpFlags(if proto == Proto::Tcp { TcpFlags::SYN } else { 0 }),
        payload: &[],
    }
}

fn engine() -> Engine {
    let c = config::parse(CONF, std::path::Path::new("t.toml")).unwrap();
    Engine::new(&c, Box::new(NoFirewall::default())).unwrap()
}

fn granted(e: &mut Engine) -> Vec<(IpAddr, Service)> {
    e.granter().live().unwrap().into_iter().map(|g| (g.addr, g.service)).collect()
}

#[test]
fn correct_sequence_grants_the_knocker_only() {
    let mut e = engine();
    let v = view();
    let wall = SystemTime::UNIX_EPOCH;
    let src = [192, 0, 2, 2];
    let me = [192, 0, 2, 1];
    e.on_datagram(&v, 1, &dgram(src, me, Proto::Tcp, 7000), Millis(0), wall);
    e.on_datagram(&v, 1, &dgram(src, me, Proto::Udp, 8000), Millis(10), wall);
    assert!(granted(&mut e).is_empty());
    e.on_datagram(&v, 1, &dgram(src, me, Proto::Tcp, 9000), Millis(20), wall);
    assert_eq!(granted(&mut e), vec![("192.0.2.2".parse().unwrap(), Service::tcp(22))]);
    assert_eq!(e.stats().opened, 1);
}

#[test]
fn knocks_to_other_addresses_or_interfaces_do_not_count() {
    let mut e = engine();
    let mut v = view();
    let wall = SystemTime::UNIX_EPOCH;
    let src = [192, 0, 2, 2];
    for (i, (port, proto)) in
        [(7000, Proto::Tcp), (8000, Proto::Udp), (9000, Proto::Tcp)].into_iter().enumerate()
    {
        e.on_datagram(&v, 1, &dgram(src, [192, 0, 2, 50], proto, port), Millis(i as u64), wall);
    }
    assert!(granted(&mut e).is_empty());
    v.ifindexes = Some([2].into_iter().collect());
    for (i, (port, proto)) in
        [(7000, Proto::Tcp), (8000, Proto::Udp), (9000, Proto::Tcp)].into_iter().enumerate()
    {
        e.on_datagram(&v, 1, &dgram(src, [192, 0, 2, 1], proto, port), Millis(i as u64), wall);
    }
    assert!(granted(&mut e).is_empty());
    assert_eq!(e.stats().for_us, 0);
}

#[test]
fn target_door_only_counts_knocks_to_its_target() {
    let mut e = engine();
    let v = view();
    let wall = SystemTime::UNIX_EPOCH;
    let src = [192, 0, 2, 3];
    for (i, port) in [7000, 7100, 7200].into_iter().enumerate() {
        e.on_datagram(&v, 1, &dgram(src, [192, 0, 2, 1], Proto::Tcp, port), Millis(i as u64), wall);
    }
    assert!(granted(&mut e).is_empty(), "local address is not the vip target");
    for (i, port) in [7000, 7100, 7200].into_iter().enumerate() {
        e.on_datagram(&v, 1, &dgram(src, [192, 0, 2, 99], Proto::Tcp, port), Millis(10 + i as u64), wall);
    }
    assert_eq!(granted(&mut e), vec![("192.0.2.3".parse().unwrap(), Service::tcp(443))]);
}
