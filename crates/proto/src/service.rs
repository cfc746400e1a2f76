//! `Proto` and `Service`: what a knock hits and what a grant opens.
//!
//! Two spellings are accepted because both are in the wild: the grant form `tcp/22`
//! (fwknop, nftables) and the knock form `22:tcp` / bare `22` (knockd, knock client).

use std::fmt;
use std::str::FromStr;

/// Transport protocol of a knock or a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IANA protocol number, as found in the IPv4 protocol / IPv6 next-header field.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// The protocol for an IANA number, if it is one we handle.
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// Lower-case name, `tcp` or `udp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Proto::Udp)
        } else {
            Err(ParseError::UnknownProto)
        }
    }
}

/// A protocol and a port: one knock, or one thing a grant opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service {
    /// Transport protocol.
    pub proto: Proto,
    /// Port number, never 0.
    pub port: u16,
}

/// Why a service string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The port is not a decimal number in 1..=65535.
    BadPort,
    /// The protocol is neither `tcp` nor `udp`.
    UnknownProto,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::BadPort => "port must be a number from 1 to 65535",
            ParseError::UnknownProto => "protocol must be tcp or udp",
        })
    }
}

impl std::error::Error for ParseError {}

/// Parse a port strictly: ASCII digits only (no sign, no spaces), 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, ParseError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadPort);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(ParseError::BadPort),
        Ok(p) => Ok(p),
    }
}

impl Service {
    /// A TCP service.
    pub const fn tcp(port: u16) -> Service {
        Service { proto: Proto::Tcp, port }
    }

    /// A UDP service.
    pub const fn udp(port: u16) -> Service {
        Service { proto: Proto::Udp, port }
    }

    /// Parse the grant form `tcp/22` (protocol required).
    pub fn parse_grant(s: &str) -> Result<Service, ParseError> {
        let (proto, port) = s.split_once('/').ok_or(ParseError::UnknownProto)?;
        Ok(Service { proto: proto.parse()?, port: parse_port(port)? })
    }

    /// Parse the knock form `22`, `22:tcp` or `22:udp`, with `default` when no
    /// protocol is given.
    pub fn parse_knock(s: &str, default: Proto) -> Result<Service, ParseError> {
        match s.split_once(':') {
            Some((port, proto)) => Ok(Service { proto: proto.parse()?, port: parse_port(port)? }),
            None => Ok(Service { proto: default, port: parse_port(s)? }),
        }
    }

    /// Parse either form: `tcp/22`, `22:tcp` or a bare port (TCP).
    pub fn parse_any(s: &str) -> Result<Service, ParseError> {
        if s.contains('/') {
            Service::parse_grant(s)
        } else {
            Service::parse_knock(s, Proto::Tcp)
        }
    }
}

/// Displays in the grant form, `tcp/22`.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        assert_eq!(Service::parse_grant("tcp/22"), Ok(Service::tcp(22)));
        assert_eq!(Service::parse_grant("UDP/53"), Ok(Service::udp(53)));
        assert_eq!(Service::parse_knock("7000", Proto::Tcp), Ok(Service::tcp(7000)));
        assert_eq!(Service::parse_knock("7000:udp", Proto::Tcp), Ok(Service::udp(7000)));
        assert_eq!(Service::parse_knock("7000", Proto::Udp), Ok(Service::udp(7000)));
        assert_eq!(Service::parse_any("9000"), Ok(Service::tcp(9000)));
        assert_eq!(Service::tcp(22).to_string(), "tcp/22");
    }

    #[test]
    fn rejects_bad_ports_and_protocols() {
        for bad in ["0", "65536", "-1", "+22", " 22", "22 ", "", "0x16", "999999", "２２"] {
            assert_eq!(parse_port(bad), Err(ParseError::BadPort), "{bad:?}");
        }
        assert_eq!(Service::parse_knock("22:icmp", Proto::Tcp), Err(ParseError::UnknownProto));
        assert_eq!(Service::parse_grant("22"), Err(ParseError::UnknownProto));
        assert_eq!(parse_port("65535"), Ok(65535));
    }
}
