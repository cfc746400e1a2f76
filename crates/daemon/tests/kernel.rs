//! Kernel-only mode, end to end: `portcullisd generate --kernel ...` rulesets loaded in
//! the server namespace with NO daemon running, knocked by Debian's `knock` from the
//! client namespace. The right sequence opens the protected port for the knocker only;
//! a wrong order and a port sweep do not; the grant closes on time. Root required: as
//! non-root these fail under `CI=true`, and elsewhere print SKIPPED and return.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;

const DOOR: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
seq_timeout = "5s"
open = ["tcp/2222"]
open_for = "3s"
"#;

/// A lab whose server namespace runs only a kernel ruleset (and a listener on 2222).
struct Kernel {
    lab: Lab,
    dir: PathBuf,
    _listener: TcpListener,
}

impl Kernel {
    fn new(tag: &str, config: &str) -> Kernel {
        let lab = Lab::new(tag).expect("lab");
        let dir = std::env::temp_dir().join(format!("pc-kernel-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("portcullis.toml"), config).unwrap();
        let listener = lab.in_ns(&lab.server, || TcpListener::bind(("::", 2222)).unwrap()).unwrap();
        Kernel { lab, dir, _listener: listener }
    }

    /// `portcullisd generate --kernel KIND` into a file (pure: runs outside any namespace).
    fn generate(&self, kind: &str, extra: &[&str]) -> PathBuf {
        let out = self.dir.join(format!("ruleset.{kind}"));
        let conf = self.dir.join("portcullis.toml");
        let mut args = vec!["generate", "--kernel", kind, "--config", conf.to_str().unwrap()];
        args.extend_from_slice(&["--output", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let run = std::process::Command::new(daemon_bin()).args(&args).output().unwrap();
        assert!(run.status.success(), "generate failed: {}", String::from_utf8_lossy(&run.stderr));
        out
    }

    fn server(&self, args: &[&str]) {
        run_ok(&self.lab, &self.lab.server, args);
    }

    fn client(&self, args: &[&str]) {
        run_ok(&self.lab, &self.lab.client, args);
    }

    fn probe(&self, ns: &str, addr: &str) -> Probe {
        self.lab.probe(ns, addr.parse().unwrap(), 2222, Duration::from_millis(400)).unwrap()
    }

    /// Wait (up to `limit`) for `addr:2222` to look `want` from `ns`.
    fn wait_probe(&self, ns: &str, addr: &str, want: Probe, limit: Duration) -> bool {
        wait_until(limit, || self.probe(ns, addr) == want)
    }

    /// No portcullisd may run in the server namespace for "no daemon" to mean anything
    /// (other tests may run daemons in their own namespaces at the same time).
    fn assert_no_daemon(&self) {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata(format!("/run/netns/{}", self.lab.server)).unwrap().ino();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let p = entry.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim() != "portcullisd" {
                continue;
            }
            let in_ns = std::fs::metadata(p.join("ns/net")).is_ok_and(|m| m.ino() == ns);
            assert!(!in_ns, "portcullisd {} runs in the server namespace", p.display());
        }
    }

    /// The checks shared by both rulesets (IPv4).
    fn knock_checks(&self) {
        self.assert_no_daemon();
        let (c, o) = (self.lab.client.clone(), self.lab.other.clone());
        let knock = tool("knock");
        assert_eq!(self.probe(&c, lab::SERVER4), Probe::Filtered, "protected before knocking");

        // Wrong orders.
        self.client(&[&knock, "-d", "50", lab::SERVER4, "9000", "8000:udp", "7000"]);
        self.client(&[&knock, "-d", "50", lab::SERVER4, "7000", "8000:tcp", "9000"]);
        self.client(&[&knock, "-d", "50", lab::SERVER4, "7000", "9000", "8000:udp", "9000"]);
        assert!(
            !self.wait_probe(&c, lab::SERVER4, Probe::Open, Duration::from_millis(500)),
            "a wrong order opened the door"
        );
        // A sweep over every TCP knock port, in ascending order, and a UDP sweep.
        let nmap = tool("nmap");
        let sweep = |proto: &str| {
            self.client(&[
                &nmap,
                "-Pn",
                "-n",
                proto,
                "-r",
                "-p",
                "6990-9010",
                "--max-retries",
                "0",
                "--min-rate",
                "2000",
                lab::SERVER4,
            ])
        };
        sweep("-sS");
        sweep("-sU");
        assert!(
            !self.wait_probe(&c, lab::SERVER4, Probe::Open, Duration::from_millis(500)),
            "a port sweep opened the door"
        );

        // The right sequence from knockd's own client.
        self.client(&[&knock, "-d", "50", lab::SERVER4, "7000", "8000:udp", "9000"]);
        let knocked = Instant::now();
        assert!(self.wait_probe(&c, lab::SERVER4, Probe::Open, Duration::from_secs(2)), "knock did not open");
        assert_eq!(self.probe(&o, lab::SERVER4_OTHER), Probe::Filtered, "open for the knocker only");

        // open_for = 3 s: closed for new connections soon after, and not before.
        assert!(self.wait_probe(&c, lab::SERVER4, Probe::Filtered, Duration::from_secs(6)), "never closed");
        let took = knocked.elapsed();
        assert!(took >= Duration::from_millis(2500), "closed too early: {took:?}");
        assert!(took <= Duration::from_millis(5000), "closed too late: {took:?}");
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn nftables_ruleset_knocks_without_a_daemon() {
    if !root_or_skip("nftables_ruleset_knocks_without_a_daemon") {
        return;
    }
    let k = Kernel::new("knft", DOOR);
    let rules = k.generate("nftables", &[]);
    k.server(&["nft", "-f", rules.to_str().unwrap()]);
    // Reloading is atomic and harmless.
    k.server(&["nft", "-f", rules.to_str().unwrap()]);
    k.knock_checks();

    // IPv6 too, with its own state.
    let knock = tool("knock");
    let c = k.lab.client.clone();
    assert_eq!(k.probe(&c, lab::SERVER6), Probe::Filtered);
    k.client(&[&knock, "-6", "-d", "50", lab::SERVER6, "7000", "8000:udp", "9000"]);
    assert!(k.wait_probe(&c, lab::SERVER6, Probe::Open, Duration::from_secs(2)), "IPv6 knock did not open");
}

#[test]
fn iptables_recent_ruleset_knocks_without_a_daemon() {
    if !root_or_skip("iptables_recent_ruleset_knocks_without_a_daemon") {
        return;
    }
    let k = Kernel::new("kipt", DOOR);
    let rules = k.generate("iptables", &[]);
    let text = std::fs::read_to_string(&rules).unwrap();
    let restore = tool("iptables-restore");
    let iptables = tool("iptables");
    for _ in 0..2 {
        let out =
            k.lab.exec(&k.lab.server, &["sh", "-c", &format!("{restore} --noflush < {}", rules.display())]);
        let out = out.unwrap();
        assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    }
    k.server(&[&iptables, "-I", "INPUT", "1", "-j", "PORTCULLIS-KNOCK"]);
    k.knock_checks();

    // IPv6: the ip6tables ruleset, its own lists.
    let rules6 = k.generate("ip6tables", &[]);
    let restore6 = tool("ip6tables-restore");
    let out =
        k.lab.exec(&k.lab.server, &["sh", "-c", &format!("{restore6} --noflush < {}", rules6.display())]);
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    k.server(&[&tool("ip6tables"), "-I", "INPUT", "1", "-j", "PORTCULLIS-KNOCK"]);
    let c = k.lab.client.clone();
    assert_eq!(k.probe(&c, lab::SERVER6), Probe::Filtered);
    let knock = tool("knock");
    k.client(&[&knock, "-6", "-d", "50", lab::SERVER6, "9000", "8000:udp", "7000"]);
    assert!(!k.wait_probe(&c, lab::SERVER6, Probe::Open, Duration::from_millis(500)), "wrong order opened");
    k.client(&[&knock, "-6", "-d", "50", lab::SERVER6, "7000", "8000:udp", "9000"]);
    assert!(k.wait_probe(&c, lab::SERVER6, Probe::Open, Duration::from_secs(2)), "IPv6 knock did not open");
}

/// `portcullis sequence` for the rotating door below at Unix time `at`.
fn sequence_at(secret: &std::path::Path, at: u64) -> Vec<String> {
    let out = std::process::Command::new(client_bin())
        .args(["sequence", "--algorithm", "hmac-sha256", "--secret-file"])
        .arg(secret)
        .args(["--range", "20000-20999", "--count", "3", "--step", "2s", "--at", &format!("@{at}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "portcullis sequence: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

#[test]
fn nftables_rotating_door_follows_the_steps_and_burns_used_sequences() {
    if !root_or_skip("nftables_rotating_door_follows_the_steps_and_burns_used_sequences") {
        return;
    }
    let conf = r#"
[[door]]
name = "rot"
rotating = { algorithm = "hmac-sha256", secret_file = "rot.secret", range = "20000-20999", count = 3, step = "2s" }
seq_timeout = "5s"
open = ["tcp/2222"]
open_for = "30s"
"#;
    let k = Kernel::new("krot", conf);
    let secret = k.dir.join("rot.secret");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&secret)
            .unwrap();
        std::io::Write::write_all(&mut f, b"kernel rotating test secret\n").unwrap();
    }
    // Fixed times (the ruleset follows --at, not the clock): steps 1000 and 1001.
    let (t0, t1) = (2000u64, 2002u64);
    let knock = tool("knock");
    let (c, o) = (k.lab.client.clone(), k.lab.other.clone());
    let knock_from = |ns: &str, dst: &str, seq: &[String]| {
        let mut args = vec![knock.as_str(), "-d", "50", dst];
        args.extend(seq.iter().map(String::as_str));
        run_ok(&k.lab, ns, &args);
    };
    let load = |at: u64| {
        let rules = k.generate("nftables", &["--at", &format!("@{at}")]);
        k.server(&["nft", "-f", rules.to_str().unwrap()]);
    };

    load(t0);
    let older = sequence_at(&secret, t0 - 2 * 2); // step 998: two steps back
    knock_from(&c, lab::SERVER4, &older);
    assert!(
        !k.wait_probe(&c, lab::SERVER4, Probe::Open, Duration::from_millis(500)),
        "a sequence two steps old opened the door"
    );
    let previous = sequence_at(&secret, t0 - 2); // step 999
    knock_from(&c, lab::SERVER4, &previous);
    assert!(
        k.wait_probe(&c, lab::SERVER4, Probe::Open, Duration::from_secs(2)),
        "previous step did not open"
    );

    // The current step's sequence, sniffed and replayed from another host after the
    // client used it: refused.
    let current = sequence_at(&secret, t0);
    knock_from(&c, lab::SERVER4, &current);
    knock_from(&o, lab::SERVER4_OTHER, &current);
    assert!(
        !k.wait_probe(&o, lab::SERVER4_OTHER, Probe::Open, Duration::from_millis(500)),
        "a burnt sequence opened the door for another source"
    );

    // Next step: the ruleset is regenerated in place (state kept): the client's grant
    // survives, the new step's sequence opens for the other host, the burnt one
    // (now the previous step) still does not.
    load(t1);
    assert_eq!(k.probe(&c, lab::SERVER4), Probe::Open, "a reload closed a live grant");
    knock_from(&o, lab::SERVER4_OTHER, &current);
    assert!(
        !k.wait_probe(&o, lab::SERVER4_OTHER, Probe::Open, Duration::from_millis(500)),
        "a burnt sequence opened after the step changed"
    );
    knock_from(&o, lab::SERVER4_OTHER, &sequence_at(&secret, t1));
    assert!(
        k.wait_probe(&o, lab::SERVER4_OTHER, Probe::Open, Duration::from_secs(2)),
        "the new step's sequence did not open"
    );
}

#[test]
fn generate_writes_units_and_refuses_what_the_kernel_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.path().join("s"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"units test secret\n").unwrap();
    }
    let conf = dir.path().join("p.toml");
    std::fs::write(
        &conf,
        r#"
[[door]]
name = "rot"
rotating = { algorithm = "md5-hourly", secret_file = "s", range = "10000-10999", count = 4 }
open = ["tcp/22"]

[[door]]
name = "cmd"
sequence = [1000, 2000, 3000]
start_command = "logger %IP%"
"#,
    )
    .unwrap();
    let gen = |args: &[&str]| {
        std::process::Command::new(daemon_bin())
            .args(["generate", "--config", conf.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let out = gen(&["--kernel", "nftables", "--systemd-units", units.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("door cmd: skipped: start/stop commands need the daemon"), "{stderr}");
    let timer = std::fs::read_to_string(units.join("portcullis-kernel.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 00/1:00:00 UTC"), "md5-hourly rotates hourly:\n{timer}");
    // systemd itself reads the calendar as hourly, in UTC.
    match lab::preflight::find_tool("systemd-analyze") {
        Some(sa) => {
            let out = std::process::Command::new(sa)
                .args(["calendar", "--iterations=2"])
                .arg(timer.lines().find_map(|l| l.strip_prefix("OnCalendar=")).unwrap())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            let elapses: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("elapse:") || l.contains("Iter."))
                .filter(|l| l.ends_with(":00:00 UTC"))
                .collect();
            assert_eq!(elapses.len(), 2, "{text}");
        }
        None => lab::preflight::cannot_run("calendar check", "systemd-analyze is not installed"),
    }
    let service = std::fs::read_to_string(units.join("portcullis-kernel.service")).unwrap();
    assert!(service.contains(&format!("--config {}", std::fs::canonicalize(&conf).unwrap().display())));
    let ruleset = String::from_utf8_lossy(&out.stdout);
    assert!(ruleset.contains("What kernel mode cannot do") && ruleset.contains("no SPA"), "{ruleset}");

    // iptables cannot rotate, and the other door runs commands: nothing left, exit 2.
    let out = gen(&["--kernel", "iptables"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no door can run in kernel mode"));
    assert!(out.stdout.is_empty());
}
