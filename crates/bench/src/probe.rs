//! The client's side of a trial: send knocks or an SPA datagram from one source
//! address, then find out when the protected port starts answering.
//!
//! Everything here runs on a thread that has entered the client's namespace.
//!
//! # How "open" is timed
//! After the last knock (or the SPA datagram) leaves, a new non-blocking TCP connect
//! from the same source to the protected port is started every [`PROBE_EVERY`]; each
//! probe is one SYN (its own socket and source port). A SYN sent before the grant is
//! dropped and never answered (the kernel's first retransmission would come after 1 s,
//! and we close such sockets long before that), so the first probe whose handshake
//! completes is the first SYN sent after the door opened. The latency is that probe's
//! send time minus the last knock's send time: an upper bound, too high by at most
//! one probe interval. Waiting is `ppoll` on the outstanding probes with a timeout
//! up to the next send, so an answer is seen as soon as it arrives. Never a fixed sleep.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Time between probe SYNs in latency trials.
pub const PROBE_EVERY: Duration = Duration::from_micros(100);
/// Time between probe SYNs of legitimate attempts during floods (ms-scale figures;
/// probing less often adds less self-inflicted load to a busy server).
pub const FLOOD_PROBE_EVERY: Duration = Duration::from_micros(200);
/// Probes kept waiting for an answer (older ones were dropped: 12.8 ms at 100 µs).
/// Also bounds the open file descriptors of a trial.
const OUTSTANDING: usize = 128;

fn tcp_socket(src: IpAddr) -> io::Result<Socket> {
    let domain = if src.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    Ok(s)
}

/// Start a non-blocking connect: one SYN leaves during the call.
fn start_connect(s: &Socket, to: SocketAddr) -> io::Result<()> {
    match s.connect(&SockAddr::from(to)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Knock like `knock(1)`: for each port a non-blocking connect (one SYN) and an
/// immediate close. Returns when the last SYN was handed to the kernel.
pub fn knock_tcp(src: IpAddr, dst: IpAddr, ports: &[u16]) -> io::Result<Instant> {
    let mut t = Instant::now();
    for &p in ports {
        let s = tcp_socket(src)?;
        start_connect(&s, SocketAddr::new(dst, p))?;
        t = Instant::now();
    }
    Ok(t)
}

/// Send one UDP datagram from `src`. Returns when it was handed to the kernel.
pub fn send_udp(src: IpAddr, dst: SocketAddr, payload: &[u8]) -> io::Result<Instant> {
    let domain = if src.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    s.send_to(payload, &SockAddr::from(dst))?;
    Ok(Instant::now())
}

/// Probe `to` from `src` every `every` until a handshake completes or `limit` after
/// `t0` passes. Returns the first answered probe's send time minus `t0`.
pub fn await_open(
    src: IpAddr,
    to: SocketAddr,
    t0: Instant,
    limit: Duration,
    every: Duration,
) -> io::Result<Option<Duration>> {
    let deadline = t0 + limit;
    let mut ring: VecDeque<(Socket, Instant)> = VecDeque::with_capacity(OUTSTANDING + 1);
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now >= next_send {
            let s = tcp_socket(src)?;
            start_connect(&s, to)?;
            let sent = Instant::now();
            ring.push_back((s, sent));
            if ring.len() > OUTSTANDING {
                ring.pop_front();
            }
            next_send = sent + every;
        }
        let wait = next_send.min(deadline).saturating_duration_since(Instant::now());
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> =
                ring.iter().map(|(s, _)| PollFd::new(s.as_fd(), PollFlags::POLLOUT)).collect();
            match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                Ok(0) => continue,
                Ok(_) => fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut first: Option<Instant> = None;
        let mut failed = Vec::new();
        for (i, ((s, sent), r)) in ring.iter().zip(ready).enumerate() {
            if !r {
                continue;
            }
            match s.take_error()? {
                // Connected, or refused by the server's TCP (RST): either way the SYN
                // got through the firewall.
                None => first = Some(first.map_or(*sent, |f: Instant| f.min(*sent))),
                Some(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    first = Some(first.map_or(*sent, |f: Instant| f.min(*sent)))
                }
                Some(_) => failed.push(i),
            }
        }
        if let Some(f) = first {
            return Ok(Some(f.saturating_duration_since(t0)));
        }
        for i in failed.into_iter().rev() {
            ring.remove(i);
        }
    }
}

/// Median time of `n` complete TCP handshakes from `src` to `to` (connection setup
/// cost through the firewall). Fails if any attempt is not answered within 1 s.
pub fn connect_times(src: IpAddr, to: SocketAddr, n: usize) -> io::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tcp_socket(src)?;
        let t = Instant::now();
        start_connect(&s, to)?;
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
        let n = ppoll(&mut fds, Some(TimeSpec::from_duration(Duration::from_secs(1))), None)?;
        let dt = t.elapsed();
        if n == 0 || s.take_error()?.is_some() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connection not answered"));
        }
        out.push(dt);
    }
    Ok(out)
}
