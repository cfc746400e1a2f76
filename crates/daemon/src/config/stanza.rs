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
    /// `DESTINATION`: packet destinations this stanza answers for; empty = ANY.
    pub destination: Vec<Cidr>,
    /// `CMD_CYCLE_OPEN`/`CLOSE`/`TIMER`: run commands instead of a firewall grant.
    pub cmd_cycle: Option<CmdCycle>,
    /// `FORCE_NAT`, `FORCE_SNAT`, `FORWARD_ALL`, `DISABLE_DNAT`.
    pub nat: StanzaNat,
    /// `scope = "fleet"`: replay-checked fleet-wide and its grants shared with every node.
    pub fleet: bool,
}

/// fwknop's command cycle: an open command now, a close command `timer` later. Both
/// are argv templates (fwknopd splits them into words and runs them without a shell);
/// `$IP $SRC $PKT_SRC $DST $PORT $PROTO $TIMEOUT` inside a word become values we
/// format ourselves ([`crate::actions::subst::fwknop_argv`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdCycle {
    /// `CMD_CYCLE_OPEN`, split into words.
    pub open: Vec<String>,
    /// `CMD_CYCLE_CLOSE` split into words; `None` for `NONE`.
    pub close: Option<Vec<String>>,
    /// `CMD_CYCLE_TIMER`.
    pub timer: Duration,
}

/// NAT settings of a stanza.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StanzaNat {
    /// `FORCE_NAT IP PORT`: every grant of this stanza is forwarded there, whatever
    /// the packet asks for.
    pub force_nat: Option<(std::net::Ipv4Addr, u16)>,
    /// `FORCE_SNAT IP`: forwarded connections leave with this source address.
    pub force_snat: Option<std::net::Ipv4Addr>,
    /// `FORWARD_ALL`: forward every port to the NAT host (FORCE_NAT only).
    pub forward_all: bool,
    /// `DISABLE_DNAT`: forward accept only, no DNAT (the client addresses the inside
    /// host directly through us as its router).
    pub disable_dnat: bool,
}

impl StanzaNat {
    /// Whether this stanza asks for NAT at all.
    pub fn any(&self) -> bool {
        self.force_nat.is_some() || self.force_snat.is_some() || self.forward_all || self.disable_dnat
    }
}

/// Split a command as fwknopd does before running it without a shell: words
/// separated by blanks, `"..."` and `'...'` group words, a backslash escapes the next
/// character. Refuses unbalanced quotes and empty commands.
pub fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut it = cmd.chars();
    while let Some(c) = it.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '\\') => {
                cur.push(it.next().ok_or("a trailing backslash escapes nothing")?);
                in_word = true;
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unbalanced quote".into());
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        return Err("empty command".into());
    }
    if out.len() > 256 || cmd.len() > 4096 {
        return Err("command too long".into());
    }
    Ok(out)
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

/// Advice about one fwknop stanza's keys; `place` names it and where it is defined.
pub(super) fn stanza_warnings(st: &FwknopStanza, place: &str) -> Vec<String> {
    let mut out = Vec::new();
    if st.key.hmac_type().is_none() {
        out.push(format!(
            "{place}: no HMAC key: packets are decrypted before anything authenticates them, so anyone can \
             send tampered ciphertext and every base64 junk packet costs a decryption; set HMAC_KEY_BASE64 \
             (fwknop --key-gen) on the server and the clients"
        ));
    }
    if st.key.mode() == EncMode::Legacy {
        out.push(format!(
            "{place}: legacy encryption mode (fwknop < 2.5 key derivation, weak against brute force); \
             move the clients to the default CBC mode with an HMAC key"
        ));
    }
    out
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
