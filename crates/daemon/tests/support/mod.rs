//! Shared helpers for the privileged integration tests: a [`Lab`] with a running
//! daemon, real peer tools (`knock`, `nmap`) run inside the namespaces, and waits that
//! poll instead of sleeping blindly.

#![allow(dead_code)]

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

// Each test binary uses a different part of this module.
#[allow(unused_imports)]
pub use portcullis_daemon::lab::{self, preflight::root_or_skip, wait_until, Baseline, Lab, Probe};

/// Path of a peer tool, or a panic telling how to install it: a test that reaches for
/// a tool has already passed [`root_or_skip`], and a missing tool is a set-up error,
/// on CI and off it.
pub fn tool(name: &str) -> String {
    match lab::preflight::find_tool(name) {
        Some(p) => p.display().to_string(),
        None => panic!(
            "{name} is not installed: apt-get install knockd nmap fwknop-client fwknop-server (see README)"
        ),
    }
}

pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullisd")
}

/// `portcullis keygen KIND` (`--server`, `--user`): (secret key, public key).
pub fn keygen(kind: &str) -> (String, String) {
    let out = std::process::Command::new(client_bin()).args(["keygen", kind]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let pick = |needle: &str| {
        text.lines().find(|l| l.contains(needle)).and_then(|l| l.rsplit(' ').next()).unwrap().to_string()
    };
    (pick("secret key"), pick("public key"))
}

/// `portcullisd check --config <config>`, run to completion.
pub fn daemon_check(config: &Path) -> std::process::Output {
    let run = std::process::Command::new(daemon_bin()).arg("check").arg("--config").arg(config).output();
    run.expect("running portcullisd check")
}

/// The `portcullis` client, built next to the daemon by `cargo build --workspace`.
pub fn client_bin() -> String {
    let p = Path::new(daemon_bin()).with_file_name("portcullis");
    assert!(p.exists(), "{} missing: run `cargo build --workspace` before the tests", p.display());
    p.display().to_string()
}

/// Pass `--privsep` (the default as root, so a no-op kept for compatibility); the
/// privsep tests turn it on.
#[allow(dead_code)]
pub static SPLIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A lab with the daemon running in the server namespace.
pub struct Server {
    pub lab: Lab,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub pid: u32,
    /// Run with `--no-privsep` (one process).
    pub one_process: bool,
    _listeners: Vec<TcpListener>,
}

impl Server {
    /// Start with `config` (the `[daemon]` state_dir is filled in) and TCP listeners on
    /// `listen` ports in the server namespace, so granted ports answer "open".
    pub fn start(tag: &str, config: &str, listen: &[u16]) -> Server {
        Server::start_with(tag, config, listen, &[])
    }

    /// Like [`Server::start`], first writing `files` (name, contents; mode 0600) next
    /// to the config, for key files and access.conf.
    pub fn start_with(tag: &str, config: &str, listen: &[u16], files: &[(&str, &str)]) -> Server {
        Server::start_mode(tag, config, listen, files, false)
    }

    /// Like [`Server::start_with`]; `one_process`: with `--no-privsep`.
    pub fn start_mode(
        tag: &str,
        config: &str,
        listen: &[u16],
        files: &[(&str, &str)],
        one_process: bool,
    ) -> Server {
        let lab = Lab::new(tag).expect("lab");
        let dir = std::env::temp_dir().join(format!("pc-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut listeners = Vec::new();
        for &p in listen {
            let l = lab.in_ns(&lab.server, move || TcpListener::bind(("::", p)).unwrap()).unwrap();
            // Accept and close every connection, so that many probes never fill the listen
            // queue (a full queue drops SYNs: it would look like a firewall drop).
            let drain = l.try_clone().unwrap();
            std::thread::spawn(move || drain.incoming().for_each(drop));
            listeners.push(l);
        }
        let mut s =
            Server { lab, log: dir.join("daemon.log"), dir, pid: 0, one_process, _listeners: listeners };
        s.spawn(config);
        s
    }

    /// (Re)start the daemon process with `config`.
    pub fn spawn(&mut self, config: &str) {
        let state = self.dir.join("state");
        let text = if config.contains("[daemon]") {
            config.replacen("[daemon]", &format!("[daemon]\nstate_dir = \"{}\"", state.display()), 1)
        } else {
            format!("[daemon]\nstate_dir = \"{}\"\n{config}", state.display())
        };
        let conf = self.dir.join("portcullis.toml");
        std::fs::write(&conf, text).unwrap();
        // It may hold fwknop keys inline: private, as the daemon requires.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let before = std::fs::read_to_string(&self.log).unwrap_or_default().matches("ready:").count();
        let server = self.lab.server.clone();
        let mut argv = vec![daemon_bin(), "run", "--config", conf.to_str().unwrap()];
        if self.one_process {
            argv.push("--no-privsep");
        } else if SPLIT.load(std::sync::atomic::Ordering::Relaxed) {
            argv.push("--privsep");
        }
        let child = self.lab.spawn(&server, &argv, Stdio::null(), Stdio::from(log)).unwrap();
        self.pid = child.id();
        let ok = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&self.log).unwrap_or_default().matches("ready:").count() > before
        });
        assert!(ok, "daemon not ready; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `portcullis grants --json ARGS` against this daemon's API socket with `token`;
    /// (success, the JSON it printed).
    pub fn grants_json(&self, token: &str, args: &[&str]) -> (bool, serde_json::Value) {
        let sock = self.dir.join("api.sock");
        let out = std::process::Command::new(client_bin())
            .args(["grants", "--json", "--socket", sock.to_str().unwrap()])
            .args(args)
            .env("PORTCULLIS_TOKEN", token)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!("grants {args:?}: not JSON ({e}): {text}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.success(), v)
    }

    /// Run `args` in the client namespace; panics with output if it fails.
    pub fn client(&self, args: &[&str]) {
        run_ok(&self.lab, &self.lab.client, args);
    }

    /// Run `args` in the other host's namespace.
    pub fn other(&self, args: &[&str]) {
        run_ok(&self.lab, &self.lab.other, args);
    }

    pub fn probe(&self, ns: &str, addr: &str, port: u16) -> Probe {
        let ip: IpAddr = addr.parse().unwrap();
        self.lab.probe(ns, ip, port, Duration::from_millis(600)).unwrap()
    }

    /// Wait (up to 2 s) until a probe from `ns` finds `addr:port` in state `want`.
    pub fn wait_probe(&self, ns: &str, addr: &str, port: u16, want: Probe) {
        let ok = wait_until(Duration::from_secs(2), || self.probe(ns, addr, port) == want);
        assert!(ok, "{addr}:{port} from {ns} never became {want:?}; daemon log:\n{}", self.log_text());
    }

    /// Wait (up to 2 s) until the daemon log contains `needle` at least `times` times.
    pub fn wait_log(&self, needle: &str, times: usize) {
        let ok = wait_until(Duration::from_secs(2), || self.log_text().matches(needle).count() >= times);
        assert!(ok, "daemon log never showed {needle:?} {times} time(s):\n{}", self.log_text());
    }

    /// nmap's view of one TCP port from `ns`: "open", "closed" or "filtered".
    pub fn nmap(&self, ns: &str, addr: &str, port: u16) -> String {
        let port_s = port.to_string();
        let mut args = vec![
            "nmap",
            "-Pn",
            "-n",
            "-sS",
            "-p",
            &port_s,
            "--max-retries",
            "1",
            "--max-rtt-timeout",
            "400ms",
            "-oG",
            "-",
        ];
        if addr.contains(':') {
            args.push("-6");
        }
        args.push(addr);
        let nmap = tool("nmap");
        args[0] = &nmap;
        let out = self.lab.exec(ns, &args).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let needle = format!("{port}/");
        let field = text
            .lines()
            .find_map(|l| l.split("Ports: ").nth(1))
            .and_then(|p| p.split(", ").find(|e| e.starts_with(&needle)))
            .unwrap_or_else(|| panic!("unexpected nmap output:\n{text}"));
        field.split('/').nth(1).unwrap_or("").to_string()
    }

    /// Kill the daemon with SIGKILL (by PID).
    pub fn kill9(&mut self) {
        self.lab.kill(self.pid);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run_ok(lab: &Lab, ns: &str, args: &[&str]) {
    let out = lab.exec(ns, args).unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed in {ns}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
