//! TLS to the fleet database: a throwaway PostgreSQL with TLS on 127.0.0.1 (its
//! certificate for `localhost`, signed by a test CA), reached with libpq's `sslmode`
//! and `sslrootcert` in the URL. Needs root (the cluster runs as `postgres`); under
//! CI=true a test that cannot run fails.

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
        let mut c = portcullis_daemon::fleet::db::connect(u)?;
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

/// The fleet node as the unprivileged part runs it: the database read before the
/// sandbox (the URL resolved, the CA file loaded), then Landlock (files only in the
/// state dir, TCP connect only to the database's port) and the seccomp allow-list.
/// TLS with verify-full still works; reading the CA file now, or another port, does not.
#[test]
fn tls_works_inside_the_unprivileged_sandbox() {
    let Some(pg) = Pg::start() else { return };
    let port = pg.restart_with_tls();
    let ca = pg.dir.path().join("ca.crt").display().to_string();
    let url = format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}"
    );
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sandboxed_child", "--nocapture", "--test-threads=1"])
        .env("PORTCULLIS_FLEET_SANDBOX_URL", &url)
        .env("PORTCULLIS_FLEET_SANDBOX_STATE", state.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(!text.contains("enforced: Not"), "the kernel enforces no Landlock:\n{all}");
    for line in [
        &format!("ports: [{port}]"),
        "database tls: true",
        "CA file read in the sandbox: refused",
        "other tcp port: denied",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{all}");
    }
}

#[test]
fn sandboxed_child() {
    use portcullis_daemon::fleet::db::Database;
    use portcullis_daemon::privsep::{landlock, seccomp};
    let Some(url) = std::env::var_os("PORTCULLIS_FLEET_SANDBOX_URL") else { return };
    let url = url.into_string().unwrap();
    let state = std::path::PathBuf::from(std::env::var_os("PORTCULLIS_FLEET_SANDBOX_STATE").unwrap());
    let db = Database::open(&url).unwrap();
    println!("ports: {:?}", db.tcp_ports());
    nix::sys::prctl::set_no_new_privs().unwrap();
    let r = landlock::restrict(&state, &[], &db.tcp_ports()).unwrap();
    println!("enforced: {:?}", r.enforced);
    seccomp::confine_unprivileged().unwrap();
    let mut c = db.connect().expect("connecting from inside the sandbox");
    let ssl: bool =
        c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap().get(0);
    println!("database tls: {ssl}");
    let again = Database::open(&url);
    println!("CA file read in the sandbox: {}", if again.is_err() { "refused" } else { "allowed" });
    match std::net::TcpStream::connect(("127.0.0.1", 9)) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => println!("other tcp port: denied"),
        other => println!("other tcp port: {other:?}"),
    }
}
