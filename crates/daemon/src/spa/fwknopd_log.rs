//! Log lines in fwknopd's own words, written next to ours so that watchers built for
//! fwknopd (fail2ban filters, logcheck rules, SIEM parsers) keep working after the
//! switch. Each names the packet's source address.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use portcullis_proto::spa::PacketError;
use portcullis_proto::Service;

use super::reject::{Denial, RejectReason};
use super::SpaGate;

impl SpaGate {
    /// fwknopd's line for the rejection of the last fwknop packet, if fwknopd has one.
    /// `dport` is the UDP port the packet was sent to.
    pub fn fwknopd_line(&self, src: IpAddr, dport: u16, reason: &RejectReason) -> Option<String> {
        let n = self.last.stanza_no;
        Some(match reason {
            RejectReason::Packet(PacketError::BadMac) | RejectReason::NoStanzaKey(_) if n > 0 => format!(
                "[{src}] (stanza #{n}) Error creating fko context: Args contain invalid data: \
                 FKO_ERROR_INVALID_DATA_HMAC_COMPAREFAIL"
            ),
            RejectReason::Packet(PacketError::BadMac) => format!("No access data found for source IP: {src}"),
            RejectReason::Replayed => {
                let (orig, created) = match self.last.original {
                    Some((ip, t)) => (ip.to_string(), unix_text(t)),
                    None => ("(unknown)".to_string(), "(unknown)".to_string()),
                };
                format!(
                    "Replay detected from source IP: {src}, Destination proto/port: 17/{dport}, \
                     Original source IP: {orig}, Original dst proto/port: 17/{dport}, Entry created: {created}"
                )
            }
            RejectReason::Stale { .. } if n > 0 => format!(
                "[{src}] (stanza #{n}) SPA data time difference is too great ({} seconds).",
                self.last.time_diff
            ),
            RejectReason::Denied { denial: Denial::Nat | Denial::NatTarget(_), .. } => {
                format!(
                    "(stanza #{n}) SPA packet from {src} requested NAT access, but is not enabled/supported"
                )
            }
            RejectReason::Denied { denial: Denial::Command, .. } => {
                format!("[{src}] (stanza #{n}) SPA Command messages are not allowed in the current configuration.")
            }
            RejectReason::Denied { denial: Denial::SourceAddressRequired, .. } => {
                format!("[{src}] (stanza #{n}) Got 0.0.0.0 when valid source IP was required.")
            }
            _ => return None,
        })
    }
}

/// fwknopd's line for a grant: `Added access rule to CHAIN for IP -> 0.0.0.0/0
/// tcp/22, expires at UNIX`.
pub fn added(chain: &str, allow: IpAddr, service: Service, expires: SystemTime) -> String {
    format!(
        "Added access rule to {chain} for {allow} -> {} {service}, expires at {}",
        if allow.is_ipv4() { "0.0.0.0/0" } else { "::/0" },
        unix(expires)
    )
}

/// fwknopd's line for an expired grant.
pub fn removed(chain: &str, expires: SystemTime) -> String {
    format!("Removed rule 1 from {chain} with expire time of {}", unix(expires))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

fn unix_text(t: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(t)).to_string()
}
