//! portcullisd in the bench: as a knock daemon (nftables or either iptables driver)
//! and as an SPA daemon (one configuration for fwknop-format and native packets), plus
//! the native SPA packets it is sent.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use portcullis_proto::spa::native::{self, AllowAddr, Request};
use portcullis_proto::{Proto, Service};

use super::process::{pinned, wait_for_log};
use super::{
    urandom, Daemon, Env, Instance, GRANT_S, NATIVE_USER, PROTECTED, SEQUENCE, SEQ_TIMEOUT_S, SPA_PORT,
};

impl Env {
    /// portcullisd with one door on [`SEQUENCE`], firewall driver `d.backend()`.
    pub(super) fn start_portcullisd_knock(&mut self, d: Daemon, at: &Instance) -> anyhow::Result<u32> {
        if d == Daemon::PortcullisdIptLegacy {
            self.mark_legacy();
        }
        self.reset_firewall("")?;
        let seq = SEQUENCE.map(|p| p.to_string()).join(",");
        let conf = at.dir.join("portcullis.toml");
        std::fs::write(
            &conf,
            format!(
                "[daemon]\nstate_dir = \"{}\"\ninterfaces = [\"eth0\"]\nbackend = \"{}\"\n\n[[door]]\nname = \"bench\"\n\
                 sequence = [{seq}]\nseq_timeout = {SEQ_TIMEOUT_S}\nopen = [\"tcp/{PROTECTED}\"]\nopen_for = {GRANT_S}\n",
                at.dir.join("state").display(),
                d.backend()
            ),
        )?;
        self.spawn_portcullisd(at, &conf)
    }

    /// portcullisd with `[spa]`: an fwknop stanza with fwknopd's keys and the native
    /// bench user, both allowed tcp/[`PROTECTED`]; and the knock door on [`SEQUENCE`].
    pub(super) fn start_portcullisd_spa(&mut self, at: &Instance) -> anyhow::Result<u32> {
        self.reset_firewall("")?;
        let key = at.dir.join("server.key");
        write_private(&key, self.native.0.to_text().as_bytes())?;
        let conf = at.dir.join("portcullis.toml");
        let mut decoys = String::new();
        for i in 0..self.spa_decoy_stanzas {
            let (k, h) = portcullis_proto::spa::fwknop::fwknop_keygen(&mut urandom);
            decoys.push_str(&format!(
                "[[spa.fwknop]]\nname = \"decoy{i}\"\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n\
                 open_ports = [\"tcp/{PROTECTED}\"]\n\n",
                k.as_str(),
                h.as_str()
            ));
        }
        std::fs::write(
            &conf,
            format!(
                "[daemon]\nstate_dir = \"{}\"\ninterfaces = [\"eth0\"]\n\n\
                 [spa]\nports = [{SPA_PORT}]\nserver_key_file = \"{}\"\n\n\
                 [[spa.user]]\nname = \"{NATIVE_USER}\"\nkey = \"{}\"\nopen = [\"tcp/{PROTECTED}\"]\nmax_open_for = {GRANT_S}\n\n\
                 {decoys}[[door]]\nname = \"bench\"\nsequence = [{}]\nseq_timeout = {SEQ_TIMEOUT_S}\n\
                 open = [\"tcp/{PROTECTED}\"]\nopen_for = {GRANT_S}\n\n[[spa.fwknop]]\nname = \"bench\"\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n\
                 hmac_digest_type = \"sha256\"\nopen_ports = [\"tcp/{PROTECTED}\"]\nfw_access_timeout = {GRANT_S}\n",
                at.dir.join("state").display(),
                key.display(),
                self.native.1.public(),
                SEQUENCE.map(|p| p.to_string()).join(","),
                self.keys.key,
                self.keys.hmac
            ),
        )?;
        self.spawn_portcullisd(at, &conf)
    }

    /// Start portcullisd with `conf` in the server namespace and wait for its `ready:` line.
    fn spawn_portcullisd(&mut self, at: &Instance, conf: &Path) -> anyhow::Result<u32> {
        let (bin, conf) = (self.bins.portcullisd.display().to_string(), conf.display().to_string());
        let srv = self.lab.server.clone();
        let c = self.lab.spawn(
            &srv,
            &pinned(at.pin, &[&bin, "run", "--config", &conf]),
            Stdio::null(),
            Stdio::from(at.log_file()?),
        )?;
        let pid = c.id();
        wait_for_log(&at.log, "ready:", Duration::from_secs(10))?;
        Ok(pid)
    }

    /// A native SPA packet for tcp/22, allow address `allow` (explicit, as the format
    /// recommends), sealed in process for this lab's server key and signed by the
    /// bench user: 256 bytes, sent by the caller as one datagram.
    pub fn native_packet(&self, allow: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let req = Request::new(
            NATIVE_USER,
            now,
            AllowAddr::V4(allow),
            [Service { proto: Proto::Tcp, port: PROTECTED }],
            u32::try_from(GRANT_S)?,
            &mut urandom,
        )
        .map_err(|e| anyhow::anyhow!("native request: {e}"))?;
        native::seal(&req, self.native.0.public(), &self.native.1, &mut urandom)
            .map_err(|e| anyhow::anyhow!("native seal: {e}"))
    }
}

/// Write a file readable by its owner only (portcullisd refuses a group/world-readable
/// server key).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
