//! TCP flag bits and knockd-style flag filters.
//!
//! A filter lists flags that must be set (`syn`) and flags that must be clear
//! (`!ack`); every other flag is "don't care". Packets that fail the filter are
//! *ignored* by the knock state machine, not treated as wrong knocks (knockd semantics).

use std::fmt;

/// The TCP flags byte (byte 13 of the TCP header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;

    /// Flag names as configs and tools spell them (lower case), with their bits.
    pub const NAMES: [(&'static str, u8); 6] = [
        ("fin", Self::FIN),
        ("syn", Self::SYN),
        ("rst", Self::RST),
        ("psh", Self::PSH),
        ("ack", Self::ACK),
        ("urg", Self::URG),
    ];

    fn bit(name: &str) -> Option<u8> {
        Self::NAMES.iter().find(|(n, _)| name.eq_ignore_ascii_case(n)).map(|&(_, b)| b)
    }
}

/// Which flags a TCP knock must have set and must have clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlagFilter {
    /// Bits that must be set.
    pub set: u8,
    /// Bits that must be clear.
    pub clear: u8,
}

/// A flag list that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

impl FlagFilter {
    /// Matches every TCP packet (knockd's default when `TCPFlags` is absent).
    pub const ANY: FlagFilter = FlagFilter { set: 0, clear: 0 };
    /// A connection attempt: SYN set, ACK clear (portcullis' native default).
    pub const SYN_ONLY: FlagFilter = FlagFilter { set: TcpFlags::SYN, clear: TcpFlags::ACK };

    /// Parse `syn,!ack,...` (case-insensitive; spaces around names are tolerated).
    /// A flag both required and forbidden is an error, since no packet could match.
    pub fn parse(s: &str) -> Result<FlagFilter, FlagError> {
        let mut f = FlagFilter::ANY;
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(FlagError(format!("empty flag in {s:?}")));
            }
            let (neg, name) = match item.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, item),
            };
            let bit = TcpFlags::bit(name).ok_or_else(|| {
                FlagError(format!("unknown TCP flag {name:?} (use fin, syn, rst, psh, ack, urg)"))
            })?;
            if neg {
                f.clear |= bit;
            } else {
                f.set |= bit;
            }
        }
        if f.set & f.clear != 0 {
            return Err(FlagError(format!("{s:?} both requires and forbids the same flag")));
        }
        Ok(f)
    }

    /// Whether a packet with these flags passes the filter.
    pub const fn matches(self, flags: TcpFlags) -> bool {
        flags.0 & self.set == self.set && flags.0 & self.clear == 0
    }
}

/// Displays in the config syntax, e.g. `syn,!ack`; `any` for the empty filter.
impl fmt::Display for FlagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (name, bit) in TcpFlags::NAMES {
            if self.set & bit != 0 {
                parts.push(name.to_string());
            }
            if self.clear & bit != 0 {
                parts.push(format!("!{name}"));
            }
        }
        if parts.is_empty() {
            f.write_str("any")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_knockd_flag_lists() {
        let f = FlagFilter::parse("syn,!ack").unwrap();
        assert!(f.matches(TcpFlags(TcpFlags::SYN)));
        assert!(!f.matches(TcpFlags(TcpFlags::SYN | TcpFlags::ACK)));
        let f = FlagFilter::parse("SYN, ACK").unwrap();
        assert!(f.matches(TcpFlags(TcpFlags::SYN | TcpFlags::ACK)));
        assert!(!f.matches(TcpFlags(TcpFlags::SYN)));
        assert_eq!(FlagFilter::parse("syn,!ack").unwrap().to_string(), "syn,!ack");
        assert!(FlagFilter::ANY.matches(TcpFlags(0)));
    }

    #[test]
    fn rejects_unknown_empty_and_contradictory_flags() {
        assert!(FlagFilter::parse("syn,foo").is_err());
        assert!(FlagFilter::parse("syn,,ack").is_err());
        assert!(FlagFilter::parse("").is_err());
        assert!(FlagFilter::parse("syn,!syn").is_err());
    }
}
