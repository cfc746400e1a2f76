//! A throwaway PostgreSQL cluster for the fleet tests: initdb in a temp dir, owned by
//! the `postgres` user, listening only on a unix socket in that dir; stopped and
//! removed on drop.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_daemon::fleet::config::FleetConfig;
use portcullis_daemon::fleet::OnDbDown;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster in a temp dir; stopped and removed on drop.
pub struct Pg {
    pub dir: tempfile::TempDir,
}

impl Pg {
    pub fn start() -> Option<Pg> {
        if !nix::unistd::geteuid().is_root() || !Path::new(BIN).join("initdb").exists() {
            portcullis_daemon::lab::preflight::cannot_run("fleet", "needs root and postgresql 15");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("pcfleet").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pg = Pg { dir };
        run(Command::new("chown").arg("postgres:postgres").arg(pg.dir.path()));
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join("initdb"))
            .args(["--no-sync", "-A", "trust", "-U", "postgres", "-D"])
            .arg(pg.data()));
        pg.up();
        Some(pg)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn up(&self) {
        let opts = format!("-k {} -h '' -c fsync=off", self.dir.path().display());
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join("pg_ctl"))
            .args(["-w", "-s", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "start"]));
    }

    pub fn down(&self) {
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join("pg_ctl"))
            .args(["-w", "-s", "-m", "fast", "-D"])
            .arg(self.data())
            .arg("stop"));
    }

    /// Restart listening on 127.0.0.1 (a free port, returned) with TLS on, its
    /// certificate for `localhost` signed by a CA written to `ca.crt` in the dir. The
    /// unix socket then carries the port in its name: use TCP URLs from here on.
    pub fn restart_with_tls(&self) -> u16 {
        let d = self.dir.path();
        let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        ossl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=fleet test CA", "-days", "1"],
            ]
            .concat(),
        );
        ossl(
            &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]]
                .concat(),
        );
        std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(d.join("server.key"))
            .arg(d.join("server.crt")));
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        self.down();
        let opts = format!(
            "-k {dir} -h 127.0.0.1 -p {port} -c fsync=off -c ssl=on -c ssl_cert_file={dir}/server.crt \
             -c ssl_key_file={dir}/server.key",
            dir = d.display()
        );
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join("pg_ctl"))
            .args(["-w", "-s", "-l"])
            .arg(d.join("log"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "start"]));
        port
    }

    pub fn url(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.dir.path().display())
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap()
    }

    /// A 0600 URL file and a fleet config for `node`.
    pub fn node(&self, node: &str) -> FleetConfig {
        let f = self.dir.path().join(format!("{node}.url"));
        std::fs::write(&f, self.url("postgres")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        FleetConfig {
            database_url_file: f,
            node: node.into(),
            nodes: vec!["gw1".into(), "gw2".into(), "gw3".into()],
            on_db_down: OnDbDown::Refuse,
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            self.down();
        }
    }
}

pub fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
}
