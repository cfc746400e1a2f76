//! Single-packet authorization (SPA).
//!
//! - [`fwknop`]: a codec for fwknop's SPA packets (Rijndael mode, optional HMAC), so
//!   stock fwknop clients can talk to portcullisd and the portcullis client can talk to
//!   stock fwknopd.
//! - [`native`]: portcullis' own format (X25519 + HKDF-SHA256 + ChaCha20-Poly1305,
//!   per-user Ed25519 signatures bound to the server key; spec in `docs/spa-native.md`).
//! - [`window`]: the time window and the replay-entry lifetime, one rule for both
//!   formats.
//! - [`error`]: who is at fault when something fails: the peer ([`PacketError`]), the
//!   local configuration ([`KeyError`]) or the caller ([`EncodeError`]).
//!
//! Everything here is pure: no sockets, no clock reads (times are passed in), no
//! `unsafe`. Every packet byte is treated as hostile. The server-side order is fixed:
//! check the length and charset → authenticate (constant-time HMAC) → decrypt → decode
//! the fields and check the inner digest → time window ([`fwknop::check_age`]) → replay
//! ([`fwknop::canonical_replay_key`], cache kept by the daemon) → policy (daemon).

pub mod error;
pub mod fwknop;
pub mod native;
pub mod window;

pub use error::{EncodeError, KeyError, PacketError};
