//! portcullis' native SPA format, version 1. The normative spec, with the threat
//! model and test vectors, is `docs/spa-native.md`; this is the summary.
//!
//! ```text
//! packet (256 bytes, one UDP datagram, no reply ever):
//!   0..3    magic "pcn"            3     version 0x01
//!   4..8    server tag = SHA-256(TAG_LABEL ‖ server_pub ‖ eph_pub)[..4]
//!   8..40   eph_pub (client's ephemeral X25519 public key)
//!   40..240 ChaCha20-Poly1305(key, nonce = 0¹², aad = bytes 0..40, body)
//!   240..256 Poly1305 tag
//! key  = HKDF-SHA256(salt = "portcullis spa-native v1", ikm = X25519(eph, server),
//!                    info = KEY_INFO_LABEL ‖ server_pub ‖ eph_pub)
//! body = Ed25519 signature (64) ‖ fields ‖ zero padding   (200 bytes)
//! fields = user_len u8 ‖ user ‖ timestamp u64 ‖ nonce[16] ‖ allow ‖ duration u32
//!          ‖ n u8 ‖ n × (proto u8 ‖ port u16)           (big-endian, canonical)
//! signature over SIG_LABEL ‖ server_pub ‖ bytes 0..40 ‖ fields+padding (136 bytes)
//! ```
//!
//! # API
//! - Keys: [`ServerKey`] / [`ServerPublicKey`] (X25519, `pcs1-sec-` /
//!   `pcs1-pub-`), [`UserKey`] / [`UserPublicKey`] (Ed25519, `pcu1-sec-` / `pcu1-pub-`).
//! - Client: [`Request::new`], then [`seal`].
//! - Server, in this order: [`open`] (length/magic/version → server tag → X25519 +
//!   AEAD → bounded parse, no trailing data → user lookup → signature), then
//!   [`check_time`], then the replay cache keyed by [`canonical_replay_key`] (kept
//!   until [`replay_key_expiry`]), then policy. [`precheck`] is the cheap first stage
//!   alone. Never send a reply.
//! - [`fuzz_open`]: fuzz entry point.
//!
//! # Guarantees
//! No panics on any input, no `unsafe`, no allocation sized by packet claims (the
//! only allocations are the ≤ 32-byte user name and the ≤ 16-entry service list),
//! secret-dependent comparisons in constant time, secrets and plaintexts in
//! zeroizing buffers. Time and randomness are passed in.

mod codec;
mod keys;
mod packet;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

pub use keys::{
    ServerKey, ServerPublicKey, UserKey, UserLookup, UserPublicKey, SERVER_PUBLIC_PREFIX,
    SERVER_SECRET_PREFIX, USER_PUBLIC_PREFIX, USER_SECRET_PREFIX,
};
pub use packet::{header_for, open, precheck, seal};

use crate::service::Service;
use crate::spa::window::Window;
use crate::spa::{EncodeError, PacketError};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 3] = *b"pcn";
/// Protocol version at offset 3.
pub const VERSION: u8 = 1;
/// Length of the server tag at offset 4.
pub const SERVER_TAG_LEN: usize = 4;
/// Cleartext header: magic, version, server tag, ephemeral public key.
pub const HEADER_LEN: usize = 3 + 1 + SERVER_TAG_LEN + 32;
/// Encrypted body length: signature, fields, zero padding.
pub const BODY_LEN: usize = 200;
/// Poly1305 tag length.
pub const AEAD_TAG_LEN: usize = 16;
/// Every version-1 packet is exactly this long, whatever it asks for, so the length
/// reveals nothing about the user name, the address family or the service count.
pub const PACKET_LEN: usize = HEADER_LEN + BODY_LEN + AEAD_TAG_LEN;
/// Largest datagram the format will ever use (all versions).
pub const MAX_DATAGRAM_LEN: usize = 512;
/// Ed25519 signature length, at the start of the body.
pub const SIGNATURE_LEN: usize = 64;
/// Fields region (fields + zero padding) after the signature.
pub const FIELDS_LEN: usize = BODY_LEN - SIGNATURE_LEN;
/// Longest user name.
pub const MAX_USER_LEN: usize = 32;
/// Most services per request.
pub const MAX_SERVICES: usize = 16;
/// Longest possible fields encoding: user (1 + 32), timestamp 8, nonce 16, allow
/// (1 + 16), duration 4, services (1 + 16 × 3).
pub const MAX_FIELDS_ENCODED: usize = 1 + MAX_USER_LEN + 8 + 16 + 1 + 16 + 4 + 1 + MAX_SERVICES * 3;

const _: () = assert!(PACKET_LEN == 256 && PACKET_LEN <= MAX_DATAGRAM_LEN);
const _: () = assert!(MAX_FIELDS_ENCODED <= FIELDS_LEN);

/// Domain label of the server tag hash.
pub(crate) const TAG_LABEL: &[u8] = b"portcullis spa-native v1 server tag\0";
/// HKDF salt: names the protocol and version.
pub(crate) const HKDF_SALT: &[u8] = b"portcullis spa-native v1";
/// HKDF info prefix (followed by server_pub ‖ eph_pub).
pub(crate) const KEY_INFO_LABEL: &[u8] = b"portcullis spa-native v1 aead key\0";
/// Signature domain label (followed by server_pub ‖ header ‖ fields region).
pub(crate) const SIG_LABEL: &[u8] = b"portcullis spa-native v1 request signature\0";
/// Replay key domain label.
const REPLAY_LABEL: &[u8] = b"portcullis spa-native v1 replay key\0";

/// The address the server should open the services for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowAddr {
    /// The source address of the SPA datagram as the server sees it (after NAT).
    Source,
    /// This IPv4 address (never `0.0.0.0`).
    V4(Ipv4Addr),
    /// This IPv6 address (never `::`, never IPv4-mapped).
    V6(Ipv6Addr),
}

impl AllowAddr {
    /// The concrete address, given the datagram's source address.
    pub fn resolve(self, source: IpAddr) -> IpAddr {
        match self {
            AllowAddr::Source => source,
            AllowAddr::V4(a) => IpAddr::V4(a),
            AllowAddr::V6(a) => IpAddr::V6(a),
        }
    }
}

/// A decrypted, signature-checked access request (or one to seal).
///
/// Invariants (checked by [`seal`], guaranteed by [`open`]): `user` is 1..=32 of
/// `[A-Za-z0-9_.-]`; `services` has 1..=16 entries, strictly ascending (sorted by
/// protocol then port, no duplicates), ports non-zero; `duration_secs ≥ 1`; `allow`
/// as documented on [`AllowAddr`]. [`Request::new`] establishes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// User id, looked up in the server's user table.
    pub user: String,
    /// Client's Unix time, seconds.
    pub timestamp: u64,
    /// Fresh random bytes: makes every request unique (and its replay key).
    pub nonce: [u8; 16],
    /// Address to open for.
    pub allow: AllowAddr,
    /// Services to open, canonical order.
    pub services: Vec<Service>,
    /// Requested open duration, seconds (the daemon caps it by policy).
    pub duration_secs: u32,
}

impl Request {
    /// A request with a fresh nonce from `rng`; `services` is sorted and deduplicated.
    ///
    /// # Errors
    /// [`EncodeError::InvalidMessage`] if an invariant of [`Request`] does not hold.
    pub fn new(
        user: &str,
        timestamp: u64,
        allow: AllowAddr,
        services: impl IntoIterator<Item = Service>,
        duration_secs: u32,
        rng: &mut impl FnMut(&mut [u8]),
    ) -> Result<Request, EncodeError> {
        let mut services: Vec<Service> = services.into_iter().collect();
        services.sort_unstable();
        services.dedup();
        let mut nonce = [0u8; 16];
        rng(&mut nonce);
        let req = Request { user: user.to_owned(), timestamp, nonce, allow, services, duration_secs };
        req.validate()?;
        Ok(req)
    }

    /// Check the invariants listed on [`Request`].
    ///
    /// # Errors
    /// [`EncodeError::InvalidMessage`] naming the first violated rule.
    pub fn validate(&self) -> Result<(), EncodeError> {
        codec::check_request(self).map_err(EncodeError::InvalidMessage)
    }
}

/// Replay-cache key: SHA-256 over a length-prefixed encoding of every decrypted field
/// (user, timestamp, nonce, allow, duration, services).
///
/// It is computed from the request, not from the wire: two packets carrying the same
/// request are one request even though their ephemeral keys, and so every
/// ciphertext byte, differ. It covers the nonce, so two genuine requests (each
/// sealed with a fresh nonce) never collide, and re-sealing one request with a new
/// ephemeral key does not escape the cache. The signature is left out: it is a
/// function of the fields (Ed25519 is deterministic and verified strictly), so
/// adding it would only create a second spelling.
pub fn canonical_replay_key(req: &Request) -> [u8; 32] {
    fn put(h: &mut Sha256, tag: u8, bytes: &[u8]) {
        h.update([tag]);
        h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    h.update(REPLAY_LABEL);
    put(&mut h, 1, req.user.as_bytes());
    put(&mut h, 2, &req.timestamp.to_be_bytes());
    put(&mut h, 3, &req.nonce);
    match req.allow {
        AllowAddr::Source => put(&mut h, 4, &[]),
        AllowAddr::V4(a) => put(&mut h, 4, &a.octets()),
        AllowAddr::V6(a) => put(&mut h, 4, &a.octets()),
    }
    put(&mut h, 5, &req.duration_secs.to_be_bytes());
    put(&mut h, 6, &u32::try_from(req.services.len()).unwrap_or(u32::MAX).to_be_bytes());
    for s in &req.services {
        put(&mut h, 7, &[s.proto.number()]);
        put(&mut h, 8, &s.port.to_be_bytes());
    }
    h.finalize().into()
}

/// Symmetric clock-skew window: accept iff `|now_unix − req.timestamp| ≤ skew`
/// (seconds; both bounds inclusive; no overflow at the ends of `u64`). The rule is
/// [`Window::accepts`](crate::spa::window::Window::accepts), shared with fwknop.
///
/// # Errors
/// [`PacketError::Stale`] outside the window.
pub fn check_time(req: &Request, now_unix: u64, skew: u64) -> Result<(), PacketError> {
    if Window::new(skew).accepts(req.timestamp, now_unix) {
        Ok(())
    } else {
        Err(PacketError::Stale)
    }
}

/// The last Unix second at which [`check_time`] with the same `skew` accepts `req`:
/// the daemon must keep the request's replay key live *through* this second
/// (inclusive; see [`crate::spa::window`]).
pub fn replay_key_expiry(req: &Request, skew: u64) -> u64 {
    Window::new(skew).last_accepted(req.timestamp)
}

/// Fuzz entry point. Never panics, except when the parse/re-encode oracle finds a bug.
///
/// 1. [`open`] on `data` with a fixed server key and user table (exercises the
///    length/magic/tag checks and, rarely, X25519 + AEAD).
/// 2. Treats `data` as a fields region (zero-padded): parses it and, if accepted,
///    checks that re-encoding gives back the same bytes (one encoding per request).
/// 3. Treats `data` as a decrypted body: encrypts it properly for the fixed server
///    and opens it, so the fuzzer reaches the parser and the signature check without
///    having to defeat the AEAD.
pub fn fuzz_open(data: &[u8]) {
    let server = ServerKey::from_bytes([0x5a; 32]);
    let user = UserKey::from_bytes(&[0xa5; 32]);
    let mut users = BTreeMap::new();
    users.insert("fuzz".to_owned(), user.public());
    let _ = open(data, &server, &users);

    if data.len() <= FIELDS_LEN {
        let mut fields = [0u8; FIELDS_LEN];
        fields[..data.len()].copy_from_slice(data);
        if let Ok(req) = codec::parse_fields(&fields) {
            let mut again = [0u8; FIELDS_LEN];
            match codec::encode_fields(&req, &mut again) {
                Ok(_) => assert_eq!(again, fields, "parse/encode round trip"),
                Err(e) => panic!("accepted fields cannot be re-encoded: {e}"),
            }
        }
    }

    let mut body = [0u8; BODY_LEN];
    let n = data.len().min(BODY_LEN);
    body[..n].copy_from_slice(&data[..n]);
    if let Ok(pkt) = packet::seal_body(&body, server.public(), [0x33; 32]) {
        let _ = open(&pkt, &server, &users);
    }
}
