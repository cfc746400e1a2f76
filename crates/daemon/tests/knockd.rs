//! knockd drop-in, end to end: unchanged knockd.conf files run by portcullisd
//! against real iptables in the server namespace and opened by Debian's `knock`; the
//! `portcullis` client opening a real knockd; the iptables backend with both variants;
//! one-time sequences over IPv4 and IPv6; commands that hang or fail.
//!
//! Every firewall change happens inside the lab's namespaces. The daemon runs in a
//! private mount namespace too when a config names paths that must not touch the host
//! (`/var/log/knockd.log` is bind-mounted from the test directory) or that Debian lacks
//! (`/usr/bin/iptables`, provided by a read-only overlay on `/usr/bin` holding a symlink
//! to `/usr/sbin/iptables`). Root required: as non-root they fail under `CI=true`, and
//! elsewhere print SKIPPED and return.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// A lab plus a daemon (portcullisd or knockd) started with explicit arguments.
struct Host {
    lab: Lab,
    dir: PathBuf,
    log: PathBuf,
    pid: u32,
}

impl Host {
    fn new(tag: &str) -> Host {
        let lab = Lab::new(tag).expect("lab");
        let dir = std::env::temp_dir().join(format!("pc-kd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("varlog")).unwrap();
        Host { lab, log: dir.join("daemon.log"), dir, pid: 0 }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `iptables ARGS` (the system's default variant, as `/sbin/iptables` in the
    /// configs) in the server namespace; panics on failure.
    fn server(&self, args: &[&str]) -> String {
        let out = self.lab.exec(&self.lab.server, args).unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The classic knockd how-to firewall: drop everything new except what rules add.
    fn default_drop_firewall(&self) {
        self.lab.iptables_baseline(&self.lab.server, Baseline::DropAll).unwrap();
    }

    /// Start portcullisd on `config` (state in the test dir, log to stderr), inside a
    /// private mount namespace where `/var/log` is the test's and `/usr/bin/iptables`
    /// exists. Waits until it is ready.
    fn start_portcullisd(&mut self, config: &Path) {
        let extra = self.dir.join("usrbin-extra");
        let _ = std::fs::create_dir_all(&extra);
        let _ = std::os::unix::fs::symlink("/usr/sbin/iptables", extra.join("iptables"));
        let script = format!(
            "mount --bind {varlog} /var/log && \
             mount -t overlay overlay -o lowerdir={extra}:/usr/bin /usr/bin && \
             exec {bin} run --config {conf} --state-dir {state} --log stderr",
            varlog = self.dir.join("varlog").display(),
            extra = extra.display(),
            bin = daemon_bin(),
            conf = config.display(),
            state = self.dir.join("state").display(),
        );
        self.spawn(&["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", &script], "ready:");
    }

    fn spawn(&mut self, args: &[&str], ready: &str) {
        let before = self.log_text().matches(ready).count();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let server = self.lab.server.clone();
        let child =
            self.lab.spawn(&server, args, Stdio::from(log.try_clone().unwrap()), Stdio::from(log)).unwrap();
        self.pid = child.id();
        let ok = wait_until(Duration::from_secs(10), || self.log_text().matches(ready).count() > before);
        assert!(ok, "not ready; log:\n{}", self.log_text());
    }

    fn kill9(&mut self) {
        self.lab.kill(self.pid);
    }

    fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log_text().contains(needle))
    }

    fn probe(&self, ns: &str, addr: &str, port: u16) -> Probe {
        self.lab.probe(ns, addr.parse().unwrap(), port, Duration::from_millis(500)).unwrap()
    }

    fn listen(&self, port: u16) -> std::net::TcpListener {
        self.lab.in_ns(&self.lab.server, move || std::net::TcpListener::bind(("::", port)).unwrap()).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn knock(h: &Host, args: &[&str]) {
    let k = tool("knock");
    let mut full = vec![k.as_str(), "-d", "100"];
    full.extend_from_slice(args);
    run_ok(&h.lab, &h.lab.client, &full);
}

const HOWTO_OPEN_CLOSE: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/knockd/howto-open-close.conf"));

#[test]
fn howto_open_and_close_doors_with_debian_knock() {
    if !root_or_skip("howto_open_and_close_doors_with_debian_knock") {
        return;
    }
    let mut h = Host::new("howto1");
    h.default_drop_firewall();
    let _ssh = h.listen(22);
    let conf = h.write("knockd.conf", HOWTO_OPEN_CLOSE);
    h.start_portcullisd(&conf);
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Filtered);

    knock(&h, &[lab::SERVER4, "7000", "8000", "9000"]);
    assert!(h.wait_log("openSSH: start command done", Duration::from_secs(5)), "{}", h.log_text());
    let rule = format!("-A INPUT -s {}/32 -p tcp -m tcp --dport 22 -j ACCEPT", lab::CLIENT4);
    assert!(h.server(&["iptables", "-S", "INPUT"]).contains(&rule));
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Open, "open for the knocker");
    assert_eq!(h.probe(&h.lab.other, lab::SERVER4_OTHER, 22), Probe::Filtered, "not for others");

    knock(&h, &[lab::SERVER4, "9000", "8000", "7000"]);
    assert!(h.wait_log("closeSSH: start command done", Duration::from_secs(5)), "{}", h.log_text());
    assert!(!h.server(&["iptables", "-S", "INPUT"]).contains(&rule));
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Filtered, "closed again");
    let log = h.log_text();
    assert!(log.contains(&format!("{}: openSSH: OPEN SESAME", lab::CLIENT4)), "{log}");
}

const HOWTO_OPENCLOSE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/knockd/howto-openclose-cmd-timeout.conf"
));

#[test]
fn howto_cmd_timeout_closes_even_across_a_kill_9_restart() {
    if !root_or_skip("howto_cmd_timeout_closes_even_across_a_kill_9_restart") {
        return;
    }
    let mut h = Host::new("howto2");
    h.default_drop_firewall();
    let _ssh = h.listen(22);
    let conf = h.write("knockd.conf", HOWTO_OPENCLOSE);
    h.start_portcullisd(&conf);
    knock(&h, &[lab::SERVER4, "2222:udp", "3333:tcp", "4444:udp"]);
    let knocked = Instant::now();
    assert!(h.wait_log("opencloseSSH: start command done", Duration::from_secs(5)), "{}", h.log_text());
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Open);
    // LogFile = /var/log/knockd.log, seen through the bind mount: the test's own file.
    let file_log = std::fs::read_to_string(h.dir.join("varlog/knockd.log")).unwrap();
    assert!(file_log.contains("opencloseSSH: OPEN SESAME"), "{file_log}");

    // Kill -9 between start and stop; the restarted daemon still runs the stop on time.
    h.kill9();
    let pending = std::fs::read_to_string(h.dir.join("state/pending-stops.toml")).unwrap();
    assert!(pending.contains(lab::CLIENT4), "{pending}");
    h.start_portcullisd(&conf);
    assert!(h.wait_log("1 pending stop command(s)", Duration::from_secs(2)), "{}", h.log_text());
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Open, "restart does not close early");
    assert!(h.wait_log("opencloseSSH: stop command done", Duration::from_secs(12)), "{}", h.log_text());
    let closed = knocked.elapsed();
    assert!(closed >= Duration::from_secs(9) && closed <= Duration::from_secs(13), "closed after {closed:?}");
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Filtered);
    assert!(!h.server(&["iptables", "-S", "INPUT"]).contains("--dport 22"));
}

const HOWTO_USER_CHAIN: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/knockd/howto-user-chain.conf"));

#[test]
fn howto_syn_ack_flags_and_a_user_chain() {
    if !root_or_skip("howto_syn_ack_flags_and_a_user_chain") {
        return;
    }
    let mut h = Host::new("howto3");
    h.default_drop_firewall();
    // The Arch wiki "simple stateful firewall" the how-to builds on: new TCP goes to chain TCP.
    h.server(&["iptables", "-N", "TCP"]);
    h.server(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--syn",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "TCP",
    ]);
    let _ssh = h.listen(22);
    let conf = h.write("knockd.conf", HOWTO_USER_CHAIN);
    h.start_portcullisd(&conf);

    // As with knockd, a plain knock (SYN only) does not match tcpflags = syn,ack.
    knock(&h, &[lab::SERVER4, "8881", "7777", "9991"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!h.log_text().contains("OPEN SESAME"), "{}", h.log_text());
    // SYN+ACK knocks, one port at a time, in order.
    let nmap = tool("nmap");
    for port in ["8881", "7777", "9991"] {
        run_ok(
            &h.lab,
            &h.lab.client,
            &[&nmap, "-Pn", "-n", "--scanflags", "SYNACK", "-p", port, "--max-retries", "0", lab::SERVER4],
        );
    }
    assert!(h.wait_log("SSH: start command done", Duration::from_secs(5)), "{}", h.log_text());
    assert!(h.server(&["iptables", "-S", "TCP"]).contains(&format!("-A TCP -s {}/32", lab::CLIENT4)));
    assert_eq!(h.probe(&h.lab.client, lab::SERVER4, 22), Probe::Open);
    assert_eq!(h.probe(&h.lab.other, lab::SERVER4_OTHER, 22), Probe::Filtered);
}

#[test]
fn portcullis_knock_opens_a_real_knockd() {
    if !root_or_skip("portcullis_knock_opens_a_real_knockd") {
        return;
    }
    let mut h = Host::new("realknockd");
    let opened = h.dir.join("opened");
    let conf = h.write(
        "knockd.conf",
        &format!(
            "[options]\n  LogFile = {}\n[door]\n  sequence = 7000,8000:udp,9000\n  seq_timeout = 5\n  \
             tcpflags = syn\n  command = /bin/sh -c 'echo %IP% >> {}'\n",
            h.log.display(),
            opened.display()
        ),
    );
    let pidfile = h.dir.join("knockd.pid");
    let knockd = tool("knockd");
    h.spawn(
        &[&knockd, "-i", "vcli", "-c", conf.to_str().unwrap(), "-p", pidfile.to_str().unwrap()],
        "starting up",
    );
    // knockd's pcap filter is compiled at start-up; give it a moment to attach.
    std::thread::sleep(Duration::from_millis(300));
    let c = client_bin();
    run_ok(&h.lab, &h.lab.client, &[&c, "knock", "-d", "100", lab::SERVER4, "7000", "8000:udp", "9000"]);
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&opened)
            .is_ok_and(|t| t.contains(lab::CLIENT4))),
        "knockd log:\n{}",
        h.log_text()
    );
}

fn iptables_backend(variant: &str) {
    let conf = format!(
        "[daemon]\nbackend = \"{variant}\"\n\n[[door]]\nname = \"ssh\"\nsequence = [7000, \"8000:udp\", 9000]\n\
         seq_timeout = 5\ntcp_flags = \"syn\"\nopen = [\"tcp/2222\"]\nopen_for = 3\n"
    );
    let mut s = Server::start(&format!("ipt-{variant}"), &conf, &[2222]);
    let save = format!("{variant}-save");
    let rules = || String::from_utf8_lossy(&s.lab.exec(&s.lab.server, &[&save]).unwrap().stdout).into_owned();
    let ipset = |set: &str| {
        String::from_utf8_lossy(&s.lab.exec(&s.lab.server, &["ipset", "list", set]).unwrap().stdout)
            .into_owned()
    };
    assert!(rules().contains("-A INPUT -j PORTCULLIS"), "{}", rules());
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered, "protected");
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2223), Probe::Closed, "others untouched");
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "8000:udp", "9000"]);
    let knocked = Instant::now();
    assert!(wait_until(Duration::from_secs(2), || s.probe(&s.lab.client, lab::SERVER4, 2222) == Probe::Open));
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered);
    assert!(ipset("portcullis4").contains(&format!("{},tcp:2222", lab::CLIENT4)), "{}", ipset("portcullis4"));
    assert!(s.log_text().contains(&format!("via {variant}")), "{}", s.log_text());
    // The kernel closes it (ipset timeout).
    assert!(
        wait_until(Duration::from_secs(6), || s.probe(&s.lab.client, lab::SERVER4, 2222) == Probe::Filtered)
    );
    let closed = knocked.elapsed();
    assert!(closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5), "after {closed:?}");
    assert!(!ipset("portcullis4").contains(lab::CLIENT4), "{}", ipset("portcullis4"));

    // IPv6, then kill -9: the grant still closes on time with no daemon at all.
    let knock = tool("knock");
    s.client(&[&knock, "-6", "-d", "20", lab::SERVER6, "7000", "8000:udp", "9000"]);
    let knocked = Instant::now();
    assert!(wait_until(Duration::from_secs(2), || s.probe(&s.lab.client, lab::SERVER6, 2222) == Probe::Open));
    assert_eq!(
        s.probe(&s.lab.client, lab::SERVER4, 2222),
        Probe::Filtered,
        "the grant is for the IPv6 source"
    );
    s.kill9();
    assert!(
        wait_until(Duration::from_secs(6), || s.probe(&s.lab.client, lab::SERVER6, 2222) == Probe::Filtered)
    );
    let closed = knocked.elapsed();
    assert!(closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5), "after {closed:?}");
    s.spawn(&conf);
    let v6 = String::from_utf8_lossy(
        &s.lab.exec(&s.lab.server, &[&save.replace("iptables", "ip6tables")]).unwrap().stdout,
    )
    .into_owned();
    assert_eq!(v6.matches("-A INPUT -j PORTCULLIS").count(), 1, "{v6}");
    assert_eq!(s.probe(&s.lab.client, lab::SERVER6, 2222), Probe::Filtered);
}

#[test]
fn iptables_backend_legacy_end_to_end() {
    if root_or_skip("iptables_backend_legacy_end_to_end") {
        iptables_backend("iptables-legacy");
    }
}

#[test]
fn iptables_backend_nft_end_to_end() {
    if root_or_skip("iptables_backend_nft_end_to_end") {
        iptables_backend("iptables-nft");
    }
}

#[test]
fn one_time_sequences_are_consumed_in_order_over_ipv4_and_ipv6() {
    if !root_or_skip("one_time_sequences_are_consumed_in_order_over_ipv4_and_ipv6") {
        return;
    }
    let mut h = Host::new("onetime");
    let seqs = h.write(
        "otp",
        "# one per line, leading space kept\n 7100,7200:udp,7300\n 7400,7500\n 7600:udp,7700\n",
    );
    let opened = h.dir.join("opened");
    let conf = h.write(
        "knockd.conf",
        &format!(
            "[options]\n  UseSyslog\n[otp]\n  one_time_sequences = {}\n  tcpflags = syn\n  \
             start_command = echo v4 %IP% >> {o}\n  start_command_6 = echo v6 %IP% >> {o}\n",
            seqs.display(),
            o = opened.display()
        ),
    );
    h.start_portcullisd(&conf);
    let opened_text = || std::fs::read_to_string(&opened).unwrap_or_default();
    let c = client_bin();
    let pk = |args: &[&str]| {
        let mut full = vec![c.as_str(), "knock", "-d", "50"];
        full.extend_from_slice(args);
        run_ok(&h.lab, &h.lab.client, &full);
    };
    pk(&[lab::SERVER4, "7100", "7200:udp", "7300"]);
    assert!(wait_until(Duration::from_secs(3), || opened_text().lines().count() == 1), "{}", h.log_text());
    // Used up: the same sequence again does nothing.
    pk(&[lab::SERVER4, "7100", "7200:udp", "7300"]);
    // The next one works over IPv6 (knockd only re-armed its IPv4 filter).
    let knock = tool("knock");
    run_ok(&h.lab, &h.lab.client, &[&knock, "-6", "-d", "50", lab::SERVER6, "7400", "7500"]);
    assert!(wait_until(Duration::from_secs(3), || opened_text().lines().count() == 2), "{}", h.log_text());
    pk(&[lab::SERVER4, "7600:udp", "7700"]);
    assert!(wait_until(Duration::from_secs(3), || opened_text().lines().count() == 3), "{}", h.log_text());
    assert_eq!(opened_text(), format!("v4 {c4}\nv6 {c6}\nv4 {c4}\n", c4 = lab::CLIENT4, c6 = lab::CLIENT6));
    assert_eq!(
        std::fs::read_to_string(&seqs).unwrap(),
        "# one per line, leading space kept\n#7100,7200:udp,7300\n#7400,7500\n#7600:udp,7700\n"
    );
    assert!(h.wait_log("used up; door disabled", Duration::from_secs(1)), "{}", h.log_text());
}

#[test]
fn hung_and_failing_commands_are_logged_and_never_block_knocks() {
    if !root_or_skip("hung_and_failing_commands_are_logged_and_never_block_knocks") {
        return;
    }
    let mut h = Host::new("hung");
    let ok = h.dir.join("ok");
    let conf = h.write(
        "portcullis.toml",
        &format!(
            "[daemon]\nbackend = \"none\"\ncommand_time_limit = \"1s\"\n\n\
             [[door]]\nname = \"hang\"\nsequence = [7100, 7200, 7300]\nstart_command = \"sleep 600\"\n\n\
             [[door]]\nname = \"fail\"\nsequence = [7400, 7500, 7600]\n\
             start_command = \"echo no such chain >&2; exit 3\"\n\n\
             [[door]]\nname = \"ok\"\nsequence = [7700, 7800, 7900]\n\
             start_command = [\"/bin/sh\", \"-c\", \"echo \\\"$0\\\" >> {}\", \"%IP%\"]\n",
            ok.display()
        ),
    );
    h.start_portcullisd(&conf);
    let c = client_bin();
    let pk = |ports: &[&str]| {
        let mut full = vec![c.as_str(), "knock", "-d", "20", lab::SERVER4];
        full.extend_from_slice(ports);
        run_ok(&h.lab, &h.lab.client, &full);
    };
    let t = Instant::now();
    pk(&["7100", "7200", "7300"]);
    pk(&["7400", "7500", "7600"]);
    pk(&["7700", "7800", "7900"]);
    assert!(
        wait_until(Duration::from_secs(2), || std::fs::read_to_string(&ok)
            .is_ok_and(|x| x.contains(lab::CLIENT4))),
        "{}",
        h.log_text()
    );
    assert!(t.elapsed() < Duration::from_secs(2), "blocked for {:?}", t.elapsed());
    assert!(h.wait_log(
        "fail: start command failed (exit status: 3); stderr: \"no such chain\"",
        Duration::from_secs(2)
    ));
    assert!(h.wait_log("hang: start command killed after 1", Duration::from_secs(3)), "{}", h.log_text());
    // Still alive and still opening.
    pk(&["7700", "7800", "7900"]);
    assert!(
        h.wait_log("ok: already open", Duration::from_secs(2))
            || h.log_text().matches("ok: OPEN SESAME").count() == 2
    );
    assert!(h.lab.exec(&h.lab.server, &["kill", "-0", &h.pid.to_string()]).unwrap().status.success());
}

#[test]
fn convert_and_check_read_knockd_conf() {
    let dir = std::env::temp_dir().join(format!("pc-kd-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("knockd.conf");
    std::fs::write(&conf, HOWTO_OPENCLOSE).unwrap();
    let out =
        std::process::Command::new(daemon_bin()).args(["convert", conf.to_str().unwrap()]).output().unwrap();
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(toml.contains("sequence = [\"2222:udp\", \"3333:tcp\", \"4444:udp\"]"), "{toml}");
    assert!(toml.contains("stop_command = \"/usr/sbin/iptables -D INPUT"), "{toml}");
    let native = dir.join("converted.toml");
    std::fs::write(&native, &toml).unwrap();
    for file in [&conf, &native] {
        let out = daemon_check(file);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("stop after 10s: IPv4 sh -c \"/usr/sbin/iptables -D INPUT"), "{text}");
    }
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "[options]\n  UseSyslog\n[door]\n  sequence = 7000,99999\n  command = true\n")
        .unwrap();
    let out = daemon_check(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.conf:4:") && err.contains("99999"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
