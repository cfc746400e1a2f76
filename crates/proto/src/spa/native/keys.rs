//! Keys of the native format and their text encodings.
//!
//! | type | holder | text prefix |
//! |---|---|---|
//! | [`ServerKey`] (X25519 secret) | the daemon only | `pcs1-sec-` |
//! | [`ServerPublicKey`] (X25519 public) | every client of that server | `pcs1-pub-` |
//! | [`UserKey`] (Ed25519 signing seed) | one user's client only | `pcu1-sec-` |
//! | [`UserPublicKey`] (Ed25519 verifying key) | every server that user may open | `pcu1-pub-` |
//!
//! Text form: `prefix ‖ base64url-unpadded(key(32) ‖ check(4))`, 48 characters after the
//! prefix, `check = SHA-256("portcullis key check v1\0" ‖ prefix ‖ key)[..4]`. The
//! check catches typos and truncation; it is not a MAC. Parsing is strict: exact
//! prefix (lower case), exact length, URL-safe alphabet only, no padding, no
//! surrounding whitespace (trim config lines before parsing), matching check, and for
//! public keys a point that is not of small order.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::TAG_LABEL;
use crate::spa::KeyError;

/// Text prefix of a [`ServerKey`].
pub const SERVER_SECRET_PREFIX: &str = "pcs1-sec-";
/// Text prefix of a [`ServerPublicKey`].
pub const SERVER_PUBLIC_PREFIX: &str = "pcs1-pub-";
/// Text prefix of a [`UserKey`].
pub const USER_SECRET_PREFIX: &str = "pcu1-sec-";
/// Text prefix of a [`UserPublicKey`].
pub const USER_PUBLIC_PREFIX: &str = "pcu1-pub-";

const CHECK_LABEL: &[u8] = b"portcullis key check v1\0";
/// Base64 characters after the prefix: 36 bytes → 48 characters, no partial group.
const TEXT_B64_LEN: usize = 48;

fn key_check(prefix: &str, key: &[u8; 32]) -> [u8; 4] {
    let d = Sha256::new().chain_update(CHECK_LABEL).chain_update(prefix).chain_update(key).finalize();
    let mut out = [0u8; 4];
    out.copy_from_slice(&d[..4]);
    out
}

fn encode_text(prefix: &str, key: &[u8; 32]) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 36]);
    raw[..32].copy_from_slice(key);
    raw[32..].copy_from_slice(&key_check(prefix, key));
    // Capacity up front so the secret is never left behind by a reallocation.
    let mut s = Zeroizing::new(String::with_capacity(prefix.len() + TEXT_B64_LEN));
    s.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(raw.as_slice(), &mut s);
    s
}

/// Which of the four key kinds a prefix names, for a helpful mix-up message.
fn kind_of(text: &str) -> Option<&'static str> {
    [
        (SERVER_SECRET_PREFIX, "a server secret key"),
        (SERVER_PUBLIC_PREFIX, "a server public key"),
        (USER_SECRET_PREFIX, "a user secret key"),
        (USER_PUBLIC_PREFIX, "a user public key"),
    ]
    .into_iter()
    .find(|(p, _)| text.starts_with(p))
    .map(|(_, k)| k)
}

fn decode_text(prefix: &str, expected: &'static str, text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let Some(body) = text.strip_prefix(prefix) else {
        return Err(match kind_of(text) {
            Some(_) => KeyError(expected),
            None => KeyError("unknown key prefix (expected pcs1-…/pcu1-…)"),
        });
    };
    if body.len() != TEXT_B64_LEN {
        return Err(KeyError("key text has the wrong length"));
    }
    let mut raw = Zeroizing::new([0u8; 36]);
    match URL_SAFE_NO_PAD.decode_slice(body, raw.as_mut_slice()) {
        Ok(36) => {}
        _ => return Err(KeyError("key text is not unpadded base64url")),
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&raw[..32]);
    let check = key_check(prefix, &key);
    if !bool::from(check.ct_eq(&raw[32..])) {
        return Err(KeyError("key check mismatch (typo or truncated key)"));
    }
    Ok(key)
}

/// Does `pk` lie in the small-order subgroup? Then X25519 with it yields all zeros
/// whatever the secret, and the "encryption" key would be public.
fn x25519_low_order(pk: &PublicKey) -> bool {
    // Any clamped scalar is a multiple of the cofactor 8, so the product with a
    // small-order point is the identity; `was_contributory` reports exactly that.
    !StaticSecret::from([1u8; 32]).diffie_hellman(pk).was_contributory()
}

/// The daemon's static X25519 key. Never leaves the server; zeroed on drop.
#[derive(Clone)]
pub struct ServerKey {
    secret: StaticSecret,
    public: ServerPublicKey,
}

impl ServerKey {
    /// A new key from 32 bytes of the caller's CSPRNG (`rng` fills a buffer).
    pub fn generate(rng: &mut impl FnMut(&mut [u8])) -> ServerKey {
        let mut b = Zeroizing::new([0u8; 32]);
        rng(b.as_mut_slice());
        ServerKey::from_bytes(*b)
    }

    /// The key from its 32 secret bytes (clamped by X25519 on use).
    pub fn from_bytes(bytes: [u8; 32]) -> ServerKey {
        let secret = StaticSecret::from(bytes);
        let public = ServerPublicKey::from_point(PublicKey::from(&secret));
        ServerKey { secret, public }
    }

    /// The public half, to hand to clients.
    pub fn public(&self) -> &ServerPublicKey {
        &self.public
    }

    /// The `pcs1-sec-…` text form (for the daemon's key file).
    pub fn to_text(&self) -> Zeroizing<String> {
        encode_text(SERVER_SECRET_PREFIX, self.secret.as_bytes())
    }

    /// Parse the `pcs1-sec-…` text form.
    ///
    /// # Errors
    /// [`KeyError`] on any deviation from the exact form.
    pub fn from_text(text: &str) -> Result<ServerKey, KeyError> {
        let b = decode_text(SERVER_SECRET_PREFIX, "expected a server secret key (pcs1-sec-…)", text)?;
        Ok(ServerKey::from_bytes(*b))
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey").field("secret", &"<redacted>").field("public", &self.public).finish()
    }
}

/// A server's X25519 public key, as configured in clients.
///
/// Keeps a SHA-256 state with the tag label and the key already absorbed, so the
/// per-packet server tag costs one compression of the ephemeral key.
#[derive(Clone)]
pub struct ServerPublicKey {
    point: PublicKey,
    tag_state: Sha256,
}

impl ServerPublicKey {
    fn from_point(point: PublicKey) -> ServerPublicKey {
        let tag_state = Sha256::new().chain_update(TAG_LABEL).chain_update(point.as_bytes());
        ServerPublicKey { point, tag_state }
    }

    /// From the 32-byte Montgomery u-coordinate.
    ///
    /// # Errors
    /// [`KeyError`] for a small-order point (its shared secrets are public).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<ServerPublicKey, KeyError> {
        let point = PublicKey::from(bytes);
        if x25519_low_order(&point) {
            return Err(KeyError("server public key is a small-order point"));
        }
        Ok(ServerPublicKey::from_point(point))
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.point.as_bytes()
    }

    pub(crate) fn point(&self) -> &PublicKey {
        &self.point
    }

    /// `SHA-256(TAG_LABEL ‖ server_pub ‖ eph_pub)[..4]`.
    pub(crate) fn tag_for(&self, eph_pub: &[u8; 32]) -> [u8; 4] {
        let d = self.tag_state.clone().chain_update(eph_pub).finalize();
        let mut t = [0u8; 4];
        t.copy_from_slice(&d[..4]);
        t
    }
}

impl PartialEq for ServerPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for ServerPublicKey {}

impl fmt::Debug for ServerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerPublicKey({self})")
    }
}

/// The `pcs1-pub-…` text form.
impl fmt::Display for ServerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_text(SERVER_PUBLIC_PREFIX, self.as_bytes()))
    }
}

impl FromStr for ServerPublicKey {
    type Err = KeyError;
    /// Strict `pcs1-pub-…` parser; see the module doc.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b = decode_text(SERVER_PUBLIC_PREFIX, "expected a server public key (pcs1-pub-…)", s)?;
        ServerPublicKey::from_bytes(*b)
    }
}

/// One user's Ed25519 signing key. Only that user's client holds it; zeroed on drop.
#[derive(Clone)]
pub struct UserKey {
    signing: SigningKey,
}

impl UserKey {
    /// A new key from 32 bytes of the caller's CSPRNG.
    pub fn generate(rng: &mut impl FnMut(&mut [u8])) -> UserKey {
        let mut b = Zeroizing::new([0u8; 32]);
        rng(b.as_mut_slice());
        UserKey::from_bytes(&b)
    }

    /// From the 32-byte Ed25519 seed (RFC 8032 secret key).
    pub fn from_bytes(seed: &[u8; 32]) -> UserKey {
        UserKey { signing: SigningKey::from_bytes(seed) }
    }

    /// The public half, for the servers' user lists.
    pub fn public(&self) -> UserPublicKey {
        UserPublicKey { key: self.signing.verifying_key() }
    }

    /// The `pcu1-sec-…` text form.
    pub fn to_text(&self) -> Zeroizing<String> {
        encode_text(USER_SECRET_PREFIX, self.signing.as_bytes())
    }

    /// Parse the `pcu1-sec-…` text form.
    ///
    /// # Errors
    /// [`KeyError`] on any deviation from the exact form.
    pub fn from_text(text: &str) -> Result<UserKey, KeyError> {
        let b = decode_text(USER_SECRET_PREFIX, "expected a user secret key (pcu1-sec-…)", text)?;
        Ok(UserKey::from_bytes(&b))
    }

    pub(crate) fn signing(&self) -> &SigningKey {
        &self.signing
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey").field("secret", &"<redacted>").field("public", &self.public()).finish()
    }
}

/// A user's Ed25519 verifying key, as listed in a server's configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserPublicKey {
    key: VerifyingKey,
}

impl UserPublicKey {
    /// From the 32-byte compressed Edwards point.
    ///
    /// # Errors
    /// [`KeyError`] if the bytes are not a canonically encoded point, or the
    /// point has small order (such a key would accept forged signatures under lax
    /// verification).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<UserPublicKey, KeyError> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError("user public key is not a valid Ed25519 point"))?;
        if key.to_edwards().compress().as_bytes() != bytes {
            return Err(KeyError("user public key is not canonically encoded"));
        }
        if key.is_weak() {
            return Err(KeyError("user public key is a small-order point"));
        }
        Ok(UserPublicKey { key })
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    pub(crate) fn verifying(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for UserPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserPublicKey({self})")
    }
}

/// The `pcu1-pub-…` text form.
impl fmt::Display for UserPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_text(USER_PUBLIC_PREFIX, self.as_bytes()))
    }
}

impl FromStr for UserPublicKey {
    type Err = KeyError;
    /// Strict `pcu1-pub-…` parser; see the module doc.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b = decode_text(USER_PUBLIC_PREFIX, "expected a user public key (pcu1-pub-…)", s)?;
        UserPublicKey::from_bytes(&b)
    }
}

/// The server's user table: user id → that user's verifying key.
///
/// Called once per packet that decrypted, with a name that already passed the
/// user-name syntax check (1–32 of `[A-Za-z0-9_.-]`).
pub trait UserLookup {
    /// The verifying key of `user`, or `None` if the user is unknown.
    fn verifying_key(&self, user: &str) -> Option<UserPublicKey>;
}

impl<S: BuildHasher> UserLookup for HashMap<String, UserPublicKey, S> {
    fn verifying_key(&self, user: &str) -> Option<UserPublicKey> {
        self.get(user).copied()
    }
}

impl UserLookup for BTreeMap<String, UserPublicKey> {
    fn verifying_key(&self, user: &str) -> Option<UserPublicKey> {
        self.get(user).copied()
    }
}

impl<T: UserLookup + ?Sized> UserLookup for &T {
    fn verifying_key(&self, user: &str) -> Option<UserPublicKey> {
        (**self).verifying_key(user)
    }
}
