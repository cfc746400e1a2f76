//! The plaintext request fields: a bounded [`Reader`] (rustls-style cursor: every read
//! is length-checked, nothing is allocated from a claimed length beyond fixed caps)
//! and the canonical encoder. Each [`Request`] has exactly one encoding, and the
//! parser accepts only that one, so "the bytes were signed" and "the fields were
//! signed" mean the same thing.

use std::net::{Ipv4Addr, Ipv6Addr};

use subtle::ConstantTimeEq;

use super::{AllowAddr, Request, FIELDS_LEN, MAX_SERVICES, MAX_USER_LEN};
use crate::service::{Proto, Service};
use crate::spa::{EncodeError, PacketError};

/// `allow` kind byte: use the packet's source address.
pub(crate) const ALLOW_SOURCE: u8 = 0;
/// `allow` kind byte: an IPv4 address follows.
pub(crate) const ALLOW_V4: u8 = 4;
/// `allow` kind byte: an IPv6 address follows.
pub(crate) const ALLOW_V6: u8 = 6;

/// A cursor over untrusted bytes. Reads past the end fail with `BadField(what)`.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        if n > self.buf.len() {
            return Err(PacketError::BadField(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PacketError> {
        let (head, tail) = self.buf.split_first_chunk::<N>().ok_or(PacketError::BadField(what))?;
        self.buf = tail;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, PacketError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        self.array(what).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, PacketError> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, PacketError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// A cursor writing into a fixed buffer; fails instead of panicking on overflow.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos.checked_add(bytes.len()).ok_or(EncodeError::Internal("writer overflow"))?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(EncodeError::Internal("request fields overflow"))?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Is `user` 1..=32 characters of `[A-Za-z0-9_.-]`?
pub(crate) fn valid_user(user: &[u8]) -> bool {
    (1..=MAX_USER_LEN).contains(&user.len())
        && user.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The request's invariants, shared by the encoder (→ `InvalidMessage`) and the
/// decoder (→ `BadField`). Returns the name of the first violated rule.
pub(crate) fn check_request(req: &Request) -> Result<(), &'static str> {
    if !valid_user(req.user.as_bytes()) {
        return Err("user must be 1 to 32 characters of A-Z a-z 0-9 _ . -");
    }
    check_allow(&req.allow)?;
    if req.duration_secs == 0 {
        return Err("duration must be at least 1 second");
    }
    check_services(&req.services)
}

fn check_allow(allow: &AllowAddr) -> Result<(), &'static str> {
    match allow {
        AllowAddr::Source => Ok(()),
        AllowAddr::V4(a) if a.is_unspecified() => Err("allow address 0.0.0.0 (use AllowAddr::Source)"),
        AllowAddr::V6(a) if a.is_unspecified() => Err("allow address :: (use AllowAddr::Source)"),
        AllowAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            Err("IPv4-mapped IPv6 allow address (use AllowAddr::V4)")
        }
        AllowAddr::V4(_) | AllowAddr::V6(_) => Ok(()),
    }
}

fn check_services(services: &[Service]) -> Result<(), &'static str> {
    if services.is_empty() || services.len() > MAX_SERVICES {
        return Err("1 to 16 services");
    }
    if services.iter().any(|s| s.port == 0) {
        return Err("service port 0");
    }
    // Strictly ascending by (protocol, port): one spelling per set, no duplicates.
    if services.windows(2).any(|w| w[0] >= w[1]) {
        return Err("services must be sorted and distinct");
    }
    Ok(())
}

/// Write the canonical field encoding into `out` (zero-filled by the caller) and
/// return the number of bytes used; the rest of `out` is the zero padding.
pub(crate) fn encode_fields(req: &Request, out: &mut [u8; FIELDS_LEN]) -> Result<usize, EncodeError> {
    check_request(req).map_err(EncodeError::InvalidMessage)?;
    let mut w = Writer { buf: out.as_mut_slice(), pos: 0 };
    let user = req.user.as_bytes();
    w.put(&[u8::try_from(user.len()).map_err(|_| EncodeError::InvalidMessage("user too long"))?])?;
    w.put(user)?;
    w.put(&req.timestamp.to_be_bytes())?;
    w.put(&req.nonce)?;
    match req.allow {
        AllowAddr::Source => w.put(&[ALLOW_SOURCE])?,
        AllowAddr::V4(a) => {
            w.put(&[ALLOW_V4])?;
            w.put(&a.octets())?;
        }
        AllowAddr::V6(a) => {
            w.put(&[ALLOW_V6])?;
            w.put(&a.octets())?;
        }
    }
    w.put(&req.duration_secs.to_be_bytes())?;
    let n = u8::try_from(req.services.len()).map_err(|_| EncodeError::InvalidMessage("1 to 16 services"))?;
    w.put(&[n])?;
    for s in &req.services {
        w.put(&[s.proto.number()])?;
        w.put(&s.port.to_be_bytes())?;
    }
    Ok(w.pos)
}

/// Parse the fields region of a decrypted body (everything after the signature).
/// Rejects any deviation from the canonical encoding and any non-zero padding.
pub(crate) fn parse_fields(fields: &[u8]) -> Result<Request, PacketError> {
    let mut r = Reader::new(fields);
    let user_len = usize::from(r.u8("user length")?);
    if !(1..=MAX_USER_LEN).contains(&user_len) {
        return Err(PacketError::BadField("user length"));
    }
    let user = r.take(user_len, "user")?;
    if !valid_user(user) {
        return Err(PacketError::BadField("user"));
    }
    // valid_user guarantees ASCII, so this conversion cannot fail.
    let user = std::str::from_utf8(user).map_err(|_| PacketError::BadField("user"))?.to_owned();
    let timestamp = r.u64("timestamp")?;
    let nonce = r.array::<16>("nonce")?;
    let allow = match r.u8("allow kind")? {
        ALLOW_SOURCE => AllowAddr::Source,
        ALLOW_V4 => AllowAddr::V4(Ipv4Addr::from(r.array::<4>("allow address")?)),
        ALLOW_V6 => AllowAddr::V6(Ipv6Addr::from(r.array::<16>("allow address")?)),
        _ => return Err(PacketError::BadField("allow kind")),
    };
    check_allow(&allow).map_err(|_| PacketError::BadField("allow address"))?;
    let duration_secs = r.u32("duration")?;
    if duration_secs == 0 {
        return Err(PacketError::BadField("duration"));
    }
    let count = usize::from(r.u8("service count")?);
    if !(1..=MAX_SERVICES).contains(&count) {
        return Err(PacketError::BadField("service count"));
    }
    let mut services = Vec::with_capacity(count); // count ≤ 16, checked above
    for _ in 0..count {
        let proto =
            Proto::from_number(r.u8("service protocol")?).ok_or(PacketError::BadField("service protocol"))?;
        let port = r.u16("service port")?;
        if port == 0 {
            return Err(PacketError::BadField("service port"));
        }
        let s = Service { proto, port };
        if services.last().is_some_and(|prev| *prev >= s) {
            return Err(PacketError::BadField("services not sorted and distinct"));
        }
        services.push(s);
    }
    if !all_zero(r.rest()) {
        return Err(PacketError::TrailingData("non-zero bytes after the request fields"));
    }
    Ok(Request { user, timestamp, nonce, allow, services, duration_secs })
}

/// Constant-time "every byte is zero" (the padding is plaintext of a confidential
/// request; its check should not leak where the first non-zero byte is).
fn all_zero(bytes: &[u8]) -> bool {
    let acc = bytes.iter().fold(0u8, |acc, b| acc | b);
    bool::from(acc.ct_eq(&0u8))
}
