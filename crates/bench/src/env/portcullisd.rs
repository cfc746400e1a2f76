//! portcullisd in the bench: as a knock daemon (nftables or either iptables driver)
//! and as an SPA daemon (one configuration for fwknop-format and native packets), as an
//! fwknopd drop-in on fwknopd's own files, plus the native SPA packets it is sent.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use portcullis_proto::spa::native::{self, AllowAddr, Request};
use portcullis_proto::{Proto, Service};

use super::process::{pinned, wait_for_log};
use super::{
    urandom, write_private, Daemon, Env, Instance, GRANT_S, NATIVE_USER, PROTECTED, SEQUENCE, SEQ_TIMEOUT_S,
    SPA_PORT,
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
        // Split is the default as root; the baseline row asks for one process.
        let extra: &[&str] = if d == Daemon::PortcullisdOneProcess { &["--no-privsep"] } else { &[] };
        self.spawn_portcullisd(at, &conf, extra)
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
        write_private(
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
            )
            .as_bytes(),
        )?;
        self.spawn_portcullisd(at, &conf, &[])
    }

    /// portcullisd as an fwknopd drop-in: `run --config fwknopd.conf` on fwknopd's own
    /// files and host firewall ([`Env::fwknopd_files`], [`Env::fwknopd_host`]). Only the
    /// state directory (default `/var/lib/portcullis`) and the log (default syslog, as
    /// fwknopd) are moved, into this start's scratch directory and its stderr.
    pub(super) fn start_portcullisd_fwknopd_conf(&mut self, at: &Instance) -> anyhow::Result<u32> {
        self.fwknopd_host()?;
        let conf = self.fwknopd_files()?.conf;
        let state = at.dir.join("state").display().to_string();
        self.spawn_portcullisd(at, &conf, &["--state-dir", &state, "--log", "stderr"])
    }

    /// Start portcullisd with `conf` (and `extra` arguments to `run`) in the server
    /// namespace and wait for its `ready:` line.
    fn spawn_portcullisd(&mut self, at: &Instance, conf: &Path, extra: &[&str]) -> anyhow::Result<u32> {
        let (bin, conf) = (self.bins.portcullisd.display().to_string(), conf.display().to_string());
        let mut argv = vec![bin.as_str(), "run", "--config", &conf];
        argv.extend_from_slice(extra);
        let srv = self.lab.server.clone();
        let c = self.lab.spawn(&srv, &pinned(at.pin, &argv), Stdio::null(), Stdio::from(at.log_file()?))?;
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
