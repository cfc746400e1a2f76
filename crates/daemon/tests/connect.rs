//! `ssh` that just works: a real OpenSSH client in the client namespace logs in to a real
//! `sshd` in the server namespace, whose tcp/22 portcullisd keeps closed behind a knock
//! door, with `ProxyCommand portcullis connect ...` (flags, or the host's client profile).
//! The same ssh without the ProxyCommand times out.
//!
//! sshd runs from the Debian openssh-server package with a config, host key and
//! authorized key made by the test in its temp dir; it is killed by PID at the end (and
//! by the lab's drop if the test fails). As non-root the tests print SKIPPED and return.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

const DOOR: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
seq_timeout = 5
open = ["tcp/22"]
open_for = 30
"#;

/// The daemon's lab plus an sshd in the server namespace and a client key.
struct SshLab {
    s: Server,
    sshd_pid: u32,
    key: PathBuf,
}

fn keygen(path: &Path) {
    let out = std::process::Command::new(tool("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "portcullis-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

impl SshLab {
    fn start(tag: &str) -> SshLab {
        let mut s = Server::start(tag, DOOR, &[]);
        let dir = s.dir.join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let host_key = dir.join("host_ed25519");
        let key = dir.join("id_ed25519");
        keygen(&host_key);
        keygen(&key);
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("id_ed25519.pub"), &auth).unwrap();
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port 22\nListenAddress 0.0.0.0\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {auth}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nLogLevel VERBOSE\n",
                hk = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                auth = auth.display(),
            ),
        )
        .unwrap();
        // Privilege separation directory, as Debian's sshd.service creates it.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log_path = dir.join("sshd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let server = s.lab.server.clone();
        let sshd = tool("sshd");
        let conf_s = conf.display().to_string();
        let pid = s
            .lab
            .spawn(&server, &[&sshd, "-D", "-e", "-f", &conf_s], Stdio::null(), Stdio::from(log))
            .unwrap()
            .id();
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("Server listening on 0.0.0.0 port 22")
        });
        assert!(ready, "sshd did not start:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
        SshLab { s, sshd_pid: pid, key }
    }

    fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.s.dir.join("ssh/sshd.log")).unwrap_or_default()
    }

    /// `ssh [extra options] root@SERVER4 COMMAND` from the client namespace, with
    /// `env` settings for the ProxyCommand. Returns the output and how long it took.
    fn ssh(&self, env: &[String], options: &[String], command: &str) -> (Output, Duration) {
        let ssh = tool("ssh");
        let key = self.key.display().to_string();
        let mut args: Vec<String> = vec!["env".into()];
        args.extend(env.iter().cloned());
        args.push(ssh);
        for o in [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ] {
            args.push(o.into());
        }
        args.push(key);
        args.extend(options.iter().cloned());
        args.push(format!("root@{}", lab::SERVER4));
        args.push(command.into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let out = self.s.lab.exec(&self.s.lab.client, &argv).unwrap();
        (out, start.elapsed())
    }

    /// Kill sshd and the daemon by PID.
    fn stop(mut self) {
        self.s.lab.kill(self.sshd_pid);
        self.s.kill9();
    }
}

fn assert_logged_in(l: &SshLab, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "logged-in-42",
        "ssh through the door failed ({:?}):\nstdout: {stdout}\nstderr: {}\nsshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        l.sshd_log()
    );
}

const COMMAND: &str = "echo logged-in-$((6*7))";

#[test]
fn ssh_with_proxycommand_knocks_and_logs_in_plain_ssh_times_out() {
    if !root_or_skip("ssh_with_proxycommand_knocks_and_logs_in_plain_ssh_times_out") {
        return;
    }
    let l = SshLab::start("ssh-flags");
    assert_eq!(l.s.probe(&l.s.lab.client, lab::SERVER4, 22), Probe::Filtered, "sshd hidden");

    let (out, took) = l.ssh(&[], &["-o".into(), "ConnectTimeout=2".into()], COMMAND);
    assert_eq!(out.status.code(), Some(255), "plain ssh must fail: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out"), "plain ssh should time out: {err}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(out.stdout.is_empty());

    let proxy = format!("ProxyCommand={} connect --knock 7000,8000:udp,9000 %h %p", client_bin());
    let (out, _) = l.ssh(&[], &["-o".into(), proxy, "-o".into(), "ConnectTimeout=10".into()], COMMAND);
    assert_logged_in(&l, &out);
    l.s.wait_log(&format!("{}: ssh: OPEN SESAME", lab::CLIENT4), 1);
    assert!(l.sshd_log().contains("Accepted publickey for root"), "{}", l.sshd_log());
    // Opened for the knocker only.
    assert_eq!(l.s.probe(&l.s.lab.other, lab::SERVER4_OTHER, 22), Probe::Filtered);
    l.stop();
}

#[test]
fn ssh_proxycommand_uses_the_client_profile() {
    if !root_or_skip("ssh_proxycommand_uses_the_client_profile") {
        return;
    }
    let l = SshLab::start("ssh-profile");
    let xdg = l.s.dir.join("xdg");
    std::fs::create_dir_all(xdg.join("portcullis")).unwrap();
    let conf = xdg.join("portcullis/client.toml");
    let env = [format!("XDG_CONFIG_HOME={}", xdg.display())];
    let proxy = format!("ProxyCommand={} connect %h %p", client_bin());

    // No profile for this host: connect refuses at once with a clear message, ssh fails fast.
    std::fs::write(
        &conf,
        "[host.elsewhere]\naddress = \"198.51.100.9\"\nmethod = \"knock\"\nsequence = [1, 2, 3]\n",
    )
    .unwrap();
    let (out, took) = l.ssh(&env, &["-o".into(), proxy.clone()], COMMAND);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no way to open \"192.0.2.1\"") && err.contains("client.toml"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(out.stdout.is_empty());

    std::fs::write(
        &conf,
        format!(
            "[host.myserver]\naddress = \"{}\"\nmethod = \"knock\"\nsequence = [7000, \"8000:udp\", 9000]\n\
             delay_ms = 20\nwait = \"5s\"\n",
            lab::SERVER4
        ),
    )
    .unwrap();
    // ssh's %h is the address after HostName; the profile answers to it.
    let (out, _) = l.ssh(&env, &["-o".into(), proxy, "-o".into(), "ConnectTimeout=10".into()], COMMAND);
    assert_logged_in(&l, &out);
    l.s.wait_log(&format!("{}: ssh: OPEN SESAME", lab::CLIENT4), 1);
    l.stop();
}
