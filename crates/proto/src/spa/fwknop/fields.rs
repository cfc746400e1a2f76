//! The SPA plaintext: `rand:user:time:version:type:message[:nat][:server_auth][:timeout]:digest`.
//!
//! Parsing is strict and canonical: every field has exactly one accepted spelling
//! (unpadded base64 with zero trailing bits, decimal numbers without leading zeros,
//! lower-case protocol names), so [`build_plaintext`] ∘ [`parse_plaintext`] is the
//! identity on accepted input. That property is the fuzz oracle and makes the decoded
//! fields a safe replay identity.
//!
//! All work is bounded by the plaintext length (≤ 1500 bytes, itself bounded by the
//! wire); no count or length read from the packet drives an allocation.

use std::net::Ipv4Addr;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::crypto::{b64_decode, b64_encode, b64_len, digest_b64};
use super::{Access, AccessProto, HashType, MsgType, SpaMessage};
use crate::spa::{EncodeError, PacketError};

/// Length of the random value (decimal digits).
pub(crate) const RAND_LEN: usize = 16;
/// Plaintext length bounds (libfko: ≥ 36 and < 1500).
const MIN_PLAINTEXT: usize = 36;
const MAX_PLAINTEXT: usize = 1499;
/// Colon counts allowed in a whole plaintext (7 to 10 fields).
const MIN_COLONS: usize = 6;
const MAX_COLONS: usize = 9;
/// Limits on the *base64 text* of each encoded field (libfko decoder limits).
pub(crate) const MAX_USER_B64: usize = 64;
pub(crate) const MAX_MESSAGE_B64: usize = 256;
pub(crate) const MAX_NAT_B64: usize = 128;
pub(crate) const MAX_SERVER_AUTH_B64: usize = 64;
/// Limits on plain fields.
const MAX_TIMESTAMP_LEN: usize = 12;
const MAX_VERSION_LEN: usize = 8;
const MAX_NAT_HOST_LEN: usize = 70;
/// Largest client timeout libfko's decoder accepts.
pub(crate) const MAX_CLIENT_TIMEOUT: u32 = 65536;

fn is_printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// libfko's decryption-success heuristic: 16 digits then `:`.
pub(crate) fn looks_decrypted(pt: &[u8]) -> bool {
    match pt.get(..=RAND_LEN) {
        Some(head) => head[..RAND_LEN].iter().all(u8::is_ascii_digit) && head[RAND_LEN] == b':',
        None => false,
    }
}

/// Parse a decimal number: ASCII digits only, no sign, no leading zero (except `0`).
fn parse_decimal(s: &str, max_len: usize) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > max_len || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    s.parse().ok()
}

/// A port: canonical decimal 1..=65535.
fn parse_port(s: &str) -> Option<u16> {
    match parse_decimal(s, 5)? {
        p @ 1..=65535 => u16::try_from(p).ok(),
        _ => None,
    }
}

/// Decode one base64 field of at most `max_b64` characters into printable ASCII.
fn decode_b64_field(field: &str, max_b64: usize, what: &'static str) -> Result<String, PacketError> {
    if field.is_empty() || field.len() > max_b64 {
        return Err(PacketError::BadField(what));
    }
    let raw = b64_decode(field.as_bytes()).ok_or(PacketError::BadField(what))?;
    if raw.is_empty() || !raw.iter().copied().all(is_printable) {
        return Err(PacketError::BadField(what));
    }
    String::from_utf8(raw).map_err(|_| PacketError::BadField(what))
}

/// libfko's user-name rule: printable ASCII without `" / \ [ ] : ; | = , + * ? < >`.
pub(crate) fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.bytes().all(|b| {
            is_printable(b)
                && !matches!(
                    b,
                    b'"' | b'/'
                        | b'\\'
                        | b'['
                        | b']'
                        | b':'
                        | b';'
                        | b'|'
                        | b'='
                        | b','
                        | b'+'
                        | b'*'
                        | b'?'
                        | b'<'
                        | b'>'
                )
        })
}

/// `host,port` for the NAT field. Host: 1..=70 printable chars, none of
/// `space / ? " ' \ ,`. The host is otherwise reported as sent (fwknopd resolves and
/// validates it later; the `bad%host` vector must decode).
fn parse_nat(raw: &str) -> Result<(String, u16), PacketError> {
    let (host, port) = raw.split_once(',').ok_or(PacketError::BadField("nat_access: missing comma"))?;
    let host_ok = !host.is_empty()
        && host.len() <= MAX_NAT_HOST_LEN
        && host
            .bytes()
            .all(|b| is_printable(b) && !matches!(b, b' ' | b'/' | b'?' | b'"' | b'\'' | b'\\' | b','));
    if !host_ok {
        return Err(PacketError::BadField("nat_access: host"));
    }
    let port = parse_port(port).ok_or(PacketError::BadField("nat_access: port"))?;
    Ok((host.to_owned(), port))
}

/// One `proto/port` entry of an access message.
fn parse_access(spec: &str) -> Result<Access, PacketError> {
    let (proto, port) =
        spec.split_once('/').ok_or(PacketError::BadField("message: access entry without '/'"))?;
    let proto = match proto {
        "tcp" => AccessProto::Tcp,
        "udp" => AccessProto::Udp,
        "icmp" => AccessProto::Icmp,
        "none" => AccessProto::None,
        _ => return Err(PacketError::BadField("message: protocol")),
    };
    let port = parse_port(port).ok_or(PacketError::BadField("message: port"))?;
    Ok(Access { proto, port })
}

/// The fields the message body carries.
struct Body {
    allow_ip: Ipv4Addr,
    access: Vec<Access>,
    command: Option<String>,
}

fn parse_message(raw: &str, msg_type: MsgType) -> Result<Body, PacketError> {
    let (ip, rest) = raw.split_once(',').ok_or(PacketError::BadField("message: missing comma"))?;
    // Dotted-quad only (std rejects leading zeros, which inet_aton would read as octal).
    let allow_ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| PacketError::BadField("message: allow IP is not a dotted-quad IPv4 address"))?;
    if msg_type == MsgType::Command {
        if rest.is_empty() {
            return Err(PacketError::BadField("message: empty command"));
        }
        return Ok(Body { allow_ip, access: Vec::new(), command: Some(rest.to_owned()) });
    }
    // At most ~48 entries fit in 192 raw bytes; the Vec grows with real input only.
    let access = rest.split(',').map(parse_access).collect::<Result<Vec<_>, _>>()?;
    Ok(Body { allow_ip, access, command: None })
}

/// Which inner digest type matches `digest` over `encoded`. Type is inferred from the
/// length; 43 and 86 characters are tried as SHA-2 first, then SHA-3. Compared in
/// constant time.
fn verify_digest(encoded: &[u8], digest: &[u8]) -> Result<HashType, PacketError> {
    let candidates: &[HashType] = match digest.len() {
        22 => &[HashType::Md5],
        27 => &[HashType::Sha1],
        43 => &[HashType::Sha256, HashType::Sha3_256],
        64 => &[HashType::Sha384],
        86 => &[HashType::Sha512, HashType::Sha3_512],
        _ => return Err(PacketError::BadDigest),
    };
    for &t in candidates {
        let want = digest_b64(t, encoded);
        if bool::from(want.as_bytes().ct_eq(digest)) {
            return Ok(t);
        }
    }
    Err(PacketError::BadDigest)
}

/// Parse and verify a decrypted plaintext (PKCS#7 padding already removed).
pub(crate) fn parse_plaintext(pt: &[u8]) -> Result<SpaMessage, PacketError> {
    if !looks_decrypted(pt) {
        return Err(PacketError::NotDecrypted);
    }
    if !pt.iter().copied().all(is_printable) {
        return Err(PacketError::BadField("plaintext is not printable ASCII"));
    }
    if !(MIN_PLAINTEXT..=MAX_PLAINTEXT).contains(&pt.len()) {
        return Err(PacketError::BadField("plaintext length"));
    }
    let colons = pt.iter().filter(|&&b| b == b':').count();
    if !(MIN_COLONS..=MAX_COLONS).contains(&colons) {
        return Err(PacketError::BadField("field count"));
    }
    let split =
        pt.iter().rposition(|&b| b == b':').ok_or(PacketError::Internal("colon counted but not found"))?;
    let (encoded, digest) = (&pt[..split], &pt[split + 1..]);
    let digest_type = verify_digest(encoded, digest)?;

    // Printable ASCII is valid UTF-8.
    let text = std::str::from_utf8(encoded).map_err(|_| PacketError::Internal("printable ASCII is UTF-8"))?;
    let mut fields = text.split(':');
    let mut next = |what: &'static str| fields.next().ok_or(PacketError::BadField(what));

    let rand_field = next("random value")?;
    let rand: [u8; RAND_LEN] =
        rand_field.as_bytes().try_into().map_err(|_| PacketError::Internal("random value length checked"))?;

    let user = decode_b64_field(next("user")?, MAX_USER_B64, "user")?;
    if !valid_user(&user) {
        return Err(PacketError::BadField("user"));
    }
    let timestamp =
        parse_decimal(next("timestamp")?, MAX_TIMESTAMP_LEN).ok_or(PacketError::BadField("timestamp"))?;
    let version = next("version")?;
    if version.is_empty() || version.len() > MAX_VERSION_LEN {
        return Err(PacketError::BadField("version"));
    }
    let msg_type = match next("message type")?.as_bytes() {
        &[d] => MsgType::from_digit(d).ok_or(PacketError::BadField("message type"))?,
        _ => return Err(PacketError::BadField("message type")),
    };

    // What remains: message [nat] [server_auth] [timeout]. Bounded by the colon count.
    let rest: Vec<&str> = fields.collect();
    let (msg, nat, sa, timeout) = match (msg_type.has_nat(), msg_type.has_timeout(), rest.as_slice()) {
        (false, false, [m]) => (*m, None, None, None),
        (false, false, [m, s]) => (*m, None, Some(*s), None),
        (true, false, [m, n]) => (*m, Some(*n), None, None),
        (true, false, [m, n, s]) => (*m, Some(*n), Some(*s), None),
        (false, true, [m, t]) => (*m, None, None, Some(*t)),
        (false, true, [m, s, t]) => (*m, None, Some(*s), Some(*t)),
        (true, true, [m, n, t]) => (*m, Some(*n), None, Some(*t)),
        (true, true, [m, n, s, t]) => (*m, Some(*n), Some(*s), Some(*t)),
        _ => return Err(PacketError::BadField("field count for message type")),
    };

    let body = parse_message(&decode_b64_field(msg, MAX_MESSAGE_B64, "message")?, msg_type)?;
    let nat_access = match nat {
        Some(n) => Some(parse_nat(&decode_b64_field(n, MAX_NAT_B64, "nat_access")?)?),
        None => None,
    };
    let server_auth = match sa {
        Some(s) => Some(decode_b64_field(s, MAX_SERVER_AUTH_B64, "server_auth")?),
        None => None,
    };
    let client_timeout = match timeout {
        Some(t) => Some(
            parse_decimal(t, 5)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v <= MAX_CLIENT_TIMEOUT)
                .ok_or(PacketError::BadField("client_timeout"))?,
        ),
        None => None,
    };

    Ok(SpaMessage {
        rand,
        user,
        timestamp,
        version: version.to_owned(),
        msg_type,
        allow_ip: body.allow_ip,
        access: body.access,
        command: body.command,
        nat_access,
        server_auth,
        client_timeout,
        digest_type,
    })
}

/// Join the encoded fields (everything the digest covers), without validation.
fn join_encoded(msg: &SpaMessage) -> Zeroizing<String> {
    // Sized for the largest plaintext so pushes do not reallocate (and leave copies).
    let mut s = Zeroizing::new(String::with_capacity(MAX_PLAINTEXT + 1));
    s.push_str(&String::from_utf8_lossy(&msg.rand));
    s.push(':');
    s.push_str(&b64_encode(msg.user.as_bytes()));
    s.push(':');
    s.push_str(&msg.timestamp.to_string());
    s.push(':');
    s.push_str(&msg.version);
    s.push(':');
    s.push(char::from(b'0' + msg.msg_type.as_u8()));
    s.push(':');
    s.push_str(&b64_encode(msg.message_text().as_bytes()));
    if let Some((host, port)) = &msg.nat_access {
        s.push(':');
        s.push_str(&b64_encode(format!("{host},{port}").as_bytes()));
    }
    if let Some(sa) = &msg.server_auth {
        s.push(':');
        s.push_str(&b64_encode(sa.as_bytes()));
    }
    if let Some(t) = msg.client_timeout {
        s.push(':');
        s.push_str(&t.to_string());
    }
    s
}

/// Build the full plaintext (`encoded:digest`) for `msg`, digest type
/// `msg.digest_type`. The result is checked by parsing it back: anything this returns
/// is accepted by [`parse_plaintext`] and decodes to exactly `msg`. Errors are
/// [`EncodeError::InvalidMessage`] naming the offending field.
pub(crate) fn build_plaintext(msg: &SpaMessage) -> Result<Zeroizing<String>, EncodeError> {
    check_shape(msg)?;
    let mut pt = join_encoded(msg);
    if pt.len() + 1 + b64_len(msg.digest_type) > MAX_PLAINTEXT {
        return Err(EncodeError::InvalidMessage("plaintext length"));
    }
    let digest = digest_b64(msg.digest_type, pt.as_bytes());
    pt.push(':');
    pt.push_str(&digest);
    match parse_plaintext(pt.as_bytes()) {
        Ok(back) if back == *msg => Ok(pt),
        Ok(_) => Err(EncodeError::InvalidMessage("a field does not survive encoding")),
        Err(PacketError::BadField(what)) => Err(EncodeError::InvalidMessage(what)),
        Err(PacketError::NotDecrypted) => Err(EncodeError::InvalidMessage("random value")),
        Err(_) => Err(EncodeError::InvalidMessage("plaintext does not verify")),
    }
}

/// Consistency checks with specific messages (the parse-back catches the rest).
fn check_shape(msg: &SpaMessage) -> Result<(), EncodeError> {
    if !msg.rand.iter().all(u8::is_ascii_digit) {
        return Err(EncodeError::InvalidMessage("random value must be 16 ASCII digits"));
    }
    if msg.user.len() > 48 || !valid_user(&msg.user) {
        return Err(EncodeError::InvalidMessage("user"));
    }
    match (msg.msg_type == MsgType::Command, &msg.command, msg.access.is_empty()) {
        (true, Some(c), true) if !c.is_empty() => {}
        (true, _, _) => {
            return Err(EncodeError::InvalidMessage("command type needs a command and no access"));
        }
        (false, None, false) => {}
        (false, _, _) => {
            return Err(EncodeError::InvalidMessage("access types need access entries and no command"));
        }
    }
    if msg.msg_type.has_nat() != msg.nat_access.is_some() {
        return Err(EncodeError::InvalidMessage("nat_access must be set exactly for NAT types"));
    }
    if msg.msg_type.has_timeout() != msg.client_timeout.is_some() {
        return Err(EncodeError::InvalidMessage("client_timeout must be set exactly for timeout types"));
    }
    Ok(())
}
