//! Time-rotating knock sequences: the ports of a door derived from a secret and the time.
//!
//! Two algorithms, both pure functions of (secret, step number):
//! - [`Algorithm::Md5Hourly`]: the 2008 write-up's shell recipe, bit for bit, so its users
//!   keep their secret and their client scripts. One step is one UTC hour.
//! - [`Algorithm::HmacSha256`]: portcullis' own form: HMAC-SHA256 keyed with the secret
//!   over the step number, a configurable step, distinct ports drawn without modulo bias,
//!   TCP, UDP or a per-knock mix.
//!
//! The exact byte-level definitions are in `docs/rotating.md`. The caller supplies the
//! Unix time; nothing here reads a clock.

mod civil;
mod hmac_sha256;
mod md5_hourly;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::service::{parse_port, Service};

pub use civil::UtcHour;

/// Most knocks a rotating sequence may have (the same cap as a fixed door's sequence).
pub const MAX_COUNT: usize = 32;
/// Default step of [`Algorithm::HmacSha256`], in seconds.
pub const DEFAULT_STEP_SECS: u64 = 30;
/// Longest step of [`Algorithm::HmacSha256`], in seconds (one day).
pub const MAX_STEP_SECS: u64 = 86_400;

/// Why a rotating sequence cannot be defined as asked. Every variant is the caller's
/// (configuration's) fault; computing a sequence for a valid [`Rotation`] cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateError {
    /// The port range is not `BOTTOM-TOP` with 1 <= BOTTOM <= TOP <= 65535.
    BadRange,
    /// The range has fewer ports than the sequence has knocks.
    RangeTooSmall {
        /// Ports in the range.
        ports: u32,
        /// Knocks asked for.
        count: usize,
    },
    /// The knock count is outside 1..=[`MAX_COUNT`].
    BadCount,
    /// md5-hourly: range^(count-1) does not fit the 128-bit digest, so the later knocks
    /// would all be the range's first port.
    CountTooLargeForDigest,
    /// The step is not a whole number of seconds in 1..=[`MAX_STEP_SECS`].
    BadStep,
    /// The secret is empty.
    EmptySecret,
    /// md5-hourly: the secret holds `%` or a control character, which the original
    /// `date +FORMAT` recipe would have expanded or split; refused rather than guessed.
    Md5SecretChars,
    /// Unknown algorithm name.
    UnknownAlgorithm,
    /// Unknown protocol mix name.
    UnknownProtocols,
}

impl fmt::Display for RotateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotateError::BadRange => {
                f.write_str("port range must be BOTTOM-TOP with 1 <= BOTTOM <= TOP <= 65535")
            }
            RotateError::RangeTooSmall { ports, count } => {
                write!(f, "port range has {ports} port(s), fewer than the {count} knocks asked for")
            }
            RotateError::BadCount => write!(f, "knock count must be 1 to {MAX_COUNT}"),
            RotateError::CountTooLargeForDigest => f.write_str(
                "md5-hourly: range^(count-1) exceeds the 128-bit digest; use fewer knocks or a smaller range",
            ),
            RotateError::BadStep => {
                write!(f, "step must be a whole number of seconds, 1 s to {MAX_STEP_SECS} s")
            }
            RotateError::EmptySecret => f.write_str("the secret is empty"),
            RotateError::Md5SecretChars => {
                f.write_str("md5-hourly secrets must not contain '%' or control characters")
            }
            RotateError::UnknownAlgorithm => f.write_str("algorithm must be md5-hourly or hmac-sha256"),
            RotateError::UnknownProtocols => f.write_str("protocols must be tcp, udp or mixed"),
        }
    }
}

impl std::error::Error for RotateError {}

/// Which protocol each knock of an [`Algorithm::HmacSha256`] sequence uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocols {
    /// Every knock is a TCP SYN.
    #[default]
    Tcp,
    /// Every knock is a UDP datagram.
    Udp,
    /// Each knock's protocol is drawn from the HMAC stream too.
    Mixed,
}

impl FromStr for Protocols {
    type Err = RotateError;
    fn from_str(s: &str) -> Result<Self, RotateError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocols::Tcp),
            "udp" => Ok(Protocols::Udp),
            "mixed" => Ok(Protocols::Mixed),
            _ => Err(RotateError::UnknownProtocols),
        }
    }
}

/// How ports are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The 2008 write-up's recipe; TCP knocks, one step per UTC hour.
    Md5Hourly,
    /// HMAC-SHA256 over the step number.
    HmacSha256 {
        /// Step length in seconds.
        step_secs: u64,
        /// Protocol of each knock.
        protocols: Protocols,
    },
}

/// The algorithm names, as written in configs and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmName {
    /// `md5-hourly`.
    Md5Hourly,
    /// `hmac-sha256`.
    HmacSha256,
}

impl FromStr for AlgorithmName {
    type Err = RotateError;
    fn from_str(s: &str) -> Result<Self, RotateError> {
        match s {
            "md5-hourly" => Ok(AlgorithmName::Md5Hourly),
            "hmac-sha256" => Ok(AlgorithmName::HmacSha256),
            _ => Err(RotateError::UnknownAlgorithm),
        }
    }
}

/// An inclusive port range `bottom..=top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    bottom: u16,
    top: u16,
}

impl PortRange {
    /// `bottom..=top`; both 1..=65535, bottom <= top.
    pub fn new(bottom: u16, top: u16) -> Result<PortRange, RotateError> {
        if bottom == 0 || bottom > top {
            return Err(RotateError::BadRange);
        }
        Ok(PortRange { bottom, top })
    }

    /// First port.
    pub fn bottom(self) -> u16 {
        self.bottom
    }

    /// Last port.
    pub fn top(self) -> u16 {
        self.top
    }

    /// Number of ports, n = top - bottom + 1 (1..=65535).
    pub fn len(self) -> u32 {
        u32::from(self.top) - u32::from(self.bottom) + 1
    }

    /// Never true: a range holds at least one port.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// Parses `BOTTOM-TOP`, strictly (decimal ports, no spaces).
impl FromStr for PortRange {
    type Err = RotateError;
    fn from_str(s: &str) -> Result<Self, RotateError> {
        let (b, t) = s.split_once('-').ok_or(RotateError::BadRange)?;
        let b = parse_port(b).map_err(|_| RotateError::BadRange)?;
        let t = parse_port(t).map_err(|_| RotateError::BadRange)?;
        PortRange::new(b, t)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.bottom, self.top)
    }
}

/// A secret, wiped from memory on drop and never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wrap secret bytes. Empty secrets are refused.
    pub fn new(bytes: Vec<u8>) -> Result<Secret, RotateError> {
        if bytes.is_empty() {
            return Err(RotateError::EmptySecret);
        }
        Ok(Secret(Zeroizing::new(bytes)))
    }

    /// A secret read from a file: the contents without trailing CR/LF characters, so a
    /// file written by `echo secret > file` holds the secret `secret`.
    pub fn from_file_contents(mut bytes: Vec<u8>) -> Result<Secret, RotateError> {
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Secret::new(bytes)
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A validated rotating-sequence definition.
#[derive(Debug, Clone)]
pub struct Rotation {
    algorithm: Algorithm,
    secret: Secret,
    range: PortRange,
    count: usize,
}

impl Rotation {
    /// Check and build. Refuses a range with fewer ports than knocks, counts outside
    /// 1..=[`MAX_COUNT`], bad steps, and (md5-hourly) secrets the shell recipe could not
    /// have used and counts whose divisor exceeds the digest.
    pub fn new(
        algorithm: Algorithm,
        secret: Secret,
        range: PortRange,
        count: usize,
    ) -> Result<Rotation, RotateError> {
        if count == 0 || count > MAX_COUNT {
            return Err(RotateError::BadCount);
        }
        if range.len() < count as u32 {
            return Err(RotateError::RangeTooSmall { ports: range.len(), count });
        }
        match algorithm {
            Algorithm::Md5Hourly => md5_hourly::check(&secret, range, count)?,
            Algorithm::HmacSha256 { step_secs, .. } => {
                if step_secs == 0 || step_secs > MAX_STEP_SECS {
                    return Err(RotateError::BadStep);
                }
            }
        }
        Ok(Rotation { algorithm, secret, range, count })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The port range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Knocks per sequence.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Length of one step in seconds (3600 for md5-hourly).
    pub fn step_secs(&self) -> u64 {
        match self.algorithm {
            Algorithm::Md5Hourly => 3600,
            Algorithm::HmacSha256 { step_secs, .. } => step_secs,
        }
    }

    /// The step that Unix time `unix_secs` falls in: `unix_secs / step`. For md5-hourly
    /// this is the UTC hour since the epoch (Unix time has no leap seconds, so hours are
    /// exactly 3600 s).
    pub fn step_at(&self, unix_secs: u64) -> u64 {
        unix_secs / self.step_secs()
    }

    /// Unix time at which `step` begins (saturating).
    pub fn step_start(&self, step: u64) -> u64 {
        step.saturating_mul(self.step_secs())
    }

    /// The sequence of `step`.
    pub fn sequence(&self, step: u64) -> Vec<Service> {
        match self.algorithm {
            Algorithm::Md5Hourly => md5_hourly::sequence(&self.secret, self.range, self.count, step),
            Algorithm::HmacSha256 { protocols, .. } => {
                hmac_sha256::sequence(&self.secret, self.range, self.count, protocols, step)
            }
        }
    }

    /// The sequence valid at Unix time `unix_secs`.
    pub fn sequence_at(&self, unix_secs: u64) -> Vec<Service> {
        self.sequence(self.step_at(unix_secs))
    }
}

/// A sequence in the knock form, space-separated: `7000 8000:udp 9000` (TCP is the
/// default and carries no suffix), as `portcullis knock` and knock(1) take it.
pub fn format_knocks(seq: &[Service]) -> String {
    let parts: Vec<String> = seq
        .iter()
        .map(|s| match s.proto {
            crate::Proto::Tcp => s.port.to_string(),
            crate::Proto::Udp => format!("{}:udp", s.port),
        })
        .collect();
    parts.join(" ")
}
