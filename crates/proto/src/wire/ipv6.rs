//! IPv6 header view (RFC 8200) and a bounded extension-header walk.
//!
//! Invariants after [`Packet::check_len`]: the buffer holds the 40-byte fixed header,
//! `payload_length` is non-zero (zero means a jumbogram, RFC 2675, which we refuse) and
//! `40 + payload_length` is within the buffer. The version nibble is left to callers.
//!
//! [`walk_ext_headers`] follows the next-header chain through hop-by-hop (first only),
//! routing, destination options, fragment (first fragment only) and authentication
//! headers. It visits at most [`MAX_EXT_HEADERS`] headers, never reads past the payload,
//! and refuses everything else (ESP, no-next-header, unknown), so its cost is bounded
//! whatever the packet says.

use std::net::Ipv6Addr;

use super::{read_u16, Error, Result};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Longest extension-header chain we walk. Real traffic uses two or three; the bound keeps
/// per-packet work constant.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values that matter to the walk.
pub mod next_header {
    /// Hop-by-hop options; only valid directly after the fixed header.
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload: opaque, so no transport header to read.
    pub const ESP: u8 = 50;
    /// Authentication header; its length is in 4-byte units.
    pub const AUTH: u8 = 51;
    /// No next header.
    pub const NO_NEXT: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

mod field {
    use crate::wire::Field;

    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// A read-only view over an IPv6 packet.
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

    /// Check the fixed header and `payload_length` against the buffer (see module docs).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let payload_len = usize::from(self.payload_len());
        if payload_len == 0 || HEADER_LEN + payload_len > len {
            return Err(Error);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6 for a genuine IPv6 header).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Payload length: everything after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Type of the header following the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::DST_ADDR]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload (extension headers and transport), bounded by `payload_length`.
    pub fn payload(&self) -> &'a [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

/// Copy a 16-byte field; the caller passes a slice taken with a 16-byte [`super::Field`].
fn addr(b: &[u8]) -> [u8; 16] {
    let mut a = [0; 16];
    a.copy_from_slice(b);
    a
}

mod ext_field {
    pub const NXT_HDR: usize = 0;
    pub const LENGTH: usize = 1;
    /// Fragment header: offset (13 bits, 8-byte units), 2 reserved bits, M flag.
    pub const FRAG_OFF: crate::wire::Field = 2..4;
}

/// Length of the fragment header, which has no length field.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// A read-only view over one extension header: hop-by-hop, routing, destination options
/// or fragment (length in 8-byte units, or fixed for fragment), or authentication (length
/// in 4-byte units, RFC 4302 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    kind: u8,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wrap a buffer starting at an extension header of type `kind` and check that the
    /// whole header is present. Refuses kinds that are not walkable extension headers.
    pub fn new_checked(kind: u8, buffer: T) -> Result<ExtHeader<T>> {
        use next_header::*;
        if !matches!(kind, HOP_BY_HOP | ROUTING | FRAGMENT | AUTH | DEST_OPTS) {
            return Err(Error);
        }
        let header = ExtHeader { buffer, kind };
        let len = header.buffer.as_ref().len();
        // Two bytes so that header_len() can read the length field.
        if len < 2 || header.header_len() > len {
            return Err(Error);
        }
        Ok(header)
    }

    /// Type of the following header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    /// Length of this header in bytes.
    pub fn header_len(&self) -> usize {
        let n = usize::from(self.buffer.as_ref()[ext_field::LENGTH]);
        match self.kind {
            next_header::FRAGMENT => FRAGMENT_HEADER_LEN,
            // "Payload Len" counts 4-byte words minus 2.
            next_header::AUTH => (n + 2) * 4,
            // "Hdr Ext Len" counts 8-byte units, not including the first.
            _ => (n + 1) * 8,
        }
    }

    /// Fragment offset in bytes; zero for a non-fragment header.
    pub fn frag_offset(&self) -> u16 {
        if self.kind != next_header::FRAGMENT {
            return 0;
        }
        read_u16(&self.buffer.as_ref()[ext_field::FRAG_OFF]) & !0b111
    }

    /// Whether the fragment header's M ("more fragments") flag is set.
    pub fn more_frags(&self) -> bool {
        self.kind == next_header::FRAGMENT && read_u16(&self.buffer.as_ref()[ext_field::FRAG_OFF]) & 1 != 0
    }
}

/// Where the transport header is, as found by [`walk_ext_headers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upper {
    /// Transport protocol number (TCP or UDP).
    pub protocol: u8,
    /// Offset of the transport header within the IPv6 payload.
    pub offset: usize,
    /// Whether a fragment header with M set was seen: this is a first fragment and the
    /// transport segment continues elsewhere.
    pub fragmented: bool,
}

/// Follow the extension-header chain from `first` (the fixed header's next header) over
/// `payload` (the IPv6 payload) to a TCP or UDP header.
///
/// Fails on non-first fragments, hop-by-hop anywhere but first, ESP, no-next-header,
/// unknown types, truncation, and chains longer than [`MAX_EXT_HEADERS`].
pub fn walk_ext_headers(first: u8, payload: &[u8]) -> Result<Upper> {
    let mut kind = first;
    let mut offset = 0;
    let mut fragmented = false;
    for seen in 0..=MAX_EXT_HEADERS {
        match kind {
            next_header::TCP | next_header::UDP => {
                return Ok(Upper { protocol: kind, offset, fragmented });
            }
            // RFC 8200 §4.1: hop-by-hop only directly after the fixed header (Linux drops
            // it elsewhere, so such a packet never reaches a socket).
            next_header::HOP_BY_HOP if seen != 0 => return Err(Error),
            _ if seen == MAX_EXT_HEADERS => return Err(Error),
            _ => {
                let rest = payload.get(offset..).ok_or(Error)?;
                // Refuses ESP, no-next-header and unknown types.
                let header = ExtHeader::new_checked(kind, rest)?;
                if header.frag_offset() != 0 {
                    return Err(Error);
                }
                fragmented |= header.more_frags();
                offset += header.header_len();
                kind = header.next_header();
            }
        }
    }
    Err(Error)
}
