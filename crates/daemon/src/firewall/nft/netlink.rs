//! The I/O half of the nftables driver: one `NETLINK_NETFILTER` socket, atomic
//! batches with every message ACKed, and set-element dumps.
//!
//! A batch is `NFNL_MSG_BATCH_BEGIN, <requests>, NFNL_MSG_BATCH_END` in a single
//! `sendmsg`; the kernel applies all of it or none of it. Every request carries
//! `NLM_F_ACK`, and a batch succeeds only when each request got a zero ACK and
//! nothing reported an error (a failed commit is reported against the BEGIN
//! message's sequence number, so that one is watched too).

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NlaBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{NfTablesMessage, SetElementList, SetElementMessage};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::ruleset::{Request, TABLE};
use crate::firewall::FirewallError;

/// `NFNL_SUBSYS_NFTABLES`: the batch BEGIN/END messages name the subsystem in `res_id`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// `sizeof(struct nlmsghdr)` and `sizeof(struct nfgenmsg)`.
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM`: the message type of dumped elements.
const NEWSETELEM_TYPE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 12;

/// How long to wait for the kernel to answer. Batches are processed synchronously
/// inside `sendmsg`, so this only matters if something is badly wrong.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer: dump replies are at most 32 KiB per datagram.
const RX_BUF: usize = 128 * 1024;

/// Socket buffer bytes to budget per ACK we expect (an ACK's skb truesize is well
/// under 1 KiB; the rest is headroom).
const RCVBUF_PER_ACK: usize = 2048;

/// A dump is retried this often when the ruleset changed under it (`NLM_F_DUMP_INTR`).
const DUMP_ATTEMPTS: usize = 3;

/// A set element as dumped: raw key, `timeout` and `expires` in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawElem {
    pub key: Vec<u8>,
    pub timeout_ms: Option<u64>,
    pub expires_ms: Option<u64>,
}

fn kernel(op: &'static str, source: io::Error) -> FirewallError {
    FirewallError::Kernel { op, source }
}

/// A `NETLINK_NETFILTER` socket talking nf_tables.
pub(crate) struct Netlink {
    sock: Socket,
    kernel_addr: SocketAddr,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    sndbuf: usize,
    rcvbuf: usize,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Netlink {
    /// Open and bind the socket.
    pub(crate) fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        // Error ACKs then carry only the failed message's header (we need its
        // sequence number and the errno), not a copy of a possibly large request.
        sock.set_cap_ack(true)?;
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::from(libc_timeval(RECV_TIMEOUT)))
            .map_err(io::Error::from)?;
        let sndbuf = getsockopt(&sock, sockopt::SndBuf).map_err(io::Error::from)?;
        let rcvbuf = getsockopt(&sock, sockopt::RcvBuf).map_err(io::Error::from)?;
        // Start from a per-process value so replies to an earlier socket of this
        // process can never be mistaken for ours.
        let seq = std::process::id().wrapping_mul(0x9e37_79b9);
        Ok(Netlink {
            sock,
            kernel_addr: SocketAddr::new(0, 0),
            seq,
            rx: Vec::with_capacity(RX_BUF),
            tx: Vec::new(),
            sndbuf,
            rcvbuf,
        })
    }

    /// The socket's netlink port: nf_tables notifications of our changes carry it.
    pub(crate) fn portid(&self) -> io::Result<u32> {
        let mut addr = SocketAddr::new(0, 0);
        self.sock.get_address(&mut addr)?;
        Ok(addr.port_number())
    }

    /// Reserve `n` consecutive sequence numbers; returns the first.
    fn next_seq(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n);
        first
    }

    /// Append one message to `self.tx`.
    fn push(
        &mut self,
        family: NetfilterProtoFamily,
        res_id: u16,
        inner: NetfilterMessageInner,
        seq: u32,
        flags: u16,
    ) {
        let mut msg =
            NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(family, 0, res_id), inner));
        msg.header.flags = flags;
        msg.header.sequence_number = seq;
        msg.finalize();
        let start = self.tx.len();
        self.tx.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut self.tx[start..]);
        // Netlink messages are 4-byte aligned within a datagram.
        self.tx.resize(self.tx.len().next_multiple_of(4), 0);
    }

    /// Make room in the socket buffers for a batch of `len` bytes with `acks` ACKs.
    /// Growing past `wmem_max`/`rmem_max` needs CAP_NET_ADMIN, which we have if we
    /// can change nftables at all; if it fails, `send` reports EMSGSIZE instead.
    fn size_buffers(&mut self, len: usize, acks: usize) {
        if len + 4096 > self.sndbuf {
            let want = len + 64 * 1024;
            if setsockopt(&self.sock, sockopt::SndBufForce, &want).is_ok() {
                self.sndbuf = getsockopt(&self.sock, sockopt::SndBuf).unwrap_or(want);
            }
        }
        let want = acks * RCVBUF_PER_ACK + 64 * 1024;
        if want > self.rcvbuf && setsockopt(&self.sock, sockopt::RcvBufForce, &want).is_ok() {
            self.rcvbuf = getsockopt(&self.sock, sockopt::RcvBuf).unwrap_or(want);
        }
    }

    /// Receive one datagram into `self.rx`. `Ok(false)`: nothing there (non-blocking)
    /// or the receive timeout passed (blocking).
    fn recv(&mut self, nonblock: bool) -> io::Result<bool> {
        self.rx.clear();
        let flags = libc::MSG_TRUNC | if nonblock { libc::MSG_DONTWAIT } else { 0 };
        match self.sock.recv(&mut self.rx, flags) {
            Ok(n) if n > self.rx.capacity() => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink reply of {n} bytes truncated"),
            )),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The netlink messages in `self.rx`, parsed by hand: the crate's own parser
    /// formats the whole buffer into an error-context string for every list
    /// element, which makes a dump of a few thousand elements take seconds.
    fn replies(&self) -> Result<Vec<Reply<'_>>, String> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + NLMSG_HDRLEN <= self.rx.len() {
            let rest = &self.rx[off..];
            let hdr = NetlinkBuffer::new_checked(rest).map_err(|e| e.to_string())?;
            let len = hdr.length() as usize;
            let payload = rest.get(NLMSG_HDRLEN..len).ok_or("netlink message overruns datagram")?;
            let seq = hdr.sequence_number();
            let flags = hdr.flags();
            out.push(match hdr.message_type() {
                NLMSG_ERROR => {
                    let code = payload.get(..4).ok_or("short NLMSG_ERROR")?;
                    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                    Reply::Status { seq, errno: -code }
                }
                NLMSG_DONE => Reply::Done { seq, flags },
                ty => Reply::Data { seq, flags, ty, payload },
            });
            off += len.next_multiple_of(4).max(NLMSG_HDRLEN);
        }
        Ok(out)
    }

    /// Send `reqs` as one atomic batch and check that every message was ACKed.
    /// On failure the error names the first refused step and carries its errno.
    pub(crate) fn batch(&mut self, op: &'static str, reqs: &[Request]) -> Result<(), FirewallError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(reqs.len())
            .map_err(|_| FirewallError::Protocol(format!("{op}: batch too large")))?;
        let begin = self.next_seq(n + 2);
        self.tx.clear();
        let batch_hdr = |m: ControlMessage| NetfilterMessageInner::None(m);
        self.push(
            NetfilterProtoFamily::Unspec,
            NFNL_SUBSYS_NFTABLES,
            batch_hdr(ControlMessage::BatchBegin),
            begin,
            NLM_F_REQUEST,
        );
        for (i, r) in (1u32..).zip(reqs) {
            let flags = NLM_F_REQUEST | NLM_F_ACK | r.flags;
            self.push(NetfilterProtoFamily::Inet, 0, r.msg.clone().into(), begin.wrapping_add(i), flags);
        }
        self.push(
            NetfilterProtoFamily::Unspec,
            NFNL_SUBSYS_NFTABLES,
            batch_hdr(ControlMessage::BatchEnd),
            begin.wrapping_add(n + 1),
            NLM_F_REQUEST,
        );

        self.size_buffers(self.tx.len(), reqs.len());
        self.sock.send_to(&self.tx, &self.kernel_addr, 0).map_err(|e| kernel(op, e))?;

        let mut acks = Acks::new(begin, reqs.len());
        // Wait until every request is answered or something failed...
        while acks.pending > 0 && acks.failure.is_none() {
            if !self.recv(false).map_err(|e| kernel(op, e))? {
                return Err(FirewallError::Protocol(format!(
                    "{op}: nf_tables did not answer {} of {} requests within {RECV_TIMEOUT:?}",
                    acks.pending,
                    reqs.len()
                )));
            }
            acks.note(self.replies().map_err(|e| FirewallError::Protocol(format!("{op}: {e}")))?);
        }
        // ...then collect whatever else the kernel queued for this batch: it answers
        // the whole batch before `sendmsg` returns, so this never waits.
        while self.recv(true).map_err(|e| kernel(op, e))? {
            acks.note(self.replies().map_err(|e| FirewallError::Protocol(format!("{op}: {e}")))?);
        }
        match acks.failure {
            Some((Some(i), errno)) => Err(kernel(reqs[i].what, io::Error::from_raw_os_error(errno))),
            Some((None, errno)) => Err(kernel(op, io::Error::from_raw_os_error(errno))),
            None if acks.pending > 0 => Err(FirewallError::Protocol(format!(
                "{op}: {} of {} requests were never acknowledged",
                acks.pending,
                reqs.len()
            ))),
            None => Ok(()),
        }
    }

    /// Dump the elements of set `set` in our table. `Ok(None)` if the table or the
    /// set does not exist.
    pub(crate) fn dump_set(
        &mut self,
        op: &'static str,
        set: &str,
    ) -> Result<Option<Vec<RawElem>>, FirewallError> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.dump_once(op, set)? {
                Dump::Done(elems) => return Ok(Some(elems)),
                Dump::Missing => return Ok(None),
                Dump::Interrupted => continue,
            }
        }
        Err(FirewallError::Protocol(format!(
            "{op}: listing set {set} was interrupted {DUMP_ATTEMPTS} times by concurrent ruleset changes"
        )))
    }

    fn dump_once(&mut self, op: &'static str, set: &str) -> Result<Dump, FirewallError> {
        let seq = self.next_seq(1);
        self.tx.clear();
        let req = NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: vec![SetElementList::Table(TABLE.into()), SetElementList::Set(set.into())],
        });
        self.push(NetfilterProtoFamily::Inet, 0, req.into(), seq, NLM_F_REQUEST | NLM_F_DUMP);
        self.sock.send_to(&self.tx, &self.kernel_addr, 0).map_err(|e| kernel(op, e))?;

        let mut elems = Vec::new();
        let mut interrupted = false;
        loop {
            if !self.recv(false).map_err(|e| kernel(op, e))? {
                return Err(FirewallError::Protocol(format!(
                    "{op}: nf_tables did not finish listing set {set} within {RECV_TIMEOUT:?}"
                )));
            }
            let replies = self.replies().map_err(|e| FirewallError::Protocol(format!("{op}: {e}")))?;
            for r in replies {
                match r {
                    Reply::Data { seq: s, flags, ty, payload } if s == seq => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        if ty == NEWSETELEM_TYPE {
                            collect_elems(payload, &mut elems)
                                .map_err(|e| FirewallError::Protocol(format!("{op}: set {set}: {e}")))?;
                        }
                    }
                    Reply::Done { seq: s, flags } if s == seq => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        return Ok(if interrupted { Dump::Interrupted } else { Dump::Done(elems) });
                    }
                    Reply::Status { seq: s, errno } if s == seq && errno == libc::ENOENT => {
                        return Ok(Dump::Missing)
                    }
                    Reply::Status { seq: s, errno } if s == seq && errno != 0 => {
                        return Err(kernel(op, io::Error::from_raw_os_error(errno)));
                    }
                    _ => {} // stale replies to earlier requests
                }
            }
        }
    }
}

/// One netlink message of a reply datagram.
enum Reply<'a> {
    /// `NLMSG_ERROR`: an ACK (`errno` 0) or an error.
    Status { seq: u32, errno: i32 },
    /// `NLMSG_DONE`: end of a dump.
    Done { seq: u32, flags: u16 },
    /// Anything else: nfgenmsg + attributes.
    Data { seq: u32, flags: u16, ty: u16, payload: &'a [u8] },
}

/// ACK bookkeeping for one batch of `n` requests whose BEGIN had sequence `begin`.
struct Acks {
    begin: u32,
    answered: Vec<bool>,
    pending: usize,
    /// The failure to report: (index of the request, or `None` for the batch as a
    /// whole, errno). The earliest failing request wins.
    failure: Option<(Option<usize>, i32)>,
}

impl Acks {
    fn new(begin: u32, n: usize) -> Self {
        Acks { begin, answered: vec![false; n], pending: n, failure: None }
    }

    fn note(&mut self, replies: Vec<Reply<'_>>) {
        let n = self.answered.len();
        for r in replies {
            let Reply::Status { seq, errno } = r else {
                continue;
            };
            // Sequence numbers: begin = BEGIN, begin+1..=begin+n = requests, then END.
            let idx = seq.wrapping_sub(self.begin) as usize;
            if idx > n + 1 {
                continue; // a stale reply to an earlier request
            }
            let which = (1..=n).contains(&idx).then(|| idx - 1);
            if let Some(i) = which {
                if !self.answered[i] {
                    self.answered[i] = true;
                    self.pending -= 1;
                }
            }
            if errno != 0 {
                let earlier = match (self.failure, which) {
                    (None, _) | (Some((None, _)), Some(_)) => true,
                    (Some((Some(prev), _)), Some(i)) => i < prev,
                    (Some(_), None) => false,
                };
                if earlier {
                    self.failure = Some((which, errno));
                }
            }
        }
    }
}

enum Dump {
    Done(Vec<RawElem>),
    Missing,
    Interrupted,
}

/// Attribute numbers from `include/uapi/linux/netfilter/nf_tables.h`.
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

fn nlas(buf: &[u8]) -> impl Iterator<Item = Result<NlaBuffer<&[u8]>, String>> {
    NlasIterator::new(buf).map(|r| r.map_err(|e| e.to_string()))
}

fn be_u64(v: &[u8]) -> Result<u64, String> {
    let b: [u8; 8] = v.try_into().map_err(|_| format!("expected 8 bytes, got {}", v.len()))?;
    Ok(u64::from_be_bytes(b))
}

/// The elements of one `NEWSETELEM` dump message (nfgenmsg + attributes).
fn collect_elems(payload: &[u8], out: &mut Vec<RawElem>) -> Result<(), String> {
    let attrs = payload.get(NFGENMSG_LEN..).ok_or("short nf_tables message")?;
    for list in nlas(attrs) {
        let list = list?;
        if list.kind() != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in nlas(list.value()) {
            let elem = elem?;
            if elem.kind() != NFTA_LIST_ELEM {
                continue;
            }
            let mut raw = RawElem { key: Vec::new(), timeout_ms: None, expires_ms: None };
            for a in nlas(elem.value()) {
                let a = a?;
                match a.kind() {
                    NFTA_SET_ELEM_KEY => {
                        for d in nlas(a.value()) {
                            let d = d?;
                            if d.kind() == NFTA_DATA_VALUE {
                                raw.key = d.value().to_vec();
                            }
                        }
                    }
                    NFTA_SET_ELEM_TIMEOUT => raw.timeout_ms = Some(be_u64(a.value())?),
                    NFTA_SET_ELEM_EXPIRATION => raw.expires_ms = Some(be_u64(a.value())?),
                    _ => {}
                }
            }
            if !raw.key.is_empty() {
                out.push(raw);
            }
        }
    }
    Ok(())
}

fn libc_timeval(d: Duration) -> libc::timeval {
    libc::timeval { tv_sec: d.as_secs() as libc::time_t, tv_usec: d.subsec_micros() as libc::suseconds_t }
}
