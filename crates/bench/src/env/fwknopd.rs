//! fwknopd in the bench (iptables, HMAC-SHA256 + Rijndael) and the real `fwknop`
//! client that makes its keys and packets. portcullisd's fwknop stanza uses the same
//! keys, so both daemons are sent the same kind of packet; portcullisd-as-fwknopd runs
//! from the very same fwknopd.conf and access.conf, on the same host firewall.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use portcullis_daemon::lab::{self, Baseline};

use super::process::pinned;
use super::{write_private, Env, Instance, GRANT_S, PROTECTED, SPA_PORT};

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

/// The fwknopd configuration both fwknopd and portcullisd-as-fwknopd run from.
pub(super) struct FwknopdFiles {
    /// `fwknopd.conf`.
    pub(super) conf: PathBuf,
    /// The `access.conf` it sits beside (fwknopd's default `ACCESS_FILE`).
    pub(super) access: PathBuf,
    /// `FWKNOP_RUN_DIR`.
    pub(super) run: PathBuf,
}

impl Env {
    /// Write the one fwknopd.conf + access.conf pair of this lab (same path and content
    /// for every start, mode 0600 as fwknopd asks for key files): sniff `eth0` for
    /// udp/[`SPA_PORT`], allow tcp/[`PROTECTED`] for [`GRANT_S`] s to anyone with the keys.
    pub(super) fn fwknopd_files(&self) -> anyhow::Result<FwknopdFiles> {
        let dir = self.dir.join("fwknop");
        let files = FwknopdFiles {
            conf: dir.join("fwknopd.conf"),
            access: dir.join("access.conf"),
            run: dir.join("run"),
        };
        std::fs::create_dir_all(&files.run)?;
        // A daemon stopped earlier may have left its PID file behind.
        let _ = std::fs::remove_file(files.run.join("fwknopd.pid"));
        let conf = format!(
            "PCAP_INTF eth0;\nPCAP_FILTER udp port {SPA_PORT};\nFWKNOP_RUN_DIR {};\n\
             ENABLE_DIGEST_PERSISTENCE N;\nEXIT_AT_INTF_DOWN N;\n",
            files.run.display()
        );
        let access = format!(
            "SOURCE ANY\nOPEN_PORTS tcp/{PROTECTED}\nKEY_BASE64 {}\nHMAC_KEY_BASE64 {}\nHMAC_DIGEST_TYPE sha256\n\
             FW_ACCESS_TIMEOUT {GRANT_S}\n",
            self.keys.key, self.keys.hmac
        );
        write_private(&files.conf, conf.as_bytes())?;
        write_private(&files.access, access.as_bytes())?;
        Ok(files)
    }

    /// The host fwknopd expects: the lab baseline plus iptables INPUT policy DROP
    /// (loopback and established/related accepted); grants are ACCEPT rules in front.
    pub(super) fn fwknopd_host(&self) -> anyhow::Result<()> {
        self.reset_firewall("")?;
        self.lab.iptables_baseline(&self.lab.server, Baseline::DropAll)
    }

    /// fwknopd on [`Env::fwknopd_files`], on the [`Env::fwknopd_host`] firewall.
    pub(super) fn start_fwknopd(&mut self, at: &Instance) -> anyhow::Result<u32> {
        self.fwknopd_host()?;
        let files = self.fwknopd_files()?;
        let s = |p: &Path| p.display().to_string();
        let (conf, access) = (s(&files.conf), s(&files.access));
        let (pid, digest) = (s(&files.run.join("fwknopd.pid")), s(&files.run.join("digest.cache")));
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
