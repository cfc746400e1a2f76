//! UDP header view (RFC 768).
//!
//! Invariants after [`Packet::check_len`]: the buffer holds the 8-byte header and the
//! length field is between 8 and the buffer length; the payload is bounded by the length
//! field (bytes beyond it are ignored, as the kernel trims them). A first IP fragment
//! holds only part of the datagram, so [`Packet::check_len_fragment`] drops the upper
//! bound and [`Packet::payload`] then returns what is present. Either check makes every
//! accessor panic-free. The checksum is not verified: see the [`wire`](super) module docs.

use super::{read_u16, Error, Result};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
}

/// A read-only view over a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it. Accessors may panic until
    /// [`check_len`](Self::check_len) or [`check_len_fragment`](Self::check_len_fragment)
    /// succeeds.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and run [`check_len`](Self::check_len): use this on untrusted input.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check a complete datagram: `8 <= length <= buffer length`.
    pub fn check_len(&self) -> Result<()> {
        self.check_len_fragment()?;
        if usize::from(self.len()) > self.buffer.as_ref().len() {
            return Err(Error);
        }
        Ok(())
    }

    /// Check the start of a datagram carried in a first IP fragment: header present and
    /// `length >= 8`, but the length may exceed what this fragment holds.
    pub fn check_len_fragment(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN || usize::from(self.len()) < HEADER_LEN {
            return Err(Error);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header plus data.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Datagram data, bounded by the length field and by the buffer.
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.len()).min(data.len());
        &data[HEADER_LEN..end]
    }
}
