//! The cryptographic primitives of fwknop's Rijndael mode, with no parsing policy.
//!
//! - base64: standard alphabet, never padded on output; on input strictly unpadded
//!   with zero trailing bits (see the module doc of [`super`] for why).
//! - `EVP_BytesToKey(MD5, 1 iteration)` → AES-256 key (32 bytes) + CBC IV (16 bytes).
//! - AES-256-CBC over `"Salted__" ‖ salt ‖ ciphertext` (OpenSSL's salted format).
//! - RFC 2104 HMAC and plain digests over the seven fwknop hash types.
//!
//! Secrets (passphrases, derived keys, plaintexts) live in [`Zeroizing`] buffers.

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use hmac::digest::common::BlockSizeUser;
use hmac::digest::{Digest, KeyInit, Mac};
use hmac::SimpleHmac;
use md5::Md5;
use zeroize::Zeroizing;

use super::HashType;
use crate::spa::PacketError;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// OpenSSL's salted-blob magic.
pub(crate) const SALTED: &[u8; 8] = b"Salted__";
/// AES block size.
const BLOCK: usize = 16;

/// Unpadded standard base64. Decoding refuses `=`, and refuses non-zero trailing bits
/// (base64 crate default), so every byte string has exactly one accepted encoding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Configuration-file base64 (`KEY_BASE64`): padding optional. Trusted input.
const B64_CONFIG: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64 without padding, as fwknop writes every field.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

/// Strict unpadded base64 decode. `None` on any deviation.
pub(crate) fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// Padded base64, as `fwknop --key-gen` prints keys.
pub(crate) fn b64_encode_padded(data: &[u8]) -> String {
    B64_CONFIG.encode(data)
}

/// Decode a key from configuration (padding optional).
pub(crate) fn b64_decode_config(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    B64_CONFIG.decode(text.trim()).ok().map(Zeroizing::new)
}

/// Is `b` in the standard base64 alphabet (without `=`)?
#[cfg(test)]
pub(crate) fn is_b64_char(b: u8) -> bool {
    B64_CHARS[usize::from(b)]
}

/// Whether every byte is in the standard base64 alphabet (no `=`). A table lookup per
/// byte, without early exit or data-dependent branches: under a flood of random
/// base64-looking junk this check runs on every byte of every packet, and the
/// branchy form mispredicted on random input (42 % of the daemon's time in a profile).
pub(crate) fn all_b64(data: &[u8]) -> bool {
    data.iter().fold(true, |ok, &b| ok & B64_CHARS[usize::from(b)])
}

/// `A-Z a-z 0-9 + /`.
const B64_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        i += 1;
    }
    t
};

/// Length of the unpadded base64 form of a digest of this type.
pub(crate) const fn b64_len(t: HashType) -> usize {
    match t {
        HashType::Md5 => 22,
        HashType::Sha1 => 27,
        HashType::Sha256 | HashType::Sha3_256 => 43,
        HashType::Sha384 => 64,
        HashType::Sha512 | HashType::Sha3_512 => 86,
    }
}

fn digest_with<D: Digest>(data: &[u8]) -> String {
    b64_encode(&D::digest(data))
}

/// Unkeyed digest of `data`, base64 without padding (the inner SPA digest).
pub(crate) fn digest_b64(t: HashType, data: &[u8]) -> String {
    match t {
        HashType::Md5 => digest_with::<Md5>(data),
        HashType::Sha1 => digest_with::<sha1::Sha1>(data),
        HashType::Sha256 => digest_with::<sha2::Sha256>(data),
        HashType::Sha384 => digest_with::<sha2::Sha384>(data),
        HashType::Sha512 => digest_with::<sha2::Sha512>(data),
        HashType::Sha3_256 => digest_with::<sha3::Sha3_256>(data),
        HashType::Sha3_512 => digest_with::<sha3::Sha3_512>(data),
    }
}

fn hmac_with<D: Digest + BlockSizeUser + Clone>(key: &[u8], parts: &[&[u8]]) -> String {
    // SimpleHmac accepts keys of any length (RFC 2104: longer keys are hashed first),
    // so `new_from_slice` cannot fail; an empty MAC simply never matches.
    match <SimpleHmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            for p in parts {
                mac.update(p);
            }
            b64_encode(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// RFC 2104 HMAC over the concatenation of `parts`, base64 without padding.
pub(crate) fn hmac_b64(t: HashType, key: &[u8], parts: &[&[u8]]) -> String {
    match t {
        HashType::Md5 => hmac_with::<Md5>(key, parts),
        HashType::Sha1 => hmac_with::<sha1::Sha1>(key, parts),
        HashType::Sha256 => hmac_with::<sha2::Sha256>(key, parts),
        HashType::Sha384 => hmac_with::<sha2::Sha384>(key, parts),
        HashType::Sha512 => hmac_with::<sha2::Sha512>(key, parts),
        HashType::Sha3_256 => hmac_with::<sha3::Sha3_256>(key, parts),
        HashType::Sha3_512 => hmac_with::<sha3::Sha3_512>(key, parts),
    }
}

/// OpenSSL `EVP_BytesToKey` with MD5 and one iteration, producing 48 bytes:
/// `D1 = MD5(pass ‖ salt)`, `Dn = MD5(Dn-1 ‖ pass ‖ salt)`; key = bytes 0..32,
/// IV = bytes 32..48.
fn bytes_to_key(pass: &[u8], salt: &[u8; 8]) -> Zeroizing<[u8; 48]> {
    let mut out = Zeroizing::new([0u8; 48]);
    let mut prev: Option<Zeroizing<[u8; 16]>> = None;
    for chunk in out.chunks_exact_mut(16) {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(p.as_slice());
        }
        h.update(pass);
        h.update(salt);
        let d: Zeroizing<[u8; 16]> = Zeroizing::new(h.finalize().into());
        chunk.copy_from_slice(d.as_slice());
        prev = Some(d);
    }
    out
}

fn split_key_iv(kiv: &[u8; 48]) -> (&[u8; 32], &[u8; 16]) {
    let (k, iv) = kiv.split_at(32);
    // Both conversions are on fixed-size splits of a 48-byte array.
    match (<&[u8; 32]>::try_from(k), <&[u8; 16]>::try_from(iv)) {
        (Ok(k), Ok(iv)) => (k, iv),
        _ => (&[0; 32], &[0; 16]),
    }
}

/// Encrypt `plaintext` into `"Salted__" ‖ salt ‖ AES-256-CBC(PKCS#7)`.
pub(crate) fn encrypt(pass: &[u8], salt: &[u8; 8], plaintext: &[u8]) -> Vec<u8> {
    let kiv = bytes_to_key(pass, salt);
    let (key, iv) = split_key_iv(&kiv);
    let ct = Aes256CbcEnc::new(key.into(), iv.into()).encrypt_padded_vec::<Pkcs7>(plaintext);
    let mut blob = Vec::with_capacity(16 + ct.len());
    blob.extend_from_slice(SALTED);
    blob.extend_from_slice(salt);
    blob.extend_from_slice(&ct);
    blob
}

/// Decrypt a salted blob. PKCS#7 padding is removed only when it is well formed
/// (some real clients send none); whether the result is a real plaintext is decided
/// by the caller (16 digits + `:`, then the inner digest).
pub(crate) fn decrypt(pass: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, PacketError> {
    let rest =
        blob.strip_prefix(SALTED.as_slice()).ok_or(PacketError::BadCiphertext("missing Salted__ header"))?;
    let (salt, ct) = rest.split_first_chunk::<8>().ok_or(PacketError::BadCiphertext("missing salt"))?;
    if ct.is_empty() || ct.len() % BLOCK != 0 {
        return Err(PacketError::BadCiphertext("not a whole number of blocks"));
    }
    let kiv = bytes_to_key(pass, salt);
    let (key, iv) = split_key_iv(&kiv);
    let mut buf = Zeroizing::new(ct.to_vec());
    let len = Aes256CbcDec::new(key.into(), iv.into())
        .decrypt_padded::<NoPadding>(&mut buf)
        .map_err(|_| PacketError::Internal("block-aligned CBC decrypt failed"))?
        .len();
    buf.truncate(len);
    let pad = usize::from(buf.last().copied().unwrap_or(0));
    if (1..=BLOCK).contains(&pad) && pad <= buf.len() {
        let start = buf.len() - pad;
        if buf[start..].iter().all(|&b| usize::from(b) == pad) {
            buf.truncate(start);
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -md md5 -P -S 0102030405060708 -pass pass:fwknoptest`
        // is reproduced by the definition; check the structure instead of a constant:
        // D2 chains D1, D3 chains D2.
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let kiv = bytes_to_key(b"fwknoptest", &salt);
        let d1: [u8; 16] = Md5::new().chain_update(b"fwknoptest").chain_update(salt).finalize().into();
        assert_eq!(&kiv[..16], &d1);
        let d2: [u8; 16] =
            Md5::new().chain_update(d1).chain_update(b"fwknoptest").chain_update(salt).finalize().into();
        assert_eq!(&kiv[16..32], &d2);
    }

    #[test]
    fn encrypt_then_decrypt_strips_padding() {
        let salt = [9; 8];
        for len in 0..40 {
            let pt: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let blob = encrypt(b"k", &salt, &pt);
            assert_eq!((blob.len() - 16) % 16, 0);
            assert_eq!(&decrypt(b"k", &blob).unwrap()[..], &pt[..]);
        }
    }

    #[test]
    fn rejects_blob_without_header_or_blocks() {
        assert_eq!(
            decrypt(b"k", b"Salted_x12345678aaaaaaaaaaaaaaaa"),
            Err(PacketError::BadCiphertext("missing Salted__ header"))
        );
        assert!(matches!(decrypt(b"k", b"Salted__1234567"), Err(PacketError::BadCiphertext(_))));
        assert!(matches!(decrypt(b"k", b"Salted__12345678"), Err(PacketError::BadCiphertext(_))));
        assert!(matches!(decrypt(b"k", b"Salted__12345678abc"), Err(PacketError::BadCiphertext(_))));
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(b64_decode(b"YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(b64_decode(b"YQ=="), None);
        assert_eq!(b64_decode(b"YR"), None, "non-zero trailing bits");
        assert_eq!(b64_decode(b"Y"), None);
        assert_eq!(b64_encode(b"a"), "YQ");
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_b64(HashType::Sha256, b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let expect = b64_encode(&[
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
            0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
        ]);
        assert_eq!(mac, expect);
    }

    #[test]
    fn digest_lengths_match_types() {
        for t in HashType::ALL {
            assert_eq!(digest_b64(t, b"x").len(), b64_len(t), "{t:?}");
            assert_eq!(hmac_b64(t, b"k", &[b"x"]).len(), b64_len(t), "{t:?}");
        }
    }
}
