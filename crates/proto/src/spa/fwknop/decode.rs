//! Server side: wire text → [`SpaMessage`], for one access.conf stanza's keys.
//!
//! Order (each step only runs if the previous one passed):
//! 1. [`precheck`]: length 140..=1500, unpadded-base64 charset, no `U2FsdGVkX1` prefix;
//! 2. HMAC (if the stanza has one): slice the configured length off the end, recompute
//!    over `"U2FsdGVkX1" ‖ rest`, compare the base64 strings in constant time;
//! 3. re-add the prefix, strict base64 decode, `Salted__` check, AES-256-CBC decrypt;
//! 4. plaintext: 16 digits + `:`, printable, field grammar, inner digest (constant time).

use subtle::ConstantTimeEq;

use super::crypto::{all_b64, b64_decode, b64_len, decrypt, hmac_b64};
use super::fields::parse_plaintext;
use super::{FwknopKey, SpaMessage, MAX_WIRE_LEN, MIN_WIRE_LEN, SALTED_B64};
use crate::spa::PacketError;

/// The key-independent checks fwknopd runs before trying any stanza.
///
/// # Errors
/// [`PacketError::BadLength`] outside 140..=1500 bytes; [`PacketError::BadCharset`] for any
/// byte outside `A–Z a–z 0–9 + /` (fwknop clients strip `=`, so it is refused too);
/// [`PacketError::PrefixTacked`] if the data starts with `U2FsdGVkX1`.
pub fn precheck(wire: &[u8]) -> Result<(), PacketError> {
    if !(MIN_WIRE_LEN..=MAX_WIRE_LEN).contains(&wire.len()) {
        return Err(PacketError::BadLength);
    }
    if !all_b64(wire) {
        return Err(PacketError::BadCharset);
    }
    if wire.starts_with(SALTED_B64.as_bytes()) {
        return Err(PacketError::PrefixTacked);
    }
    Ok(())
}

/// Verify the HMAC (if configured) and return the ciphertext part of the wire.
fn authenticate<'a>(wire: &'a [u8], key: &FwknopKey) -> Result<&'a [u8], PacketError> {
    let Some((hmac_type, hmac_key)) = &key.hmac else {
        return Ok(wire);
    };
    let mac_len = b64_len(*hmac_type);
    let split = wire.len().checked_sub(mac_len).filter(|&s| s > 0).ok_or(PacketError::BadMac)?;
    let (data, mac) = wire.split_at(split);
    let want = hmac_b64(*hmac_type, hmac_key, &[SALTED_B64.as_bytes(), data]);
    if bool::from(want.as_bytes().ct_eq(mac)) {
        Ok(data)
    } else {
        Err(PacketError::BadMac)
    }
}

/// Decode one SPA packet with one stanza's keys: the whole server-side codec path.
///
/// Freshness ([`super::check_age`]), replay ([`super::canonical_replay_key`]) and
/// policy (message type, ports, NAT, user) are the caller's next steps.
///
/// # Errors
/// The first failing stage, see [`PacketError`]. `BadMac` and `NotDecrypted` mean "not
/// this stanza's keys": try the next stanza.
pub fn decode(wire: &[u8], key: &FwknopKey) -> Result<SpaMessage, PacketError> {
    precheck(wire)?;
    let data = authenticate(wire, key)?;

    // Put back the `U2FsdGVkX1` the client stripped. Bounded by the 1500-byte wire.
    let mut b64 = Vec::with_capacity(SALTED_B64.len() + data.len());
    b64.extend_from_slice(SALTED_B64.as_bytes());
    b64.extend_from_slice(data);
    let blob = b64_decode(&b64).ok_or(PacketError::BadCiphertext("invalid base64"))?;
    let plaintext = decrypt(&key.cipher_pass(), &blob)?;
    parse_plaintext(&plaintext)
}
