//! `[api]`: the local REST API (grants, health, metrics). Off unless the section exists.
//!
//! The API is for the host itself: a unix socket (mode 0600) and/or a TCP port on a
//! loopback address. Any other listen address is refused, never "fixed".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::RawApi;

/// Default unix socket.
pub const DEFAULT_SOCKET: &str = "/run/portcullis/api.sock";
/// Default cap on API grant durations.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);
/// Default duration of an API grant that does not say.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// Validated `[api]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Unix socket to serve on (`None`: `socket = ""`, TCP only).
    pub socket: Option<PathBuf>,
    /// Loopback TCP address to serve on.
    pub listen: Option<SocketAddr>,
    /// `name token` lines; must not be group/world readable.
    pub tokens_file: PathBuf,
    /// Longest grant the API gives; longer requests are capped (with a warning).
    pub max_duration: Duration,
    /// Duration of a grant that does not say (also the `/api/portknock` duration).
    pub default_duration: Duration,
}

type Refusal = (Option<std::ops::Range<usize>>, String);

/// Validate; relative paths are relative to `dir` (the config file's directory).
pub(super) fn validate(raw: RawApi, dir: &Path) -> Result<ApiConfig, Refusal> {
    let socket = match raw.socket {
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) if s.get_ref().starts_with('/') => Some(PathBuf::from(s.into_inner())),
        Some(s) => {
            return Err((Some(s.span()), "api socket must be an absolute path (or \"\" for none)".into()))
        }
    };
    let listen = match raw.listen {
        None => None,
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(a) => {
                return Err((
                    Some(l.span()),
                    format!(
                        "api listen {a} is not a loopback address; the API is for this host only \
                         (use 127.0.0.1:PORT or [::1]:PORT, or the unix socket)"
                    ),
                ))
            }
            Err(_) => {
                return Err((Some(l.span()), format!("api listen {:?} is not ADDRESS:PORT", l.get_ref())))
            }
        },
    };
    if socket.is_none() && listen.is_none() {
        return Err((None, "[api] has neither a socket nor a listen address".into()));
    }
    let tokens_file = match raw.tokens_file {
        None => return Err((None, "[api] needs tokens_file (lines of `name token`)".into())),
        Some(t) => dir.join(t.into_inner()),
    };
    let secs = |v: Option<Spanned<i64>>, default: Duration, what: &str| match v {
        None => Ok(default),
        Some(n) => match u64::try_from(*n.get_ref()) {
            Ok(s) if (1..=7 * 86_400).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err((Some(n.span()), format!("api {what} must be 1..604800 seconds"))),
        },
    };
    let max_duration = secs(raw.max_duration, DEFAULT_MAX_DURATION, "max_duration")?;
    let default_duration =
        secs(raw.default_duration, DEFAULT_DURATION.min(max_duration), "default_duration")?;
    if default_duration > max_duration {
        return Err((None, "api default_duration is longer than max_duration".into()));
    }
    Ok(ApiConfig { socket, listen, tokens_file, max_duration, default_duration })
}
