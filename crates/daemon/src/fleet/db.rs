//! The fleet database as the daemon reaches it: the URL's settings, the TLS connector
//! (with `sslrootcert` already loaded) and every host name already resolved. All of it
//! is read once at start, as root, before the split: the unprivileged part cannot read
//! the root-only URL file nor the CA file, nor `/etc/hosts` and the resolver's files,
//! and may only connect to the database's TCP ports ([`Database::tcp_ports`]).
//!
//! The URL (and its password) stays in memory only; nothing here prints it.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, NoTls};
use postgres_openssl::MakeTlsConnector;

use super::FleetError;

/// PostgreSQL's port when the URL names none.
const DEFAULT_PORT: u16 = 5432;

/// Where and how to connect to the fleet database.
#[derive(Clone)]
pub struct Database {
    cfg: postgres::Config,
    tls: Option<MakeTlsConnector>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold the password.
        f.debug_struct("Database")
            .field("tcp_ports", &self.tcp_ports())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Database {
    /// Read the root-only URL file and prepare the connection.
    pub fn read(path: &Path) -> Result<Database, FleetError> {
        let url = super::config::read_url(path)?;
        Database::open(&url).map_err(|reason| FleetError::UrlFile { path: path.to_owned(), reason })
    }

    /// Prepare the connection for `url`: parse it, build the TLS connector (reading
    /// `sslrootcert`) and resolve TCP host names.
    pub fn open(url: &str) -> Result<Database, String> {
        let u = super::tls::split(url)?;
        let mut cfg: postgres::Config = u.conn.parse().map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        cfg.connect_timeout(Duration::from_secs(2));
        let tls = super::tls::connector(&u)?;
        resolve(&mut cfg);
        Ok(Database { cfg, tls })
    }

    /// The TCP ports connections may go to (none when every host is a unix socket).
    pub fn tcp_ports(&self) -> Vec<u16> {
        let (hosts, addrs, ports) = (self.cfg.get_hosts(), self.cfg.get_hostaddrs(), self.cfg.get_ports());
        let mut out: Vec<u16> = (0..hosts.len().max(addrs.len()))
            .filter(|&i| addrs.get(i).is_some() || matches!(hosts.get(i), Some(Host::Tcp(_))))
            .map(|i| ports.get(i).or(ports.first()).copied().unwrap_or(DEFAULT_PORT))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Connect with a short timeout (the SPA path cannot wait for TCP's), over TLS when
    /// the URL asks for it. Failures are logged and give `None`.
    pub fn connect(&self) -> Option<Client> {
        let c = match &self.tls {
            None => self.cfg.connect(NoTls),
            Some(tls) => self.cfg.connect(tls.clone()),
        };
        c.map_err(|e| tracing::warn!("fleet: database unreachable: {e}")).ok()
    }
}

/// Give every TCP host name its addresses now (`hostaddr`), so that connecting later
/// needs no resolver; the name still serves TLS host name checks. A name with several
/// addresses is listed once per address (tried in turn, like libpq's list of hosts).
/// Only when the URL has no `hostaddr` and no unix socket host (an address given
/// overrides a socket path); a name that does not resolve now is left to resolve at
/// each connect.
fn resolve(cfg: &mut postgres::Config) {
    if !cfg.get_hostaddrs().is_empty() || !cfg.get_hosts().iter().all(|h| matches!(h, Host::Tcp(_))) {
        return;
    }
    let ports = cfg.get_ports().to_vec();
    let mut first = Vec::new();
    let mut more = Vec::new();
    for (i, h) in cfg.get_hosts().iter().enumerate() {
        let Host::Tcp(name) = h else { return };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(DEFAULT_PORT);
        let addrs: Vec<IpAddr> = match name.parse::<IpAddr>() {
            Ok(a) => vec![a],
            Err(_) => (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        let Some((&a, rest)) = addrs.split_first() else {
            tracing::warn!(
                "fleet: database host {name:?} does not resolve now; it is looked up at each connect"
            );
            return;
        };
        first.push(a);
        more.extend(rest.iter().filter(|r| **r != a).map(|&r| (name.clone(), r, port)));
    }
    for a in first {
        cfg.hostaddr(a);
    }
    let per_host_ports = ports.len() > 1;
    for (name, addr, port) in more {
        cfg.host(&name).hostaddr(addr);
        if per_host_ports {
            cfg.port(port);
        }
    }
}

/// Check a URL file's contents enough to refuse a bad one when the daemon starts.
pub fn check(url: &str) -> Result<(), String> {
    Database::open(url).map(drop)
}

/// Connect to `url` (see [`Database::connect`]); a bad URL is logged and
/// gives `None`.
pub fn connect(url: &str) -> Option<Client> {
    match Database::open(url) {
        Ok(db) => db.connect(),
        Err(e) => {
            tracing::warn!("fleet: database URL: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_ports_follow_the_hosts() {
        let p = |u: &str| Database::open(u).unwrap().tcp_ports();
        assert_eq!(p("host=/run/postgresql user=u"), Vec::<u16>::new());
        assert_eq!(p("host=127.0.0.1 user=u"), vec![5432]);
        assert_eq!(p("postgres://u@127.0.0.1:6543/f"), vec![6543]);
        assert_eq!(p("host=127.0.0.1,::1 port=7000,7001 user=u"), vec![7000, 7001]);
        assert_eq!(p("host=/run/postgresql,127.0.0.1 port=5433 user=u"), vec![5433]);
        assert_eq!(p("host=localhost port=5433 user=u"), vec![5433]);
    }

    #[test]
    fn names_are_resolved_once_and_kept_for_tls() {
        let d = Database::open("host=localhost port=5433 user=u sslmode=require").unwrap();
        let hosts = d.cfg.get_hosts();
        assert!(!hosts.is_empty() && hosts.iter().all(|h| *h == Host::Tcp("localhost".into())), "{hosts:?}");
        assert_eq!(d.cfg.get_hostaddrs().len(), hosts.len());
        assert!(d.cfg.get_hostaddrs().iter().all(IpAddr::is_loopback));
        assert_eq!(d.tcp_ports(), vec![5433]);
        // Per-host ports follow the extra addresses.
        let d = Database::open("host=localhost,127.0.0.2 port=7000,7001 user=u").unwrap();
        let n = d.cfg.get_hosts().len();
        assert_eq!((d.cfg.get_hostaddrs().len(), d.cfg.get_ports().len()), (n, if n > 2 { n } else { 2 }));
        assert_eq!(d.tcp_ports(), vec![7000, 7001]);
        // A socket path beside a name: left as written (a hostaddr would replace the path).
        let d = Database::open("host=/run/postgresql,localhost user=u").unwrap();
        assert!(d.cfg.get_hostaddrs().is_empty());
    }

    #[test]
    fn debug_never_shows_the_url() {
        let d = Database::open("postgres://u:hunter2@127.0.0.1/f").unwrap();
        assert!(!format!("{d:?}").contains("hunter2"));
    }
}
