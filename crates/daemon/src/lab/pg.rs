//! A throwaway PostgreSQL cluster for the fleet tests and benchmarks: `initdb` in a
//! fresh directory under /tmp, run as the `postgres` user, listening only on a unix
//! socket in that directory (no TCP port at all), `fsync=off`. Stopped and removed on
//! drop. The socket is a file, so daemons in any network namespace reach it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Debian's PostgreSQL server programs (`initdb`, `pg_ctl`), newest version first.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b)
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Pg {
    dir: PathBuf,
    bin: PathBuf,
}

impl Pg {
    /// Create and start a cluster (needs root: it runs as `postgres`). `tag` keeps
    /// concurrent clusters apart.
    pub fn start(tag: &str) -> anyhow::Result<Pg> {
        if !nix::unistd::geteuid().is_root() {
            bail!("a throwaway PostgreSQL cluster needs root (it runs as the postgres user)");
        }
        let bin = bin_dir().context("PostgreSQL is not installed (apt-get install postgresql)")?;
        let dir = PathBuf::from(format!("/tmp/pcpg-{tag}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
        }
        std::fs::create_dir(&dir)?;
        // Dropped from here on: a failed start still removes the directory.
        let pg = Pg { dir, bin };
        std::fs::set_permissions(&pg.dir, std::fs::Permissions::from_mode(0o755))?;
        run(Command::new("chown").arg("postgres:postgres").arg(&pg.dir))?;
        run(pg
            .as_postgres("initdb")
            .args(["--no-sync", "-A", "trust", "-U", "postgres", "-D"])
            .arg(pg.data()))?;
        pg.up()?;
        Ok(pg)
    }

    fn as_postgres(&self, prog: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(prog));
        c
    }

    /// The cluster's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Start the server (again); waits until it accepts connections.
    pub fn up(&self) -> anyhow::Result<()> {
        let opts = format!("-k {} -h '' -c fsync=off -c max_connections=200", self.dir.display());
        run(self
            .as_postgres("pg_ctl")
            .args(["-w", "-s", "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "start"]))
    }

    /// Stop the server (fast shutdown: clients are disconnected).
    pub fn down(&self) -> anyhow::Result<()> {
        run(self.as_postgres("pg_ctl").args(["-w", "-s", "-m", "fast", "-D"]).arg(self.data()).arg("stop"))
    }

    /// Whether the server is running.
    pub fn is_up(&self) -> bool {
        self.data().join("postmaster.pid").exists()
    }

    /// Connection settings for database `postgres` over the unix socket.
    pub fn url(&self) -> String {
        format!("host={} user=postgres dbname=postgres", self.dir.display())
    }

    /// A new connection.
    pub fn client(&self) -> anyhow::Result<postgres::Client> {
        postgres::Client::connect(&self.url(), postgres::NoTls).context("connecting to the throwaway cluster")
    }

    /// Write the URL to `path`, mode 0600 (as `[fleet] database_url_file` wants it).
    pub fn write_url_file(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.url())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.is_up() {
            let _ = self.down();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(c: &mut Command) -> anyhow::Result<()> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
