//! Client side: [`SpaMessage`] → wire text a stock fwknopd accepts.

use zeroize::Zeroizing;

use super::crypto::{b64_encode, b64_encode_padded, encrypt, hmac_b64};
use super::fields::{build_plaintext, RAND_LEN};
use super::{FwknopKey, SpaMessage, MAX_PRE_HMAC_LEN, MAX_WIRE_LEN, MIN_WIRE_LEN, SALTED_B64};
use crate::spa::EncodeError;

/// 16 uniformly random ASCII digits (the SPA random value).
///
/// Rejection sampling: bytes ≥ 250 are redrawn, so every digit is uniform. Unlike
/// libfko (≤ 32 bits from a seeded `rand()`), this carries ~53 bits of the caller's RNG.
pub fn random_digits(rng: &mut impl FnMut(&mut [u8])) -> [u8; RAND_LEN] {
    let mut out = [b'0'; RAND_LEN];
    let mut filled = 0;
    let mut buf = [0u8; 32];
    while filled < RAND_LEN {
        rng(&mut buf);
        for &b in &buf {
            if b < 250 && filled < RAND_LEN {
                out[filled] = b'0' + b % 10;
                filled += 1;
            }
        }
    }
    out
}

/// Encrypt (and MAC) a plaintext into wire text. Checks the size rules.
pub(crate) fn seal(
    plaintext: &[u8],
    key: &FwknopKey,
    rng: &mut impl FnMut(&mut [u8]),
) -> Result<String, EncodeError> {
    let mut salt = [0u8; 8];
    rng(&mut salt);
    let blob = encrypt(&key.cipher_pass(), &salt, plaintext);
    let full = b64_encode(&blob);
    let data =
        full.strip_prefix(SALTED_B64).ok_or(EncodeError::Internal("salted blob lacks its base64 prefix"))?;
    // fwknopd classifies ≥ 400 characters (prefix re-added) as GnuPG and refuses them.
    if data.len() > MAX_PRE_HMAC_LEN {
        return Err(EncodeError::TooLong);
    }
    let mut wire = String::with_capacity(data.len() + 86);
    wire.push_str(data);
    if let Some((t, hkey)) = &key.hmac {
        wire.push_str(&hmac_b64(*t, hkey, &[full.as_bytes()]));
    }
    if !(MIN_WIRE_LEN..=MAX_WIRE_LEN).contains(&wire.len()) {
        return Err(EncodeError::TooShort);
    }
    Ok(wire)
}

/// Build the wire text for `msg` (client side).
///
/// The message type is adjusted as libfko does: with a client timeout (> 0) types
/// 1/2/5 become 3/4/6; without one (or `Some(0)`), 3/4/6 become 1/2/5. Everything
/// else, including `rand` and `version`, is sent as given (use
/// [`SpaMessage::new_access`] / [`SpaMessage::new_command`] for fresh values). `rng`
/// provides the 8-byte salt.
///
/// # Errors
/// [`EncodeError::InvalidMessage`] if a field is out of fwknop's limits or the fields do
/// not fit the message type (e.g. a command with a timeout); [`EncodeError::TooLong`] if
/// the packet would trip fwknopd's GnuPG length heuristic (> 389 characters before the
/// HMAC); [`EncodeError::TooShort`] if it would be shorter than the 140 bytes fwknopd
/// requires (very short versions and user names with an MD5 digest).
pub fn encode(
    msg: &SpaMessage,
    key: &FwknopKey,
    rng: &mut impl FnMut(&mut [u8]),
) -> Result<String, EncodeError> {
    let effective = msg.with_effective_type()?;
    let plaintext = build_plaintext(&effective)?;
    seal(plaintext.as_bytes(), key, rng)
}

/// Generate keys as `fwknop --key-gen` does: `(KEY_BASE64, HMAC_KEY_BASE64)`, 32 and 64
/// random bytes, padded base64 (ready for access.conf / .fwknoprc).
pub fn fwknop_keygen(rng: &mut impl FnMut(&mut [u8])) -> (Zeroizing<String>, Zeroizing<String>) {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut hkey = Zeroizing::new([0u8; 64]);
    rng(key.as_mut_slice());
    rng(hkey.as_mut_slice());
    (Zeroizing::new(b64_encode_padded(key.as_slice())), Zeroizing::new(b64_encode_padded(hkey.as_slice())))
}
