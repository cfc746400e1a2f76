//! Watching our table: a second `NETLINK_NETFILTER` socket subscribed to the
//! `NFNLGRP_NFTABLES` multicast group, on which the kernel announces every committed
//! ruleset change (`nft monitor` reads the same). A change to `table inet portcullis`
//! made through any socket but the driver's own is reported, so `nft flush ruleset`,
//! `systemctl reload nftables` or a `portcullisd teardown` from another shell are seen
//! within microseconds of their commit.
//!
//! Each notification's `nlmsg_pid` is the netlink port of the socket whose batch caused
//! it: the driver's own changes (grants, revokes, the repair itself) carry the driver
//! socket's port and are ignored. Set-element changes by the kernel itself (port 0)
//! are ignored too. The kernel announces a whole transaction at its commit, closed by
//! one `NEWGEN` message that names the process responsible; we read up to that message
//! (or [`SETTLE`]) so one transaction is reported once.

use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use netlink_packet_netfilter::nftables::{ChainAttribute, NfTablesMessage, RuleAttribute, SetAttribute};

use super::compose;
use super::netlink::Netlink;
use super::ruleset::{self, TABLE};
use super::NftDriver;
use crate::firewall::{FirewallError, Plan, Watch};

/// `NFNLGRP_NFTABLES`.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`.
const SUBSYS: u16 = 10;
/// `NFPROTO_INET`.
const FAMILY_INET: u8 = 1;
/// `NFT_MSG_NEWGEN`: closes the notifications of one transaction.
const MSG_NEWGEN: u8 = 15;
/// `NFTA_GEN_PROC_PID`, `NFTA_GEN_PROC_NAME`.
const GEN_PROC_PID: u16 = 2;
const GEN_PROC_NAME: u16 = 3;
/// Receive buffer: `nft flush ruleset` on a large ruleset announces thousands of
/// objects at once; an overflow (ENOBUFS) is survived, but costs a blind repair.
const RCVBUF: usize = 4 << 20;
/// How long to wait for the rest of a transaction after its first notification.
const SETTLE: Duration = Duration::from_millis(3);

/// One notification about our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `NFT_MSG_*` (without the subsystem).
    pub msg: u8,
    /// Netlink port of the socket that made the change (0: the kernel).
    pub portid: u32,
    /// The object: table name, or chain/set name within the table.
    pub object: String,
}

impl Event {
    /// What happened, for the log.
    pub fn describe(&self) -> String {
        let what = match self.msg {
            0 => "table added",
            2 => "table deleted",
            3 => "chain added/changed",
            5 => "chain deleted",
            6 => "rule added/replaced",
            8 => "rule deleted",
            9 => "set added",
            11 => "set deleted",
            12 => "set elements added",
            14 => "set elements deleted",
            26..=30 => "object destroyed",
            _ => "object changed",
        };
        if self.msg == 0 || self.msg == 2 {
            format!("{what} (inet {})", self.object)
        } else {
            format!("{what} ({})", self.object)
        }
    }
}

/// What one received datagram holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Notifications about `table inet portcullis` from other sockets.
    pub foreign: Vec<Event>,
    /// A `NEWGEN` (end of a transaction) was seen: (port, process id, process name).
    pub generation: Option<(u32, u32, String)>,
}

fn nlas(buf: &[u8]) -> impl Iterator<Item = NlaBuffer<&[u8]>> {
    NlasIterator::new(buf).filter_map(Result::ok)
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
}

/// Parse the notifications in `buf` (pure; hostile or odd input is skipped, never
/// trusted: at worst it causes a repair). `own` is the driver socket's port.
pub(crate) fn parse(buf: &[u8], own: u32) -> Parsed {
    let mut out = Parsed::default();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let Ok(hdr) = NetlinkBuffer::new_checked(&buf[off..]) else { break };
        let len = hdr.length() as usize;
        let (ty, portid) = (hdr.message_type(), hdr.port_number());
        let Some(payload) = buf.get(off + 16..off + len) else { break };
        off += len.next_multiple_of(4).max(16);
        if ty >> 8 != SUBSYS || payload.len() < 4 {
            continue;
        }
        let msg = (ty & 0xff) as u8;
        let (family, attrs) = (payload[0], &payload[4..]);
        if msg == MSG_NEWGEN {
            let (mut pid, mut name) = (0, String::new());
            for a in nlas(attrs) {
                match a.kind() {
                    GEN_PROC_PID => pid = a.value().try_into().map_or(0, u32::from_be_bytes),
                    GEN_PROC_NAME => name = text(a.value()),
                    _ => {}
                }
            }
            out.generation = Some((portid, pid, name));
            continue;
        }
        if family != FAMILY_INET || portid == own {
            continue;
        }
        // Set elements come and go with grants and kernel timeouts: only another
        // process editing them is news.
        if (msg == 12 || msg == 14) && portid == 0 {
            continue;
        }
        // Attribute 1 is the table (its name, for table messages) in every message
        // type we care about; attribute 2 or 3 names the chain or set.
        let mut table = None;
        let mut object = None;
        for a in nlas(attrs) {
            match (msg, a.kind()) {
                (_, 1) => table = Some(text(a.value())),
                (3 | 5, 3) | (6 | 8 | 9 | 11 | 12 | 14, 2) => object = Some(text(a.value())),
                _ => {}
            }
        }
        if table.as_deref() != Some(TABLE) {
            continue;
        }
        let object = object.or(table).unwrap_or_default();
        out.foreign.push(Event { msg, portid, object });
    }
    out
}

/// Summarise one transaction's foreign events for the log.
pub(crate) fn summary(events: &[Event], by: Option<&(u32, u32, String)>) -> String {
    // The most sweeping change first: a deleted table says more than its rules.
    let rank = |m: u8| [2u8, 5, 11, 8, 6, 3].iter().position(|&x| x == m).unwrap_or(9);
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| rank(e.msg));
    let mut seen: Vec<String> = Vec::new();
    for e in sorted {
        let d = e.describe();
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    let more = seen.len().saturating_sub(4);
    seen.truncate(4);
    let mut s = seen.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    let port = events.first().map_or(0, |e| e.portid);
    match by {
        Some((p, pid, name)) if *p == port && *pid != 0 => s.push_str(&format!(" by {name} (pid {pid})")),
        _ => s.push_str(&format!(" by netlink port {port}")),
    }
    s
}

/// The event socket.
pub(crate) struct Monitor {
    sock: Socket,
    own: u32,
    rx: Vec<u8>,
}

impl Monitor {
    /// Subscribe; `own` is the driver socket's port, whose changes are ignored.
    pub(crate) fn open(own: u32) -> io::Result<Monitor> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.add_membership(NFNLGRP_NFTABLES)?;
        // Best effort: without CAP_NET_ADMIN the default buffer stays.
        let _ = setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF);
        Ok(Monitor { sock, own, rx: Vec::with_capacity(256 * 1024) })
    }

    /// Receive one datagram, waiting up to `timeout` (zero: do not wait).
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Parsed>> {
        self.rx.clear();
        let flags = if timeout.is_zero() {
            libc::MSG_DONTWAIT
        } else {
            // A zero SO_RCVTIMEO would mean "block forever": never below 1 µs.
            let tv = TimeVal::new(
                timeout.as_secs().try_into().unwrap_or(1),
                timeout.subsec_micros().max(1).into(),
            );
            setsockopt(&self.sock, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
            0
        };
        match self.sock.recv(&mut self.rx, flags) {
            Ok(_) => Ok(Some(parse(&self.rx, self.own))),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Watch for Monitor {
    fn wait(&mut self, timeout: Duration) -> Result<Option<String>, FirewallError> {
        let lost = |source| FirewallError::Kernel { op: "nft monitor: receive", source };
        let end = Instant::now() + timeout;
        let mut events = Vec::new();
        let mut by = None;
        // First foreign notification (or time out).
        while events.is_empty() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let Some(p) = self.recv(left).map_err(lost)? else { continue };
            events = p.foreign;
            if !events.is_empty() {
                by = p.generation;
            }
        }
        // The rest of its transaction: up to its NEWGEN, or a short settle.
        let settle = Instant::now() + SETTLE;
        while by.is_none() {
            let left = settle.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.recv(left).map_err(lost)? {
                Some(p) => {
                    events.extend(p.foreign);
                    by = p.generation;
                }
                None => break,
            }
        }
        Ok(Some(summary(&events, by.as_ref())))
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("own", &self.own).finish_non_exhaustive()
    }
}

/// A monitor for `nl`'s changes to be ignored.
pub(super) fn watch(nl: &Netlink) -> Result<Option<Box<dyn Watch>>, FirewallError> {
    let kernel = |op, source| FirewallError::Kernel { op, source };
    let own = nl.portid().map_err(|e| kernel("nft monitor: own netlink port", e))?;
    let m = Monitor::open(own).map_err(|e| kernel("nft monitor: subscribe to nf_tables events", e))?;
    Ok(Some(Box::new(m)))
}

impl NftDriver {
    /// Every chain and set `setup(plan)` creates exists, and our table holds as many
    /// rules as it writes. Cheap (no set elements are read), so it can run every
    /// second whatever the number of grants. Content changes are caught by the
    /// notifications; a lost notification leads to a blind repair (see `grants::watch`).
    pub(super) fn verify_state(&mut self, plan: &Plan) -> Result<Option<String>, FirewallError> {
        let kernel = |source| FirewallError::Kernel { op: "nft verify", source };
        let mut q = Query::open().map_err(kernel)?;
        let (mut rules, mut chains, mut sets) = (0usize, Vec::new(), Vec::new());
        // Only our table: objects in the admin's table (accept mode) are not ours to count.
        let mut reqs = ruleset::setup_requests(plan, &[]);
        reqs.extend(compose::optional_requests(plan));
        for r in reqs {
            match r.msg {
                NfTablesMessage::NewRule(m) => {
                    rules += usize::from(
                        m.attributes.iter().any(|a| matches!(a, RuleAttribute::Table(t) if t == TABLE)),
                    );
                }
                NfTablesMessage::NewChain(m)
                    if m.attributes.iter().any(|a| matches!(a, ChainAttribute::Table(t) if t == TABLE)) =>
                {
                    chains.extend(m.attributes.into_iter().filter_map(|a| match a {
                        ChainAttribute::Name(n) => Some(n),
                        _ => None,
                    }));
                }
                NfTablesMessage::NewSet(m)
                    if m.attributes.iter().any(|a| matches!(a, SetAttribute::Table(t) if t == TABLE)) =>
                {
                    sets.extend(m.attributes.into_iter().filter_map(|a| match a {
                        SetAttribute::Name(n) => Some(n),
                        _ => None,
                    }));
                }
                _ => {}
            }
        }
        for c in &chains {
            if !q.exists(MSG_GETCHAIN, &[(1, TABLE), (3, c)]).map_err(kernel)? {
                return Ok(Some(format!("table inet {TABLE} or its chain {c} is missing")));
            }
        }
        for set in &sets {
            if !q.exists(MSG_GETSET, &[(1, TABLE), (2, set)]).map_err(kernel)? {
                return Ok(Some(format!("set {set} of table inet {TABLE} is missing")));
            }
        }
        let have = q.count_rules().map_err(kernel)?;
        Ok((have != rules).then(|| format!("table inet {TABLE} holds {have} rule(s), {rules} expected")))
    }
}

const MSG_GETCHAIN: u8 = 4;
const MSG_GETSET: u8 = 10;
const MSG_GETRULE: u8 = 7;
const MSG_NEWRULE: u8 = 6;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// A one-shot query socket for [`NftDriver::verify_state`].
struct Query {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

/// How one reply message relates to the request.
enum Answer {
    Object(u8, Option<String>),
    Status(i32),
    Done,
}

impl Query {
    fn open() -> io::Result<Query> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(2, 0)).map_err(io::Error::from)?;
        Ok(Query { sock, seq: 1, rx: Vec::with_capacity(64 * 1024) })
    }

    fn send(&mut self, msg: u8, flags: u16, attrs: &[(u16, &str)]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut body = Vec::new();
        for &(kind, v) in attrs {
            let len = 4 + v.len() + 1;
            body.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(v.as_bytes());
            body.push(0);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let len = u32::try_from(16 + 4 + body.len()).unwrap_or(u32::MAX);
        let mut m = Vec::with_capacity(len as usize);
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&((SUBSYS << 8) | u16::from(msg)).to_ne_bytes());
        m.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[FAMILY_INET, 0, 0, 0]);
        m.extend_from_slice(&body);
        self.sock.send_to(&m, &netlink_sys::SocketAddr::new(0, 0), 0)?;
        Ok(())
    }

    /// The answers to the last request in the next datagram.
    fn answers(&mut self) -> io::Result<Vec<Answer>> {
        self.rx.clear();
        self.sock.recv(&mut self.rx, 0)?;
        let mut out = Vec::new();
        let mut off = 0;
        while off + 16 <= self.rx.len() {
            let Ok(hdr) = NetlinkBuffer::new_checked(&self.rx[off..]) else { break };
            let len = hdr.length() as usize;
            let (ty, seq) = (hdr.message_type(), hdr.sequence_number());
            let payload = self.rx.get(off + 16..off + len).unwrap_or_default();
            off += len.next_multiple_of(4).max(16);
            if seq != self.seq {
                continue;
            }
            out.push(match ty {
                NLMSG_ERROR => {
                    let code = payload.get(..4).and_then(|c| c.try_into().ok()).map_or(0, i32::from_ne_bytes);
                    Answer::Status(-code)
                }
                NLMSG_DONE => Answer::Done,
                _ => {
                    let table = payload
                        .get(4..)
                        .and_then(|a| nlas(a).find(|n| n.kind() == 1))
                        .map(|n| text(n.value()));
                    Answer::Object((ty & 0xff) as u8, table)
                }
            });
        }
        Ok(out)
    }

    /// Whether the object named by `attrs` exists (ENOENT: no).
    fn exists(&mut self, msg: u8, attrs: &[(u16, &str)]) -> io::Result<bool> {
        self.send(msg, libc::NLM_F_ACK as u16, attrs)?;
        let mut found = false;
        loop {
            for a in self.answers()? {
                match a {
                    Answer::Object(..) => found = true,
                    Answer::Status(0) | Answer::Done => return Ok(found),
                    Answer::Status(e) if e == libc::ENOENT => return Ok(false),
                    Answer::Status(e) => return Err(io::Error::from_raw_os_error(e)),
                }
            }
        }
    }

    /// Rules in our table (a dump filtered by table; counted only if they name it).
    fn count_rules(&mut self) -> io::Result<usize> {
        self.send(MSG_GETRULE, libc::NLM_F_DUMP as u16, &[(1, TABLE)])?;
        let mut n = 0;
        loop {
            for a in self.answers()? {
                match a {
                    Answer::Object(MSG_NEWRULE, Some(t)) if t == TABLE => n += 1,
                    Answer::Object(..) => {}
                    Answer::Done | Answer::Status(0) => return Ok(n),
                    Answer::Status(e) if e == libc::ENOENT => return Ok(0),
                    Answer::Status(e) => return Err(io::Error::from_raw_os_error(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    fn msg(msg: u8, family: u8, portid: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let len = 16 + 4 + body.len();
        let mut v = Vec::new();
        v.extend_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
        v.extend_from_slice(&((SUBSYS << 8) | u16::from(msg)).to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&1u32.to_ne_bytes());
        v.extend_from_slice(&portid.to_ne_bytes());
        v.extend_from_slice(&[family, 0, 0, 0]);
        v.extend_from_slice(&body);
        v
    }

    #[test]
    fn foreign_changes_to_our_table_are_reported_with_who_did_them() {
        let ours = b"portcullis\0";
        let mut buf = msg(8, FAMILY_INET, 4242, &[nla(1, ours), nla(2, b"input\0")]);
        buf.extend(msg(2, FAMILY_INET, 4242, &[nla(1, ours)]));
        // Someone else's table, another family, our own socket, kernel set GC: ignored.
        buf.extend(msg(2, FAMILY_INET, 4242, &[nla(1, b"filter\0")]));
        buf.extend(msg(2, 2, 4242, &[nla(1, ours)]));
        buf.extend(msg(2, FAMILY_INET, 77, &[nla(1, ours)]));
        buf.extend(msg(14, FAMILY_INET, 0, &[nla(1, ours), nla(2, b"allow4\0")]));
        buf.extend(msg(
            MSG_NEWGEN,
            0,
            4242,
            &[nla(1, &5u32.to_be_bytes()), nla(2, &999u32.to_be_bytes()), nla(3, b"nft\0")],
        ));
        let p = parse(&buf, 77);
        assert_eq!(
            p.foreign,
            vec![
                Event { msg: 8, portid: 4242, object: "input".into() },
                Event { msg: 2, portid: 4242, object: "portcullis".into() },
            ]
        );
        assert_eq!(p.generation, Some((4242, 999, "nft".into())));
        assert_eq!(
            summary(&p.foreign, p.generation.as_ref()),
            "table deleted (inet portcullis), rule deleted (input) by nft (pid 999)"
        );
    }

    #[test]
    fn truncated_or_garbage_input_is_skipped() {
        let buf = msg(2, FAMILY_INET, 1, &[nla(1, b"portcullis\0")]);
        for cut in 0..buf.len() {
            let _ = parse(&buf[..cut], 0);
        }
        assert!(parse(&[0xff; 64], 0).foreign.is_empty());
    }
}
