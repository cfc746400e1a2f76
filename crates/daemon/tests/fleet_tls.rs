//! TLS to the fleet database: a throwaway PostgreSQL with TLS on 127.0.0.1 (its
//! certificate for `localhost`, signed by a test CA), reached with libpq's `sslmode`
//! and `sslrootcert` in the URL. Needs root (the cluster runs as `postgres`); under
//! CI=true a test that cannot run fails.

use portcullis_daemon::fleet::tls;

mod fleet_pg;

use fleet_pg::Pg;

#[test]
fn sslmode_and_sslrootcert_verify_the_database() {
    let Some(pg) = Pg::start() else { return };
    let port = pg.restart_with_tls();
    let ca = pg.dir.path().join("ca.crt").display().to_string();
    let url = |host: &str, tail: &str| {
        format!("host={host} hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres {tail}")
    };
    let encrypted = |u: &str| -> Option<bool> {
        let mut c = tls::connect(u)?;
        Some(c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap().get(0))
    };
    // verify-full: the chain and the name; verify-ca: the chain only.
    assert_eq!(encrypted(&url("localhost", &format!("sslmode=verify-full sslrootcert={ca}"))), Some(true));
    assert_eq!(encrypted(&url("127.0.0.1", &format!("sslmode=verify-full sslrootcert={ca}"))), None, "name");
    assert_eq!(encrypted(&url("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}"))), Some(true));
    // The URL form, too.
    let u = format!(
        "postgresql://postgres@localhost:{port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
    );
    assert_eq!(encrypted(&u), Some(true));
    // A certificate from another CA (the system's trust store knows nothing of ours).
    assert_eq!(encrypted(&url("localhost", "sslmode=verify-full")), None, "unknown CA");
    // require: encrypted, not verified (libpq's meaning); no sslmode: plain.
    assert_eq!(encrypted(&url("localhost", "sslmode=require")), Some(true));
    assert_eq!(encrypted(&url("localhost", "")), Some(false));
}
