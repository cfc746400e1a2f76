//! Why SPA work failed, one type per party at fault:
//!
//! - [`PacketError`]: the **peer** — a received packet is refused (junk, forgery, wrong
//!   keys, stale). Decoding and verification return it.
//! - [`KeyError`]: the **local configuration** — a key (text, length, point) is
//!   unusable. Never caused by packet data.
//! - [`EncodeError`]: the **caller** — the message to send breaks a format rule or
//!   does not fit.
//!
//! Modelled on rustls' `InvalidMessage`: `Copy` types whose variants name the failing
//! stage, with `&'static str` context where one variant covers several fields. None
//! carries packet bytes or key material, so an error can be logged as is.

use std::fmt;

/// Why a received SPA packet was refused: the sender is at fault (or sent junk).
///
/// fwknop format, in the order the stages run: [`BadLength`](PacketError::BadLength) →
/// [`BadCharset`](PacketError::BadCharset) → [`PrefixTacked`](PacketError::PrefixTacked)
/// → [`BadMac`](PacketError::BadMac) → [`BadCiphertext`](PacketError::BadCiphertext) →
/// [`NotDecrypted`](PacketError::NotDecrypted) → [`BadDigest`](PacketError::BadDigest) →
/// [`BadField`](PacketError::BadField). A daemon trying several stanzas should move on
/// to the next stanza on `BadMac` and `NotDecrypted` (wrong keys), and may stop on the
/// pre-checks (they do not depend on the key).
///
/// Native format ([`crate::spa::native`]), in order: [`BadLength`](PacketError::BadLength)
/// → [`BadMagic`](PacketError::BadMagic) → [`BadVersion`](PacketError::BadVersion) →
/// [`WrongServer`](PacketError::WrongServer) → [`DecryptFailed`](PacketError::DecryptFailed)
/// → [`BadField`](PacketError::BadField) / [`TrailingData`](PacketError::TrailingData) →
/// [`UnknownUser`](PacketError::UnknownUser) → [`BadSignature`](PacketError::BadSignature).
///
/// Both formats: [`Stale`](PacketError::Stale) from the time-window check.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketError {
    /// The wire data is outside 140..=1500 bytes. Native format: not exactly
    /// [`PACKET_LEN`](crate::spa::native::PACKET_LEN) bytes.
    BadLength,
    /// The wire data contains a byte outside the base64 alphabet `A–Z a–z 0–9 + /`
    /// (`=` included: fwknop clients never send padding).
    BadCharset,
    /// The wire data starts with `U2FsdGVkX1` (base64 of `Salted__`): a prefix-tacking
    /// replay attempt, dropped as fwknopd does.
    PrefixTacked,
    /// The HMAC did not verify (wrong HMAC key or type, or tampered data).
    BadMac,
    /// The ciphertext is not well-formed (not base64, no `Salted__` header, not a
    /// whole number of blocks).
    BadCiphertext(&'static str),
    /// Decryption produced something that is not an SPA plaintext (it does not start
    /// with 16 digits and `:`): almost always the wrong encryption key or mode.
    NotDecrypted,
    /// The inner digest has an unknown length or does not match the message.
    BadDigest,
    /// A plaintext field is missing, malformed or out of its limits; the context names it.
    BadField(&'static str),
    /// The packet timestamp is outside the allowed age window.
    Stale,
    /// Native format: the packet does not start with the magic bytes.
    BadMagic,
    /// Native format: the magic is right but the version byte is not one we speak.
    BadVersion,
    /// Native format: the server tag does not match this server's public key (junk,
    /// or a packet for another server). Rejected before any public-key operation.
    WrongServer,
    /// Native format: the AEAD did not open (tampered packet, or sealed to another
    /// key), or the ephemeral key is a small-order point.
    DecryptFailed,
    /// Native format: the (decrypted, well-formed) request names a user the server
    /// does not know.
    UnknownUser,
    /// Native format: the user's signature over the request does not verify.
    BadSignature,
    /// Bytes left over after the last field (for the native format: non-zero padding);
    /// the context says where.
    TrailingData(&'static str),
    /// An internal invariant failed while handling the packet. Never expected; reported
    /// instead of panicking (and not the peer's fault).
    Internal(&'static str),
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::BadLength => f.write_str("SPA data length out of range"),
            PacketError::BadCharset => f.write_str("SPA data is not unpadded base64"),
            PacketError::PrefixTacked => f.write_str("SPA data starts with a tacked-on prefix"),
            PacketError::BadMac => f.write_str("SPA HMAC verification failed"),
            PacketError::BadCiphertext(what) => write!(f, "malformed SPA ciphertext: {what}"),
            PacketError::NotDecrypted => f.write_str("SPA data did not decrypt (wrong key?)"),
            PacketError::BadDigest => f.write_str("SPA inner digest mismatch"),
            PacketError::BadField(what) => write!(f, "invalid SPA field: {what}"),
            PacketError::Stale => f.write_str("SPA timestamp outside the allowed window"),
            PacketError::BadMagic => f.write_str("SPA packet has the wrong magic bytes"),
            PacketError::BadVersion => f.write_str("SPA packet has an unsupported version"),
            PacketError::WrongServer => f.write_str("SPA packet is not addressed to this server key"),
            PacketError::DecryptFailed => f.write_str("SPA packet did not decrypt (tampered or wrong key)"),
            PacketError::UnknownUser => f.write_str("SPA request names an unknown user"),
            PacketError::BadSignature => f.write_str("SPA request signature does not verify"),
            PacketError::TrailingData(what) => write!(f, "trailing data in SPA packet: {what}"),
            PacketError::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for PacketError {}

/// A configured key is unusable (wrong length, not base64, bad check, weak point):
/// the local configuration is at fault. The context says what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyError(pub &'static str);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid SPA key configuration: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

/// Why a message could not be encoded: the caller asked for something the format
/// cannot carry.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The message is not consistent or a field is out of the format's limits (e.g. a
    /// NAT type without a NAT field); the context names the rule.
    InvalidMessage(&'static str),
    /// The packet would reach fwknop's 400-character GnuPG length heuristic (more than
    /// 389 characters of ciphertext before the HMAC) and real fwknopd servers would
    /// refuse it. Send fewer ports or a shorter user name.
    TooLong,
    /// The packet would be shorter than the 140 bytes fwknopd requires (very short
    /// versions and user names with an MD5 digest).
    TooShort,
    /// An internal invariant failed. Never expected; reported instead of panicking.
    Internal(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::InvalidMessage(what) => write!(f, "cannot encode SPA message: {what}"),
            EncodeError::TooLong => f.write_str("SPA packet too long for fwknop servers"),
            EncodeError::TooShort => f.write_str("SPA packet too short for fwknop servers"),
            EncodeError::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A broken internal invariant, from helpers shared by the encoding and decoding paths;
/// each path turns it into its own `Internal` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Internal(pub(crate) &'static str);

impl From<Internal> for PacketError {
    fn from(e: Internal) -> PacketError {
        PacketError::Internal(e.0)
    }
}

impl From<Internal> for EncodeError {
    fn from(e: Internal) -> EncodeError {
        EncodeError::Internal(e.0)
    }
}
