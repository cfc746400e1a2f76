//! knockd in the bench, the way its users run it: start_command `iptables -I` with
//! stop_command `iptables -D` in front of the baseline host firewall, or start_command
//! `nft add element` into a set whose elements time out.

use std::process::Stdio;
use std::time::Duration;

use portcullis_daemon::lab::Baseline;

use super::process::{pinned, wait_for_log};
use super::{Daemon, Env, Instance, GRANT_S, PROTECTED, SEQUENCE, SEQ_TIMEOUT_S};

impl Env {
    /// knockd with one door on [`SEQUENCE`]: `d` is [`Daemon::KnockdIpt`] or
    /// [`Daemon::KnockdNft`].
    pub(super) fn start_knockd(&mut self, d: Daemon, at: &Instance) -> anyhow::Result<u32> {
        let (start, stop) = if d == Daemon::KnockdIpt {
            self.reset_firewall("")?;
            self.lab.iptables_baseline(&self.lab.server, Baseline::DropTcp(&[PROTECTED]))?;
            (
                format!("/usr/sbin/iptables -w -I INPUT 1 -s %IP% -p tcp --dport {PROTECTED} -j ACCEPT"),
                format!(
                    "stop_command = /usr/sbin/iptables -w -D INPUT -s %IP% -p tcp --dport {PROTECTED} -j ACCEPT\n"
                ),
            )
        } else {
            self.reset_firewall(&format!(
                "table inet knock {{\n set allow4 {{ type ipv4_addr; flags timeout; }}\n\
                 chain input {{ type filter hook input priority 0; policy accept;\n\
                   ct state established,related accept\n\
                   ip saddr != @allow4 tcp dport {PROTECTED} drop\n\
                   meta nfproto ipv6 tcp dport {PROTECTED} drop\n }}\n}}\n"
            ))?;
            (
                format!("/usr/sbin/nft add element inet knock allow4 {{ %IP% timeout {GRANT_S}s }}"),
                String::new(),
            )
        };
        let seq = SEQUENCE.map(|p| p.to_string()).join(",");
        let (conf, log) = (at.dir.join("knockd.conf"), at.dir.join("knockd.log"));
        std::fs::write(
            &conf,
            format!(
                "[options]\n  LogFile = {}\n  PidFile = {}\n  Interface = eth0\n\n[bench]\n  sequence = {seq}\n  \
                 seq_timeout = {SEQ_TIMEOUT_S}\n  tcpflags = syn\n  start_command = {start}\n  cmd_timeout = {GRANT_S}\n  {stop}",
                log.display(),
                at.dir.join("knockd.pid").display()
            ),
        )?;
        let conf = conf.display().to_string();
        let srv = self.lab.server.clone();
        let c = self.lab.spawn(
            &srv,
            &pinned(at.pin, &["knockd", "-i", "eth0", "-c", &conf]),
            Stdio::null(),
            Stdio::from(at.log_file()?),
        )?;
        let pid = c.id();
        // No "listening" line is no failure by itself: the warm-up knock decides.
        wait_for_log(&log, "listening on", Duration::from_secs(10)).ok();
        Ok(pid)
    }
}
