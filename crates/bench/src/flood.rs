//! The attacker: a raw-socket packet flooder (IPv4 `IPPROTO_RAW`, which implies
//! `IP_HDRINCL`, and IPv6 `IPPROTO_RAW`, header included), with spoofed sources from the
//! benchmark ranges only, a token-bucket rate limit and a hard stop.
//!
//! # Safety
//! [`run`] must be called on a thread that has entered the attacker's network
//! namespace ([`portcullis_daemon::lab::enter`]); [`spawn`] does that. Every flood
//! stops by itself after `max_packets` packets or `max_time`, whichever comes first,
//! or when the caller's stop flag is set. Spoofed sources are checked to lie in
//! 198.18.0.0/15 (RFC 2544) or 2001:db8::/32 (RFC 3849) before anything is sent.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::stats::Rng;
use portcullis_daemon::lab::packet;

/// Which destination port each packet goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Always this port.
    Fixed(u16),
    /// Uniformly random in 1024..=65535, skipping `avoid` (the knock/SPA ports).
    Random,
    /// These ports in turn from each source: a knock sequence completed by every
    /// spoofed source (the next source starts once the previous one is through).
    Sequence(&'static [u16]),
}

/// What each packet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A TCP SYN.
    Syn,
    /// A UDP datagram of this many random bytes.
    UdpJunk(usize),
    /// A UDP datagram of this many bytes starting with `prefix`, the rest random
    /// (e.g. the native SPA magic and version: junk that looks like the format).
    UdpPrefixed(&'static [u8], usize),
    /// UDP datagrams with these payloads, used in turn (pre-built packets).
    UdpPayloads(Arc<Vec<Vec<u8>>>),
    /// Native SPA junk for the server public key given as bytes: a fresh random
    /// ephemeral key per packet with its valid server tag, then a random body. Each
    /// passes `precheck`, is new to the daemon's ephemeral-key set and costs X25519.
    NativeFreshTag([u8; 32]),
}

/// The spoofed source addresses, used in order and cycled: `count` distinct ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// `base`, `base + 1`, ... (`count` addresses).
    V4 {
        /// First address.
        base: Ipv4Addr,
        /// How many.
        count: u32,
    },
    /// `base + i` in the low 64 bits (`count` addresses).
    V6 {
        /// First address.
        base: Ipv6Addr,
        /// How many.
        count: u64,
    },
}

impl Sources {
    /// 198.18.0.0/17: 32,768 spoofed IPv4 sources (RFC 2544 benchmark range).
    pub const BENCH_V4_17: Sources = Sources::V4 { base: Ipv4Addr::new(198, 18, 0, 0), count: 1 << 15 };

    /// Check that every source lies in the benchmark / documentation ranges.
    fn check(&self) -> anyhow::Result<()> {
        match *self {
            Sources::V4 { base, count } => {
                let first = u32::from(base);
                let last = first.checked_add(count.saturating_sub(1)).context("source range overflows")?;
                let lo = u32::from(Ipv4Addr::new(198, 18, 0, 0));
                let hi = u32::from(Ipv4Addr::new(198, 19, 255, 255));
                if count == 0 || first < lo || last > hi {
                    bail!("spoofed IPv4 sources must lie in 198.18.0.0/15");
                }
            }
            Sources::V6 { base, count } => {
                let b = u128::from(base);
                let doc = u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED));
                let low = (b & u128::from(u64::MAX)) as u64;
                if count == 0 || b >> 96 != doc >> 96 || low.checked_add(count - 1).is_none() {
                    bail!("spoofed IPv6 sources must lie in 2001:db8::/32");
                }
            }
        }
        Ok(())
    }
}

/// One flood.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The server address (same family as `sources`).
    pub dst: IpAddr,
    /// SYN or UDP junk.
    pub kind: Kind,
    /// Destination port(s).
    pub ports: Ports,
    /// Ports never hit by [`Ports::Random`] (so a random-port flood cannot knock).
    pub avoid: Vec<u16>,
    /// Spoofed sources.
    pub sources: Sources,
    /// Packets per second, or `None` for as fast as one core can send.
    pub rate: Option<u64>,
    /// Hard stop after this many packets.
    pub max_packets: u64,
    /// Hard stop after this long.
    pub max_time: Duration,
}

/// What a flood achieved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Send errors (ENOBUFS and the like).
    pub errors: u64,
    /// From first to last packet.
    pub elapsed: Duration,
    /// When the flood started and ended.
    pub started: Option<Instant>,
    /// When the flood ended.
    pub ended: Option<Instant>,
}

impl Outcome {
    /// Packets per second achieved.
    pub fn pps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.sent as f64 / s
        } else {
            0.0
        }
    }
}

/// Token bucket: `rate` tokens per second, at most `cap` saved up.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket holding 1 ms worth of tokens (at least one).
    pub fn new(rate: u64, now: Instant) -> Bucket {
        let cap = (rate as f64 / 1000.0).max(1.0);
        Bucket { rate: rate as f64, cap, tokens: cap, last: now }
    }

    /// Take a token if there is one; otherwise return how long until there will be.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Run a flood on the calling thread (which must be in the attacker's namespace).
pub fn run(spec: &Spec, stop: &AtomicBool) -> anyhow::Result<Outcome> {
    spec.sources.check()?;
    let (domain, to) = match (spec.dst, spec.sources) {
        (IpAddr::V4(d), Sources::V4 { .. }) => (Domain::IPV4, SocketAddr::from((d, 0))),
        (IpAddr::V6(d), Sources::V6 { .. }) => (Domain::IPV6, SocketAddr::from((d, 0))),
        _ => bail!("destination and sources must be the same family"),
    };
    let sock = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
        .context("raw socket (needs CAP_NET_RAW)")?;
    let _ = sock.set_send_buffer_size(4 << 20);
    let to = SockAddr::from(to);
    let mut rng = Rng::from_time();
    let mut junk = Vec::new();
    let mut udp = Vec::with_capacity(1600);
    let mut syn4 = [0u8; 40];
    let mut syn6 = [0u8; 60];
    let mut bucket = spec.rate.map(|r| Bucket::new(r.max(1), Instant::now()));
    let native_pub = match &spec.kind {
        Kind::NativeFreshTag(b) => Some(
            portcullis_proto::spa::native::ServerPublicKey::from_bytes(*b)
                .map_err(|e| anyhow::anyhow!("server public key: {e}"))?,
        ),
        _ => None,
    };
    let mut out = Outcome::default();
    let start = Instant::now();
    out.started = Some(start);
    let mut i: u64 = 0;
    while i < spec.max_packets {
        if i % 256 == 0 && (stop.load(Ordering::Relaxed) || start.elapsed() >= spec.max_time) {
            break;
        }
        if let Some(b) = bucket.as_mut() {
            if let Err(wait) = b.take(Instant::now()) {
                if stop.load(Ordering::Relaxed) || start.elapsed() >= spec.max_time {
                    break;
                }
                std::thread::sleep(wait.max(Duration::from_micros(20)));
                continue;
            }
        }
        let r = rng.next_u64();
        // Which source sends this packet (sources take turns, or finish a sequence each).
        let n = match spec.ports {
            Ports::Sequence(seq) => i / seq.len().max(1) as u64,
            _ => i,
        };
        let port = match spec.ports {
            Ports::Fixed(p) => p,
            Ports::Sequence(seq) => seq.get((i % seq.len().max(1) as u64) as usize).copied().unwrap_or(1),
            Ports::Random => loop {
                let p = 1024 + (rng.next_u64() % (65536 - 1024)) as u16;
                if !spec.avoid.contains(&p) {
                    break p;
                }
            },
        };
        let sport = 1024 + (r as u16 % 60000);
        let seq = (r >> 32) as u32;
        let pkt: &[u8] = match (spec.sources, spec.dst, &spec.kind) {
            (Sources::V4 { base, count }, IpAddr::V4(dst), kind) => {
                let src = Ipv4Addr::from(u32::from(base) + (n % u64::from(count)) as u32);
                match kind {
                    Kind::Syn => {
                        packet::tcp_syn_v4(&mut syn4, src, dst, sport, port, seq);
                        &syn4
                    }
                    Kind::UdpJunk(len) => {
                        junk.resize(*len, 0);
                        rng.fill(&mut junk);
                        packet::udp_v4(&mut udp, src, dst, sport, port, &junk);
                        &udp
                    }
                    Kind::UdpPrefixed(prefix, len) => {
                        junk.resize((*len).max(prefix.len()), 0);
                        rng.fill(&mut junk);
                        junk[..prefix.len()].copy_from_slice(prefix);
                        packet::udp_v4(&mut udp, src, dst, sport, port, &junk);
                        &udp
                    }
                    Kind::NativeFreshTag(_) => {
                        let Some(server) = native_pub.as_ref() else {
                            bail!("NativeFreshTag flood without a server key");
                        };
                        junk.resize(portcullis_proto::spa::native::PACKET_LEN, 0);
                        rng.fill(&mut junk);
                        let mut eph = [0u8; 32];
                        eph.copy_from_slice(&junk[8..40]);
                        let header = portcullis_proto::spa::native::header_for(server, &eph);
                        junk[..header.len()].copy_from_slice(&header);
                        packet::udp_v4(&mut udp, src, dst, sport, port, &junk);
                        &udp
                    }
                    Kind::UdpPayloads(list) => {
                        let Some(p) = list.get((i % list.len().max(1) as u64) as usize) else {
                            bail!("UdpPayloads flood without payloads");
                        };
                        packet::udp_v4(&mut udp, src, dst, sport, port, p);
                        &udp
                    }
                }
            }
            (Sources::V6 { base, count }, IpAddr::V6(dst), Kind::Syn) => {
                let src = Ipv6Addr::from(u128::from(base) + u128::from(n % count));
                packet::tcp_syn_v6(&mut syn6, src, dst, sport, port, seq);
                &syn6
            }
            _ => bail!("unsupported flood: IPv6 floods are TCP SYN only"),
        };
        match sock.send_to(pkt, &to) {
            Ok(_) => out.sent += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                out.errors += 1;
                // ENOBUFS: the device queue is full; let it drain.
                std::thread::yield_now();
            }
        }
        i += 1;
    }
    let end = Instant::now();
    out.ended = Some(end);
    out.elapsed = end - start;
    Ok(out)
}

/// Run a flood on a new thread inside the namespace at `ns` (e.g. `/run/netns/NAME`).
pub fn spawn(ns: PathBuf, spec: Spec, stop: Arc<AtomicBool>) -> JoinHandle<anyhow::Result<Outcome>> {
    std::thread::spawn(move || {
        portcullis_daemon::lab::enter(&ns)?;
        // The attacker gets the last CPU, the daemons the first (see `DAEMON_CPU` in env/process.rs).
        crate::env::pin_to_last_cpu();
        run(&spec, &stop)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate_and_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(20_000, t0);
        // Starts with 1 ms worth (20 tokens), then nothing until time passes.
        assert!((0..20).all(|_| b.take(t0).is_ok()));
        let wait = b.take(t0).unwrap_err();
        assert!(wait <= Duration::from_micros(51) && wait >= Duration::from_micros(49), "{wait:?}");
        // After 10 ms the bucket is full again but never holds more than 1 ms worth.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!((0..100).filter(|_| b.take(t1).is_ok()).count(), 20);
    }

    #[test]
    fn refuses_sources_outside_benchmark_ranges() {
        assert!(Sources::BENCH_V4_17.check().is_ok());
        assert!(Sources::V4 { base: Ipv4Addr::new(198, 19, 255, 0), count: 256 }.check().is_ok());
        assert!(Sources::V4 { base: Ipv4Addr::new(198, 19, 255, 0), count: 257 }.check().is_err());
        assert!(Sources::V4 { base: Ipv4Addr::new(10, 0, 0, 0), count: 1 }.check().is_err());
        let v6 = |s: &str, count| Sources::V6 { base: s.parse().unwrap(), count };
        assert!(v6("2001:db8:ff00::", 1_000_000).check().is_ok());
        assert!(v6("2001:db9::", 1).check().is_err());
    }
}
