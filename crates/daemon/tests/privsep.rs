//! Privilege separation, end to end: who holds what while the daemon runs, what the
//! privileged part refuses when spoken to directly over the unprivileged part's own
//! socket, and what happens when either part is killed.

mod support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use portcullis_daemon::privsep::codec::{self, Answer, Op, Reply, Request, WireGrant, WireKey, VERSION};
use portcullis_daemon::privsep::sys::{self, Recv};
use portcullis_proto::Service;
use support::*;

const CONF: &str = "[[door]]\nname = \"ssh\"\nsequence = [7000, \"8000:udp\", 9000]\nseq_timeout = 5\n\
                    open = [\"tcp/2222\"]\nopen_for = 3\n";

const CAP_NET_ADMIN: u64 = 1 << 12;

fn status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in\n{status}"))
}

fn caps(status: &str, name: &str) -> u64 {
    u64::from_str_radix(&field(status, name), 16).unwrap()
}

/// The daemon's unprivileged part: its child.
fn child_of(pid: u32) -> u32 {
    let found = wait_until(Duration::from_secs(2), || find_child(pid).is_some());
    assert!(found, "no child of {pid}");
    find_child(pid).unwrap()
}

fn find_child(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let p: u32 = e.file_name().to_str()?.parse().ok()?;
        (field_opt(&status(p), "PPid")? == pid.to_string()).then_some(p)
    })
}

fn field_opt(status: &str, name: &str) -> Option<String> {
    status.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(|v| v.trim().to_string())
}

/// Socket inodes a process holds.
fn socket_inodes(pid: u32) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else { continue };
        let l = link.to_string_lossy();
        if let Some(ino) = l.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            out.push((e.file_name().to_str().unwrap().parse().unwrap(), ino.parse().unwrap()));
        }
    }
    out
}

/// Inodes of the packet sockets in `pid`'s network namespace.
fn packet_inodes(pid: u32) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/packet")).unwrap();
    text.lines().skip(1).filter_map(|l| l.split_whitespace().last()?.parse().ok()).collect()
}

/// The fd number of `pid`'s SOCK_SEQPACKET unix socket (its end of the pair).
fn seqpacket_fd(pid: u32) -> i32 {
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    let seqpacket: Vec<u64> = unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"0005")).then(|| f.get(6)?.parse().ok()).flatten()
        })
        .collect();
    let fds: Vec<i32> =
        socket_inodes(pid).into_iter().filter(|(_, ino)| seqpacket.contains(ino)).map(|(fd, _)| fd).collect();
    assert_eq!(fds.len(), 1, "expected one seqpacket socket in {pid}: {fds:?}");
    fds[0]
}

/// A duplicate of `fd` of process `pid` (pidfd_getfd): the test speaks on the
/// unprivileged part's own end of the socket, as a compromised unprivileged part would.
#[allow(unsafe_code)]
fn steal_fd(pid: u32, fd: i32) -> OwnedFd {
    // SAFETY: plain syscalls with integer arguments; the returned descriptors are new
    // and owned by nobody else in this process.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let dup = libc::syscall(libc::SYS_pidfd_getfd, std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd, 0);
        assert!(dup >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(dup as i32)
    }
}

fn exchange(fd: &OwnedFd, bytes: &[u8]) -> Reply {
    sys::send_msg(fd, bytes).unwrap();
    let mut buf = vec![0u8; codec::MAX_REPLY + 1];
    match sys::recv_msg(fd, &mut buf, Some(Duration::from_secs(5))).unwrap() {
        Recv::Message(n) => codec::decode_reply(&buf[..n]).unwrap(),
        r => panic!("no reply: {r:?}"),
    }
}

fn request(seq: u64, op: Op) -> Vec<u8> {
    codec::encode(&Request { v: VERSION, seq, op })
}

fn refused(r: &Reply) -> String {
    match &r.answer {
        Answer::Refused { reason } => reason.clone(),
        a => panic!("expected a refusal, got {a:?}"),
    }
}

fn gone_or_zombie(pid: u32) -> bool {
    let s = status(pid);
    s.is_empty() || field(&s, "State").starts_with('Z')
}

fn knock(s: &Server) {
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "8000:udp", "9000"]);
}

#[test]
fn parts_hold_only_what_they_need() {
    SPLIT.store(true, std::sync::atomic::Ordering::Relaxed);
    if !root_or_skip("parts_hold_only_what_they_need") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pc-test-psids-{}", std::process::id()));
    let conf = format!(
        "{CONF}\n[api]\nsocket = \"{}\"\ntokens_file = \"{}\"\n",
        dir.join("api.sock").display(),
        dir.join("tokens").display()
    );
    let s = Server::start_with(
        "psids",
        &conf,
        &[2222],
        &[("tokens", "admin 0123456789abcdef0123456789abcdef\n")],
    );
    let parent = s.pid;
    let child = child_of(parent);
    let (ps, cs) = (status(parent), status(child));
    // Capabilities are per thread: every thread of the privileged part (firewall
    // watcher included) holds CAP_NET_ADMIN only, every thread of the other part nothing.
    for (pid, want) in [(parent, CAP_NET_ADMIN), (child, 0)] {
        let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().collect();
        assert!(pid == child || tasks.len() > 1, "the privileged part runs its watcher thread");
        for t in tasks {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            if st.is_empty() {
                continue;
            }
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                assert_eq!(caps(&st, set), want, "{set} of thread {:?} of {pid}:\n{st}", t.file_name());
            }
            assert_eq!(field(&st, "Seccomp"), "2", "thread {:?} of {pid} unfiltered", t.file_name());
        }
    }

    // The unprivileged part: not root, nothing in any capability set, no_new_privs.
    for uid in field(&cs, "Uid").split_whitespace().chain(field(&cs, "Gid").split_whitespace()) {
        assert_ne!(uid, "0", "unprivileged part ids:\n{cs}");
    }
    for set in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(caps(&cs, set), 0, "{set} of the unprivileged part:\n{cs}");
    }
    assert_eq!(field(&cs, "NoNewPrivs"), "1");
    assert_eq!(field(&cs, "Seccomp"), "2", "no seccomp filter in the unprivileged part");
    // It holds the packet socket, the privileged part does not.
    let packets = packet_inodes(child);
    assert!(socket_inodes(child).iter().any(|(_, i)| packets.contains(i)), "no packet socket in the child");
    assert!(!socket_inodes(parent).iter().any(|(_, i)| packets.contains(i)), "packet socket in the parent");
    // The API is served by the unprivileged part.
    let api = s.dir.join("api.sock");
    assert!(api.exists(), "{}", s.log_text());

    // The privileged part: root, with CAP_NET_ADMIN only.
    assert_eq!(field(&ps, "Uid").split_whitespace().next(), Some("0"));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(caps(&ps, set), CAP_NET_ADMIN, "{set} of the privileged part:\n{ps}");
    }
    assert_eq!(caps(&ps, "CapAmb"), 0);
    assert_eq!(field(&ps, "NoNewPrivs"), "1");
    assert_eq!(field(&ps, "Seccomp"), "2", "no seccomp filter in the privileged part");
    assert!(!s.log_text().contains("Operation not permitted"), "{}", s.log_text());

    // And it still works.
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
    knock(&s);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    assert!(s.log_text().contains("running as nobody") || s.log_text().contains("running as portcullis"));

    // An API grant for a service no door protects is recorded with a warning, as in one
    // process: the unprivileged part does not ask the privileged part (which refuses it).
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/stdout", "-w", "\n%{http_code}", "--unix-socket", api.to_str().unwrap()])
        .args(["-H", "Authorization: Bearer 0123456789abcdef0123456789abcdef"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"address":"192.0.2.9","ports":[8080],"duration":30}"#])
        .arg("http://localhost/v1/grants")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n201") && text.contains("tcp/8080 is not protected"),
        "{text}\n{}",
        s.log_text()
    );
    assert!(!s.log_text().contains("REFUSED"), "{}", s.log_text());
}

#[test]
fn privileged_part_refuses_what_its_config_does_not_allow() {
    SPLIT.store(true, std::sync::atomic::Ordering::Relaxed);
    if !root_or_skip("privileged_part_refuses_what_its_config_does_not_allow") {
        return;
    }
    let conf = "[[door]]\nname = \"ssh\"\nsequence = [7000, 9000]\nopen = [\"tcp/2222\"]\nopen_for = 30\n";
    let s = Server::start("psrefuse", conf, &[2222, 2223]);
    let child = child_of(s.pid);
    // Frozen, so that its status polls neither take sequence numbers nor read the
    // answers meant for us: this test is the unprivileged part now.
    let child_pid = nix::unistd::Pid::from_raw(child as i32);
    nix::sys::signal::kill(child_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let fd = steal_fd(child, seqpacket_fd(child));
    let grant = |seq, port, ms| {
        let g = WireGrant {
            addr: lab::CLIENT4.parse().unwrap(),
            prefix: None,
            service: Service::tcp(port).into(),
            timeout_ms: ms,
        };
        request(seq, Op::Grant { grants: vec![g] })
    };

    // Sequence numbers: a replayed (or invented) one is refused and says what is expected.
    let r = refused(&exchange(&fd, &grant(u64::MAX, 2222, 1000)));
    let next: u64 = r.split("expected ").nth(1).unwrap().trim_end_matches(')').parse().unwrap();
    let mut seq = next;

    // A port no door opens.
    assert!(refused(&exchange(&fd, &grant(seq, 2223, 1000))).contains("not a protected service"));
    seq += 1;
    // Longer than the door allows.
    assert!(refused(&exchange(&fd, &grant(seq, 2222, 31_000))).contains("longer than the config allows"));
    seq += 1;
    // A command for a door without commands; an invented door.
    for door in ["ssh", "root-shell"] {
        let op = Op::RunCommands { door: door.into(), addr: lab::CLIENT4.parse().unwrap(), at_unix_ms: 0 };
        assert!(refused(&exchange(&fd, &request(seq, op))).contains("has no"));
        seq += 1;
    }
    // Another table, a command line, an operation that does not exist, an oversized message.
    let smuggled = [
        format!(r#"{{"v":{VERSION},"seq":{seq},"op":"setup","table":"filter"}}"#),
        format!(r#"{{"v":{VERSION},"seq":{seq},"op":{{"revoke":{{"keys":[],"table":"ip filter"}}}}}}"#),
        format!(r#"{{"v":{VERSION},"seq":{seq},"op":{{"exec":{{"cmd":"/bin/sh -c id"}}}}}}"#),
        format!(r#"{{"v":{VERSION},"seq":{seq},"op":"teardown"}}"#),
        format!(
            r#"{{"v":{VERSION},"seq":{seq},"op":{{"config":{{"generation":0,"offset":0,"path":"/etc/shadow"}}}}}}"#
        ),
    ];
    for m in &smuggled {
        assert!(refused(&exchange(&fd, m.as_bytes())).contains("malformed"), "{m}");
    }
    assert!(refused(&exchange(&fd, &vec![b' '; codec::MAX_REQUEST + 10])).contains("size limit"));
    // Nothing was opened or changed by any of that: one table, ours, with no element.
    let out = s.lab.exec(&s.lab.server, &["nft", "list", "ruleset"]).unwrap();
    let ruleset = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ruleset.matches("table ").count(), 1, "{ruleset}");
    assert!(!ruleset.contains("2223") && !ruleset.contains(lab::CLIENT4), "{ruleset}");
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);

    // A flood of garbage: every message answered with a refusal, the log bounded.
    let started = Instant::now();
    for i in 0..3000u32 {
        let r = exchange(&fd, format!("garbage {i}").as_bytes());
        assert!(matches!(r.answer, Answer::Refused { .. }));
    }
    let secs = started.elapsed().as_secs() + 1;
    let lines = s.log_text().matches("REFUSED request").count() as u64;
    assert!(lines <= 50 + 10 * secs + 10, "{lines} refusal lines in {secs}s");

    // What the config allows still works on the same socket, with the next number.
    let ok = exchange(&fd, &grant(seq, 2222, 5000));
    assert_eq!(ok.answer, Answer::Done, "{ok:?}");
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    seq += 1;
    let keys = vec![WireKey {
        addr: lab::CLIENT4.parse().unwrap(),
        prefix: None,
        service: Service::tcp(2222).into(),
    }];
    assert_eq!(exchange(&fd, &request(seq, Op::Revoke { keys })).answer, Answer::Done);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Filtered);
    assert!(s.log_text().contains("REFUSED request"), "{}", s.log_text());
    assert!(s.log_text().contains("tcp/2223 is not a protected service"), "{}", s.log_text());
    // A config page nobody offered (the privileged part hands over only what it read
    // and checked itself on SIGHUP).
    seq += 1;
    let r = exchange(&fd, &request(seq, Op::Config { generation: 0, offset: 0 }));
    assert!(refused(&r).contains("no config bundle"), "{r:?}");
    assert!(!gone_or_zombie(s.pid), "the privileged part died");
    nix::sys::signal::kill(child_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
}

#[test]
fn killing_either_part_keeps_ports_protected_and_grants_expiring() {
    SPLIT.store(true, std::sync::atomic::Ordering::Relaxed);
    if !root_or_skip("killing_either_part_keeps_ports_protected_and_grants_expiring") {
        return;
    }
    let mut s = Server::start("pskill", CONF, &[2222]);
    for victim in ["unprivileged", "privileged"] {
        let parent = s.pid;
        let child = child_of(parent);
        knock(&s);
        let knocked = Instant::now();
        s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
        let (killed, survivor) = if victim == "unprivileged" { (child, parent) } else { (parent, child) };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(killed as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        // The other part notices at once and exits.
        assert!(
            wait_until(Duration::from_secs(2), || gone_or_zombie(survivor)),
            "{victim} killed: the other part {survivor} is still running:\n{}\n{}",
            status(survivor),
            s.log_text()
        );
        // Still protected for others; the open grant closes on time in the kernel.
        assert_eq!(s.probe(&s.lab.other, lab::SERVER4, 2222), Probe::Filtered);
        // Probe slowly: every open probe sits in the (never accepted) listen queue.
        let expired = (0..20).any(|_| {
            std::thread::sleep(Duration::from_millis(250));
            s.probe(&s.lab.client, lab::SERVER4, 2222) == Probe::Filtered
        });
        assert!(expired, "grant never expired after the {victim} part was killed");
        let closed = knocked.elapsed();
        assert!(closed <= Duration::from_millis(4500), "closed after {closed:?}");
        if victim == "unprivileged" {
            assert!(s.log_text().contains("died unexpectedly"), "{}", s.log_text());
        }
        // The supervisor's restart: the pair comes back and works.
        s.kill9();
        s.spawn(CONF);
    }
    knock(&s);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
}

/// Rewrite the running daemon's config file (as [`Server::spawn`] writes it).
fn rewrite(s: &Server, config: &str) {
    let state = s.dir.join("state");
    std::fs::write(
        s.dir.join("portcullis.toml"),
        format!("[daemon]\nstate_dir = \"{}\"\n{config}", state.display()),
    )
    .unwrap();
}

fn hup(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
}

#[test]
fn sighup_to_the_privileged_part_reloads_both_parts() {
    SPLIT.store(true, std::sync::atomic::Ordering::Relaxed);
    if !root_or_skip("sighup_to_the_privileged_part_reloads_both_parts") {
        return;
    }
    let s = Server::start("psreload", CONF, &[2222]);
    let child = child_of(s.pid);
    // The unprivileged part ignores SIGHUP (it cannot read the config): it neither
    // reloads nor dies.
    hup(child);
    std::thread::sleep(Duration::from_millis(400));
    assert!(!gone_or_zombie(child), "{}", s.log_text());
    let log = s.log_text();
    assert!(
        !log.contains("reloaded:") && !log.contains("reload refused") && !log.contains("offered"),
        "{log}"
    );

    // A new sequence, and a grant longer than the old config allowed: the privileged
    // part must take the new config too, or it would refuse that grant.
    let new = CONF
        .replace("[7000, \"8000:udp\", 9000]", "[7100, 7300, \"7200:udp\"]")
        .replace("open_for = 3", "open_for = 20");
    rewrite(&s, &new);
    hup(s.pid);
    s.wait_log("reloaded:", 1);
    s.wait_log("runs config generation 1", 1);
    let log = s.log_text();
    assert!(log.contains("offered to the unprivileged part as generation 1"), "{log}");
    let c = client_bin();
    s.other(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "8000:udp", "9000"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4, 2222), Probe::Filtered, "the old sequence still opens");
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7100", "7300", "7200:udp"]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Open, "granted for the new open_for");
    assert!(!s.log_text().contains("REFUSED"), "{}", s.log_text());

    // A config the privileged part refuses: neither part changes.
    rewrite(&s, &new.replace("open_for = 20", "open_for = \"soon\""));
    hup(s.pid);
    s.wait_log("reload refused", 1);
    assert!(!s.log_text().contains("generation 2"), "{}", s.log_text());
    assert_eq!(child_of(s.pid), child, "the unprivileged part was replaced");
    s.other(&[&c, "knock", "-d", "20", lab::SERVER4, "7100", "7300", "7200:udp"]);
    s.wait_probe(&s.lab.other, lab::SERVER4, 2222, Probe::Open);

    // A stop (SIGTERM to the privileged part only, which may not signal the other):
    // both parts end, cleanly.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let gone = wait_until(Duration::from_secs(3), || gone_or_zombie(s.pid) && gone_or_zombie(child));
    assert!(gone, "still running after SIGTERM:\n{}", s.log_text());
    assert!(s.log_text().contains(", 0)); "), "the unprivileged part did not exit 0:\n{}", s.log_text());
}
