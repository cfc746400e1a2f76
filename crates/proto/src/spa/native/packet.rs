//! Sealing and opening whole packets: header, server tag, X25519 + HKDF-SHA256 key
//! agreement, ChaCha20-Poly1305, and the Ed25519 signature inside.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use ed25519_dalek::{Signature, Signer};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use super::codec::{encode_fields, parse_fields};
use super::keys::{ServerKey, ServerPublicKey, UserKey, UserLookup};
use super::{
    Request, AEAD_TAG_LEN, BODY_LEN, FIELDS_LEN, HEADER_LEN, HKDF_SALT, KEY_INFO_LABEL, MAGIC,
    MAX_DATAGRAM_LEN, PACKET_LEN, SIGNATURE_LEN, SIG_LABEL, VERSION,
};
use crate::spa::error::Internal;
use crate::spa::{EncodeError, PacketError};

const TAG_AT: usize = 4;
const EPH_AT: usize = 8;
/// Length of the message the user signs.
const SIGNED_LEN: usize = SIG_LABEL.len() + 32 + HEADER_LEN + FIELDS_LEN;

/// The cleartext parts of a packet that passed [`precheck`].
struct Parts<'a> {
    header: &'a [u8; HEADER_LEN],
    eph_pub: [u8; 32],
    ciphertext: &'a [u8; BODY_LEN],
    tag: [u8; AEAD_TAG_LEN],
}

fn split_checked<'a>(packet: &'a [u8], server: &ServerPublicKey) -> Result<Parts<'a>, PacketError> {
    if packet.len() < MAGIC.len() + 1 || packet.len() > MAX_DATAGRAM_LEN {
        return Err(PacketError::BadLength);
    }
    if packet[..MAGIC.len()] != MAGIC {
        return Err(PacketError::BadMagic);
    }
    if packet[MAGIC.len()] != VERSION {
        return Err(PacketError::BadVersion);
    }
    let (header, rest) = packet.split_first_chunk::<HEADER_LEN>().ok_or(PacketError::BadLength)?;
    let (ciphertext, rest) = rest.split_first_chunk::<BODY_LEN>().ok_or(PacketError::BadLength)?;
    let tag = <[u8; AEAD_TAG_LEN]>::try_from(rest).map_err(|_| PacketError::BadLength)?;
    let mut eph_pub = [0u8; 32];
    eph_pub.copy_from_slice(&header[EPH_AT..]);
    // The tag is not secret (anyone with the server's public key can compute it);
    // constant time anyway, as a matter of hygiene.
    if !bool::from(server.tag_for(&eph_pub).ct_eq(&header[TAG_AT..EPH_AT])) {
        return Err(PacketError::WrongServer);
    }
    Ok(Parts { header, eph_pub, ciphertext, tag })
}

/// The cheap first stage of [`open`], with no public-key operation: length, magic,
/// version, and the server tag (one SHA-256 compression). Junk and packets for other
/// server keys stop here. Passing it means only "someone knows this server's public
/// key" (or copied a header off the wire).
///
/// # Errors
/// [`PacketError::BadLength`], [`PacketError::BadMagic`], [`PacketError::BadVersion`],
/// [`PacketError::WrongServer`].
pub fn precheck(packet: &[u8], server: &ServerPublicKey) -> Result<(), PacketError> {
    split_checked(packet, server).map(|_| ())
}

fn aead(
    shared: &SharedSecret,
    server_pub: &[u8; 32],
    eph_pub: &[u8; 32],
) -> Result<ChaCha20Poly1305, Internal> {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), shared.as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[KEY_INFO_LABEL, server_pub, eph_pub], okm.as_mut_slice())
        .map_err(|_| Internal("HKDF output length"))?;
    let key: &Key = (&*okm).into();
    Ok(ChaCha20Poly1305::new(key))
}

/// `SIG_LABEL ‖ server_pub ‖ header ‖ fields region`, in a zeroizing stack buffer.
fn signed_message(
    server_pub: &[u8; 32],
    header: &[u8; HEADER_LEN],
    fields: &[u8],
) -> Result<Zeroizing<[u8; SIGNED_LEN]>, Internal> {
    let mut m = Zeroizing::new([0u8; SIGNED_LEN]);
    let mut at = 0;
    for part in [SIG_LABEL, server_pub.as_slice(), header.as_slice(), fields] {
        let dst = m.get_mut(at..at + part.len()).ok_or(Internal("signed message layout"))?;
        dst.copy_from_slice(part);
        at += part.len();
    }
    if at != SIGNED_LEN {
        return Err(Internal("signed message layout"));
    }
    Ok(m)
}

/// The cleartext header (magic, version, server tag, `eph_pub`) for one ephemeral
/// public key. Anyone holding the server public key can build it, so it authenticates
/// nothing (spec §11); public so tests and benchmarks can make valid-tag junk at the
/// cost of one SHA-256, as an attacker would.
pub fn header_for(server_pub: &ServerPublicKey, eph_pub: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(&MAGIC);
    h[MAGIC.len()] = VERSION;
    h[TAG_AT..EPH_AT].copy_from_slice(&server_pub.tag_for(eph_pub));
    h[EPH_AT..].copy_from_slice(eph_pub);
    h
}

/// Encrypt a complete body (signature ‖ fields region) under a given ephemeral
/// secret. No validation of the body: the building block of [`seal`], and of tests
/// and the fuzz target that need to put arbitrary plaintext behind a valid AEAD.
pub(crate) fn seal_body(
    body: &[u8; BODY_LEN],
    server_pub: &ServerPublicKey,
    eph_secret: [u8; 32],
) -> Result<Vec<u8>, EncodeError> {
    let eph = StaticSecret::from(eph_secret);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let header = header_for(server_pub, &eph_pub);
    encrypt(&header, body, server_pub, &eph)
}

fn encrypt(
    header: &[u8; HEADER_LEN],
    body: &[u8; BODY_LEN],
    server_pub: &ServerPublicKey,
    eph: &StaticSecret,
) -> Result<Vec<u8>, EncodeError> {
    let shared = eph.diffie_hellman(server_pub.point());
    if !shared.was_contributory() {
        // ServerPublicKey::from_bytes refuses small-order points; kept as a backstop.
        return Err(EncodeError::Internal("server public key is a small-order point"));
    }
    let cipher = aead(&shared, server_pub.as_bytes(), PublicKey::from(eph).as_bytes())?;
    let mut buf = Zeroizing::new(*body);
    let tag = cipher
        .encrypt_inout_detached(&Nonce::default(), header, buf.as_mut_slice().into())
        .map_err(|_| EncodeError::Internal("AEAD encryption"))?;
    let mut packet = Vec::with_capacity(PACKET_LEN);
    packet.extend_from_slice(header);
    packet.extend_from_slice(buf.as_slice());
    packet.extend_from_slice(&tag);
    Ok(packet)
}

/// Client side: seal `req` for the server `server_pub`, signed by `user`.
///
/// Draws exactly 32 bytes from `rng` (the ephemeral X25519 secret); the request's
/// nonce was drawn by [`Request::new`]. The output is always
/// [`PACKET_LEN`] bytes. `req.user` should be the name the server lists `user`'s
/// public key under.
///
/// # Errors
/// [`EncodeError::InvalidMessage`] if `req` breaks an invariant of [`Request`].
pub fn seal(
    req: &Request,
    server_pub: &ServerPublicKey,
    user: &UserKey,
    rng: &mut impl FnMut(&mut [u8]),
) -> Result<Vec<u8>, EncodeError> {
    let mut fields = Zeroizing::new([0u8; FIELDS_LEN]);
    encode_fields(req, &mut fields)?;
    let mut eph_bytes = Zeroizing::new([0u8; 32]);
    rng(eph_bytes.as_mut_slice());
    seal_fields(&fields, server_pub, user, *eph_bytes)
}

/// Sign and encrypt a fields region as is (no validation): [`seal`] after encoding,
/// and tests that need a correctly signed but malformed plaintext.
pub(crate) fn seal_fields(
    fields: &[u8; FIELDS_LEN],
    server_pub: &ServerPublicKey,
    user: &UserKey,
    eph_secret: [u8; 32],
) -> Result<Vec<u8>, EncodeError> {
    let eph = StaticSecret::from(eph_secret);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let header = header_for(server_pub, &eph_pub);
    let msg = signed_message(server_pub.as_bytes(), &header, fields.as_slice())?;
    let sig: Signature = user.signing().sign(msg.as_slice());
    let mut body = Zeroizing::new([0u8; BODY_LEN]);
    body[..SIGNATURE_LEN].copy_from_slice(&sig.to_bytes());
    body[SIGNATURE_LEN..].copy_from_slice(fields.as_slice());
    encrypt(&header, &body, server_pub, &eph)
}

/// Server side: check, decrypt, parse and authenticate one datagram.
///
/// Order (each stage only runs if the previous passed; see `docs/spa-native.md`):
/// 1. length (exactly [`PACKET_LEN`]), magic, version, server tag — no public-key work;
/// 2. X25519 with the ephemeral key (refusing small-order points), HKDF, AEAD open
///    with the header as associated data;
/// 3. bounded parse of the fields; non-canonical encodings and non-zero padding refused;
/// 4. user lookup, then strict Ed25519 verification over the server key, header and
///    fields.
///
/// The caller continues with [`check_time`](super::check_time), the replay cache
/// ([`canonical_replay_key`](super::canonical_replay_key)) and policy.
///
/// # Errors
/// The first failing stage's [`PacketError`]; never a panic.
pub fn open(
    packet: &[u8],
    server: &ServerKey,
    users: &(impl UserLookup + ?Sized),
) -> Result<Request, PacketError> {
    let (header, body) = open_body(packet, server)?;
    let (sig, fields) =
        body.split_first_chunk::<SIGNATURE_LEN>().ok_or(PacketError::Internal("body layout"))?;
    let req = parse_fields(fields)?;
    let key = users.verifying_key(&req.user).ok_or(PacketError::UnknownUser)?;
    let msg = signed_message(server.public().as_bytes(), &header, fields)?;
    key.verifying()
        .verify_strict(msg.as_slice(), &Signature::from_bytes(sig))
        .map_err(|_| PacketError::BadSignature)?;
    Ok(req)
}

/// Stages 1 and 2 of [`open`]: the header and the decrypted body.
pub(crate) fn open_body(
    packet: &[u8],
    server: &ServerKey,
) -> Result<([u8; HEADER_LEN], Zeroizing<[u8; BODY_LEN]>), PacketError> {
    let parts = split_checked(packet, server.public())?;
    let eph_pub = PublicKey::from(parts.eph_pub);
    let shared = server.secret().diffie_hellman(&eph_pub);
    if !shared.was_contributory() {
        return Err(PacketError::DecryptFailed);
    }
    let cipher = aead(&shared, server.public().as_bytes(), &parts.eph_pub)?;
    let mut body = Zeroizing::new(*parts.ciphertext);
    cipher
        .decrypt_inout_detached(
            &Nonce::default(),
            parts.header,
            body.as_mut_slice().into(),
            &Tag::from(parts.tag),
        )
        .map_err(|_| PacketError::DecryptFailed)?;
    Ok((*parts.header, body))
}
