//! `portcullis spa`: send one single-packet-authorization datagram.
//!
//! Default is the fwknop format, with fwknop's option names, so a stock fwknopd (or
//! portcullisd with fwknop stanzas) accepts it and `~/.fwknoprc` stanzas can be reused.
//! `--native` sends portcullis' own format (see docs/spa-native.md). Nothing is ever
//! received: SPA servers do not answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::Args;
use portcullis_proto::spa::fwknop::{self, Access, EncMode, FwknopKey, HashType, MsgType, SpaMessage};
use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerPublicKey, UserKey};
use portcullis_proto::Service;

use crate::fwknoprc;
use crate::keygen::os_rng;
use crate::knock::resolve;

/// Arguments of `portcullis spa`.
#[derive(Args, Debug)]
pub struct SpaArgs {
    /// The SPA server (fwknop -D). May come from the rc stanza (SPA_SERVER).
    #[arg(short = 'D', long = "destination", value_name = "HOST")]
    destination: Option<String>,
    /// What to open: tcp/22[,udp/53,...] (fwknop -A; rc ACCESS).
    #[arg(short = 'A', long = "access")]
    access: Option<String>,
    /// Address to allow (fwknop -a; rc ALLOW_IP). IPv4 for fwknop, IPv4 or IPv6 for --native.
    #[arg(short = 'a', long = "allow-ip", conflicts_with = "source")]
    allow_ip: Option<IpAddr>,
    /// Allow the address the packet comes from (fwknop -s; sends 0.0.0.0).
    #[arg(short = 's', long = "source")]
    source: bool,
    /// Requested grant duration in seconds (fwknop -f client timeout; rc FW_TIMEOUT).
    #[arg(short = 'f', long = "fw-timeout", value_name = "SECS")]
    fw_timeout: Option<u32>,
    /// UDP port of the SPA server (fwknop -p; rc SPA_SERVER_PORT).
    #[arg(short = 'p', long = "server-port")]
    port: Option<u16>,
    /// Request NAT access to HOST:PORT (fwknop -N; servers must allow forwarding).
    #[arg(short = 'N', long = "nat-access", value_name = "HOST:PORT")]
    nat: Option<String>,
    /// Use this stanza of the rc file (fwknop -n).
    #[arg(short = 'n', long = "named-config", value_name = "STANZA")]
    named: Option<String>,
    /// The fwknop rc file (default ~/.fwknoprc; read only with -n or if it exists).
    #[arg(long = "rc-file")]
    rc_file: Option<PathBuf>,
    /// Rijndael key, as text (fwknop --key-rijndael; rc KEY).
    #[arg(long = "key-rijndael", value_name = "KEY")]
    key: Option<String>,
    /// Rijndael key, base64 (fwknop --key-base64-rijndael; rc KEY_BASE64).
    #[arg(long = "key-base64-rijndael", value_name = "B64")]
    key_b64: Option<String>,
    /// HMAC key, as text (fwknop --key-hmac; rc HMAC_KEY).
    #[arg(long = "key-hmac", value_name = "KEY")]
    hmac: Option<String>,
    /// HMAC key, base64 (fwknop --key-base64-hmac; rc HMAC_KEY_BASE64).
    #[arg(long = "key-base64-hmac", value_name = "B64")]
    hmac_b64: Option<String>,
    /// HMAC digest type (fwknop --hmac-digest-type; default sha256).
    #[arg(long = "hmac-digest-type")]
    hmac_type: Option<String>,
    /// Encryption mode: cbc (default) or legacy (fwknop -M).
    #[arg(short = 'M', long = "encryption-mode")]
    mode: Option<String>,
    /// User name in the packet (fwknop -U/--spoof-user; default $USER).
    #[arg(short = 'U', long = "user")]
    user: Option<String>,
    /// Send the native portcullis format instead of fwknop's.
    #[arg(long)]
    native: bool,
    /// Native: the server's public key (pcs1-pub-...).
    #[arg(long = "server-key", requires = "native")]
    server_key: Option<String>,
    /// Native: file holding your user secret key (pcu1-sec-...).
    #[arg(long = "user-key", requires = "native")]
    user_key: Option<PathBuf>,
    /// Print the packet instead of sending it (fwknop -T); a --native packet, which is
    /// binary, as base64.
    #[arg(short = 'T', long = "test")]
    test: bool,
    /// Say what is sent.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// The SPA server, if not given with -D.
    host: Option<String>,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn parse_access(list: &str) -> anyhow::Result<Vec<Service>> {
    let v: Vec<Service> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Service::parse_grant(s).map_err(|e| bad_access(s, e)))
        .collect::<anyhow::Result<_>>()?;
    if v.is_empty() {
        bail!("nothing to open: give -A tcp/22");
    }
    Ok(v)
}

/// Say what an access entry looks like; a bare port or the knock form (`22`, `22:tcp`)
/// gets its grant spelling.
fn bad_access(s: &str, e: portcullis_proto::service::ParseError) -> anyhow::Error {
    match Service::parse_knock(s, portcullis_proto::Proto::Tcp) {
        Ok(k) if s.contains(':') => anyhow::anyhow!("access {s:?}: access is PROTO/PORT; write {k}"),
        Ok(k) => anyhow::anyhow!("access {s:?}: say which protocol: write {k} (or udp/{})", k.port),
        Err(_) => anyhow::anyhow!("access {s:?}: {e}; access is PROTO/PORT, e.g. tcp/22"),
    }
}

/// What `--test` prints: fwknop packets are base64 text already; a native packet is
/// binary and printed as standard base64 (`base64 -d` gives the bytes back).
fn printable(packet: &[u8], native: bool) -> String {
    use base64::Engine;
    if native {
        base64::engine::general_purpose::STANDARD.encode(packet)
    } else {
        String::from_utf8_lossy(packet).into_owned()
    }
}

/// Run `portcullis spa`.
pub fn run(a: &SpaArgs) -> anyhow::Result<()> {
    let rc = load_rc(a)?;
    let rcv = |k: &str| rc.get(k).filter(|v| !v.is_empty()).cloned();
    let host = a
        .destination
        .clone()
        .or(a.host.clone())
        .or(rcv("SPA_SERVER"))
        .context("no SPA server: give HOST or -D")?;
    let access =
        parse_access(&a.access.clone().or(rcv("ACCESS")).context("nothing to open: give -A tcp/22")?)?;
    let port = match (a.port, rcv("SPA_SERVER_PORT")) {
        (Some(p), _) => p,
        (None, Some(p)) => p.parse().context("SPA_SERVER_PORT in the rc file")?,
        (None, None) => 62201,
    };
    let timeout = match (a.fw_timeout, rcv("FW_TIMEOUT")) {
        (Some(t), _) => Some(t),
        (None, Some(t)) => Some(t.parse().context("FW_TIMEOUT in the rc file")?),
        (None, None) => None,
    };
    let user = a
        .user
        .clone()
        .or(rcv("SPOOF_USER"))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "portcullis".into());
    let allow = match (a.allow_ip, a.source, rcv("ALLOW_IP")) {
        (Some(ip), _, _) => Some(ip),
        (None, true, _) => None,
        (None, false, Some(v)) if v.eq_ignore_ascii_case("source") => None,
        (None, false, Some(v)) => {
            Some(v.parse().with_context(|| format!("ALLOW_IP {v:?} (resolve is not supported)"))?)
        }
        (None, false, None) => None,
    };
    let server = resolve(&host, false, false)?;
    let packet = if a.native {
        native_packet(a, &user, allow, &access, timeout)?
    } else {
        fwknop_packet(a, &rc, &user, allow, &access, timeout)?
    };
    if a.test {
        println!("{}", printable(&packet, a.native));
        return Ok(());
    }
    let to = SocketAddr::new(server, port);
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let sock = UdpSocket::bind(bind)?;
    sock.send_to(&packet, to).with_context(|| format!("sending to {to}"))?;
    if a.verbose {
        let what: Vec<String> = access.iter().map(ToString::to_string).collect();
        println!(
            "sent {} SPA packet ({} bytes) to {to}: open {} for {}",
            if a.native { "native" } else { "fwknop" },
            packet.len(),
            what.join(","),
            allow.map_or("the packet's source".to_string(), |ip| ip.to_string())
        );
    }
    Ok(())
}

fn load_rc(a: &SpaArgs) -> anyhow::Result<fwknoprc::Stanza> {
    let path = match &a.rc_file {
        Some(p) => p.clone(),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".fwknoprc"),
            None => return Ok(Default::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => fwknoprc::stanza(&text, a.named.as_deref(), &path),
        Err(e) if a.named.is_some() || a.rc_file.is_some() => {
            Err(e).with_context(|| format!("reading {}", path.display()))
        }
        Err(_) => Ok(Default::default()),
    }
}

fn fwknop_packet(
    a: &SpaArgs,
    rc: &fwknoprc::Stanza,
    user: &str,
    allow: Option<IpAddr>,
    access: &[Service],
    timeout: Option<u32>,
) -> anyhow::Result<Vec<u8>> {
    use portcullis_proto::spa::fwknop::HmacType;
    let rcv = |k: &str| rc.get(k).filter(|v| !v.is_empty()).cloned();
    let mode: EncMode = a.mode.clone().or(rcv("ENCRYPTION_MODE")).map_or(Ok(EncMode::Cbc), |m| m.parse())?;
    let enc = match (&a.key, &a.key_b64, rcv("KEY"), rcv("KEY_BASE64")) {
        (Some(k), _, _, _) => k.as_bytes().to_vec(),
        (None, Some(b), _, _) => b64(b)?,
        (None, None, Some(k), _) => k.into_bytes(),
        (None, None, None, Some(b)) => b64(&b)?,
        _ => bail!("no Rijndael key: give --key-base64-rijndael (or KEY_BASE64 in the rc stanza)"),
    };
    let use_hmac = rcv("USE_HMAC").is_none_or(|v| !v.eq_ignore_ascii_case("n"));
    let hmac_key = match (&a.hmac, &a.hmac_b64, rcv("HMAC_KEY"), rcv("HMAC_KEY_BASE64")) {
        (Some(k), _, _, _) => Some(k.as_bytes().to_vec()),
        (None, Some(b), _, _) => Some(b64(b)?),
        (None, None, Some(k), _) if use_hmac => Some(k.into_bytes()),
        (None, None, None, Some(b)) if use_hmac => Some(b64(&b)?),
        _ => None,
    };
    let hmac_type: HmacType =
        a.hmac_type.clone().or(rcv("HMAC_DIGEST_TYPE")).map_or(Ok(HashType::Sha256), |t| t.parse())?;
    let key = FwknopKey::new(&enc, mode, hmac_key.as_deref().map(|k| (hmac_type, k)))?;
    let allow_ip = match allow {
        None => Ipv4Addr::UNSPECIFIED,
        Some(IpAddr::V4(v4)) => v4,
        Some(IpAddr::V6(_)) => {
            bail!("the fwknop format carries IPv4 allow addresses only; use --native or -s")
        }
    };
    let mut rng = os_rng;
    let mut msg = SpaMessage::new_access(
        user,
        now_unix(),
        allow_ip,
        access.iter().map(|&s| Access::from(s)).collect(),
        &mut rng,
    );
    msg.client_timeout = timeout;
    if let Some(n) = &a.nat {
        let (h, p) = n.rsplit_once(':').context("-N wants HOST:PORT")?;
        let p: u16 = p.parse().ok().filter(|&p| p != 0).context("-N port must be 1..65535")?;
        msg.msg_type = MsgType::NatAccess;
        msg.nat_access = Some((h.to_string(), p));
    }
    Ok(fwknop::encode(&msg, &key, &mut rng)?.into_bytes())
}

fn native_packet(
    a: &SpaArgs,
    user: &str,
    allow: Option<IpAddr>,
    access: &[Service],
    timeout: Option<u32>,
) -> anyhow::Result<Vec<u8>> {
    let server: ServerPublicKey = a
        .server_key
        .as_deref()
        .context("--native needs --server-key pcs1-pub-...")?
        .parse()
        .map_err(|_| anyhow::anyhow!("--server-key is not a server public key (pcs1-pub-...)"))?;
    let path = a.user_key.as_ref().context("--native needs --user-key FILE")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let key = UserKey::from_text(text.trim())
        .map_err(|_| anyhow::anyhow!("{} does not hold a user secret key (pcu1-sec-...)", path.display()))?;
    let allow = match allow {
        None => AllowAddr::Source,
        Some(IpAddr::V4(v4)) => AllowAddr::V4(v4),
        Some(IpAddr::V6(v6)) => AllowAddr::V6(v6),
    };
    let mut rng = os_rng;
    let req = Request::new(user, now_unix(), allow, access.iter().copied(), timeout.unwrap_or(60), &mut rng)?;
    Ok(native::seal(&req, &server, &key, &mut rng)?)
}

fn b64(s: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let s = s.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .map_err(|_| anyhow::anyhow!("key is not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lists_are_strict() {
        assert_eq!(parse_access("tcp/22, udp/53").unwrap(), vec![Service::tcp(22), Service::udp(53)]);
        assert!(parse_access("tcp/0").is_err());
        assert!(parse_access("icmp/1").is_err());
        assert!(parse_access("").is_err());
    }

    #[test]
    fn bad_access_says_how_to_write_it() {
        let e = |s: &str| parse_access(s).unwrap_err().to_string();
        assert_eq!(e("22"), r#"access "22": say which protocol: write tcp/22 (or udp/22)"#);
        assert_eq!(e("tcp/22,53:udp"), r#"access "53:udp": access is PROTO/PORT; write udp/53"#);
        assert_eq!(
            e("icmp/1"),
            r#"access "icmp/1": protocol must be tcp or udp; access is PROTO/PORT, e.g. tcp/22"#
        );
        assert_eq!(
            e("tcp/0"),
            r#"access "tcp/0": port must be a number from 1 to 65535; access is PROTO/PORT, e.g. tcp/22"#
        );
    }

    #[test]
    fn test_mode_prints_binary_packets_as_base64() {
        assert_eq!(printable(b"8hQ3+abc/xyz", false), "8hQ3+abc/xyz", "fwknop packets are text already");
        assert_eq!(printable(&[0xff, 0x00, b'a', 0x80], true), "/wBhgA==");
    }
}
