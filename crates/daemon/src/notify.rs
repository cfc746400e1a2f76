//! The systemd notification protocol (`sd_notify(3)`): datagrams of `KEY=value` lines
//! sent to the unix socket named by `$NOTIFY_SOCKET`.
//!
//! Only the sending side; the daemon decides when it is ready, reloading or stopping.
//! Without `$NOTIFY_SOCKET` (not under systemd, or not `Type=notify`) there is no
//! [`Notifier`] and nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// One state change to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up finished (the firewall gate is installed): `READY=1`.
    Ready,
    /// Re-reading the config; send [`State::Ready`] when done: `RELOADING=1`.
    Reloading,
    /// Shutting down: `STOPPING=1`.
    Stopping,
    /// Still alive (the watchdog keep-alive): `WATCHDOG=1`.
    Watchdog,
    /// Free-form status for `systemctl status`; line breaks become spaces.
    Status(&'a str),
}

/// The datagram for `states`, one `KEY=value` line each.
pub fn message(states: &[State<'_>]) -> String {
    let mut m = String::new();
    for s in states {
        match s {
            State::Ready => m.push_str("READY=1\n"),
            State::Reloading => m.push_str("RELOADING=1\n"),
            State::Stopping => m.push_str("STOPPING=1\n"),
            State::Watchdog => m.push_str("WATCHDOG=1\n"),
            State::Status(text) => {
                m.push_str("STATUS=");
                m.extend(text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }));
                m.push('\n');
            }
        }
    }
    m
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset or empty.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Notifier::new(&v).map(Some),
        }
    }

    /// A notifier for `socket`: an absolute path, or `@name` for the abstract namespace.
    pub fn new(socket: &OsStr) -> io::Result<Notifier> {
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(socket)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor @abstract"),
                ))
            }
        };
        Ok(Notifier { sock: UnixDatagram::unbound()?, addr })
    }

    /// Send `states` in one datagram.
    pub fn notify(&self, states: &[State<'_>]) -> io::Result<()> {
        let m = message(states);
        let sent = self.sock.send_to_addr(m.as_bytes(), &self.addr)?;
        if sent != m.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to NOTIFY_SOCKET"));
        }
        Ok(())
    }
}

/// How often the service manager expects [`State::Watchdog`], from `$WATCHDOG_USEC`
/// and `$WATCHDOG_PID`; `None` when the watchdog is off or meant for another process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var_os("WATCHDOG_USEC");
    let pid = std::env::var_os("WATCHDOG_PID");
    watchdog_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values (pure, for tests).
pub fn watchdog_from(usec: Option<&OsStr>, pid: Option<&OsStr>, own_pid: u32) -> Option<Duration> {
    let number = |v: &OsStr| -> Option<u64> {
        let s = v.to_str()?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if let Some(p) = pid {
        if number(p)? != u64::from(own_pid) {
            return None;
        }
    }
    match number(usec?)? {
        0 => None,
        us => Some(Duration::from_micros(us)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn each_state_is_one_line() {
        assert_eq!(message(&[State::Ready]), "READY=1\n");
        assert_eq!(message(&[State::Reloading]), "RELOADING=1\n");
        assert_eq!(message(&[State::Stopping]), "STOPPING=1\n");
        assert_eq!(message(&[State::Watchdog]), "WATCHDOG=1\n");
        assert_eq!(
            message(&[State::Ready, State::Status("gate up\nREADY=0")]),
            "READY=1\nSTATUS=gate up READY=0\n",
            "a status cannot inject another key"
        );
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify(&[State::Ready, State::Status("protecting tcp/22")]).unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=protecting tcp/22\n");
        n.notify(&[State::Watchdog]).unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1\n");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("portcullis-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.notify(&[State::Stopping]).unwrap();
        assert_eq!(recv(&server), "STOPPING=1\n");
    }

    #[test]
    fn refuses_relative_and_empty_socket_names() {
        assert!(Notifier::new(OsStr::new("notify.sock")).is_err());
        assert!(Notifier::new(OsStr::new("")).is_err());
    }

    #[test]
    fn a_missing_listener_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("gone").as_os_str()).unwrap();
        assert!(n.notify(&[State::Ready]).is_err());
    }

    #[test]
    fn watchdog_interval_is_for_this_process_only() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(watchdog_from(os("30000000"), None, 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(os("30000000"), os("7"), 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(os("30000000"), os("8"), 7), None, "another process' watchdog");
        assert_eq!(watchdog_from(os("0"), None, 7), None, "0 means off");
        assert_eq!(watchdog_from(None, os("7"), 7), None);
        assert_eq!(watchdog_from(os("-5"), None, 7), None);
        assert_eq!(watchdog_from(os("30s"), None, 7), None);
        assert_eq!(watchdog_from(os("30000000"), os(""), 7), None);
    }
}
