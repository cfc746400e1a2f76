//! Address normalisation, done once where an address enters the program (packet parse,
//! API input), so every table, set and record compares addresses in one form.

use std::net::IpAddr;

/// The canonical form of `ip`: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the
/// IPv4 address it carries; everything else is unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v6_becomes_v4_and_others_stay() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(canonical(v4), v4);
    }
}
