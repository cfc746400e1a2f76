//! Source prefixes that the firewall never gates (`[daemon] never_gate`): the
//! management network's way back in, whatever the daemon does or fails to do.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix such as `192.0.2.0/24` or `2001:db8::/48`; a bare address is a
/// single host. Host bits must be zero (a typo in the prefix is refused, not guessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    fn bits(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The single address `addr` (a /32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix { addr, len: Prefix::bits(&addr) }
    }

    /// The `len`-bit prefix that holds `addr`: its host bits zeroed. A `len` above the
    /// family's width is the single address.
    pub fn covering(addr: IpAddr, len: u8) -> Prefix {
        let len = len.min(Prefix::bits(&addr));
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Prefix { addr, len }
    }

    /// Whether this is one address rather than a network.
    pub fn is_host(&self) -> bool {
        self.len >= Prefix::bits(&self.addr)
    }

    /// Whether `addr` is inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && Prefix::covering(addr, self.len).addr == self.addr
    }

    /// The address alone for a single host, `addr/len` for a network: how records and
    /// logs name a grant's source.
    pub fn short(&self) -> String {
        if self.is_host() {
            self.addr.to_string()
        } else {
            self.to_string()
        }
    }

    /// The network address' bytes (4 or 16).
    pub fn network_bytes(&self) -> Vec<u8> {
        match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The netmask's bytes (4 or 16).
    pub fn mask_bytes(&self) -> Vec<u8> {
        let n = usize::from(Prefix::bits(&self.addr) / 8);
        (0..n)
            .map(|i| {
                let bits_here = usize::from(self.len).saturating_sub(i * 8).min(8);
                if bits_here == 0 {
                    0
                } else {
                    0xffu8 << (8 - bits_here)
                }
            })
            .collect()
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr =
            a.parse().map_err(|_| format!("{s:?} is not an address or prefix (like 192.0.2.0/24)"))?;
        let max = Prefix::bits(&addr);
        let len = match l {
            None => max,
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length above {max}"))?,
            Some(_) => return Err(format!("{s:?}: the prefix length must be a number")),
        };
        if len == 0 {
            return Err(format!("{s:?} would never gate anything: protect nothing instead"));
        }
        let p = Prefix { addr, len };
        let masked = p.network_bytes().iter().zip(p.mask_bytes()).any(|(b, m)| b & !m != 0);
        if masked {
            return Err(format!("{s:?} has host bits set (did you mean a /{len} network address?)"));
        }
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_hosts() {
        let p: Prefix = "192.0.2.0/24".parse().unwrap();
        assert_eq!(p.mask_bytes(), vec![255, 255, 255, 0]);
        assert_eq!(p.to_string(), "192.0.2.0/24");
        let p: Prefix = "10.128.0.0/9".parse().unwrap();
        assert_eq!(p.mask_bytes(), vec![255, 128, 0, 0]);
        let p: Prefix = "2001:db8::/48".parse().unwrap();
        assert_eq!(&p.mask_bytes()[..7], &[255, 255, 255, 255, 255, 255, 0]);
        assert_eq!(p.mask_bytes().len(), 16);
        assert_eq!("192.0.2.7".parse::<Prefix>().unwrap().len, 32);
    }

    #[test]
    fn covering_zeroes_the_host_bits() {
        let a: IpAddr = "10.20.30.2".parse().unwrap();
        assert_eq!(Prefix::covering(a, 24).to_string(), "10.20.30.0/24");
        assert_eq!(Prefix::covering(a, 16).to_string(), "10.20.0.0/16");
        assert_eq!(Prefix::covering(a, 20).to_string(), "10.20.16.0/20");
        assert_eq!(Prefix::covering(a, 32), Prefix::host(a));
        assert_eq!(Prefix::covering(a, 99), Prefix::host(a));
        let b: IpAddr = "2001:db8:1:2:aaaa::9".parse().unwrap();
        assert_eq!(Prefix::covering(b, 64).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Prefix::covering(b, 48).to_string(), "2001:db8:1::/48");
        assert_eq!(Prefix::covering(b, 52).to_string(), "2001:db8:1::/52");
        assert!(Prefix::covering(b, 128).is_host());
        let p = Prefix::covering(a, 24);
        assert!(p.contains("10.20.30.3".parse().unwrap()));
        assert!(!p.contains("10.20.31.3".parse().unwrap()));
        assert!(!p.contains("::ffff:10.20.30.3".parse().unwrap()));
        assert_eq!(p.short(), "10.20.30.0/24");
        assert_eq!(Prefix::host(a).short(), "10.20.30.2");
    }

    #[test]
    fn refuses_what_is_probably_a_mistake() {
        assert_eq!(
            "192.0.2.1/24".parse::<Prefix>().unwrap_err(),
            "\"192.0.2.1/24\" has host bits set (did you mean a /24 network address?)"
        );
        assert!("0.0.0.0/0".parse::<Prefix>().is_err());
        assert!("192.0.2.0/33".parse::<Prefix>().is_err());
        assert!("192.0.2.0/".parse::<Prefix>().is_err());
        assert!("192.0.2.0/+8".parse::<Prefix>().is_err());
        assert!("example.org/24".parse::<Prefix>().is_err());
    }
}
