//! `portcullis connect HOST PORT`: an ssh `ProxyCommand`. Open the server (knock or SPA,
//! from flags or the host's profile), connect, retrying until the port answers or the
//! wait is over, then relay stdin/stdout and the socket until either side is done.
//!
//! stdout is the ssh channel: every message goes to stderr. Exit codes follow
//! sysexits(3) so scripts can tell a refused door from a bad config.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use portcullis_proto::Service;

use crate::opener::{self, describe, OpenArgs};

/// Default time to keep trying to connect.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// One connection attempt: short, so the first attempt after the grant lands is soon.
const ATTEMPT: Duration = Duration::from_millis(500);
/// Pause after a refused attempt.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);
/// Relay buffer.
const BUF: usize = 16 * 1024;

/// Arguments of `portcullis connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    how: OpenArgs,
    /// Keep trying to connect this long (default 5s; 100ms to 10m).
    #[arg(long, value_name = "DURATION")]
    wait: Option<String>,
    /// Connect without opening anything first (plain relay, like `nc`).
    #[arg(long, conflicts_with_all = ["knock", "rotating", "spa_fwknop", "spa_native", "profile"])]
    plain: bool,
    /// Host (or profile name / alias): ssh's %h.
    host: String,
    /// TCP port: ssh's %p.
    port: u16,
}

/// Why `connect` stopped, with its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad flags, profile or secret file (EX_CONFIG).
    Config(anyhow::Error),
    /// The host name does not resolve (EX_NOHOST).
    NoHost(anyhow::Error),
    /// Knock or SPA could not be sent, or the port never answered (EX_UNAVAILABLE).
    Unavailable(anyhow::Error),
    /// The relay failed (EX_IOERR).
    Io(io::Error),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Config(_) => 78,
            Failure::NoHost(_) => 68,
            Failure::Unavailable(_) => 69,
            Failure::Io(_) => 74,
        }
    }
}

/// Run `portcullis connect`; the exit code is 0 when the relay ended normally.
pub fn main(a: &ConnectArgs) -> ExitCode {
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            match &f {
                Failure::Config(e) | Failure::NoHost(e) | Failure::Unavailable(e) => {
                    eprintln!("portcullis connect: {e:#}")
                }
                Failure::Io(e) => eprintln!("portcullis connect: relay: {e}"),
            }
            ExitCode::from(f.code())
        }
    }
}

fn run(a: &ConnectArgs) -> Result<(), Failure> {
    if a.port == 0 {
        return Err(Failure::Config(anyhow::anyhow!("port 0 is not a port")));
    }
    let plan = if a.plain { None } else { Some(a.how.plan(&a.host).map_err(Failure::Config)?) };
    let wait = match (&a.wait, plan.as_ref().and_then(|p| p.wait)) {
        (Some(w), _) => opener::parse_wait(w).map_err(Failure::Config)?,
        (None, Some(w)) => w,
        (None, None) => DEFAULT_WAIT,
    };
    let address = plan.as_ref().map_or(a.host.as_str(), |p| p.address.as_str());
    let ip = crate::knock::resolve(address, false, false).map_err(Failure::NoHost)?;
    let how = match &plan {
        Some(p) => {
            opener::execute(p, ip, &[Service::tcp(a.port)]).map_err(Failure::Unavailable)?;
            describe(&p.method)
        }
        None => "nothing (direct connection)",
    };
    let to = SocketAddr::new(ip, a.port);
    let sock = connect_until(to, wait).map_err(|e| {
        Failure::Unavailable(anyhow::anyhow!(
            "{to} did not answer within {} after opening by {how}: {e}",
            humantime::format_duration(wait)
        ))
    })?;
    relay(sock).map_err(Failure::Io)
}

/// Connect to `to`, retrying until it answers or `wait` has passed.
fn connect_until(to: SocketAddr, wait: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + wait;
    let mut last = io::Error::new(io::ErrorKind::TimedOut, "no answer");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        match TcpStream::connect_timeout(&to, left.min(ATTEMPT)) {
            Ok(s) => return Ok(s),
            Err(e) => {
                // Refused: not open yet (or nothing listens); pause briefly. Timed out
                // (dropped SYN) or unreachable: try again at once.
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    thread::sleep(REFUSED_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
                }
                last = e;
            }
        }
    }
}

/// Copy stdin to the socket and the socket to stdout. stdin's EOF half-closes the
/// socket (the server sees EOF and may still answer); the socket's EOF ends the relay.
fn relay(sock: TcpStream) -> io::Result<()> {
    let _ = sock.set_nodelay(true);
    let up = sock.try_clone()?;
    // Detached: it may sit in read(stdin) forever; the process exits when the socket
    // side is done.
    thread::spawn(move || {
        let _ = stdin_to_socket(&up);
        let _ = up.shutdown(Shutdown::Write);
    });
    socket_to_stdout(&sock)
}

fn stdin_to_socket(mut sock: &TcpStream) -> io::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; BUF];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => sock.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn socket_to_stdout(mut sock: &TcpStream) -> io::Result<()> {
    // Wake up now and then to notice that ssh is gone (stdout closed) even if the
    // server stays silent.
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; BUF];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return out.flush(),
            Ok(n) => match out.write_all(&buf[..n]).and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e),
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if stdout_closed(&out) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// True if nobody reads our stdout any more (the pipe's reader, ssh, is gone).
fn stdout_closed(out: &impl AsFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn connects_when_the_port_starts_answering() {
        // Reserve a port, close it (refused), then listen on it a little later.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let to = SocketAddr::new(LOCAL, port);
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let l = TcpListener::bind(to).unwrap();
            let (_s, _) = l.accept().unwrap();
            thread::sleep(Duration::from_millis(100));
        });
        let start = Instant::now();
        connect_until(to, Duration::from_secs(5)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(3));
        t.join().unwrap();
    }

    #[test]
    fn gives_up_at_the_bound() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let start = Instant::now();
        let e = connect_until(SocketAddr::new(LOCAL, port), Duration::from_millis(400));
        assert!(e.is_err());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(1500), "{took:?}");
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            Failure::Config(anyhow::anyhow!("x")).code(),
            Failure::NoHost(anyhow::anyhow!("x")).code(),
            Failure::Unavailable(anyhow::anyhow!("x")).code(),
            Failure::Io(io::Error::other("x")).code(),
        ];
        assert_eq!(codes, [78, 68, 69, 74]);
    }
}
