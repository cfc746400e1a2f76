//! `portcullis knock`: the knock client, with knock(1)'s semantics.
//!
//! A TCP knock is one SYN: a non-blocking `connect()` then `close()`. A UDP knock is a
//! one-byte datagram. The host is resolved once, before the first knock, so a DNS
//! change or slow resolver cannot split a sequence between two addresses.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use portcullis_proto::{Proto, Service};
use socket2::{Domain, Protocol, Socket, Type};

/// Arguments of `portcullis knock`.
#[derive(Args, Debug)]
pub struct KnockArgs {
    /// Default every knock to UDP (a port can still say `:tcp`).
    #[arg(short = 'u', long = "udp")]
    udp: bool,
    /// Delay between knocks, in milliseconds.
    #[arg(short = 'd', long = "delay", value_name = "MS", default_value_t = 0)]
    delay: u64,
    /// Use IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Print each knock.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Host name or address to knock on.
    host: String,
    /// Knock the current sequence of a rotating door instead of PORTs (see `portcullis sequence`).
    #[arg(long, conflicts_with = "ports")]
    rotating: bool,
    #[command(flatten)]
    rot: crate::rotating::RotatingOpts,
    /// Knocks: PORT, PORT:tcp or PORT:udp.
    #[arg(required_unless_present = "rotating", value_name = "PORT[:PROTO]")]
    ports: Vec<String>,
}

/// Parse all knocks first: a typo in the fourth port must not send the first three.
pub fn parse_knocks(ports: &[String], udp: bool) -> anyhow::Result<Vec<Service>> {
    let default = if udp { Proto::Udp } else { Proto::Tcp };
    ports.iter().map(|p| Service::parse_knock(p, default).map_err(|e| bad_knock(p, e))).collect()
}

/// Say what a knock looks like; a knock written in the grant form (`tcp/7000`, as in
/// `open = [...]` and `spa -A`) gets its knock spelling.
fn bad_knock(p: &str, e: portcullis_proto::service::ParseError) -> anyhow::Error {
    match Service::parse_grant(p) {
        Ok(s) => anyhow::anyhow!("bad knock {p:?}: knocks are PORT[:PROTO]; write {}:{}", s.port, s.proto),
        Err(_) => anyhow::anyhow!("bad knock {p:?}: {e}; knocks are PORT[:PROTO], e.g. 7000 or 7000:udp"),
    }
}

/// Resolve once, honouring -4/-6.
pub fn resolve(host: &str, v4: bool, v6: bool) -> anyhow::Result<IpAddr> {
    let addrs: Vec<SocketAddr> =
        (host, 0).to_socket_addrs().with_context(|| format!("cannot resolve {host:?}"))?.collect();
    addrs.iter().map(SocketAddr::ip).find(|ip| (!v4 || ip.is_ipv4()) && (!v6 || ip.is_ipv6())).with_context(
        || {
            let fam = if v4 {
                "IPv4 "
            } else if v6 {
                "IPv6 "
            } else {
                ""
            };
            format!("{host:?} has no {fam}address")
        },
    )
}

/// Send one knock.
pub fn hit(to: SocketAddr, proto: Proto) -> io::Result<()> {
    let domain = Domain::for_address(to);
    match proto {
        Proto::Tcp => {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            s.set_nonblocking(true)?;
            match s.connect(&to.into()) {
                // In progress is the normal case: the SYN is on its way; dropping the
                // socket now abandons the handshake, exactly like knock(1).
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                Err(e) => Err(e),
            }
        }
        Proto::Udp => {
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            s.send_to(&[0u8], &to.into())?;
            Ok(())
        }
    }
}

/// Run `portcullis knock`.
pub fn run(a: &KnockArgs) -> anyhow::Result<()> {
    let knocks = match crate::rotating::knock_override(a.rotating, &a.rot)? {
        Some(rotating) => rotating,
        None => parse_knocks(&a.ports, a.udp)?,
    };
    let ip = resolve(&a.host, a.ipv4, a.ipv6)?;
    for (i, k) in knocks.iter().enumerate() {
        if a.verbose {
            println!("hitting {} {}:{}", k.proto, ip, k.port);
        }
        hit(SocketAddr::new(ip, k.port), k.proto).with_context(|| format!("knock {} on {ip}", k))?;
        if a.delay > 0 && i + 1 < knocks.len() {
            thread::sleep(Duration::from_millis(a.delay));
        }
    }
    if knocks.is_empty() {
        bail!("no knocks given");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_knock_lists_strictly() {
        let k = parse_knocks(&["7000".into(), "8000:udp".into(), "9000:tcp".into()], false).unwrap();
        assert_eq!(k, vec![Service::tcp(7000), Service::udp(8000), Service::tcp(9000)]);
        let k = parse_knocks(&["7000".into(), "8000:tcp".into()], true).unwrap();
        assert_eq!(k, vec![Service::udp(7000), Service::tcp(8000)]);
        for bad in ["0", "65536", "70:icmp", "x", "", "22:"] {
            let e = parse_knocks(&[bad.to_string()], false).unwrap_err().to_string();
            assert!(
                e.contains("bad knock") && e.ends_with("knocks are PORT[:PROTO], e.g. 7000 or 7000:udp"),
                "{bad}: {e}"
            );
        }
        let e = parse_knocks(&["7000".into(), "tcp/7000".into()], false).unwrap_err().to_string();
        assert_eq!(e, r#"bad knock "tcp/7000": knocks are PORT[:PROTO]; write 7000:tcp"#);
        let e = parse_knocks(&["70:icmp".into()], false).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"bad knock "70:icmp": protocol must be tcp or udp; knocks are PORT[:PROTO], e.g. 7000 or 7000:udp"#
        );
    }

    #[test]
    fn resolves_literals_by_family() {
        assert_eq!(resolve("127.0.0.1", false, false).unwrap(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(resolve("127.0.0.1", false, true).is_err());
        assert_eq!(resolve("::1", false, true).unwrap(), "::1".parse::<IpAddr>().unwrap());
        assert!(resolve("no-such-host.invalid", false, false).is_err());
    }

    #[test]
    fn udp_knock_reaches_a_local_socket() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        hit(rx.local_addr().unwrap(), Proto::Udp).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(rx.recv(&mut b).unwrap(), 1);
    }

    #[test]
    fn tcp_knock_sends_a_syn() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        hit(l.local_addr().unwrap(), Proto::Tcp).unwrap();
        // The SYN reached the listener: the kernel completes the handshake into the
        // backlog even though the client abandoned it.
        l.set_nonblocking(false).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(s);
    }
}
