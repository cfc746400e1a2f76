//! `portcullis keygen`: keys for fwknop stanzas (the format `fwknop --key-gen` prints)
//! and for the native SPA format (server and user key pairs).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

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
    /// instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The OS random generator, as the closure the proto encoders take.
pub fn os_rng(buf: &mut [u8]) {
    // A machine without a working getrandom cannot make keys or packets safely.
    getrandom::fill(buf).expect("the OS random number generator failed");
}

fn emit_secret(out: &Option<PathBuf>, label: &str, secret: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("creating {} (it must not exist yet)", p.display()))?;
            writeln!(f, "{secret}")?;
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
