//! fwknop-compatible SPA codec (Rijndael mode, optional HMAC), wire-compatible with
//! fwknop 2.x clients and servers (protocol version `3.0.0`).
//!
//! ```text
//! wire = b64(Salted__ ‖ salt ‖ AES-256-CBC(plaintext))[10..] ‖ b64(HMAC(hkey, "U2FsdGVkX1" ‖ that))
//! plaintext = rand:b64(user):time:version:type:b64(message)[:b64(nat)][:b64(server_auth)][:timeout]:digest
//! ```
//! (`b64` = standard alphabet, `=` stripped; key/IV from `EVP_BytesToKey(MD5)`.)
//!
//! # API
//! - Server: [`decode`] one packet with one stanza's [`FwknopKey`] (run [`precheck`]
//!   once first if you try many stanzas), then [`check_age`], then look up
//!   [`canonical_replay_key`] in the replay cache, then apply policy. The codec reports
//!   every message type (0–6) and every protocol (`tcp`, `udp`, `icmp`, `none`)
//!   faithfully; refusing commands, NAT or non-TCP/UDP access is the daemon's decision.
//! - Client: [`SpaMessage::new_access`] / [`SpaMessage::new_command`], adjust fields,
//!   [`encode`]. [`fwknop_keygen`] makes a key pair like `fwknop --key-gen`.
//! - [`fuzz_decode`]: entry point for a fuzz target.
//!
//! # Limits and leniency
//! Kept (real clients need it):
//! - base64 without padding everywhere (fwknop strips `=`);
//! - no PKCS#7 padding (the Android 4.1.2 client sends none): padding is stripped only
//!   when well formed, then the 16-digits check and the inner digest decide;
//! - legacy mode keys: cut to 16 bytes, right-padded with `'0'` (pre-2.5 clients);
//! - legacy mode together with HMAC (libfko builds it, the client refuses);
//! - any version string of 1–8 characters (fwknopd never checks it);
//! - pre-HMAC data of ≥ 390 characters (fwknopd would misclassify it as GnuPG; we
//!   decode it; [`encode`] never produces it).
//!
//! Not kept (no real client emits it, and each would give one plaintext several
//! spellings): `=` in the wire or in fields (wire: [`PacketError::BadCharset`]); non-zero
//! trailing base64 bits; `inet_aton` address forms (`010.1.1.1`, `1.2.3`, hex);
//! leading zeros in numbers and ports; upper-case protocol names; message types
//! written with two digits; non-printable bytes in decoded fields; empty fields.
//!
//! Sizes: wire 140..=1500 bytes (fwknopd's `MIN_SPA_DATA_SIZE`/`MAX_SPA_PACKET_LEN`);
//! field limits apply to the base64 text: user ≤ 64, message ≤ 256, NAT ≤ 128,
//! server_auth ≤ 64; timestamp ≤ 12 digits; version ≤ 8; client timeout ≤ 65536.
//!
//! # Security
//! Without an HMAC key the format is unauthenticated (the inner digest is unkeyed):
//! only HMAC stanzas resist tampering. The HMAC is checked before decryption; MAC and
//! digest comparisons are constant-time. No allocation depends on a length claimed by
//! the packet, only on its (≤ 1500-byte) size. Nothing here panics on input.

mod crypto;
mod decode;
mod encode;
mod fields;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use decode::{decode, precheck};
pub use encode::{encode, fwknop_keygen, random_digits};

use crate::service::{Proto, Service};
use crate::spa::{EncodeError, KeyError, PacketError};

/// fwknopd's minimum SPA payload (`MIN_SPA_DATA_SIZE`).
pub const MIN_WIRE_LEN: usize = 140;
/// fwknopd's maximum SPA payload (`MAX_SPA_PACKET_LEN`).
pub const MAX_WIRE_LEN: usize = 1500;
/// Longest ciphertext text (before the HMAC, prefix stripped) that fwknopd still
/// treats as Rijndael rather than GnuPG.
pub const MAX_PRE_HMAC_LEN: usize = 389;
/// Protocol version string this codec sends.
pub const PROTOCOL_VERSION: &str = "3.0.0";
/// Base64 of `Salted__`, stripped by clients and re-added by servers.
const SALTED_B64: &str = "U2FsdGVkX1";

/// Rijndael key handling of a stanza (`ENCRYPTION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncMode {
    /// AES-256-CBC, key used as is (fwknop ≥ 2.5 default).
    Cbc,
    /// Pre-2.5 compatibility: key cut to 16 bytes and right-padded with `'0'` to 16.
    Legacy,
}

impl FromStr for EncMode {
    type Err = KeyError;

    /// fwknop's `ENCRYPTION_MODE` / `-M` names that portcullis supports: `cbc`, `legacy`.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.eq_ignore_ascii_case("cbc") {
            Ok(EncMode::Cbc)
        } else if s.eq_ignore_ascii_case("legacy") {
            Ok(EncMode::Legacy)
        } else {
            Err(KeyError("encryption mode must be cbc or legacy"))
        }
    }
}

/// Hash algorithms fwknop uses for the inner digest and for the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashType {
    /// MD5 (22 base64 chars).
    Md5,
    /// SHA-1 (27).
    Sha1,
    /// SHA-256 (43), the default for both digest and HMAC.
    Sha256,
    /// SHA-384 (64).
    Sha384,
    /// SHA-512 (86).
    Sha512,
    /// SHA3-256 (43).
    Sha3_256,
    /// SHA3-512 (86).
    Sha3_512,
}

/// The HMAC algorithm of a stanza (`HMAC_DIGEST_TYPE`, configured, never inferred).
pub type HmacType = HashType;
/// The inner digest algorithm of a packet (inferred from its length).
pub type DigestType = HashType;

impl HashType {
    /// Every type, in fwknop's numbering order.
    pub const ALL: [HashType; 7] = [
        HashType::Md5,
        HashType::Sha1,
        HashType::Sha256,
        HashType::Sha384,
        HashType::Sha512,
        HashType::Sha3_256,
        HashType::Sha3_512,
    ];

    /// Lower-case name as in fwknop configuration (`sha3_256`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HashType::Md5 => "md5",
            HashType::Sha1 => "sha1",
            HashType::Sha256 => "sha256",
            HashType::Sha384 => "sha384",
            HashType::Sha512 => "sha512",
            HashType::Sha3_256 => "sha3_256",
            HashType::Sha3_512 => "sha3_512",
        }
    }

    /// Length of its unpadded base64 output (the HMAC slice length on the wire).
    pub const fn b64_len(self) -> usize {
        crypto::b64_len(self)
    }
}

impl fmt::Display for HashType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HashType {
    type Err = KeyError;
    /// Case-insensitive `md5`, `sha1`, `sha256`, `sha384`, `sha512`, `sha3_256`, `sha3_512`.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        HashType::ALL
            .into_iter()
            .find(|t| s.eq_ignore_ascii_case(t.as_str()))
            .ok_or(KeyError("unknown digest type"))
    }
}

/// Longest HMAC key libfko accepts (`MAX_DIGEST_BLOCK_LEN`).
pub const MAX_HMAC_KEY_LEN: usize = 136;
/// Longest Rijndael key libfko accepts (`RIJNDAEL_MAX_KEYSIZE`).
pub const MAX_ENC_KEY_LEN: usize = 32;

/// One access.conf stanza's keys. Secrets are zeroed on drop and never printed.
#[derive(Clone)]
pub struct FwknopKey {
    enc_key: Zeroizing<Vec<u8>>,
    mode: EncMode,
    hmac: Option<(HmacType, Zeroizing<Vec<u8>>)>,
}

impl FwknopKey {
    /// Keys from raw bytes (`KEY` / `HMAC_KEY`).
    ///
    /// # Errors
    /// [`KeyError`] if the encryption key is not 1..=32 bytes, the HMAC key is
    /// not 1..=136 bytes, or both are equal (fwknopd refuses that stanza).
    pub fn new(enc_key: &[u8], mode: EncMode, hmac: Option<(HmacType, &[u8])>) -> Result<Self, KeyError> {
        if enc_key.is_empty() || enc_key.len() > MAX_ENC_KEY_LEN {
            return Err(KeyError("encryption key must be 1 to 32 bytes"));
        }
        let hmac = match hmac {
            Some((t, k)) => {
                if k.is_empty() || k.len() > MAX_HMAC_KEY_LEN {
                    return Err(KeyError("HMAC key must be 1 to 136 bytes"));
                }
                if k == enc_key {
                    return Err(KeyError("HMAC key equals the encryption key"));
                }
                Some((t, Zeroizing::new(k.to_vec())))
            }
            None => None,
        };
        Ok(FwknopKey { enc_key: Zeroizing::new(enc_key.to_vec()), mode, hmac })
    }

    /// Keys from configuration base64 (`KEY_BASE64` / `HMAC_KEY_BASE64`; padding optional).
    ///
    /// # Errors
    /// [`KeyError`] if a key is not base64, or as [`FwknopKey::new`].
    pub fn from_base64(
        enc_key_b64: &str,
        mode: EncMode,
        hmac: Option<(HmacType, &str)>,
    ) -> Result<Self, KeyError> {
        let enc = crypto::b64_decode_config(enc_key_b64).ok_or(KeyError("KEY_BASE64 is not base64"))?;
        match hmac {
            Some((t, h)) => {
                let hk = crypto::b64_decode_config(h).ok_or(KeyError("HMAC_KEY_BASE64 is not base64"))?;
                FwknopKey::new(&enc, mode, Some((t, &hk)))
            }
            None => FwknopKey::new(&enc, mode, None),
        }
    }

    /// The stanza's encryption mode.
    pub fn mode(&self) -> EncMode {
        self.mode
    }

    /// The stanza's HMAC type, if it requires an HMAC.
    pub fn hmac_type(&self) -> Option<HmacType> {
        self.hmac.as_ref().map(|(t, _)| *t)
    }

    /// The passphrase fed to `EVP_BytesToKey`, after legacy-mode adjustment.
    fn cipher_pass(&self) -> Zeroizing<Vec<u8>> {
        // Capacity up front: a reallocation would leave an unzeroed copy behind.
        let mut pass = Zeroizing::new(Vec::with_capacity(MAX_ENC_KEY_LEN.max(16)));
        pass.extend_from_slice(&self.enc_key);
        if self.mode == EncMode::Legacy {
            pass.truncate(16);
            pass.resize(16, b'0');
        }
        pass
    }
}

impl fmt::Debug for FwknopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FwknopKey")
            .field("enc_key", &"<redacted>")
            .field("mode", &self.mode)
            .field("hmac", &self.hmac_type())
            .finish()
    }
}

/// SPA message type (field 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// 0: run a command on the server.
    Command = 0,
    /// 1: open ports for the allow IP.
    Access = 1,
    /// 2: forward a port to an internal host.
    NatAccess = 2,
    /// 3: access with a client-chosen timeout.
    ClientTimeoutAccess = 3,
    /// 4: NAT access with a client-chosen timeout.
    ClientTimeoutNatAccess = 4,
    /// 5: NAT to a local port.
    LocalNatAccess = 5,
    /// 6: local NAT with a client-chosen timeout.
    ClientTimeoutLocalNatAccess = 6,
}

impl MsgType {
    /// From the ASCII digit on the wire.
    pub const fn from_digit(d: u8) -> Option<MsgType> {
        Some(match d {
            b'0' => MsgType::Command,
            b'1' => MsgType::Access,
            b'2' => MsgType::NatAccess,
            b'3' => MsgType::ClientTimeoutAccess,
            b'4' => MsgType::ClientTimeoutNatAccess,
            b'5' => MsgType::LocalNatAccess,
            b'6' => MsgType::ClientTimeoutLocalNatAccess,
            _ => return None,
        })
    }

    /// The numeric value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Does this type carry a NAT field (2, 4, 5, 6)?
    pub const fn has_nat(self) -> bool {
        matches!(
            self,
            MsgType::NatAccess
                | MsgType::ClientTimeoutNatAccess
                | MsgType::LocalNatAccess
                | MsgType::ClientTimeoutLocalNatAccess
        )
    }

    /// Does this type carry a client timeout (3, 4, 6)?
    pub const fn has_timeout(self) -> bool {
        matches!(
            self,
            MsgType::ClientTimeoutAccess
                | MsgType::ClientTimeoutNatAccess
                | MsgType::ClientTimeoutLocalNatAccess
        )
    }

    /// libfko's auto-upgrade: with a timeout 1→3, 2→4, 5→6; without, the reverse.
    /// The command type is returned unchanged.
    pub const fn with_timeout(self, timeout: bool) -> MsgType {
        use MsgType::*;
        match (self, timeout) {
            (Access | ClientTimeoutAccess, true) => ClientTimeoutAccess,
            (Access | ClientTimeoutAccess, false) => Access,
            (NatAccess | ClientTimeoutNatAccess, true) => ClientTimeoutNatAccess,
            (NatAccess | ClientTimeoutNatAccess, false) => NatAccess,
            (LocalNatAccess | ClientTimeoutLocalNatAccess, true) => ClientTimeoutLocalNatAccess,
            (LocalNatAccess | ClientTimeoutLocalNatAccess, false) => LocalNatAccess,
            (Command, _) => Command,
        }
    }
}

/// Protocol of one access entry. fwknop allows `icmp` and `none` besides TCP and UDP;
/// they are reported, and [`Access::service`] is `None` for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessProto {
    /// `tcp`
    Tcp,
    /// `udp`
    Udp,
    /// `icmp`
    Icmp,
    /// `none`
    None,
}

impl AccessProto {
    /// The spelling on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessProto::Tcp => "tcp",
            AccessProto::Udp => "udp",
            AccessProto::Icmp => "icmp",
            AccessProto::None => "none",
        }
    }
}

/// One `proto/port` entry of an access message (port 1..=65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    /// Protocol.
    pub proto: AccessProto,
    /// Port, never 0.
    pub port: u16,
}

impl Access {
    /// The TCP/UDP service this entry asks for; `None` for `icmp`/`none`.
    pub const fn service(self) -> Option<Service> {
        match self.proto {
            AccessProto::Tcp => Some(Service { proto: Proto::Tcp, port: self.port }),
            AccessProto::Udp => Some(Service { proto: Proto::Udp, port: self.port }),
            AccessProto::Icmp | AccessProto::None => None,
        }
    }
}

impl From<Service> for Access {
    fn from(s: Service) -> Access {
        let proto = match s.proto {
            Proto::Tcp => AccessProto::Tcp,
            Proto::Udp => AccessProto::Udp,
        };
        Access { proto, port: s.port }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto.as_str(), self.port)
    }
}

/// A decoded (or to-be-encoded) fwknop SPA message.
///
/// Invariants after [`decode`]: `rand` is 16 ASCII digits; `command` is `Some` exactly
/// for [`MsgType::Command`] and `access` is then empty (non-empty otherwise);
/// `nat_access` is `Some` exactly for NAT types and `client_timeout` exactly for
/// timeout types. String fields are printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaMessage {
    /// Random value, 16 ASCII digits.
    pub rand: [u8; 16],
    /// User name (server only checks it with `REQUIRE_USERNAME`).
    pub user: String,
    /// Client Unix time, seconds.
    pub timestamp: u64,
    /// Client's protocol version string (free-form, never checked by fwknopd).
    pub version: String,
    /// Message type.
    pub msg_type: MsgType,
    /// Address to open for; `0.0.0.0` means "the packet's source address".
    pub allow_ip: Ipv4Addr,
    /// Requested `proto/port` entries (empty for the command type).
    pub access: Vec<Access>,
    /// Command text (command type only).
    pub command: Option<String>,
    /// NAT target `(host, port)` for NAT types; the host is reported as sent.
    pub nat_access: Option<(String, u16)>,
    /// Server auth string (parsed but unused by fwknopd).
    pub server_auth: Option<String>,
    /// Client-requested firewall timeout, seconds (timeout types only).
    pub client_timeout: Option<u32>,
    /// Inner digest algorithm (decoded: the one that matched; encoding: the one to use).
    pub digest_type: DigestType,
}

impl SpaMessage {
    /// A fresh access message (type 1; [`encode`] makes it 3 if a timeout is set):
    /// new random value, version `3.0.0`, SHA-256 digest.
    pub fn new_access(
        user: &str,
        timestamp: u64,
        allow_ip: Ipv4Addr,
        access: Vec<Access>,
        rng: &mut impl FnMut(&mut [u8]),
    ) -> SpaMessage {
        SpaMessage {
            rand: random_digits(rng),
            user: user.to_owned(),
            timestamp,
            version: PROTOCOL_VERSION.to_owned(),
            msg_type: MsgType::Access,
            allow_ip,
            access,
            command: None,
            nat_access: None,
            server_auth: None,
            client_timeout: None,
            digest_type: HashType::Sha256,
        }
    }

    /// A fresh command message (type 0).
    pub fn new_command(
        user: &str,
        timestamp: u64,
        allow_ip: Ipv4Addr,
        command: &str,
        rng: &mut impl FnMut(&mut [u8]),
    ) -> SpaMessage {
        let mut m = SpaMessage::new_access(user, timestamp, allow_ip, Vec::new(), rng);
        m.msg_type = MsgType::Command;
        m.command = Some(command.to_owned());
        m
    }

    /// The raw message field: `allow_ip,proto/port[,…]` or `allow_ip,command`.
    pub fn message_text(&self) -> String {
        let mut s = self.allow_ip.to_string();
        if let Some(c) = &self.command {
            s.push(',');
            s.push_str(c);
        }
        for a in &self.access {
            s.push(',');
            s.push_str(&a.to_string());
        }
        s
    }

    /// The message as [`encode`] sends it: `client_timeout` of `Some(0)` dropped and
    /// the type adjusted to the presence of a timeout.
    ///
    /// # Errors
    /// [`EncodeError::InvalidMessage`] for a command message with a timeout.
    pub fn with_effective_type(&self) -> Result<SpaMessage, EncodeError> {
        let mut m = self.clone();
        if m.client_timeout == Some(0) {
            m.client_timeout = None;
        }
        if m.msg_type == MsgType::Command && m.client_timeout.is_some() {
            return Err(EncodeError::InvalidMessage("command messages cannot carry a timeout"));
        }
        m.msg_type = m.msg_type.with_timeout(m.client_timeout.is_some());
        Ok(m)
    }
}

/// Replay-cache key: SHA-256 over a canonical, length-prefixed encoding of the
/// *decrypted* fields (not the wire text, which an attacker could respell if a
/// decoder were lenient, and which changes with the salt).
///
/// The digest type is deliberately left out: it changes nothing the server acts on.
pub fn canonical_replay_key(msg: &SpaMessage) -> [u8; 32] {
    fn put(h: &mut Sha256, tag: u8, bytes: &[u8]) {
        h.update([tag]);
        // Fields are bounded by the 1500-byte packet; u32 cannot overflow in practice,
        // and saturating keeps this total anyway.
        h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    h.update(b"portcullis/fwknop-replay/v1\0");
    put(&mut h, 1, &msg.rand);
    put(&mut h, 2, msg.user.as_bytes());
    put(&mut h, 3, &msg.timestamp.to_be_bytes());
    put(&mut h, 4, msg.version.as_bytes());
    put(&mut h, 5, &[msg.msg_type.as_u8()]);
    put(&mut h, 6, msg.message_text().as_bytes());
    if let Some((host, port)) = &msg.nat_access {
        put(&mut h, 7, host.as_bytes());
        put(&mut h, 8, &port.to_be_bytes());
    }
    if let Some(sa) = &msg.server_auth {
        put(&mut h, 9, sa.as_bytes());
    }
    if let Some(t) = msg.client_timeout {
        put(&mut h, 10, &t.to_be_bytes());
    }
    h.finalize().into()
}

/// fwknopd's packet-age rule: `|now − timestamp| ≤ max_age` (future timestamps are
/// judged like past ones). `now` is Unix seconds supplied by the caller. The rule is
/// [`Window::accepts`](crate::spa::window::Window::accepts), shared with the native format.
///
/// # Errors
/// [`PacketError::Stale`] outside the window.
pub fn check_age(msg: &SpaMessage, now: u64, max_age: u64) -> Result<(), PacketError> {
    if crate::spa::window::Window::new(max_age).accepts(msg.timestamp, now) {
        Ok(())
    } else {
        Err(PacketError::Stale)
    }
}

/// Fuzz entry point; never panics except when the parse/re-encode oracle finds a bug.
///
/// 1. Runs [`decode`] on `data` with a fixed HMAC stanza and a fixed legacy stanza.
/// 2. Treats `data` as an encoded message, appends its correct SHA-256 digest (so the
///    fuzzer reaches the field parser without a MAC bypass), parses it and, if it is
///    accepted, checks that re-encoding gives back the same bytes.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(k) = FwknopKey::new(b"fuzz-enc-key", EncMode::Cbc, Some((HashType::Sha256, b"fuzz-hmac-key"))) {
        let _ = decode(data, &k);
    }
    if let Ok(k) = FwknopKey::new(b"fuzz", EncMode::Legacy, None) {
        let _ = decode(data, &k);
    }
    if data.len() > MAX_WIRE_LEN {
        return;
    }
    let mut pt = data.to_vec();
    pt.push(b':');
    pt.extend_from_slice(crypto::digest_b64(HashType::Sha256, data).as_bytes());
    if let Ok(msg) = fields::parse_plaintext(&pt) {
        match fields::build_plaintext(&msg) {
            Ok(again) => assert_eq!(again.as_bytes(), &pt[..], "parse/encode round trip"),
            Err(e) => panic!("accepted plaintext cannot be re-encoded: {e}"),
        }
    }
}
