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
