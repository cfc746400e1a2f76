//! fwknop `access.conf` reader, so a migrating site can point portcullisd at the file
//! it already has.
//!
//! Syntax as fwknopd reads it: `NAME value` lines (a trailing `;` ends the value),
//! `#` comments, and each `SOURCE` line starts a new stanza. Keys portcullis cannot
//! honour safely are refused with the line number rather than silently ignored
//! (GnuPG, NAT forwarding, `%include`); command execution is never performed.

use std::path::Path;
use std::time::Duration;

use portcullis_proto::spa::fwknop::{EncMode, HashType};
use portcullis_proto::Service;

use super::stanza::{build_key, enc_mode, hash_type, Cidr, FwknopStanza, KeySyntax, KeyText};

#[derive(Default)]
struct Pending {
    line: usize,
    source: Vec<Cidr>,
    key: Option<KeyText>,
    hmac_key: Option<KeyText>,
    hmac_type: Option<HashType>,
    mode: Option<EncMode>,
    open_ports: Vec<Service>,
    restrict_ports: Vec<Service>,
    fw_access_timeout: Option<u64>,
    max_fw_timeout: Option<u64>,
    require_username: Option<String>,
    require_source_address: bool,
    expires: Option<u64>,
}

/// Parse access.conf text. Errors read `path:line: reason`.
pub fn parse(text: &str, path: &Path) -> Result<Vec<FwknopStanza>, String> {
    let mut out = Vec::new();
    let mut cur: Option<Pending> = None;
    let err = |line: usize, msg: String| format!("{}:{line}: {msg}", path.display());
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('%') {
            return Err(err(
                n,
                format!("{line:?}: %include directives are not supported; inline the stanzas"),
            ));
        }
        let (name, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => return Err(err(n, format!("{line:?} has no value"))),
        };
        let value = value.split(';').next().unwrap_or("").trim();
        let name = name.to_ascii_uppercase();
        if name == "SOURCE" {
            if let Some(p) = cur.take() {
                out.push(finish(p, path)?);
            }
            let mut p = Pending { line: n, ..Pending::default() };
            for s in value.split(',').map(str::trim) {
                if s.eq_ignore_ascii_case("any") {
                    continue;
                }
                p.source.push(
                    Cidr::parse(s)
                        .ok_or_else(|| err(n, format!("SOURCE {s:?} is not an address or CIDR")))?,
                );
            }
            cur = Some(p);
            continue;
        }
        let p = cur.as_mut().ok_or_else(|| err(n, format!("{name} before the first SOURCE line")))?;
        let yes = || value.eq_ignore_ascii_case("y") || value.eq_ignore_ascii_case("yes");
        let secs = |what: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| (1..=86_400).contains(v))
                .ok_or_else(|| err(n, format!("{what} must be 1 to 86400 seconds")))
        };
        match name.as_str() {
            "KEY" => p.key = Some(KeyText::Raw(value.to_string())),
            "KEY_BASE64" => p.key = Some(KeyText::B64(value.to_string())),
            "HMAC_KEY" => p.hmac_key = Some(KeyText::Raw(value.to_string())),
            "HMAC_KEY_BASE64" => p.hmac_key = Some(KeyText::B64(value.to_string())),
            "HMAC_DIGEST_TYPE" => {
                p.hmac_type = Some(
                    hash_type(value).ok_or_else(|| err(n, format!("unknown HMAC_DIGEST_TYPE {value:?}")))?,
                )
            }
            "ENCRYPTION_MODE" => {
                p.mode = Some(enc_mode(value).ok_or_else(|| {
                    err(n, format!("ENCRYPTION_MODE {value:?} is not supported (use CBC or legacy)"))
                })?)
            }
            "OPEN_PORTS" => p.open_ports = port_list(value).map_err(|m| err(n, m))?,
            "RESTRICT_PORTS" => p.restrict_ports = port_list(value).map_err(|m| err(n, m))?,
            "FW_ACCESS_TIMEOUT" => p.fw_access_timeout = Some(secs("FW_ACCESS_TIMEOUT")?),
            "MAX_FW_TIMEOUT" => p.max_fw_timeout = Some(secs("MAX_FW_TIMEOUT")?),
            "REQUIRE_USERNAME" => p.require_username = Some(value.to_string()),
            "REQUIRE_SOURCE_ADDRESS" | "REQUIRE_SOURCE" => p.require_source_address = yes(),
            "ACCESS_EXPIRE" => {
                p.expires =
                    Some(date(value).ok_or_else(|| err(n, "ACCESS_EXPIRE must be MM/DD/YYYY".into()))?)
            }
            "ACCESS_EXPIRE_EPOCH" => {
                p.expires = Some(
                    value.parse().map_err(|_| err(n, "ACCESS_EXPIRE_EPOCH must be a Unix time".into()))?,
                )
            }
            "DESTINATION" if value.eq_ignore_ascii_case("any") => {}
            // Command messages are refused at run time whatever these say.
            "ENABLE_CMD_EXEC"
            | "ENABLE_CMD_SUDO_EXEC"
            | "CMD_EXEC_USER"
            | "CMD_EXEC_GROUP"
            | "CMD_SUDO_EXEC_USER"
            | "CMD_SUDO_EXEC_GROUP" => {
                if yes() {
                    tracing::warn!(
                        "{}:{n}: {name} ignored: portcullis never executes SPA command messages",
                        path.display()
                    );
                }
            }
            "DESTINATION" | "FORCE_NAT" | "FORCE_SNAT" | "FORCE_MASQUERADE" | "FORWARD_ALL"
            | "DISABLE_DNAT" | "CMD_CYCLE_OPEN" | "CMD_CYCLE_CLOSE" | "CMD_CYCLE_TIMER" => {
                return Err(err(
                    n,
                    format!("{name} is not supported by portcullis (NAT, destination and command cycles)"),
                ))
            }
            g if g.starts_with("GPG_") || g == "USE_GPG" => {
                return Err(err(n, format!("{name}: GnuPG mode is not supported; use KEY/HMAC_KEY stanzas")))
            }
            other => return Err(err(n, format!("unknown access.conf key {other}"))),
        }
    }
    if let Some(p) = cur.take() {
        out.push(finish(p, path)?);
    }
    if out.is_empty() {
        return Err(format!("{}: no SOURCE stanzas", path.display()));
    }
    Ok(out)
}

fn finish(p: Pending, path: &Path) -> Result<FwknopStanza, String> {
    let err = |msg: String| format!("{}:{}: stanza: {msg}", path.display(), p.line);
    let key = p.key.as_ref().ok_or_else(|| err("no KEY or KEY_BASE64".into()))?;
    let mode = p.mode.unwrap_or(EncMode::Cbc);
    let hmac = p.hmac_key.as_ref().map(|k| (p.hmac_type.unwrap_or(HashType::Sha256), k));
    let key = build_key(key, mode, hmac).map_err(|e| err(e.describe(KeySyntax::AccessConf)))?;
    Ok(FwknopStanza {
        name: format!(
            "{}:{}",
            path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            p.line
        ),
        source: p.source,
        key,
        open_ports: p.open_ports,
        restrict_ports: p.restrict_ports,
        fw_access_timeout: Duration::from_secs(p.fw_access_timeout.unwrap_or(30)),
        max_fw_timeout: Duration::from_secs(p.max_fw_timeout.unwrap_or(300)),
        require_username: p.require_username,
        require_source_address: p.require_source_address,
        expires: p.expires,
    })
}

/// `tcp/22, udp/53` → services.
fn port_list(v: &str) -> Result<Vec<Service>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Service::parse_grant(s).map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

/// `MM/DD/YYYY` → Unix time of the end of that day (UTC): the stanza works through it.
fn date(s: &str) -> Option<u64> {
    let mut it = s.split('/');
    let (m, d, y): (u32, u32, i64) =
        (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y)
    {
        return None;
    }
    // Days from civil (proleptic Gregorian), Howard Hinnant's well-known algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days + 1) * 86_400).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "\
# fwknop access.conf
SOURCE              ANY
KEY_BASE64          wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=
HMAC_KEY_BASE64     Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==
HMAC_DIGEST_TYPE    sha256;
OPEN_PORTS          tcp/22, udp/53
FW_ACCESS_TIMEOUT   45;
REQUIRE_USERNAME    alice
ENABLE_CMD_EXEC     N

SOURCE 192.0.2.0/24, 2001:db8::/32
KEY fwknoptest
ENCRYPTION_MODE legacy
REQUIRE_SOURCE_ADDRESS Y
ACCESS_EXPIRE 12/31/2030
";

    #[test]
    fn reads_stanzas_with_fwknop_syntax() {
        let s = parse(CONF, Path::new("access.conf")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].open_ports, vec![Service::tcp(22), Service::udp(53)]);
        assert_eq!(s[0].fw_access_timeout, Duration::from_secs(45));
        assert_eq!(s[0].require_username.as_deref(), Some("alice"));
        assert_eq!(s[0].key.hmac_type(), Some(HashType::Sha256));
        assert!(s[0].source.is_empty());
        assert_eq!(s[1].key.mode(), EncMode::Legacy);
        assert!(s[1].require_source_address);
        assert_eq!(s[1].source.len(), 2);
        assert!(s[1].source[0].contains("192.0.2.77".parse().unwrap()));
        assert!(!s[1].source[0].contains("198.51.100.1".parse().unwrap()));
        assert!(s[1].source[1].contains("2001:db8::5".parse().unwrap()));
        assert_eq!(s[1].expires, Some(1_924_992_000));
        assert_eq!(s[1].name, "access.conf:11");
    }

    #[test]
    fn refuses_what_it_cannot_honour_with_line_numbers() {
        let cases = [
            ("KEY x\n", "1:", "before the first SOURCE"),
            ("SOURCE ANY\nKEY x\nFORCE_NAT 10.0.0.1 22\n", "3:", "not supported"),
            ("SOURCE ANY\nGPG_DECRYPT_ID x\n", "2:", "GnuPG"),
            ("%include other.conf\n", "1:", "%include"),
            ("SOURCE ANY\nKEY x\nOPEN_PORTS tcp/99999\n", "3:", "65535"),
            ("SOURCE ANY\nKEY x\nBOGUS y\n", "3:", "unknown"),
            ("SOURCE ANY\nHMAC_KEY y\n", "1:", "no KEY"),
            ("SOURCE 300.1.1.1\nKEY x\n", "1:", "CIDR"),
            ("SOURCE ANY\nKEY same\nHMAC_KEY same\n", "1:", "equals"),
            ("", "", "no SOURCE"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text, Path::new("a.conf")).err().unwrap_or_else(|| panic!("{text:?} accepted"));
            assert!(e.contains(&format!("a.conf:{line}")) && e.contains(needle), "{text:?}: {e}");
        }
    }
}
