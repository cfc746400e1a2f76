//! fwknopd's `ENABLE_UDP_SERVER`: a bound UDP socket on the SPA port. It makes the
//! host silent on that port when the firewall lets SPA datagrams in (no ICMP port
//! unreachable: a socket is bound) and delivers the datagrams through the normal
//! socket path as well as capture. It never sends anything.
//!
//! One thread reads the socket and hands each datagram to the capture loop over a
//! bounded channel; when the channel is full (a flood) datagrams are dropped, never
//! queued without bound.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};

/// Datagrams waiting for the capture loop.
const QUEUE: usize = 1024;
/// Largest SPA datagram read (fwknop's maximum packet is 1500 bytes).
const MAX_DATAGRAM: usize = 1500;

/// One datagram read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaDatagram {
    /// Sender.
    pub src: IpAddr,
    /// The local address it was sent to (`IP_PKTINFO`), when the kernel said.
    pub dst: Option<IpAddr>,
    /// The local port it was sent to.
    pub dport: u16,
    /// Payload (at most [`MAX_DATAGRAM`] bytes).
    pub payload: Vec<u8>,
}

/// The running socket and its reader thread.
#[derive(Debug)]
pub struct UdpServer {
    port: u16,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Bind `[::]:port` (dual stack, so IPv4 senders arrive too) and start reading.
    pub fn start(port: u16) -> io::Result<(UdpServer, Receiver<SpaDatagram>)> {
        let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
            .or_else(|_| UdpSocket::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        // Ask for each datagram's destination address (stanzas may match on it).
        let _ = setsockopt(&sock, sockopt::Ipv4PacketInfo, &true);
        let _ = setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true);
        let local = sock.local_addr()?;
        let (tx, rx) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("pc-udpserv".into()).spawn(move || {
            let mut buf = [0u8; MAX_DATAGRAM + 1];
            while !flag.load(Ordering::Relaxed) {
                match recv(&sock, &mut buf) {
                    // Longer than any SPA packet: truncated by the kernel, not ours.
                    Ok((n, _, _)) if n > MAX_DATAGRAM => {}
                    Ok((n, from, dst)) => {
                        let d = SpaDatagram {
                            src: portcullis_proto::addr::canonical(from),
                            dst: dst.map(portcullis_proto::addr::canonical),
                            dport: local.port(),
                            payload: buf[..n].to_vec(),
                        };
                        match tx.try_send(d) {
                            Ok(()) | Err(TrySendError::Full(_)) => {}
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(_) => {}
                }
            }
        })?;
        Ok((UdpServer { port, local, stop, thread: Some(thread) }, rx))
    }

    /// The port asked for.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it is bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// One datagram: (length, sender, local destination address).
fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, IpAddr, Option<IpAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(pi) => {
                dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr))));
            }
            ControlMessageOwned::Ipv6PacketInfo(pi) => {
                dst = Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)))
            }
            _ => {}
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    Ok((msg.bytes, from, dst))
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_and_never_answers() {
        let (srv, rx) = UdpServer::start(0).unwrap();
        let port = srv.local_addr().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        client.send_to(b"hello spa", ("127.0.0.1", port)).unwrap();
        let d = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(d.payload, b"hello spa");
        assert_eq!(d.src, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(d.dst, Some("127.0.0.1".parse::<IpAddr>().unwrap()), "destination from IP_PKTINFO");
        let mut buf = [0u8; 64];
        assert!(client.recv_from(&mut buf).is_err(), "the server sent something back");
    }
}
