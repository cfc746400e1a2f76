//! Knock capture: an `AF_PACKET` socket with an in-kernel classic BPF filter, and the
//! view of which interfaces and local addresses count.
//!
//! The socket is deliberately *not* bound to an interface: an unbound packet socket
//! keeps working when interfaces go down, come back, or appear after start (knockd and
//! fwknopd exit in those cases). Interface selection happens in user space on the
//! `ifindex` the kernel reports with each packet, against a [`LocalView`] that the
//! [`addrs`] monitor refreshes on every rtnetlink link/address event.

pub mod addrs;
mod drops;
pub mod udp_server;

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use std::io::IoSliceMut;

use nix::sys::socket::{recvfrom, recvmmsg, setsockopt, sockopt, LinkAddr, MsgFlags, MultiHeaders};
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
}

impl PacketSocket {
    /// Packets dropped in the kernel (receive buffer full) since the last call.
    pub fn take_drops(&self) -> io::Result<u64> {
        drops::take_drops(&self.sock)
    }

    /// Replace the filter (a reload with other knock ports). The kernel swaps it
    /// atomically: every packet meets either the old or the new program.
    pub fn set_filter(&self, prog: &[Insn]) -> io::Result<()> {
        let filter: Vec<SockFilter> = prog.iter().map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k)).collect();
        self.sock.attach_filter(&filter)
    }
}

/// Buffers for receiving up to `n` packets with one `recvmmsg` call: under a flood
/// this divides the per-packet syscall cost (a quarter of the daemon's CPU when it
/// used one `recvfrom` per packet) and lets the caller read the clock once per batch.
pub struct Batch {
    snaplen: usize,
    bufs: Vec<u8>,
    headers: MultiHeaders<LinkAddr>,
    metas: Vec<RecvMeta>,
}

impl Batch {
    /// Room for `n` packets of at most `snaplen` bytes each.
    pub fn new(n: usize, snaplen: usize) -> Batch {
        Batch {
            snaplen,
            bufs: vec![0u8; n * snaplen],
            headers: MultiHeaders::preallocate(n, None),
            metas: Vec::with_capacity(n),
        }
    }

    /// The packets of the last [`PacketSocket::recv_batch`], with their metadata.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], RecvMeta)> + '_ {
        self.metas.iter().enumerate().map(|(i, m)| {
            let start = i * self.snaplen;
            (&self.bufs[start..start + m.len], *m)
        })
    }
}

impl PacketSocket {
    /// Wait for at least one packet (or the read timeout), then take every packet
    /// already queued, up to the batch size, without waiting further. With `wait`
    /// false, return at once (a timeout error) if nothing is queued.
    pub fn recv_batch(&self, batch: &mut Batch, wait: bool) -> io::Result<usize> {
        batch.metas.clear();
        let snaplen = batch.snaplen;
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            batch.bufs.chunks_mut(snaplen).map(|c| [IoSliceMut::new(c)]).collect();
        let results = recvmmsg(
            self.sock.as_raw_fd(),
            &mut batch.headers,
            iovs.iter_mut(),
            if wait { MsgFlags::MSG_WAITFORONE } else { MsgFlags::MSG_DONTWAIT },
            None,
        )
        .map_err(io::Error::from)?;
        for r in results {
            let ifindex = r.address.map(|a: LinkAddr| a.ifindex()).unwrap_or(0);
            batch
                .metas
                .push(RecvMeta { len: r.bytes.min(snaplen), ifindex: u32::try_from(ifindex).unwrap_or(0) });
        }
        Ok(batch.metas.len())
    }
}

/// Wait up to `timeout` until `a` or `b` has packets queued; which of them have.
pub fn wait_either(a: &PacketSocket, b: &PacketSocket, timeout: Duration) -> io::Result<(bool, bool)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds =
        [PollFd::new(a.sock.as_fd(), PollFlags::POLLIN), PollFd::new(b.sock.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok((false, false)),
        Err(e) => return Err(e.into()),
    }
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    Ok((ready(&fds[0]), ready(&fds[1])))
}

/// Whether an error from [`PacketSocket::recv_batch`] just means "nothing arrived in time".
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}
