//! ipset over netlink (`NFNL_SUBSYS_IPSET`), no `ipset` binary: each grant is one
//! netlink round trip, and the kernel expires entries on its own.
//!
//! Messages are `nlmsghdr + nfgenmsg + attributes`; every request carries
//! `IPSET_ATTR_PROTOCOL`. Without `NLM_F_EXCL` the kernel treats `ADD` of an existing
//! entry as a timeout refresh and `DEL` of a missing one as success (`IPSET_FLAG_EXIST`),
//! which is exactly the grant/revoke contract. Numbers are big-endian and flagged
//! `NLA_F_NET_BYTEORDER`; containers are flagged `NLA_F_NESTED` (the kernel checks both).
//! Constants are from `include/uapi/linux/netfilter/ipset/ip_set.h`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use portcullis_proto::{Proto, Service};

use crate::firewall::FirewallError;

const NFNL_SUBSYS_IPSET: u16 = 6;
/// Protocol 6 is understood by every kernel since 3.x (7 only adds create options).
const IPSET_PROTOCOL: u8 = 6;

const CMD_CREATE: u8 = 2;
const CMD_DESTROY: u8 = 3;
const CMD_SWAP: u8 = 6;
const CMD_LIST: u8 = 7;
const CMD_ADD: u8 = 9;
const CMD_DEL: u8 = 10;

const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_SETNAME2: u16 = 3;
const ATTR_REVISION: u16 = 4;
const ATTR_FAMILY: u16 = 5;
const ATTR_DATA: u16 = 7;
const ATTR_ADT: u16 = 8;
/// Required beside `ADT` (it numbers entries in error reports, for `ipset restore`).
const ATTR_LINENO: u16 = 9;

const ATTR_IP: u16 = 1;
const ATTR_CIDR: u16 = 3;
const ATTR_IPADDR_IPV4: u16 = 1;
const ATTR_IPADDR_IPV6: u16 = 2;
const ATTR_PORT: u16 = 4;
const ATTR_TIMEOUT: u16 = 6;
const ATTR_PROTO: u16 = 7;
const ATTR_MAXELEM: u16 = 19;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// The two set types we create, at revisions with timeouts that every kernel we
/// run on has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `hash:ip,port` revision 1: grants (source, proto:port).
    IpPort,
    /// `hash:ip` revision 1: sources forwarded to one NAT destination.
    Ip,
    /// `hash:net,port` revision 1: prefix grants (source prefix, proto:port).
    NetPort,
}

impl Kind {
    fn typename(self) -> &'static str {
        match self {
            Kind::IpPort => "hash:ip,port",
            Kind::Ip => "hash:ip",
            Kind::NetPort => "hash:net,port",
        }
    }
}
const REVISION: u8 = 1;

/// The kernel's largest element timeout (`IPSET_MAX_TIMEOUT`), seconds.
pub const MAX_TIMEOUT_S: u32 = (u32::MAX >> 1) / 1000;
/// Longest set name the kernel takes (`IPSET_MAXNAMELEN` - 1).
pub const MAX_NAME: usize = 31;

/// Entries per `ADD`/`DEL` message (the `ADT` attribute has a 16-bit length).
const ENTRIES_PER_MESSAGE: usize = 512;
/// Messages per datagram, so that the socket buffers never need raising.
const MESSAGES_PER_SEND: usize = 8;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;

const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Dump replies are at most 32 KiB per datagram; room to spare.
const RX_BUF: usize = 128 * 1024;

/// One entry: source address, service (none in a `hash:ip` set), and seconds to
/// set or (in a listing) left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Source address (a prefix's network address in a `hash:net,port` set).
    pub addr: IpAddr,
    /// Prefix length, in a `hash:net,port` set.
    pub cidr: Option<u8>,
    /// Destination protocol and port.
    pub service: Option<Service>,
    /// Seconds: to set on add, or left, as listed.
    pub timeout_s: u32,
}

/// A timeout the kernel accepts: at least 1 s (0 would mean "never expires").
pub fn timeout_s(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).clamp(1, MAX_TIMEOUT_S)
}

/// The kernel's words for ipset's private error numbers.
fn ipset_strerror(code: i32) -> Option<&'static str> {
    Some(match code {
        4097 => "kernel does not speak this ipset protocol",
        4098 => "set type or revision not supported by the kernel (modprobe ip_set_hash_ipport)",
        4099 => "no more sets can be created",
        4100 => "set is busy",
        4101 => "set to swap with does not exist",
        4102 => "sets have different types",
        4103 => "set already exists with other parameters",
        4106 => "address family mismatch",
        4107 => "set was created without timeout support",
        4108 => "set is referenced by a rule",
        4109 | 4110 => "invalid address",
        4353 => "set full (max_grants reached)",
        _ => return None,
    })
}

fn fail(op: &'static str, errno: i32) -> FirewallError {
    match ipset_strerror(errno) {
        Some(text) => FirewallError::Protocol(format!("{op}: {text} (ipset error {errno})")),
        None => FirewallError::Kernel { op, source: io::Error::from_raw_os_error(errno) },
    }
}

/// Builds netlink attributes into a byte buffer.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(cmd: u8, flags: u16, seq: u32) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `finish`
        buf.extend_from_slice(&((NFNL_SUBSYS_IPSET << 8) | u16::from(cmd)).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]); // nfgenmsg: family, version, res_id
        let mut m = Msg { buf, nests: Vec::new() };
        m.u8(ATTR_PROTOCOL, IPSET_PROTOCOL);
        m
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    fn be16(&mut self, ty: u16, v: u16) {
        self.attr(ty | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
    }

    fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
    }

    fn string(&mut self, ty: u16, s: &str) {
        let mut z = s.as_bytes().to_vec();
        z.push(0);
        self.attr(ty, &z);
    }

    fn open(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn close(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn entry(&mut self, e: &Entry, timeout: Option<u32>) {
        self.open(ATTR_DATA);
        self.open(ATTR_IP);
        match e.addr {
            IpAddr::V4(a) => self.attr(ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
            IpAddr::V6(a) => self.attr(ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
        }
        self.close();
        if let Some(cidr) = e.cidr {
            self.u8(ATTR_CIDR, cidr);
        }
        let service = e.service.as_ref();
        if let Some(service) = service {
            self.be16(ATTR_PORT, service.port);
            self.u8(ATTR_PROTO, service.proto.number());
        }
        if let Some(t) = timeout {
            self.be32(ATTR_TIMEOUT, t);
        }
        self.close();
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Build the `ADD` (with timeouts) or `DEL` messages for `entries` of one family.
fn adt_messages(cmd: u8, set: &str, entries: &[Entry], first_seq: u32) -> Vec<Vec<u8>> {
    entries
        .chunks(ENTRIES_PER_MESSAGE)
        .zip(first_seq..)
        .map(|(chunk, seq)| {
            let mut m = Msg::new(cmd, NLM_F_REQUEST | NLM_F_ACK, seq);
            m.string(ATTR_SETNAME, set);
            m.attr(ATTR_LINENO, &0u32.to_ne_bytes());
            m.open(ATTR_ADT);
            for e in chunk {
                m.entry(e, (cmd == CMD_ADD).then_some(e.timeout_s));
            }
            m.close();
            m.finish()
        })
        .collect()
}

/// Iterate the attributes of `buf`: (type without flags, payload).
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + 4)?;
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        let data = buf.get(off + 4..off + len.max(4))?;
        off += len.max(4).next_multiple_of(4);
        Some((ty, data))
    })
}

/// The entries of one `LIST` reply message (nfgenmsg + attributes).
fn parse_list(payload: &[u8], out: &mut Vec<Entry>) {
    let Some(top) = payload.get(NFGENMSG_LEN..) else { return };
    for (ty, adt) in attrs(top) {
        if ty != ATTR_ADT {
            continue;
        }
        for (ty, data) in attrs(adt) {
            if ty != ATTR_DATA {
                continue;
            }
            if let Some(e) = parse_entry(data) {
                out.push(e);
            }
        }
    }
}

fn parse_entry(data: &[u8]) -> Option<Entry> {
    let (mut addr, mut port, mut proto, mut timeout, mut cidr) = (None, None, None, 0u32, None);
    for (ty, v) in attrs(data) {
        match ty {
            ATTR_IP => {
                for (ty, a) in attrs(v) {
                    addr = match ty {
                        ATTR_IPADDR_IPV4 => {
                            <[u8; 4]>::try_from(a).ok().map(|o| IpAddr::from(Ipv4Addr::from(o)))
                        }
                        ATTR_IPADDR_IPV6 => {
                            <[u8; 16]>::try_from(a).ok().map(|o| IpAddr::from(Ipv6Addr::from(o)))
                        }
                        _ => addr,
                    };
                }
            }
            ATTR_PORT => port = <[u8; 2]>::try_from(v).ok().map(u16::from_be_bytes),
            ATTR_CIDR => cidr = v.first().copied(),
            ATTR_PROTO => proto = v.first().copied().and_then(Proto::from_number),
            ATTR_TIMEOUT => timeout = <[u8; 4]>::try_from(v).ok().map_or(0, u32::from_be_bytes),
            _ => {}
        }
    }
    let service = match (proto, port) {
        (Some(proto), Some(port)) if port != 0 => Some(Service { proto, port }),
        (None, None) => None,
        _ => return None,
    };
    Some(Entry { addr: addr?, cidr, service, timeout_s: timeout })
}

/// A `NETLINK_NETFILTER` socket talking ipset.
pub struct Ipset {
    sock: Socket,
    kernel: SocketAddr,
    seq: u32,
    rx: Vec<u8>,
}

impl std::fmt::Debug for Ipset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipset").field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// A reply: (sequence, errno for NLMSG_ERROR / None for data, message type, flags, payload).
type Reply<'a> = (u32, Option<i32>, u16, &'a [u8]);

impl Ipset {
    /// Open and bind the socket. Changes nothing.
    pub fn open() -> Result<Ipset, FirewallError> {
        let k = |source| FirewallError::Kernel { op: "ipset: open netlink socket", source };
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(k)?;
        sock.bind_auto().map_err(k)?;
        sock.set_cap_ack(true).map_err(k)?;
        let tv = TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        setsockopt(&sock, sockopt::ReceiveTimeout, &tv).map_err(|e| k(io::Error::from(e)))?;
        Ok(Ipset {
            sock,
            kernel: SocketAddr::new(0, 0),
            seq: std::process::id().wrapping_mul(0x85eb_ca6b),
            rx: Vec::with_capacity(RX_BUF),
        })
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
        first
    }

    fn recv(&mut self, op: &'static str) -> Result<(), FirewallError> {
        self.rx.clear();
        match self.sock.recv(&mut self.rx, libc::MSG_TRUNC) {
            Ok(n) if n > self.rx.capacity() => {
                Err(FirewallError::Protocol(format!("{op}: netlink reply of {n} bytes truncated")))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(FirewallError::Protocol(format!(
                "{op}: the kernel did not answer within {RECV_TIMEOUT:?}"
            ))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(source) => Err(FirewallError::Kernel { op, source }),
        }
    }

    fn replies(&self) -> Vec<Reply<'_>> {
        let mut out = Vec::new();
        let mut off = 0;
        while let Some(hdr) = self.rx.get(off..off + NLMSG_HDRLEN) {
            let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
            let seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
            let Some(payload) = self.rx.get(off + NLMSG_HDRLEN..off + len.max(NLMSG_HDRLEN)) else { break };
            let errno = match ty {
                NLMSG_ERROR => payload.get(..4).map(|c| -i32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
                NLMSG_DONE => Some(0),
                _ => None,
            };
            out.push((seq, errno, ty, payload));
            off += len.next_multiple_of(4).max(NLMSG_HDRLEN);
        }
        out
    }

    /// Send `msgs` (sequence numbers `first..`) and wait for every ACK. Returns the
    /// errno of the earliest refused message, if any.
    fn exchange(
        &mut self,
        op: &'static str,
        first: u32,
        msgs: &[Vec<u8>],
    ) -> Result<Option<i32>, FirewallError> {
        let mut failure: Option<(u32, i32)> = None;
        for (i, group) in msgs.chunks(MESSAGES_PER_SEND).enumerate() {
            let base = first.wrapping_add((i * MESSAGES_PER_SEND) as u32);
            let datagram = group.concat();
            self.sock
                .send_to(&datagram, &self.kernel, 0)
                .map_err(|source| FirewallError::Kernel { op, source })?;
            let mut pending = group.len();
            while pending > 0 {
                self.recv(op)?;
                for (seq, errno, _, _) in self.replies() {
                    let idx = seq.wrapping_sub(base) as usize;
                    let Some(errno) = errno.filter(|_| idx < group.len()) else { continue };
                    pending -= 1;
                    if errno != 0
                        && failure.is_none_or(|(s, _)| seq.wrapping_sub(first) < s.wrapping_sub(first))
                    {
                        failure = Some((seq, errno));
                    }
                }
            }
        }
        Ok(failure.map(|(_, e)| e))
    }

    fn simple(
        &mut self,
        op: &'static str,
        cmd: u8,
        build: impl FnOnce(&mut Msg),
    ) -> Result<Option<i32>, FirewallError> {
        let seq = self.next_seq(1);
        let mut m = Msg::new(cmd, NLM_F_REQUEST | NLM_F_ACK, seq);
        build(&mut m);
        self.exchange(op, seq, &[m.finish()])
    }

    /// `ipset create NAME <kind> family inet|inet6 timeout 1 maxelem N`.
    pub fn create(&mut self, name: &str, kind: Kind, v6: bool, maxelem: u32) -> Result<(), FirewallError> {
        let op = "ipset create";
        match self.simple(op, CMD_CREATE, |m| {
            m.string(ATTR_SETNAME, name);
            m.string(ATTR_TYPENAME, kind.typename());
            m.u8(ATTR_REVISION, REVISION);
            m.u8(ATTR_FAMILY, if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 });
            m.open(ATTR_DATA);
            // The set's default timeout; every entry we add carries its own.
            m.be32(ATTR_TIMEOUT, 1);
            if maxelem > 0 {
                m.be32(ATTR_MAXELEM, maxelem);
            }
            m.close();
        })? {
            None => Ok(()),
            Some(e) => Err(fail(op, e)),
        }
    }

    /// `ipset destroy NAME`; `Ok(false)` if there was no such set.
    pub fn destroy(&mut self, name: &str) -> Result<bool, FirewallError> {
        let op = "ipset destroy";
        match self.simple(op, CMD_DESTROY, |m| m.string(ATTR_SETNAME, name))? {
            None => Ok(true),
            Some(libc::ENOENT) => Ok(false),
            Some(e) => Err(fail(op, e)),
        }
    }

    /// `ipset swap A B`: atomically exchange two sets' contents (rules keep their set).
    pub fn swap(&mut self, a: &str, b: &str) -> Result<(), FirewallError> {
        let op = "ipset swap";
        match self.simple(op, CMD_SWAP, |m| {
            m.string(ATTR_SETNAME, a);
            m.string(ATTR_SETNAME2, b);
        })? {
            None => Ok(()),
            Some(e) => Err(fail(op, e)),
        }
    }

    /// Add (or refresh the timeout of) `entries` in `set`.
    pub fn add(&mut self, set: &str, entries: &[Entry]) -> Result<(), FirewallError> {
        self.adt("ipset add", CMD_ADD, set, entries)
    }

    /// Delete `entries` from `set`; missing ones are not an error.
    pub fn del(&mut self, set: &str, entries: &[Entry]) -> Result<(), FirewallError> {
        self.adt("ipset del", CMD_DEL, set, entries)
    }

    fn adt(&mut self, op: &'static str, cmd: u8, set: &str, entries: &[Entry]) -> Result<(), FirewallError> {
        if entries.is_empty() {
            return Ok(());
        }
        let n = entries.len().div_ceil(ENTRIES_PER_MESSAGE);
        let first = self.next_seq(n);
        let msgs = adt_messages(cmd, set, entries, first);
        match self.exchange(op, first, &msgs)? {
            None => Ok(()),
            Some(e) => Err(fail(op, e)),
        }
    }

    /// The entries of `set`, with seconds left; `None` if the set does not exist.
    pub fn list(&mut self, set: &str) -> Result<Option<Vec<Entry>>, FirewallError> {
        let op = "ipset list";
        let seq = self.next_seq(1);
        let mut m = Msg::new(CMD_LIST, NLM_F_REQUEST | NLM_F_DUMP, seq);
        m.string(ATTR_SETNAME, set);
        let req = m.finish();
        self.sock.send_to(&req, &self.kernel, 0).map_err(|source| FirewallError::Kernel { op, source })?;
        let mut out = Vec::new();
        loop {
            self.recv(op)?;
            let mut done = None;
            for (s, errno, ty, payload) in self.replies() {
                if s != seq {
                    continue;
                }
                match errno {
                    Some(e) => done = Some(e),
                    None if ty == (NFNL_SUBSYS_IPSET << 8) | u16::from(CMD_LIST) => {
                        parse_list(payload, &mut out)
                    }
                    None => {}
                }
            }
            match done {
                None => continue,
                Some(0) => return Ok(Some(out)),
                Some(libc::ENOENT) => return Ok(None),
                Some(e) => return Err(fail(op, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_message_layout() {
        let e = Entry {
            addr: "192.0.2.7".parse().unwrap(),
            cidr: None,
            service: Some(Service::tcp(22)),
            timeout_s: 30,
        };
        let msgs = adt_messages(CMD_ADD, "pc4", &[e], 7);
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (6 << 8) | 9);
        // After the headers: protocol, set name, then ADT { DATA { IP { v4 }, port, proto, timeout } }.
        let top: Vec<(u16, &[u8])> = attrs(&m[NLMSG_HDRLEN + NFGENMSG_LEN..]).collect();
        assert_eq!(top[0], (ATTR_PROTOCOL, &[6u8][..]));
        assert_eq!(top[1], (ATTR_SETNAME, &b"pc4\0"[..]));
        assert_eq!(top[3].0, ATTR_ADT);
        let mut out = Vec::new();
        parse_list(&m[NLMSG_HDRLEN..], &mut out);
        assert_eq!(out, [e]);
        // Flags the kernel insists on.
        let raw = &m[NLMSG_HDRLEN + NFGENMSG_LEN..];
        // protocol (8 bytes with padding) + "pc4\0" (8) + lineno (8), then the ADT header.
        assert_eq!(top[2].0, ATTR_LINENO);
        assert_eq!(u16::from_ne_bytes([raw[26], raw[27]]), ATTR_ADT | NLA_F_NESTED);
    }

    #[test]
    fn big_batches_are_chunked_and_v6_round_trips() {
        let e = Entry {
            addr: "2001:db8::1".parse().unwrap(),
            cidr: None,
            service: Some(Service::udp(53)),
            timeout_s: 9,
        };
        let many = vec![e; 1300];
        assert_eq!(adt_messages(CMD_DEL, "pc6", &many, 0).len(), 3);
        let m = &adt_messages(CMD_ADD, "pc6", &[e], 0)[0];
        let mut out = Vec::new();
        parse_list(&m[NLMSG_HDRLEN..], &mut out);
        assert_eq!(out, [e]);
        // DEL carries no timeout.
        let d = &adt_messages(CMD_DEL, "pc6", &[e], 0)[0];
        let mut out = Vec::new();
        parse_list(&d[NLMSG_HDRLEN..], &mut out);
        assert_eq!(out[0].timeout_s, 0);
        // hash:ip entries have no service.
        let ip = Entry { service: None, ..e };
        let m = &adt_messages(CMD_ADD, "pn6", &[ip], 0)[0];
        let mut out = Vec::new();
        parse_list(&m[NLMSG_HDRLEN..], &mut out);
        assert_eq!(out, [ip]);
        // hash:net,port entries carry their prefix length.
        let net = Entry { addr: "2001:db8:0:7::".parse().unwrap(), cidr: Some(64), ..e };
        let m = &adt_messages(CMD_ADD, "pc6n", &[net], 0)[0];
        let mut out = Vec::new();
        parse_list(&m[NLMSG_HDRLEN..], &mut out);
        assert_eq!(out, [net]);
    }

    #[test]
    fn timeouts_are_never_zero_or_beyond_the_kernel() {
        assert_eq!(timeout_s(Duration::ZERO), 1);
        assert_eq!(timeout_s(Duration::from_millis(1500)), 1);
        assert_eq!(timeout_s(Duration::from_secs(30)), 30);
        assert_eq!(timeout_s(Duration::MAX), MAX_TIMEOUT_S);
    }

    #[test]
    fn hostile_replies_do_not_panic() {
        let mut out = Vec::new();
        for junk in [&[][..], &[0, 0, 0, 0], &[8, 0, 8, 0, 1, 2], &[0xff, 0xff, 8, 0, 4, 0, 0, 0, 1]] {
            parse_list(junk, &mut out);
            let _ = parse_entry(junk);
        }
        assert!(out.is_empty());
    }
}
