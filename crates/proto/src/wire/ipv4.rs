//! IPv4 header view (RFC 791).
//!
//! Invariants after [`Packet::check_len`]: the buffer holds at least [`HEADER_LEN`] bytes,
//! `IHL * 4` is at least 20 and within the buffer, and `header_len <= total_len <= buffer
//! length`. Every accessor relies on these and nothing else, so none panics. The version
//! nibble is *not* part of `check_len` (a length check); callers test [`Packet::version`].
//!
//! The header checksum is not verified: see the [`wire`](super) module docs.

use std::net::Ipv4Addr;

use super::{read_u16, Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use crate::wire::Field;

    pub const VER_IHL: usize = 0;
    pub const LENGTH: Field = 2..4;
    pub const FLG_OFF: Field = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// "More fragments" bit in the flags/fragment-offset word.
const FLAG_MF: u16 = 0x2000;
/// Fragment offset, in units of 8 bytes.
const OFFSET_MASK: u16 = 0x1fff;

/// A read-only view over an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it. Accessors may panic until
    /// [`check_len`](Self::check_len) succeeds.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and run [`check_len`](Self::check_len): use this on untrusted input.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that every length field is consistent with the buffer (see module docs).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let header_len = self.header_len();
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || header_len > total_len || total_len > len {
            return Err(Error);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a genuine IPv4 header).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (`IHL * 4`), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length: header plus payload, excluding any link-layer padding.
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the "more fragments" flag is set.
    pub fn more_frags(&self) -> bool {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_MF != 0
    }

    /// Fragment offset in bytes; non-zero for every fragment but the first.
    pub fn frag_offset(&self) -> u16 {
        // 0x1fff * 8 = 65528: fits.
        (read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & OFFSET_MASK) * 8
    }

    /// Protocol number of the payload (6 TCP, 17 UDP).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, between the header (options included) and `total_len`.
    pub fn payload(&self) -> &'a [u8] {
        let header_len = self.header_len();
        let total_len = usize::from(self.total_len());
        &self.buffer.as_ref()[header_len..total_len]
    }
}
