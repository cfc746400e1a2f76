//! fwknop `access.conf` reader, so a migrating site can point portcullisd at the file
//! it already has.
//!
//! Syntax as fwknopd reads it: `NAME value` lines (a trailing `;` ends the value),
//! `#` comments, and each `SOURCE` line starts a new stanza. Directives:
//! `%include FILE` and `%include_folder DIR` (every `*.conf` in it, by name) read more
//! stanzas; `%include_keys FILE` reads the current stanza's keys from another file.
//! Includes are limited in depth and count and may not loop. Every file that holds a
//! key must be owned by the user the daemon runs as (root) and not accessible by group
//! or others. Keys we will not honour (GnuPG) are refused with their line; keys fwknopd
//! would not know are noted, as fwknopd warns about them, and do not stop the daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto::spa::fwknop::{EncMode, HashType};
use portcullis_proto::Service;

use super::stanza::{
    build_key, enc_mode, hash_type, split_command, Cidr, CmdCycle, FwknopStanza, KeySyntax, KeyText,
    StanzaNat,
};

/// Deepest chain of `%include`s followed.
pub const MAX_DEPTH: usize = 8;
/// Most files read for one access.conf (includes and key files together).
pub const MAX_FILES: usize = 256;
/// Largest file read.
const MAX_FILE: u64 = 1 << 20;

/// What reading an access.conf gave: stanzas, and notes about lines that were ignored.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Stanzas in order (includes in place).
    pub stanzas: Vec<FwknopStanza>,
    /// `file:line: ...` notes for keys fwknopd would warn about.
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Pending {
    file: String,
    line: usize,
    source: Vec<Cidr>,
    destination: Vec<Cidr>,
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
    cycle_open: Option<Vec<String>>,
    cycle_close: Option<Option<Vec<String>>>,
    cycle_timer: Option<u64>,
    nat: StanzaNat,
    /// Raw key text, to spot stanzas that can never match (same source and keys).
    fingerprint: String,
}

/// Read `path` and everything it includes.
pub fn load(path: &Path) -> Result<Parsed, String> {
    let mut r = Reader::default();
    r.file(path, 0)?;
    r.finish(path)
}

/// Read every `*.conf` in `dir` (fwknopd `ACCESS_FOLDER`), as `%include_folder` does.
pub fn load_folder(dir: &Path) -> Result<Parsed, String> {
    let mut r = Reader::default();
    r.directive("%INCLUDE_FOLDER", &dir.display().to_string(), &dir.join("."), 0)?;
    r.finish(dir)
}

/// Parse access.conf text (includes resolve relative to `path`'s directory).
/// Errors read `path:line: reason`.
pub fn parse(text: &str, path: &Path) -> Result<Vec<FwknopStanza>, String> {
    // The text is in hand, not read from `path`: there is no file to check.
    let mut r = Reader { checked: vec![path.to_owned()], ..Reader::default() };
    r.text(text, path, 0)?;
    Ok(r.finish(path)?.stanzas)
}

#[derive(Default)]
struct Reader {
    out: Parsed,
    cur: Option<Pending>,
    /// Files on the current include chain (canonical), for loop detection.
    chain: Vec<PathBuf>,
    files_read: usize,
    /// (name, source|destination, key fingerprint) per stanza, for conflicts.
    fingerprints: Vec<(String, String, String)>,
    /// Files whose ownership and mode were checked already.
    checked: Vec<PathBuf>,
}

/// Read an access file (or one it includes) through [`super::files`] (recorded for, or
/// served to, a split daemon's reload).
fn read(path: &Path) -> Result<String, String> {
    super::files::read_text(path, MAX_FILE, read_disk)
}

/// It must be a regular file (not a FIFO or `/dev/zero`, whose length says nothing) that
/// only root or we can write: its stanzas choose who may open what, and `CMD_CYCLE_*`
/// lines run as root.
fn read_disk(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cant = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(|e| cant(&e))?;
    let meta = f.metadata().map_err(|e| cant(&e))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    crate::fsperm::check_trusted(path, &meta)?;
    let mut text = String::new();
    f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(|e| cant(&e))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{} is larger than {MAX_FILE} bytes", path.display()));
    }
    Ok(text)
}

/// A file holding keys: owned by the daemon's user (root), not accessible by group or
/// others ([`crate::fsperm::check_secret`], as for every secret).
pub fn check_key_file(path: &Path) -> Result<(), String> {
    super::files::check(path, |path| {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        crate::fsperm::check_secret(path, &meta)
    })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

impl Reader {
    fn finish(mut self, path: &Path) -> Result<Parsed, String> {
        self.close_stanza()?;
        if self.out.stanzas.is_empty() {
            return Err(format!("{}: no SOURCE stanzas", path.display()));
        }
        conflicts(&self.fingerprints)?;
        Ok(self.out)
    }

    fn enter(&mut self, path: &Path, depth: usize) -> Result<PathBuf, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{}: includes nested deeper than {MAX_DEPTH}", path.display()));
        }
        self.files_read += 1;
        if self.files_read > MAX_FILES {
            return Err(format!("{}: more than {MAX_FILES} files included", path.display()));
        }
        let canon = super::files::canonicalize(path)?;
        if self.chain.contains(&canon) {
            return Err(format!("{}: include loop (it includes itself)", path.display()));
        }
        Ok(canon)
    }

    fn file(&mut self, path: &Path, depth: usize) -> Result<(), String> {
        let canon = self.enter(path, depth)?;
        let text = read(path)?;
        self.chain.push(canon);
        let r = self.text(&text, path, depth);
        self.chain.pop();
        r
    }

    fn key_file_ok(&mut self, path: &Path) -> Result<(), String> {
        if !self.checked.iter().any(|p| p == path) {
            check_key_file(path)?;
            self.checked.push(path.to_owned());
        }
        Ok(())
    }

    fn close_stanza(&mut self) -> Result<(), String> {
        if let Some(p) = self.cur.take() {
            let st = finish(&p)?;
            let list = |c: &[Cidr]| {
                let mut v: Vec<String> = c.iter().map(|c| format!("{}/{}", c.addr, c.prefix)).collect();
                v.sort();
                v.join(",")
            };
            let place = format!("{}|{}", list(&p.source), list(&p.destination));
            self.fingerprints.push((st.name.clone(), place, p.fingerprint.clone()));
            self.out.stanzas.push(st);
        }
        Ok(())
    }

    fn text(&mut self, text: &str, path: &Path, depth: usize) -> Result<(), String> {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let err = |line: usize, msg: String| format!("{}:{line}: {msg}", path.display());
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((k, v)) => (k, v.trim()),
                None => return Err(err(n, format!("{line:?} has no value"))),
            };
            let value = value.split(';').next().unwrap_or("").trim();
            let name = name.to_ascii_uppercase();
            if name.starts_with('%') {
                self.directive(&name, value, path, depth).map_err(|e| err(n, e))?;
                continue;
            }
            if name == "SOURCE" {
                self.close_stanza()?;
                let source = cidrs(value).map_err(|m| err(n, format!("SOURCE {m}")))?;
                self.cur = Some(Pending { file: file.clone(), line: n, source, ..Pending::default() });
                continue;
            }
            if is_key(&name) {
                self.key_file_ok(path).map_err(|e| err(n, e))?;
            }
            let p =
                self.cur.as_mut().ok_or_else(|| err(n, format!("{name} before the first SOURCE line")))?;
            if let Some(note) = set(p, &name, value).map_err(|m| err(n, m))? {
                self.out.notes.push(err(n, note));
            }
        }
        Ok(())
    }

    fn directive(&mut self, name: &str, value: &str, path: &Path, depth: usize) -> Result<(), String> {
        match name {
            "%INCLUDE" => {
                self.close_stanza()?;
                self.file(&resolve(path, value), depth + 1).map_err(|e| format!("%include: {e}"))
            }
            "%INCLUDE_FOLDER" => {
                self.close_stanza()?;
                let dir = resolve(path, value);
                let files = super::files::conf_files(&dir).map_err(|e| format!("%include_folder: {e}"))?;
                for f in files {
                    self.file(&f, depth + 1).map_err(|e| format!("%include_folder: {e}"))?;
                }
                Ok(())
            }
            "%INCLUDE_KEYS" => {
                if self.cur.is_none() {
                    return Err("%include_keys before the first SOURCE line".into());
                }
                let p = resolve(path, value);
                self.enter(&p, depth + 1).map_err(|e| format!("%include_keys: {e}"))?;
                self.key_file_ok(&p).map_err(|e| format!("%include_keys: {e}"))?;
                let text = read(&p).map_err(|e| format!("%include_keys: {e}"))?;
                self.keys(&text, &p)
            }
            d => Err(format!("unknown directive {d} (fwknop has %include, %include_folder, %include_keys)")),
        }
    }

    /// An `%include_keys` file: only key lines, for the current stanza.
    fn keys(&mut self, text: &str, path: &Path) -> Result<(), String> {
        let err = |line: usize, msg: String| format!("{}:{line}: {msg}", path.display());
        let Some(p) = self.cur.as_mut() else { return Ok(()) };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(|c: char| c.is_ascii_whitespace())
                .map(|(k, v)| (k.to_ascii_uppercase(), v.split(';').next().unwrap_or("").trim()))
                .ok_or_else(|| err(i + 1, format!("{line:?} has no value")))?;
            if !is_key(&name) && name != "HMAC_DIGEST_TYPE" && name != "ENCRYPTION_MODE" {
                return Err(err(i + 1, format!("{name}: an %include_keys file holds only keys")));
            }
            set(p, &name, value).map_err(|m| err(i + 1, m))?;
        }
        Ok(())
    }
}

fn is_key(name: &str) -> bool {
    matches!(name, "KEY" | "KEY_BASE64" | "HMAC_KEY" | "HMAC_KEY_BASE64")
}

/// `ANY`, or a comma-separated list of addresses and networks.
fn cidrs(value: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for s in value.split(',').map(str::trim) {
        if s.eq_ignore_ascii_case("any") {
            return Ok(Vec::new());
        }
        out.push(Cidr::parse(s).ok_or_else(|| format!("{s:?} is not an address or CIDR"))?);
    }
    Ok(out)
}

/// Apply one stanza key. `Ok(Some(note))` for a line that is accepted but ignored.
fn set(p: &mut Pending, name: &str, value: &str) -> Result<Option<String>, String> {
    let yes = value.eq_ignore_ascii_case("y") || value.eq_ignore_ascii_case("yes");
    let secs = |what: &str| -> Result<u64, String> {
        value
            .parse::<u64>()
            .ok()
            .filter(|v| (1..=86_400).contains(v))
            .ok_or_else(|| format!("{what} must be 1 to 86400 seconds"))
    };
    if is_key(name) {
        p.fingerprint.push_str(&format!("{name}={value};"));
    }
    match name {
        "KEY" => p.key = Some(KeyText::Raw(value.to_string())),
        "KEY_BASE64" => p.key = Some(KeyText::B64(value.to_string())),
        "HMAC_KEY" => p.hmac_key = Some(KeyText::Raw(value.to_string())),
        "HMAC_KEY_BASE64" => p.hmac_key = Some(KeyText::B64(value.to_string())),
        "HMAC_DIGEST_TYPE" => {
            p.hmac_type = Some(hash_type(value).ok_or_else(|| format!("unknown HMAC_DIGEST_TYPE {value:?}"))?)
        }
        "ENCRYPTION_MODE" => {
            p.mode =
                Some(enc_mode(value).ok_or_else(|| {
                    format!("ENCRYPTION_MODE {value:?} is not supported (use CBC or legacy)")
                })?)
        }
        "OPEN_PORTS" => p.open_ports = port_list(value)?,
        "RESTRICT_PORTS" => p.restrict_ports = port_list(value)?,
        "FW_ACCESS_TIMEOUT" => p.fw_access_timeout = Some(secs("FW_ACCESS_TIMEOUT")?),
        "MAX_FW_TIMEOUT" => p.max_fw_timeout = Some(secs("MAX_FW_TIMEOUT")?),
        "REQUIRE_USERNAME" => p.require_username = Some(value.to_string()),
        "REQUIRE_SOURCE_ADDRESS" | "REQUIRE_SOURCE" => p.require_source_address = yes,
        "ACCESS_EXPIRE" => p.expires = Some(date(value).ok_or("ACCESS_EXPIRE must be MM/DD/YYYY")?),
        "ACCESS_EXPIRE_EPOCH" => {
            p.expires = Some(value.parse().map_err(|_| "ACCESS_EXPIRE_EPOCH must be a Unix time")?)
        }
        "DESTINATION" => p.destination = cidrs(value).map_err(|m| format!("DESTINATION {m}"))?,
        "CMD_CYCLE_OPEN" => {
            p.cycle_open = Some(split_command(value).map_err(|m| format!("CMD_CYCLE_OPEN: {m}"))?)
        }
        "CMD_CYCLE_CLOSE" => {
            p.cycle_close = Some(if value.eq_ignore_ascii_case("none") {
                None
            } else {
                Some(split_command(value).map_err(|m| format!("CMD_CYCLE_CLOSE: {m}"))?)
            })
        }
        "CMD_CYCLE_TIMER" => p.cycle_timer = Some(secs("CMD_CYCLE_TIMER")?),
        "FORCE_NAT" => p.nat.force_nat = Some(force_nat(value)?),
        "FORCE_SNAT" => {
            p.nat.force_snat =
                Some(value.parse().map_err(|_| format!("FORCE_SNAT {value:?} is not an IPv4 address"))?)
        }
        "FORWARD_ALL" => p.nat.forward_all = yes,
        "DISABLE_DNAT" => p.nat.disable_dnat = yes,
        "FORCE_MASQUERADE" if !yes => {}
        "FORCE_MASQUERADE" => {
            return Err("FORCE_MASQUERADE is not supported: give the outside address with FORCE_SNAT".into())
        }
        // Command messages are refused at run time whatever these say.
        "ENABLE_CMD_EXEC" | "ENABLE_CMD_SUDO_EXEC" if !yes => {}
        "ENABLE_CMD_EXEC"
        | "ENABLE_CMD_SUDO_EXEC"
        | "CMD_EXEC_USER"
        | "CMD_EXEC_GROUP"
        | "CMD_SUDO_EXEC_USER"
        | "CMD_SUDO_EXEC_GROUP" => {
            return Ok(Some(format!("{name} ignored: portcullis never executes SPA command messages")));
        }
        g if g.starts_with("GPG_") || g == "USE_GPG" => {
            return Err(format!(
                "{name}: GnuPG stanzas are not supported; use KEY_BASE64 + HMAC_KEY_BASE64 \
                 (fwknop --key-gen), or portcullis' native format (docs/spa-native.md)"
            ))
        }
        other => return Ok(Some(format!("unknown access.conf key {other} ignored (as fwknopd does)"))),
    }
    Ok(None)
}

/// `FORCE_NAT IP PORT`.
fn force_nat(value: &str) -> Result<(std::net::Ipv4Addr, u16), String> {
    let mut it = value.split_whitespace();
    let ip = it.next().and_then(|s| s.parse().ok());
    let port = it.next().and_then(|s| s.parse::<u16>().ok()).filter(|&p| p != 0);
    match (ip, port, it.next()) {
        (Some(ip), Some(port), None) => Ok((ip, port)),
        _ => Err(format!("FORCE_NAT {value:?}: write an IPv4 address and a port, e.g. 192.168.1.2 22")),
    }
}

fn finish(p: &Pending) -> Result<FwknopStanza, String> {
    let err = |msg: &str| format!("{}:{}: stanza: {msg}", p.file, p.line);
    let key = p.key.as_ref().ok_or_else(|| err("no KEY or KEY_BASE64"))?;
    if p.fingerprint.contains("__CHANGEME__") {
        return Err(err("a key is still __CHANGEME__ (as shipped): set KEY_BASE64 and HMAC_KEY_BASE64 from `fwknop --key-gen`"));
    }
    let mode = p.mode.unwrap_or(EncMode::Cbc);
    let hmac = p.hmac_key.as_ref().map(|k| (p.hmac_type.unwrap_or(HashType::Sha256), k));
    let key = build_key(key, mode, hmac).map_err(|e| err(&e.describe(KeySyntax::AccessConf)))?;
    let cmd_cycle = match (&p.cycle_open, &p.cycle_close, p.cycle_timer) {
        (None, None, None) => None,
        (Some(open), Some(close), Some(t)) => {
            Some(CmdCycle { open: open.clone(), close: close.clone(), timer: Duration::from_secs(t) })
        }
        (Some(_), None, _) => {
            return Err(err("CMD_CYCLE_OPEN needs CMD_CYCLE_CLOSE (or CMD_CYCLE_CLOSE NONE)"))
        }
        (None, Some(_), _) => return Err(err("CMD_CYCLE_CLOSE needs CMD_CYCLE_OPEN")),
        (Some(_), Some(_), None) => return Err(err("CMD_CYCLE_OPEN needs CMD_CYCLE_TIMER")),
        (None, None, Some(_)) => return Err(err("CMD_CYCLE_TIMER needs CMD_CYCLE_OPEN")),
    };
    if cmd_cycle.is_some() && p.nat.any() {
        return Err(err("CMD_CYCLE_* and NAT keys cannot be combined"));
    }
    if (p.nat.forward_all || p.nat.force_snat.is_some()) && p.nat.force_nat.is_none() {
        return Err(err("FORWARD_ALL and FORCE_SNAT need FORCE_NAT"));
    }
    Ok(FwknopStanza {
        name: format!("{}:{}", p.file, p.line),
        source: p.source.clone(),
        key,
        open_ports: p.open_ports.clone(),
        restrict_ports: p.restrict_ports.clone(),
        fw_access_timeout: Duration::from_secs(p.fw_access_timeout.unwrap_or(30)),
        max_fw_timeout: Duration::from_secs(p.max_fw_timeout.unwrap_or(300)),
        require_username: p.require_username.clone(),
        require_source_address: p.require_source_address,
        expires: p.expires,
        destination: p.destination.clone(),
        cmd_cycle,
        nat: p.nat.clone(),
        // access.conf stays fwknopd's format; `[spa] access_conf_scope` sets this.
        fleet: false,
    })
}

/// Two stanzas with the same SOURCE, DESTINATION and keys: the second can never match
/// (the first always wins), so its settings would silently never apply.
fn conflicts(fp: &[(String, String, String)]) -> Result<(), String> {
    for (i, a) in fp.iter().enumerate() {
        if let Some(b) = fp[..i].iter().find(|b| b.1 == a.1 && b.2 == a.2) {
            return Err(format!(
                "{}: stanza has the same SOURCE, DESTINATION and keys as {}, so it can never match; \
                 merge them or change its keys",
                a.0, b.0
            ));
        }
    }
    Ok(())
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
#[path = "access_conf_tests.rs"]
mod tests;
