//! fwknopd in the bench (iptables, HMAC-SHA256 + Rijndael) and the real `fwknop`
//! client that makes its keys and packets. portcullisd's fwknop stanza uses the same
//! keys, so both daemons are sent the same kind of packet.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use portcullis_daemon::lab::{self, Baseline};

use super::process::pinned;
use super::{Env, Instance, GRANT_S, PROTECTED, SPA_PORT};

/// An fwknop key pair, base64, as `fwknop --key-gen` prints them.
#[derive(Debug, Clone)]
pub(super) struct FwknopKeys {
    /// Rijndael key.
    pub(super) key: String,
    /// HMAC-SHA256 key.
    pub(super) hmac: String,
}

impl FwknopKeys {
    /// New keys from the real client, `home` as its `HOME` (it writes there).
    pub(super) fn generate(home: &Path, keyfile: &Path) -> anyhow::Result<FwknopKeys> {
        let out = Command::new("fwknop")
            .env("HOME", home)
            .args(["--key-gen", "--key-gen-file"])
            .arg(keyfile)
            .stdin(Stdio::null())
            .output()
            .context("running fwknop --key-gen (apt-get install fwknop-client)")?;
        if !out.status.success() {
            bail!("fwknop --key-gen failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = std::fs::read_to_string(keyfile)?;
        let get = |k: &str| {
            text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        let keys = FwknopKeys { key: get("KEY_BASE64:"), hmac: get("HMAC_KEY_BASE64:") };
        if keys.key.is_empty() || keys.hmac.is_empty() {
            bail!("could not read keys from fwknop --key-gen output");
        }
        Ok(keys)
    }
}

impl Env {
    /// fwknopd allowing tcp/[`PROTECTED`] to anyone with the keys, in front of the
    /// baseline host firewall.
    pub(super) fn start_fwknopd(&mut self, at: &Instance) -> anyhow::Result<u32> {
        self.reset_firewall("")?;
        self.lab.iptables_baseline(&self.lab.server, Baseline::DropTcp(&[PROTECTED]))?;
        let run = at.dir.join("run");
        std::fs::create_dir_all(&run)?;
        let (conf, access) = (at.dir.join("fwknopd.conf"), at.dir.join("access.conf"));
        std::fs::write(
            &conf,
            format!(
                "PCAP_INTF eth0;\nPCAP_FILTER udp port {SPA_PORT};\nFWKNOP_RUN_DIR {};\n\
                 ENABLE_DIGEST_PERSISTENCE N;\nEXIT_AT_INTF_DOWN N;\n",
                run.display()
            ),
        )?;
        std::fs::write(
            &access,
            format!(
                "SOURCE ANY\nOPEN_PORTS tcp/{PROTECTED}\nKEY_BASE64 {}\nHMAC_KEY_BASE64 {}\nHMAC_DIGEST_TYPE sha256\n\
                 FW_ACCESS_TIMEOUT {GRANT_S}\n",
                self.keys.key, self.keys.hmac
            ),
        )?;
        let s = |p: &Path| p.display().to_string();
        let (conf, access) = (s(&conf), s(&access));
        let (pid, digest) = (s(&run.join("fwknopd.pid")), s(&run.join("digest.cache")));
        let argv = ["fwknopd", "-f", "-c", &conf, "-a", &access, "-i", "eth0", "-p", &pid, "-d", &digest];
        let srv = self.lab.server.clone();
        let c = self.lab.spawn(&srv, &pinned(at.pin, &argv), Stdio::null(), Stdio::from(at.log_file()?))?;
        Ok(c.id())
    }

    /// An SPA packet made by the real `fwknop` client in the client namespace, asking
    /// to open tcp/22 for `allow` (`-T -B`: build and save, we send it ourselves so the
    /// send time is known to the microsecond).
    pub fn spa_packet(&self, allow: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
        let out = self.dir.join(format!("spa-{allow}"));
        let home = self.dir.join("home");
        let o = self.lab.exec(
            &self.lab.client,
            &[
                "env",
                &format!("HOME={}", home.display()),
                "fwknop",
                "-A",
                &format!("tcp/{PROTECTED}"),
                "-a",
                &allow.to_string(),
                "-D",
                lab::SERVER4,
                "--use-hmac",
                "--key-base64-rijndael",
                &self.keys.key,
                "--key-base64-hmac",
                &self.keys.hmac,
                "--no-save-args",
                "--no-rc-file",
                "-T",
                "-B",
                &out.display().to_string(),
            ],
        )?;
        if !o.status.success() {
            bail!("fwknop failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let data = std::fs::read(&out)?;
        let _ = std::fs::remove_file(&out);
        Ok(data.trim_ascii().to_vec())
    }
}
