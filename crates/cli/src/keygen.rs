//! `portcullis keygen`: keys for fwknop stanzas (the format `fwknop --key-gen` prints)
//! and for the native SPA format (server and user key pairs).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use portcullis_proto::spa::fwknop::fwknop_keygen;
use portcullis_proto::spa::native::{ServerKey, UserKey};

/// Arguments of `portcullis keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Native format: a server key pair (secret for the daemon, public for clients).
    #[arg(long, conflicts_with = "user")]
    server: bool,
    /// Native format: a user key pair (secret for the client, public for the server config).
    #[arg(long)]
    user: bool,
    /// Write the secret key to this file (created mode 0600, never overwritten)
    /// instead of printing it. Missing folders are created, mode 0700.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The OS random generator, as the closure the proto encoders take.
pub fn os_rng(buf: &mut [u8]) {
    // A machine without a working getrandom cannot make keys or packets safely.
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// `~/rest` is `$HOME/rest`: the shell does not expand `--out=~/...`.
fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// Create `path` (mode 0600, never replacing a file) with `secret` in it, and its
/// missing folders (mode 0700: they hold secrets). Returns the topmost folder created.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut created = None;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        created = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .last()
            .map(Path::to_path_buf);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the folder {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{secret}")?;
    Ok(created)
}

fn emit_secret(out: &Option<PathBuf>, label: &str, secret: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => {
            let p = expand_home(p);
            if let Some(dir) = write_secret(&p, secret)? {
                println!("created {} (mode 0700)", dir.display());
            }
            println!("{label} written to {}", p.display());
        }
        None => println!("{label}: {secret}"),
    }
    Ok(())
}

/// Run `portcullis keygen`.
pub fn run(a: &KeygenArgs) -> anyhow::Result<()> {
    let mut rng = os_rng;
    if a.server {
        let k = ServerKey::generate(&mut rng);
        emit_secret(&a.out, "server secret key (daemon: [spa] server_key_file)", &k.to_text())?;
        println!("server public key (clients: --server-key): {}", k.public());
    } else if a.user {
        let k = UserKey::generate(&mut rng);
        emit_secret(&a.out, "user secret key (client: --user-key)", &k.to_text())?;
        println!("user public key (daemon: [[spa.user]] key): {}", k.public());
    } else {
        let (key, hmac) = fwknop_keygen(&mut rng);
        if let Some(p) = &a.out {
            emit_secret(
                &Some(p.clone()),
                "fwknop keys",
                &format!("KEY_BASE64: {}\nHMAC_KEY_BASE64: {}", *key, *hmac),
            )?;
        } else {
            println!("KEY_BASE64: {}", *key);
            println!("HMAC_KEY_BASE64: {}", *hmac);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn out_creates_missing_folders_private() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join(".config/portcullis/alice.key");
        assert_eq!(write_secret(&key, "pcu1-sec-x").unwrap(), Some(tmp.path().join(".config")));
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "pcu1-sec-x\n");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&tmp.path().join(".config")), 0o700);
        assert_eq!(mode(&tmp.path().join(".config/portcullis")), 0o700);
        // The folder exists now: nothing to create, and the key is never overwritten.
        let bob = tmp.path().join(".config/portcullis/bob.key");
        assert_eq!(write_secret(&bob, "b").unwrap(), None);
        let e = write_secret(&key, "other").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("creating {} (it must not exist yet): File exists (os error 17)", key.display())
        );
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "pcu1-sec-x\n");
    }

    #[test]
    fn a_leading_tilde_is_home() {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(expand_home(Path::new("~/.config/a.key")), home.join(".config/a.key"));
        assert_eq!(expand_home(Path::new("a/~/b")), PathBuf::from("a/~/b"));
        assert_eq!(expand_home(Path::new("~bob/x")), PathBuf::from("~bob/x"));
    }
}
