//! `[spa]`: single-packet authorization settings, native users and fwknop stanzas.
//!
//! fwknop stanzas can be written inline (`[[spa.fwknop]]`, same meaning as access.conf
//! keys) or read from an existing fwknop `access.conf` (`access_conf = "..."`), so a
//! migrating site points portcullisd at the file it already has.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto::spa::fwknop::{EncMode, HashType};
use portcullis_proto::spa::native::{ServerKey, UserPublicKey};
use portcullis_proto::Service;
use toml::Spanned;

use super::access_conf;
use super::raw::{RawCommand, RawSpa, RawStanza};
use super::stanza::{
    build_key, enc_mode, hash_type, split_command, stanza_warnings, KeyError, KeySyntax, KeyText,
};
pub use super::stanza::{Cidr, CmdCycle, FwknopStanza, StanzaNat};

/// Validated `[spa]` settings.
#[derive(Debug, Clone)]
pub struct SpaConfig {
    /// UDP ports sniffed for SPA packets.
    pub ports: Vec<u16>,
    /// Allowed clock skew, either way, in seconds (fwknop's MAX_SPA_PACKET_AGE).
    pub max_age: u64,
    /// Extra services to protect even if no stanza lists them (stanzas without OPEN_PORTS).
    pub protect: Vec<Service>,
    /// Native format: the server's X25519 key, if native SPA is enabled.
    pub server_key: Option<ServerKey>,
    /// Native users by name.
    pub users: HashMap<String, NativeUser>,
    /// fwknop stanzas, in file order (first match wins, as in fwknopd).
    pub stanzas: Vec<FwknopStanza>,
    /// Also receive SPA on a bound UDP socket on this port (fwknopd `ENABLE_UDP_SERVER`):
    /// datagrams are read and never answered, and the kernel sends no port-unreachable.
    pub udp_server: Option<u16>,
    /// Refuse requests older (or newer) than `max_age` (fwknopd `ENABLE_SPA_PACKET_AGING`).
    /// Without it replay entries never expire.
    pub aging: bool,
    /// Keep the replay cache on disk across restarts (fwknopd `ENABLE_DIGEST_PERSISTENCE`).
    pub persist_replay: bool,
    /// An fwknopd digest cache (`DIGEST_FILE`) whose entries are imported into ours
    /// when ours does not exist yet.
    pub import_digest_file: Option<PathBuf>,
    /// NAT access messages may be honoured (fwknopd `ENABLE_IPT_FORWARDING`).
    pub forwarding: bool,
    /// Local NAT access messages may be honoured (fwknopd `ENABLE_IPT_LOCAL_NAT`).
    pub local_nat: bool,
    /// The access.conf file (or `ACCESS_FOLDER` directory) the stanzas after the inline
    /// ones were read from.
    pub access_conf: Option<PathBuf>,
    /// How many stanzas were written inline (`[[spa.fwknop]]`), before the file's.
    pub inline_stanzas: usize,
    /// Prefix lengths (IPv4, IPv6) by which sources share a crypto budget.
    pub source_prefix: (u8, u8),
    /// Advice about weak stanzas (no HMAC, legacy mode), each naming the stanza and
    /// where it is defined; shown by `check` and logged at start.
    pub warnings: Vec<String>,
}

/// A native-format user.
#[derive(Debug, Clone)]
pub struct NativeUser {
    /// The user's Ed25519 public key.
    pub key: UserPublicKey,
    /// Services the user may open.
    pub open: Vec<Service>,
    /// Longest grant the user may ask for.
    pub max_open_for: Duration,
    /// `scope = "fleet"`: replay-checked fleet-wide and shared with every node.
    pub fleet: bool,
    /// Addresses or prefixes the user may open for besides the packet's own source
    /// (`allow_addresses`); empty = the source only.
    pub allow_addresses: Vec<Cidr>,
}

/// A located refusal: byte offset into the config text, message.
pub(super) type SpaErr = (Option<std::ops::Range<usize>>, String);

fn at<T>(span: std::ops::Range<usize>, msg: impl Into<String>) -> Result<T, SpaErr> {
    Err((Some(span), msg.into()))
}

/// Default fwknop SPA port.
pub const DEFAULT_PORT: u16 = 62201;
/// Default allowed clock skew, seconds (fwknop's default MAX_SPA_PACKET_AGE).
pub const DEFAULT_MAX_AGE: u64 = 120;
/// Default prefix lengths (IPv4, IPv6) by which sources share a crypto budget.
pub const DEFAULT_SOURCE_PREFIX: (u8, u8) = (24, 56);

/// What an `[spa]` section with nothing in it means: the default port, packet aging on,
/// no key, no user and no stanza.
impl Default for SpaConfig {
    fn default() -> SpaConfig {
        SpaConfig {
            ports: vec![DEFAULT_PORT],
            max_age: DEFAULT_MAX_AGE,
            protect: Vec::new(),
            server_key: None,
            users: HashMap::new(),
            stanzas: Vec::new(),
            udp_server: None,
            aging: true,
            persist_replay: false,
            import_digest_file: None,
            forwarding: false,
            local_nat: false,
            access_conf: None,
            inline_stanzas: 0,
            source_prefix: DEFAULT_SOURCE_PREFIX,
            warnings: Vec::new(),
        }
    }
}

/// Validate `[spa]`; also returns notes about ignored access.conf lines. `at_line(offset)`
/// names a place in the config text (`FILE:LINE`), for warnings.
pub(super) fn validate(
    raw: RawSpa,
    config_dir: &Path,
    at_line: &dyn Fn(usize) -> String,
) -> Result<(SpaConfig, Vec<String>), SpaErr> {
    let ports = match raw.ports {
        None => vec![DEFAULT_PORT],
        Some(list) => {
            let span = list.span();
            let mut out = Vec::new();
            for p in list.into_inner() {
                match u16::try_from(*p.get_ref()) {
                    Ok(v) if v != 0 => out.push(v),
                    _ => return at(p.span(), "SPA port must be in 1..65535"),
                }
            }
            if out.is_empty() {
                return at(span, "ports is empty");
            }
            out
        }
    };
    let max_age = match raw.max_age {
        None => DEFAULT_MAX_AGE,
        Some(a) => match u64::try_from(*a.get_ref()) {
            Ok(v) if (1..=3600).contains(&v) => v,
            _ => return at(a.span(), "max_age must be 1 to 3600 seconds"),
        },
    };
    let protect = match raw.protect {
        None => Vec::new(),
        Some(l) => services(l.into_inner())?,
    };
    let server_key = match raw.server_key_file {
        None => None,
        Some(p) => {
            let path = resolve(config_dir, p.get_ref());
            Some(read_server_key(&path).or_else(|m| at(p.span(), m))?)
        }
    };
    let mut users = HashMap::new();
    for u in raw.user {
        let span = u.span();
        let u = u.into_inner();
        let name = u.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 32
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return at(u.name.span(), "user name must be 1-32 characters of A-Z a-z 0-9 _ . -");
        }
        let key = match u.key.get_ref().parse::<UserPublicKey>() {
            Ok(k) => k,
            Err(_) => {
                return at(
                    u.key.span(),
                    "key must be a user public key (pcu1-pub-...; see `portcullis keygen --user`)",
                )
            }
        };
        let open = services(u.open.into_inner())?;
        if open.is_empty() {
            return at(span, "user must be allowed to open at least one service");
        }
        let max_open_for = match u.max_open_for {
            None => Duration::from_secs(300),
            Some(s) => match u64::try_from(*s.get_ref()) {
                Ok(v) if (1..=86_400).contains(&v) => Duration::from_secs(v),
                _ => return at(s.span(), "max_open_for must be 1 to 86400 seconds"),
            },
        };
        let fleet = crate::fleet::config::scope(u.scope)?;
        let mut allow_addresses = Vec::new();
        for a in u.allow_addresses.unwrap_or_default() {
            match Cidr::parse(a.get_ref()) {
                Some(c) => allow_addresses.push(c),
                None => {
                    return at(
                        a.span(),
                        format!("allow_addresses: {:?} is not an address or CIDR", a.get_ref()),
                    )
                }
            }
        }
        let user = NativeUser { key, open, max_open_for, allow_addresses, fleet };
        if users.insert(name.clone(), user).is_some() {
            return at(span, format!("user {name:?} is defined twice"));
        }
    }
    if !users.is_empty() && server_key.is_none() {
        return Err((
            None,
            "[[spa.user]] needs [spa] server_key_file (see `portcullis keygen --server`)".into(),
        ));
    }
    let mut stanzas = Vec::new();
    let mut warnings = Vec::new();
    for s in raw.fwknop {
        let place = at_line(s.span().start);
        let span = s.span();
        let mut st = stanza(s.into_inner())?;
        if st.fleet {
            fleet_stanza(&mut st).or_else(|m| at(span, m))?;
        }
        warnings.extend(stanza_warnings(&st, &format!("fwknop stanza {:?} ({place})", st.name)));
        stanzas.push(st);
    }
    let mut notes = Vec::new();
    let inline_stanzas = stanzas.len();
    let mut access_path = None;
    if let Some(p) = raw.access_conf {
        let path = resolve(config_dir, p.get_ref());
        let parsed = if super::files::is_dir(&path) {
            access_conf::load_folder(&path)
        } else {
            access_conf::load(&path)
        };
        let mut parsed = parsed.or_else(|e| at(p.span(), e))?;
        access_path = Some(path);
        if crate::fleet::config::scope(raw.access_conf_scope)? {
            for st in &mut parsed.stanzas {
                fleet_stanza(st).or_else(|m| at(p.span(), m))?;
            }
        }
        stanzas.extend(parsed.stanzas);
        notes = parsed.notes;
    } else if let Some(s) = raw.access_conf_scope {
        return at(s.span(), "access_conf_scope needs access_conf");
    }
    if server_key.is_none() && stanzas.is_empty() {
        return Err((
            None,
            "[spa] has neither native users (server_key_file + [[spa.user]]) nor fwknop stanzas".into(),
        ));
    }
    let udp_server = match raw.udp_server_port {
        None => None,
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(v) if v != 0 => Some(v),
            _ => return at(p.span(), "udp_server_port must be in 1..65535"),
        },
    };
    let import_digest_file = raw.import_digest_file.map(|p| resolve(config_dir, p.get_ref()));
    let spa = SpaConfig {
        ports,
        max_age,
        protect,
        server_key,
        users,
        stanzas,
        udp_server,
        aging: raw.aging.unwrap_or(true),
        persist_replay: raw.persist_replay.unwrap_or(true),
        import_digest_file,
        forwarding: raw.forwarding.unwrap_or(false),
        local_nat: raw.local_nat.unwrap_or(false),
        access_conf: access_path,
        inline_stanzas,
        source_prefix: (
            prefix_len(raw.source_prefix_v4, DEFAULT_SOURCE_PREFIX.0, 32, "source_prefix_v4")?,
            prefix_len(raw.source_prefix_v6, DEFAULT_SOURCE_PREFIX.1, 128, "source_prefix_v6")?,
        ),
        warnings,
    };
    Ok((spa, notes))
}

fn prefix_len(v: Option<Spanned<i64>>, default: u8, max: u8, what: &str) -> Result<u8, SpaErr> {
    match v {
        None => Ok(default),
        Some(s) => match u8::try_from(*s.get_ref()) {
            Ok(p) if p <= max => Ok(p),
            _ => at(s.span(), format!("{what} must be 0 to {max}")),
        },
    }
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// Read a server secret key file (`pcs1-sec-...`), refusing one that someone else owns
/// or group/others may read ([`crate::fsperm::read_secret`]).
pub fn read_server_key(path: &Path) -> Result<ServerKey, String> {
    const MAX: u64 = 4096;
    let text = super::files::read_text(path, MAX, |p| crate::fsperm::read_secret(p, MAX))?;
    ServerKey::from_text(text.trim())
        .map_err(|_| format!("{} does not hold a server secret key (pcs1-sec-...)", path.display()))
}

fn services(list: Vec<Spanned<String>>) -> Result<Vec<Service>, SpaErr> {
    let mut out = Vec::new();
    for s in list {
        match Service::parse_grant(s.get_ref()) {
            Ok(v) => {
                if !out.contains(&v) {
                    out.push(v)
                }
            }
            Err(e) => return at(s.span(), format!("{:?}: {e} (write tcp/22 or udp/53)", s.get_ref())),
        }
    }
    Ok(out)
}

/// Make `st` fleet-scoped. Only plain firewall grants can be shared: another node
/// cannot run this node's commands or reach its NAT targets.
fn fleet_stanza(st: &mut FwknopStanza) -> Result<(), String> {
    if st.cmd_cycle.is_some() || st.nat.any() {
        return Err(format!(
            "fwknop stanza {:?}: scope \"fleet\" cannot be combined with CMD_CYCLE_* or NAT \
             (other nodes can only open their firewall)",
            st.name
        ));
    }
    st.fleet = true;
    Ok(())
}

fn stanza(r: RawStanza) -> Result<FwknopStanza, SpaErr> {
    let fleet = crate::fleet::config::scope(r.scope.clone())?;
    let name = r.name.get_ref().clone();
    let span = r.name.span();
    let enc = match (&r.key, &r.key_base64) {
        (Some(k), None) => KeyText::Raw(k.get_ref().clone()),
        (None, Some(k)) => KeyText::B64(k.get_ref().clone()),
        _ => return at(span, "set exactly one of key / key_base64"),
    };
    let hmac = match (&r.hmac_key, &r.hmac_key_base64) {
        (None, None) => None,
        (Some(k), None) => Some(KeyText::Raw(k.get_ref().clone())),
        (None, Some(k)) => Some(KeyText::B64(k.get_ref().clone())),
        _ => return at(span, "set at most one of hmac_key / hmac_key_base64"),
    };
    let hmac_type = match &r.hmac_digest_type {
        None => HashType::Sha256,
        Some(t) => match hash_type(t.get_ref()) {
            Some(h) => h,
            None => {
                return at(
                    t.span(),
                    "hmac_digest_type must be md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512",
                )
            }
        },
    };
    let mode = match &r.encryption_mode {
        None => EncMode::Cbc,
        Some(m) => match enc_mode(m.get_ref()) {
            Some(v) => v,
            None => return at(m.span(), "encryption_mode must be cbc or legacy"),
        },
    };
    let key = match build_key(&enc, mode, hmac.as_ref().map(|h| (hmac_type, h))) {
        Ok(k) => k,
        Err(e) => {
            // Point at the key that is wrong when there is one.
            let place = match e {
                KeyError::KeyNotBase64 => r.key_base64.as_ref().map(Spanned::span),
                KeyError::HmacKeyNotBase64 => r.hmac_key_base64.as_ref().map(Spanned::span),
                KeyError::Unusable(_) => None,
            };
            return at(place.unwrap_or(span), e.describe(KeySyntax::Toml));
        }
    };
    let source = cidrs(r.source.unwrap_or_default(), "source")?;
    let secs = |v: Option<Spanned<i64>>, default: u64, what: &str| -> Result<Duration, SpaErr> {
        match v {
            None => Ok(Duration::from_secs(default)),
            Some(s) => match u64::try_from(*s.get_ref()) {
                Ok(x) if (1..=86_400).contains(&x) => Ok(Duration::from_secs(x)),
                _ => at(s.span(), format!("{what} must be 1 to 86400 seconds")),
            },
        }
    };
    Ok(FwknopStanza {
        name,
        source,
        key,
        open_ports: services(r.open_ports.unwrap_or_default())?,
        restrict_ports: services(r.restrict_ports.unwrap_or_default())?,
        fw_access_timeout: secs(r.fw_access_timeout, 30, "fw_access_timeout")?,
        max_fw_timeout: secs(r.max_fw_timeout, 300, "max_fw_timeout")?,
        require_username: r.require_username.map(Spanned::into_inner),
        require_source_address: r.require_source_address.unwrap_or(false),
        expires: match r.access_expire_epoch {
            None => None,
            Some(e) => match u64::try_from(*e.get_ref()) {
                Ok(v) => Some(v),
                Err(_) => return at(e.span(), "access_expire_epoch must be a Unix time"),
            },
        },
        destination: cidrs(r.destination.unwrap_or_default(), "destination")?,
        cmd_cycle: cmd_cycle(r.cmd_cycle_open, r.cmd_cycle_close, r.cmd_cycle_timer, &span)?,
        nat: StanzaNat {
            force_nat: match r.force_nat {
                None => None,
                Some(f) => match f.get_ref().parse::<std::net::SocketAddrV4>() {
                    Ok(a) if a.port() != 0 => Some((*a.ip(), a.port())),
                    _ => return at(f.span(), "force_nat must be \"IPv4:PORT\", e.g. \"192.168.1.2:22\""),
                },
            },
            force_snat: match r.force_snat {
                None => None,
                Some(f) => match f.get_ref().parse() {
                    Ok(a) => Some(a),
                    Err(_) => return at(f.span(), "force_snat must be an IPv4 address"),
                },
            },
            forward_all: r.forward_all.unwrap_or(false),
            disable_dnat: r.disable_dnat.unwrap_or(false),
        },
        fleet,
    })
}

fn cidrs(list: Vec<Spanned<String>>, what: &str) -> Result<Vec<Cidr>, SpaErr> {
    let mut out = Vec::new();
    for s in list {
        if s.get_ref().eq_ignore_ascii_case("any") {
            return Ok(Vec::new());
        }
        match Cidr::parse(s.get_ref()) {
            Some(c) => out.push(c),
            None => return at(s.span(), format!("{what} {:?} is not an address or CIDR", s.get_ref())),
        }
    }
    Ok(out)
}

/// A command as an argv: an array is taken as is, a string is split as fwknopd splits it.
fn argv(c: Spanned<RawCommand>, what: &str) -> Result<Vec<String>, SpaErr> {
    let span = c.span();
    match c.into_inner() {
        RawCommand::Argv(v) if !v.is_empty() => Ok(v),
        RawCommand::Shell(s) => split_command(&s).or_else(|m| at(span, format!("{what}: {m}"))),
        _ => at(span, format!("{what} must be a command line or an array of words")),
    }
}

fn cmd_cycle(
    open: Option<Spanned<RawCommand>>,
    close: Option<Spanned<RawCommand>>,
    timer: Option<Spanned<i64>>,
    span: &std::ops::Range<usize>,
) -> Result<Option<CmdCycle>, SpaErr> {
    let (open, close, timer) = match (open, close, timer) {
        (None, None, None) => return Ok(None),
        (Some(o), Some(c), Some(t)) => (o, c, t),
        _ => return at(span.clone(), "cmd_cycle_open, cmd_cycle_close and cmd_cycle_timer go together"),
    };
    let open = argv(open, "cmd_cycle_open")?;
    let close = match close.get_ref() {
        RawCommand::Shell(s) if s.eq_ignore_ascii_case("none") => None,
        _ => Some(argv(close, "cmd_cycle_close")?),
    };
    let timer = match u64::try_from(*timer.get_ref()) {
        Ok(v) if (1..=86_400).contains(&v) => Duration::from_secs(v),
        _ => return at(timer.span(), "cmd_cycle_timer must be 1 to 86400 seconds"),
    };
    Ok(Some(CmdCycle { open, close, timer }))
}
