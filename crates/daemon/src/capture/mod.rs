//! Knock capture: an `AF_PACKET` socket with an in-kernel classic BPF filter, and the
//! view of which interfaces and local addresses count.
//!
//! The socket is deliberately *not* bound to an interface: an unbound packet socket
//! keeps working when interfaces go down, come back, or appear after start (knockd and
//! fwknopd exit in those cases). Interface selection happens in user space on the
//! `ifindex` the kernel reports with each packet, against a [`LocalView`] that the
//! [`addrs`] monitor refreshes on every rtnetlink link/address event.

pub mod addrs;

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{recvfrom, setsockopt, sockopt, LinkAddr};
use portcullis_proto::bpf::Insn;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

pub use addrs::{LocalView, Monitor};

/// Kernel receive buffer we ask for: room for ~50k minimal packets, so a burst does
/// not drop the legitimate knock hidden in it while we are busy.
const RCVBUF: usize = 32 << 20;

/// A cooked (`SOCK_DGRAM`) packet socket: reads start at the network header whatever
/// the link type (Ethernet, WireGuard, PPP, loopback).
#[derive(Debug)]
pub struct PacketSocket {
    sock: Socket,
}

/// One received packet's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// Interface it arrived on.
    pub ifindex: u32,
}

impl PacketSocket {
    /// Open a socket receiving on every interface, filtered by `prog`, with reads that
    /// time out after `timeout` so the caller can do housekeeping.
    pub fn open(prog: &[Insn], timeout: Duration) -> io::Result<PacketSocket> {
        let eth_p_all = i32::from((libc::ETH_P_ALL as u16).to_be());
        let sock = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(eth_p_all)))?;
        let filter: Vec<SockFilter> = prog.iter().map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k)).collect();
        sock.attach_filter(&filter)?;
        // RcvBufForce ignores rmem_max (we are root or hold CAP_NET_ADMIN); fall back
        // to the capped size if that is refused.
        if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
            sock.set_recv_buffer_size(RCVBUF)?;
        }
        // Packets queued between socket() and attach_filter() were not filtered: drop them.
        sock.set_nonblocking(true)?;
        let mut scratch = [0u8; 64];
        while recvfrom::<LinkAddr>(sock.as_raw_fd(), &mut scratch).is_ok() {}
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(PacketSocket { sock })
    }

    /// Receive one packet. `Err` with `WouldBlock`/`TimedOut` means the timeout passed.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (len, addr) = recvfrom::<LinkAddr>(self.sock.as_raw_fd(), buf).map_err(io::Error::from)?;
        let ifindex = addr.map(|a| a.ifindex()).unwrap_or(0);
        Ok(RecvMeta { len: len.min(buf.len()), ifindex: u32::try_from(ifindex).unwrap_or(0) })
    }
}

/// Whether an error from [`PacketSocket::recv`] just means "nothing arrived in time".
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}
