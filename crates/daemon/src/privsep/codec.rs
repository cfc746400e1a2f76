//! The messages between the unprivileged part and the privileged part: pure, versioned,
//! bounded. One message is one `SOCK_SEQPACKET` datagram holding one compact JSON
//! document. Decoding never panics, refuses unknown fields (so a request cannot smuggle
//! in a table name, a command or anything else the set below does not name), and bounds
//! every list and string before the receiver looks at it.

use std::net::IpAddr;
use std::time::Duration;

use portcullis_proto::{Proto, Service};
use serde::{Deserialize, Serialize};

use crate::firewall::{Grant, LiveGrant, Prefix};

/// Protocol version; both parts come from the same binary, so a mismatch is a bug or
/// an attack and is refused.
pub const VERSION: u16 = 2;
/// Largest request accepted by the privileged part.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest reply accepted by the unprivileged part (a page of live grants).
pub const MAX_REPLY: usize = 128 * 1024;
/// Most items (grants, keys, knocks) in one message.
pub const MAX_ITEMS: usize = 512;
/// Longest door name or reason text.
pub const MAX_TEXT: usize = 512;
/// Largest piece of a config bundle in one reply (a bundle is sent in pages).
pub const MAX_CHUNK: usize = 64 * 1024;
/// Largest config bundle the unprivileged part assembles.
pub const MAX_BUNDLE: usize = 4 << 20;

/// A service on the wire: IP protocol number and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireService {
    /// 6 (tcp) or 17 (udp).
    pub proto: u8,
    /// 1..=65535.
    pub port: u16,
}

impl From<Service> for WireService {
    fn from(s: Service) -> WireService {
        WireService { proto: s.proto.number(), port: s.port }
    }
}

impl WireService {
    /// The service, if the protocol and port are valid.
    pub fn service(self) -> Option<Service> {
        let proto = Proto::from_number(self.proto)?;
        (self.port != 0).then_some(Service { proto, port: self.port })
    }
}

/// One grant to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGrant {
    /// Who may connect (a prefix grant's network address).
    pub addr: IpAddr,
    /// Prefix length of a prefix grant; absent for the single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    /// To what.
    pub service: WireService,
    /// For how long, in milliseconds.
    pub timeout_ms: u64,
}

/// One (address, service) to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireKey {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of a prefix grant; absent for the single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    /// The service.
    pub service: WireService,
}

/// A live grant in a list reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLive {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of a prefix grant; absent for the single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    /// The service.
    pub service: WireService,
    /// Time left, milliseconds.
    pub remaining_ms: Option<u64>,
    /// Full timeout, milliseconds.
    pub timeout_ms: Option<u64>,
}

/// What the unprivileged part may ask. There is nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Op {
    /// Install (or verify) the ruleset for the privileged part's own plan.
    Setup,
    /// Add or refresh grants.
    Grant {
        /// The grants.
        grants: Vec<WireGrant>,
    },
    /// Remove grants.
    Revoke {
        /// The keys.
        keys: Vec<WireKey>,
    },
    /// A page of the live grants, from `offset`.
    List {
        /// Index of the first grant wanted.
        offset: u32,
    },
    /// `addr` completed `door`: run that door's configured start command now and its
    /// stop command later. Only the door's name and the address travel.
    RunCommands {
        /// Door name as configured.
        door: String,
        /// The knocker.
        addr: IpAddr,
        /// When it knocked (Unix ms).
        at_unix_ms: u64,
    },
    /// `door`'s one-time sequence `used` was just used: mark it in the door's file and
    /// answer the next one.
    OneTimeUsed {
        /// Door name as configured.
        door: String,
        /// The sequence used.
        used: Vec<WireService>,
    },
    /// The firewall's health as the privileged part's watcher sees it, and the
    /// generation of the config it runs (polled).
    Status,
    /// A page of the config bundle of `generation`, from byte `offset`: the config
    /// text and tokens the privileged part read and accepted itself.
    Config {
        /// The generation asked for (from [`Answer::Status`]).
        generation: u64,
        /// Byte offset into the bundle.
        offset: u32,
    },
    /// The unprivileged part switched to `generation` (`accepted`), or refused it and
    /// keeps the previous one.
    Reloaded {
        /// The generation.
        generation: u64,
        /// Whether it runs it now.
        accepted: bool,
    },
}

/// A request: version, strictly increasing sequence number, operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// [`VERSION`].
    pub v: u16,
    /// 1 for the first request, then +1 each.
    pub seq: u64,
    /// What to do.
    pub op: Op,
}

/// What a `RunCommands` did (mirrors [`crate::actions::Queued`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireQueued {
    /// Accepted.
    Yes,
    /// Queue full.
    Full,
    /// Nothing for this address family.
    Nothing,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Answer {
    /// Done.
    Done,
    /// A page of live grants; `more` says whether another page follows.
    Grants {
        /// The page.
        grants: Vec<WireLive>,
        /// Whether to ask for the next page.
        more: bool,
    },
    /// A `RunCommands` outcome.
    Queued {
        /// What happened.
        queued: WireQueued,
    },
    /// The next one-time sequence (`None`: exhausted).
    Next {
        /// The sequence.
        sequence: Option<Vec<WireService>>,
    },
    /// The request is not allowed by the privileged part's config, or malformed.
    Refused {
        /// Why.
        reason: String,
    },
    /// Allowed, but the firewall or the file system failed.
    Failed {
        /// What failed.
        error: String,
    },
    /// The answer to [`Op::Status`].
    Status {
        /// `None`: the firewall matches the plan and the live grants; else why not.
        problem: Option<String>,
        /// Repairs that reinstalled the ruleset so far.
        restores: u64,
        /// Repairs that failed so far.
        repair_failures: u64,
        /// The latest config generation the privileged part offers (0: the start config).
        generation: u64,
        /// The daemon is stopping: the unprivileged part should stop too.
        stopping: bool,
    },
    /// A page of a config bundle (UTF-8, split on character boundaries).
    Config {
        /// The page.
        part: String,
        /// Whether another page follows.
        more: bool,
    },
}

/// A reply: version, the sequence number it answers (0 if the request had none), answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// [`VERSION`].
    pub v: u16,
    /// The request's `seq`.
    pub seq: u64,
    /// The answer.
    pub answer: Answer,
}

/// Why bytes were not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than the bound for its direction.
    #[error("message of {0} bytes is over the size limit")]
    Oversized(usize),
    /// Not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("protocol version {0} (expected {VERSION})")]
    Version(u16),
    /// A list or text over its bound.
    #[error("message over its item bounds")]
    TooMany,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // The error text quotes no input beyond a position: safe to log.
        DecodeError::Malformed(format!("{} at column {}", e.classify_name(), e.column()))
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "unexpected content",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Decode and bound-check a request.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    let r: Request = decode(bytes, MAX_REQUEST)?;
    if r.v != VERSION {
        return Err(DecodeError::Version(r.v));
    }
    let ok = match &r.op {
        Op::Setup | Op::List { .. } | Op::Status | Op::Config { .. } | Op::Reloaded { .. } => true,
        Op::Grant { grants } => grants.len() <= MAX_ITEMS,
        Op::Revoke { keys } => keys.len() <= MAX_ITEMS,
        Op::RunCommands { door, .. } => door.len() <= MAX_TEXT,
        Op::OneTimeUsed { door, used } => door.len() <= MAX_TEXT && used.len() <= MAX_ITEMS,
    };
    if ok {
        Ok(r)
    } else {
        Err(DecodeError::TooMany)
    }
}

/// Decode and bound-check a reply.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, DecodeError> {
    let r: Reply = decode(bytes, MAX_REPLY)?;
    if r.v != VERSION {
        return Err(DecodeError::Version(r.v));
    }
    let ok = match &r.answer {
        Answer::Done | Answer::Queued { .. } => true,
        Answer::Grants { grants, .. } => grants.len() <= MAX_ITEMS,
        Answer::Next { sequence } => sequence.as_ref().is_none_or(|s| s.len() <= MAX_ITEMS),
        Answer::Refused { reason } => reason.len() <= MAX_TEXT,
        Answer::Failed { error } => error.len() <= MAX_TEXT,
        Answer::Status { problem, .. } => problem.as_ref().is_none_or(|p| p.len() <= MAX_TEXT),
        Answer::Config { part, .. } => part.len() <= MAX_CHUNK,
    };
    if ok {
        Ok(r)
    } else {
        Err(DecodeError::TooMany)
    }
}

/// Encode a message. Our own types always serialize.
pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

/// Clip text (reasons, errors) to [`MAX_TEXT`] on a character boundary.
pub fn clip(s: &str) -> String {
    s[..boundary(s, MAX_TEXT)].to_string()
}

/// The largest index `<= max` that is a character boundary of `s`.
pub fn boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// What a reload hands the unprivileged part: the config text the privileged part
/// read and accepted, and the API tokens file's text (both are root-only files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The config file's text.
    pub text: String,
    /// The API tokens file's text, if the config has an API.
    pub tokens: Option<String>,
    /// The other files parsing the config read (key files, `access.conf`, rotating
    /// secrets), as the privileged part read and checked them.
    #[serde(default)]
    pub files: crate::config::files::Files,
}

/// Milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The prefix length to send: `None` for a single address.
fn wire_prefix(p: Prefix) -> Option<u8> {
    (!p.is_host()).then_some(p.len)
}

/// The prefix a wire `addr` + `prefix` names (`None`: the single address).
pub fn source(addr: IpAddr, prefix: Option<u8>) -> Prefix {
    prefix.map_or(Prefix::host(addr), |len| Prefix { addr, len })
}

impl From<&Grant> for WireGrant {
    fn from(g: &Grant) -> WireGrant {
        WireGrant {
            addr: g.addr,
            prefix: wire_prefix(g.source()),
            service: g.service.into(),
            timeout_ms: millis(g.timeout),
        }
    }
}

impl WireKey {
    /// The key for `p` and `service`.
    pub fn new(p: Prefix, service: Service) -> WireKey {
        WireKey { addr: p.addr, prefix: wire_prefix(p), service: service.into() }
    }
}

impl From<&LiveGrant> for WireLive {
    fn from(g: &LiveGrant) -> WireLive {
        WireLive {
            addr: g.addr,
            prefix: wire_prefix(g.source()),
            service: g.service.into(),
            remaining_ms: g.remaining.map(millis),
            timeout_ms: g.timeout.map(millis),
        }
    }
}

impl WireLive {
    /// Back to a live grant (`None` for an invalid service).
    pub fn live(self) -> Option<LiveGrant> {
        let src = source(self.addr, self.prefix);
        Some(LiveGrant {
            addr: self.addr,
            len: src.len,
            service: self.service.service()?,
            remaining: self.remaining_ms.map(Duration::from_millis),
            timeout: self.timeout_ms.map(Duration::from_millis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Op) -> Request {
        Request { v: VERSION, seq: 1, op }
    }

    #[test]
    fn a_config_bundle_round_trips_with_its_files() {
        let mut files = crate::config::files::Files::default();
        files.files.insert("/etc/fwknop/access.conf".into(), b"SOURCE ANY\n".to_vec());
        files.files.insert("/etc/portcullis/rot.secret".into(), vec![0, 0xff, 0x80]);
        files.canon.insert("/etc/fwknop/access.conf".into(), "/etc/fwknop/access.conf".into());
        files.dirs.insert("/etc/fwknop/access.d".into(), vec!["/etc/fwknop/access.d/a.conf".into()]);
        let b = Bundle { text: "[spa]\n".into(), tokens: Some("ci t\n".into()), files };
        let json = String::from_utf8(encode(&b)).unwrap();
        assert_eq!(serde_json::from_str::<Bundle>(&json).unwrap(), b);
        // A bundle without files (nothing named) still decodes; unknown fields do not.
        let bare: Bundle = serde_json::from_str(r#"{"text":"x","tokens":null}"#).unwrap();
        assert!(bare.files.files.is_empty());
        assert!(serde_json::from_str::<Bundle>(r#"{"text":"x","tokens":null,"more":1}"#).is_err());
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let ops = [
            Op::Setup,
            Op::Grant {
                grants: vec![WireGrant {
                    addr: "192.0.2.2".parse().unwrap(),
                    prefix: None,
                    service: Service::tcp(22).into(),
                    timeout_ms: 30_000,
                }],
            },
            Op::Revoke {
                keys: vec![WireKey {
                    prefix: Some(24),
                    addr: "2001:db8::2".parse().unwrap(),
                    service: Service::udp(53).into(),
                }],
            },
            Op::List { offset: 7 },
            Op::RunCommands { door: "ssh".into(), addr: "192.0.2.2".parse().unwrap(), at_unix_ms: 5 },
            Op::OneTimeUsed { door: "otp".into(), used: vec![Service::tcp(1000).into()] },
            Op::Status,
            Op::Config { generation: 2, offset: 65536 },
            Op::Reloaded { generation: 2, accepted: false },
        ];
        for op in ops {
            let r = req(op);
            assert_eq!(decode_request(&encode(&r)).unwrap(), r);
        }
        for answer in [
            Answer::Refused { reason: "no".into() },
            Answer::Status {
                problem: Some("table gone".into()),
                restores: 1,
                repair_failures: 0,
                generation: 3,
                stopping: false,
            },
            Answer::Config { part: "é".repeat(10), more: true },
        ] {
            let rep = Reply { v: VERSION, seq: 9, answer };
            assert_eq!(decode_reply(&encode(&rep)).unwrap(), rep);
        }
        let big = Reply {
            v: VERSION,
            seq: 1,
            answer: Answer::Config { part: "x".repeat(MAX_CHUNK + 1), more: false },
        };
        assert_eq!(decode_reply(&encode(&big)), Err(DecodeError::TooMany));
    }

    #[test]
    fn refuses_what_is_not_in_the_request_set() {
        let cases: [&[u8]; 8] = [
            b"",
            b"{",
            b"\xff\xfe",
            br#"{"v":2,"seq":1,"op":"setup","table":"filter"}"#,
            br#"{"v":2,"seq":1,"op":{"grant":{"grants":[],"table":"filter"}}}"#,
            br#"{"v":2,"seq":1,"op":{"exec":{"cmd":"/bin/sh"}}}"#,
            br#"{"v":2,"seq":1,"op":{"run_commands":{"door":"d","addr":"1.2.3.4","at_unix_ms":1,"cmd":"id"}}}"#,
            br#"{"v":1,"seq":1,"op":"setup"}"#,
        ];
        for c in cases {
            assert!(decode_request(c).is_err(), "{}", String::from_utf8_lossy(c));
        }
        assert!(matches!(decode_request(&vec![b' '; MAX_REQUEST + 1]), Err(DecodeError::Oversized(_))));
        let many = Op::Revoke {
            keys: vec![
                WireKey {
                    addr: "192.0.2.2".parse().unwrap(),
                    prefix: None,
                    service: Service::tcp(22).into()
                };
                MAX_ITEMS + 1
            ],
        };
        assert_eq!(decode_request(&encode(&req(many))), Err(DecodeError::TooMany));
    }

    #[test]
    fn wire_services_are_validated() {
        assert_eq!(WireService { proto: 6, port: 22 }.service(), Some(Service::tcp(22)));
        assert_eq!(WireService { proto: 6, port: 0 }.service(), None);
        assert_eq!(WireService { proto: 1, port: 22 }.service(), None);
        assert_eq!(clip(&"é".repeat(400)).len(), MAX_TEXT);
    }
}
