//! [`SpaError`]: why an SPA packet was refused (or could not be built).
//!
//! Modelled on rustls' `InvalidMessage`: a `Copy` enum whose variants name the failing
//! stage, with `&'static str` context where one variant covers several fields. No
//! variant carries packet bytes or key material, so an error can be logged as is.

use std::fmt;

/// Why an SPA packet was refused, or why a message could not be encoded.
///
/// Decoding stages, in the order they run: [`BadLength`](SpaError::BadLength) →
/// [`BadCharset`](SpaError::BadCharset) → [`PrefixTacked`](SpaError::PrefixTacked) →
/// [`BadMac`](SpaError::BadMac) → [`BadCiphertext`](SpaError::BadCiphertext) →
/// [`NotDecrypted`](SpaError::NotDecrypted) → [`BadDigest`](SpaError::BadDigest) →
/// [`BadField`](SpaError::BadField). A daemon trying several stanzas should move on to
/// the next stanza on `BadMac` and `NotDecrypted` (wrong keys), and may stop on the
/// pre-checks (they do not depend on the key).
///
/// Native format ([`crate::spa::native`]), in order: [`BadLength`](SpaError::BadLength)
/// → [`BadMagic`](SpaError::BadMagic) → [`BadVersion`](SpaError::BadVersion) →
/// [`WrongServer`](SpaError::WrongServer) → [`DecryptFailed`](SpaError::DecryptFailed)
/// → [`BadField`](SpaError::BadField) / [`TrailingData`](SpaError::TrailingData) →
/// [`UnknownUser`](SpaError::UnknownUser) → [`BadSignature`](SpaError::BadSignature),
/// then [`Stale`](SpaError::Stale) from `check_time`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpaError {
    /// The wire data is outside 140..=1500 bytes (decoding), or the packet being
    /// built would be (encoding). Native format: not exactly
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
    /// Local configuration error in a key (never caused by packet data).
    BadKey(&'static str),
    /// Encoding: the message is not consistent (e.g. a NAT type without a NAT field).
    InvalidMessage(&'static str),
    /// Encoding: the packet would reach fwknop's 400-character GnuPG length heuristic
    /// (more than 389 characters of ciphertext before the HMAC) and real fwknopd
    /// servers would refuse it. Send fewer ports or a shorter user name.
    TooLong,
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
    /// An internal invariant failed. Never expected; reported instead of panicking.
    Unreachable(&'static str),
}

impl fmt::Display for SpaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaError::BadLength => f.write_str("SPA data length out of range"),
            SpaError::BadCharset => f.write_str("SPA data is not unpadded base64"),
            SpaError::PrefixTacked => f.write_str("SPA data starts with a tacked-on prefix"),
            SpaError::BadMac => f.write_str("SPA HMAC verification failed"),
            SpaError::BadCiphertext(what) => write!(f, "malformed SPA ciphertext: {what}"),
            SpaError::NotDecrypted => f.write_str("SPA data did not decrypt (wrong key?)"),
            SpaError::BadDigest => f.write_str("SPA inner digest mismatch"),
            SpaError::BadField(what) => write!(f, "invalid SPA field: {what}"),
            SpaError::Stale => f.write_str("SPA timestamp outside the allowed window"),
            SpaError::BadKey(what) => write!(f, "invalid SPA key configuration: {what}"),
            SpaError::InvalidMessage(what) => write!(f, "cannot encode SPA message: {what}"),
            SpaError::TooLong => f.write_str("SPA packet too long for fwknop servers"),
            SpaError::BadMagic => f.write_str("SPA packet has the wrong magic bytes"),
            SpaError::BadVersion => f.write_str("SPA packet has an unsupported version"),
            SpaError::WrongServer => f.write_str("SPA packet is not addressed to this server key"),
            SpaError::DecryptFailed => f.write_str("SPA packet did not decrypt (tampered or wrong key)"),
            SpaError::UnknownUser => f.write_str("SPA request names an unknown user"),
            SpaError::BadSignature => f.write_str("SPA request signature does not verify"),
            SpaError::TrailingData(what) => write!(f, "trailing data in SPA packet: {what}"),
            SpaError::Unreachable(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for SpaError {}
