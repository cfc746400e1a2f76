//! Why the SPA gate refused a packet: a typed reason that carries its metric class
//! ([`RejectReason::class`]) and its log text (`Display`). The class is decided by the
//! variant alone, never by text, so nothing the sender chooses (a user name, a stanza
//! field) can move a rejection from one class to another.

use std::fmt;
use std::net::IpAddr;

use portcullis_proto::spa::fwknop::Access;
use portcullis_proto::spa::PacketError;
use portcullis_proto::Service;

pub use super::budget::Exhausted;

/// Metric class of a rejection (the `reason` label of `portcullis_spa_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectClass {
    /// Did not authenticate: wrong keys, forgery, tampering, unknown user.
    Auth,
    /// Seen before: a replayed request, a reused ephemeral key, a tacked-on prefix.
    Replay,
    /// Authenticated but outside the time window (clock skew or a late replay).
    Window,
    /// Authenticated and fresh, but asks for something this user or stanza may not have.
    Policy,
    /// Not a packet this server can read: junk, or a format it is not configured for.
    Malformed,
    /// Refused because a local limit was reached (crypto budget, replay cache full),
    /// whatever the packet is: a sign of a flood.
    Overload,
    /// Anything else (an internal error).
    Other,
}

impl RejectClass {
    /// Every class, in metrics order.
    pub const ALL: [RejectClass; 7] = [
        RejectClass::Auth,
        RejectClass::Replay,
        RejectClass::Window,
        RejectClass::Policy,
        RejectClass::Malformed,
        RejectClass::Overload,
        RejectClass::Other,
    ];

    /// The metrics label value.
    pub const fn label(self) -> &'static str {
        match self {
            RejectClass::Auth => "auth",
            RejectClass::Replay => "replay",
            RejectClass::Window => "window",
            RejectClass::Policy => "policy",
            RejectClass::Malformed => "malformed",
            RejectClass::Overload => "overload",
            RejectClass::Other => "other",
        }
    }

    /// Position in [`RejectClass::ALL`], for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What an authenticated request asked for that policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A service outside what this user or stanza may open.
    Service(Service),
    /// A fwknop access entry that is not TCP or UDP (`icmp`, `none`).
    NotTcpUdp(Access),
    /// A zero open duration.
    ZeroDuration,
    /// Nothing to open at all.
    NothingToOpen,
    /// A fwknop command message: never executed.
    Command,
    /// A fwknop NAT access message: forwarding is not configured.
    Nat,
    /// A fwknop NAT access message to a destination this stanza may not reach.
    NatTarget(String),
    /// A fwknop grant that needs something this daemon cannot do here (NAT without a
    /// NAT-capable firewall backend, a command cycle without the command runner).
    Unsupported(&'static str),
    /// The user name is not the stanza's `REQUIRE_USERNAME`.
    Username,
    /// "Use the source address" while the stanza has `REQUIRE_SOURCE_ADDRESS`.
    SourceAddressRequired,
    /// A native request to open for an address other than the packet's source that
    /// the user's `allow_addresses` does not list.
    Address(IpAddr),
}

/// Which SPA format a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// portcullis' native format (X25519 per packet).
    Native,
    /// fwknop (one HMAC or AES per stanza tried).
    Fwknop,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Service(s) => write!(f, "{s} is not permitted"),
            Denial::NotTcpUdp(a) => write!(f, "{a} cannot be opened (tcp and udp only)"),
            Denial::ZeroDuration => f.write_str("a zero duration was asked for"),
            Denial::NothingToOpen => f.write_str("nothing to open"),
            Denial::Command => f.write_str("command message refused: never executed"),
            Denial::Nat => f.write_str("NAT access refused: forwarding is not configured"),
            Denial::NatTarget(why) => write!(f, "NAT access refused: {}", why.escape_debug()),
            Denial::Unsupported(what) => write!(f, "refused: {what}"),
            Denial::Username => f.write_str("username mismatch"),
            Denial::SourceAddressRequired => f.write_str("\"use source\" refused by REQUIRE_SOURCE_ADDRESS"),
            Denial::Address(a) => {
                write!(f, "opening for {a} refused: neither the packet source nor listed in allow_addresses")
            }
        }
    }
}

/// Why the gate refused one payload.
///
/// `who` fields name the stanza/user for the log (`fwknop stanza NAME user "x"`,
/// `user alice`); they are text the sender influences, so they only ever reach the
/// log (escaped by the caller), never the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a native packet, and no fwknop stanza is configured.
    NotNative,
    /// A native packet, but native SPA is not configured (no server key).
    NativeNotConfigured,
    /// The codec refused the packet before it could be attributed to anyone.
    Packet(PacketError),
    /// fwknop: the HMAC failed on every HMAC stanza, and the stanzas without HMAC
    /// refused the packet too, with this error.
    NoStanzaKey(PacketError),
    /// The request authenticated but its timestamp is outside the window.
    Stale {
        /// Who sent it.
        who: String,
    },
    /// The same request was accepted before.
    Replayed,
    /// A native ephemeral key seen before: a replay or a copied header.
    EphemeralSeen,
    /// The replay cache is full of live entries: SPA is refused until entries expire.
    ReplayCacheFull,
    /// A crypto budget is exhausted: this source's prefix, or all sources together.
    CryptoBudget {
        /// Whose budget.
        format: Format,
        /// Which bucket.
        exhausted: Exhausted,
    },
    /// Screened, but the backlog of packets waiting for crypto was full and this one
    /// had to make room (it came from the prefix with the most packets waiting).
    BacklogFull,
    /// A fleet-scoped request while the fleet database is unreachable (`on_db_down = "refuse"`).
    FleetUnavailable,
    /// Authenticated and fresh, but refused by policy.
    Denied {
        /// Who asked.
        who: String,
        /// What was refused.
        denial: Denial,
    },
}

impl RejectReason {
    /// The metric class.
    pub fn class(&self) -> RejectClass {
        match self {
            RejectReason::NotNative | RejectReason::NativeNotConfigured => RejectClass::Malformed,
            RejectReason::Packet(e) => packet_class(*e),
            // A MAC failure on an HMAC stanza is the meaningful part: keys did not match.
            RejectReason::NoStanzaKey(_) => RejectClass::Auth,
            RejectReason::Stale { .. } => RejectClass::Window,
            RejectReason::Replayed | RejectReason::EphemeralSeen => RejectClass::Replay,
            RejectReason::ReplayCacheFull
            | RejectReason::CryptoBudget { .. }
            | RejectReason::BacklogFull
            | RejectReason::FleetUnavailable => RejectClass::Overload,
            RejectReason::Denied { .. } => RejectClass::Policy,
        }
    }
}

/// The class of a codec error: who the packet failed to convince, and how.
fn packet_class(e: PacketError) -> RejectClass {
    match e {
        PacketError::BadMac
        | PacketError::NotDecrypted
        | PacketError::BadDigest
        | PacketError::WrongServer
        | PacketError::DecryptFailed
        | PacketError::UnknownUser
        | PacketError::BadSignature => RejectClass::Auth,
        PacketError::PrefixTacked => RejectClass::Replay,
        PacketError::Stale => RejectClass::Window,
        PacketError::BadLength
        | PacketError::BadCharset
        | PacketError::BadCiphertext(_)
        | PacketError::BadField(_)
        | PacketError::BadMagic
        | PacketError::BadVersion
        | PacketError::TrailingData(_) => RejectClass::Malformed,
        _ => RejectClass::Other,
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::NotNative => f.write_str("not a native SPA packet (no fwknop stanzas configured)"),
            RejectReason::NativeNotConfigured => f.write_str("native SPA is not configured"),
            RejectReason::Packet(e) => write!(f, "{e}"),
            RejectReason::NoStanzaKey(e) => {
                write!(f, "{} (stanzas without HMAC: {e})", PacketError::BadMac)
            }
            RejectReason::Stale { who } => write!(f, "{} ({who})", PacketError::Stale),
            RejectReason::Replayed => f.write_str("replayed packet"),
            RejectReason::EphemeralSeen => {
                f.write_str("native SPA ephemeral key seen before (replayed or copied header)")
            }
            RejectReason::ReplayCacheFull => f.write_str("replay cache full"),
            RejectReason::CryptoBudget { format, exhausted } => {
                let format = match format {
                    Format::Native => "native SPA",
                    Format::Fwknop => "fwknop SPA",
                };
                match exhausted {
                    Exhausted::Prefix => {
                        write!(f, "{format} crypto budget of this source's prefix exhausted (flood from it?)")
                    }
                    Exhausted::Global => {
                        write!(f, "{format} crypto budget exhausted for all sources (flood?)")
                    }
                }
            }
            RejectReason::BacklogFull => {
                f.write_str("SPA backlog full: dropped unchecked, its prefix had the most waiting (flood?)")
            }
            RejectReason::FleetUnavailable => f.write_str("fleet database unavailable (on_db_down = refuse)"),
            RejectReason::Denied { who, denial } => write!(f, "{denial} ({who})"),
        }
    }
}
