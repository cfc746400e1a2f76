//! fwknop access stanzas as the SPA gate uses them, and the key handling both of their
//! syntaxes share: inline `[[spa.fwknop]]` tables ([`super::spa`]) and fwknop's own
//! `access.conf` ([`super::access_conf`]).

use std::net::IpAddr;
use std::time::Duration;

use portcullis_proto::spa::fwknop::{EncMode, FwknopKey, HashType};
use portcullis_proto::Service;

/// An fwknop access stanza.
#[derive(Debug, Clone)]
pub struct FwknopStanza {
    /// Name for logs (`name` inline, `access.conf:LINE` from a file).
    pub name: String,
    /// Packet sources allowed (`SOURCE`); empty = ANY.
    pub source: Vec<Cidr>,
    /// Keys.
    pub key: FwknopKey,
    /// `OPEN_PORTS`: what may be opened; empty = any protected service.
    pub open_ports: Vec<Service>,
    /// `RESTRICT_PORTS`: never opened.
    pub restrict_ports: Vec<Service>,
    /// `FW_ACCESS_TIMEOUT`.
    pub fw_access_timeout: Duration,
    /// `MAX_FW_TIMEOUT`: cap on a client-requested timeout.
    pub max_fw_timeout: Duration,
    /// `REQUIRE_USERNAME`.
    pub require_username: Option<String>,
    /// `REQUIRE_SOURCE_ADDRESS`: refuse "use source" (0.0.0.0) requests.
    pub require_source_address: bool,
    /// `ACCESS_EXPIRE(_EPOCH)`: the stanza stops working after this Unix time.
    pub expires: Option<u64>,
}

/// An IPv4/IPv6 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parse `a.b.c.d`, `a.b.c.d/n`, `x::y/n`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok()?
            }
            Some(_) => return None,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                masked(u32::from(n).into(), self.prefix, 32) == masked(u32::from(i).into(), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                masked(u128::from(n), self.prefix, 128) == masked(u128::from(i), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Parse an HMAC/digest type name as fwknop spells it (`sha256`, `sha3_256`, ...).
pub fn hash_type(s: &str) -> Option<HashType> {
    s.to_ascii_lowercase().parse().ok()
}

/// Parse an encryption mode as fwknop spells it (only CBC and legacy are supported).
pub fn enc_mode(s: &str) -> Option<EncMode> {
    s.parse().ok()
}

/// A key as written: raw passphrase bytes or base64.
pub enum KeyText {
    /// `KEY` / `HMAC_KEY`: the bytes as written.
    Raw(String),
    /// `KEY_BASE64` / `HMAC_KEY_BASE64`.
    B64(String),
}

/// Which syntax a key was written in, so a refusal names the key as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySyntax {
    /// Native TOML (`key_base64`, `hmac_key_base64`).
    Toml,
    /// fwknop's access.conf (`KEY_BASE64`, `HMAC_KEY_BASE64`).
    AccessConf,
}

/// Why a stanza's keys were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The encryption key's base64 form does not decode.
    KeyNotBase64,
    /// The HMAC key's base64 form does not decode.
    HmacKeyNotBase64,
    /// The keys decode but cannot be used (length, equal keys, ...).
    Unusable(String),
}

impl KeyError {
    /// The refusal in the words of the syntax the keys were written in.
    pub fn describe(&self, syntax: KeySyntax) -> String {
        let (key, hmac) = match syntax {
            KeySyntax::Toml => ("key_base64", "hmac_key_base64"),
            KeySyntax::AccessConf => ("KEY_BASE64", "HMAC_KEY_BASE64"),
        };
        match self {
            KeyError::KeyNotBase64 => format!("{key} is not valid base64"),
            KeyError::HmacKeyNotBase64 => format!("{hmac} is not valid base64"),
            KeyError::Unusable(m) => m.clone(),
        }
    }
}

/// Build an fwknop key from its textual forms.
pub fn build_key(
    enc: &KeyText,
    mode: EncMode,
    hmac: Option<(HashType, &KeyText)>,
) -> Result<FwknopKey, KeyError> {
    use base64::Engine;
    let bytes = |k: &KeyText, bad: KeyError| -> Result<Vec<u8>, KeyError> {
        match k {
            KeyText::Raw(s) => Ok(s.as_bytes().to_vec()),
            KeyText::B64(s) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim()))
                .map_err(|_| bad),
        }
    };
    let e = bytes(enc, KeyError::KeyNotBase64)?;
    let h = match hmac {
        Some((t, k)) => Some((t, bytes(k, KeyError::HmacKeyNotBase64)?)),
        None => None,
    };
    FwknopKey::new(&e, mode, h.as_ref().map(|(t, k)| (*t, k.as_slice())))
        .map_err(|e| KeyError::Unusable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("1.2.3.4/").is_none());
        assert!(!Cidr::parse("::/0").unwrap().contains("1.2.3.4".parse().unwrap()));
    }
}
