//! The `portcullis` binary as users run it: exact output of `sequence`, and `connect`'s
//! relay (half-close, server closing first, ssh vanishing, bounded waits) on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    // Never pick up the developer's own profiles.
    c.env("XDG_CONFIG_HOME", "/nonexistent-portcullis-test");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

/// Wait for `child` at most `limit`; panics (after killing it) if it is still running.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("still running after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sequence_prints_the_write_up_example() {
    let out = run(&[
        "sequence",
        "--algorithm",
        "md5-hourly",
        "--secret",
        "f00b4r",
        "--range",
        "10000-10999",
        "--count",
        "5",
        "--at",
        "2008-08-19T17:59:12Z",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "10978 10024 10722 10688 10711\n");
}

#[test]
fn sequence_refuses_loose_secret_files_and_bad_times() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("secret");
    std::fs::write(&f, "f00b4r\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let base = ["sequence", "--algorithm", "md5-hourly", "--range", "10000-10999", "--count", "5"];
    let mut args = base.to_vec();
    args.extend(["--secret-file", f.to_str().unwrap(), "--at", "2008-08-19T17:59:12Z"]);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("chmod 600") && !err.contains("f00b4r"), "{err}");
    assert!(out.stdout.is_empty());

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&args);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "10978 10024 10722 10688 10711\n");

    args.pop();
    args.push("2008-08-19 17:59");
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a time"));
}

#[test]
fn connect_half_closes_on_stdin_eof_and_keeps_reading() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap(); // returns only once the client half-closed
        thread::sleep(Duration::from_millis(200));
        s.write_all(b"echo:").unwrap();
        s.write_all(&got).unwrap();
    });
    let mut child = bin()
        .args(["connect", "--plain", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello through the door").unwrap();
    let out = wait_bounded(child, Duration::from_secs(5));
    server.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"echo:hello through the door");
    assert!(out.stderr.is_empty());
}

#[test]
fn connect_ends_when_the_server_closes_even_if_stdin_stays_open() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"SSH-2.0-test\r\n").unwrap();
    });
    let mut child = bin()
        .args(["connect", "--plain", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap(); // kept open until the end of the test
    let out = wait_bounded(child, Duration::from_secs(5));
    drop(stdin);
    server.join().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"SSH-2.0-test\r\n");
}

#[test]
fn connect_notices_that_ssh_went_away() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    // A silent server that never closes.
    let server = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        thread::sleep(Duration::from_millis(3500));
        drop(s);
    });
    let mut child = bin()
        .args(["connect", "--plain", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    // ssh exits: both its pipe ends close.
    drop(child.stdin.take());
    drop(child.stdout.take());
    let start = Instant::now();
    let out = wait_bounded(child, Duration::from_secs(4));
    assert!(out.status.success());
    assert!(start.elapsed() < Duration::from_secs(3));
    server.join().unwrap();
}

#[test]
fn connect_to_a_server_that_never_opens_fails_at_the_bound() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let start = Instant::now();
    let child = bin()
        .args(["connect", "--knock", "7000,8000:udp", "--wait", "700ms", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(4));
    assert!(start.elapsed() >= Duration::from_millis(700));
    assert_eq!(out.status.code(), Some(69), "EX_UNAVAILABLE");
    assert!(out.stdout.is_empty(), "stdout is ssh's channel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer within 700ms"), "{err}");
}

#[test]
fn profiles_drive_open_and_connect() {
    let d = tempfile::tempdir().unwrap();
    let conf_dir = d.path().join("portcullis");
    std::fs::create_dir(&conf_dir).unwrap();
    let knocks = UdpSocket::bind("127.0.0.1:0").unwrap();
    knocks.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let kport = knocks.local_addr().unwrap().port();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    std::fs::write(
        conf_dir.join("client.toml"),
        format!(
            "[host.myserver]\naddress = \"127.0.0.1\"\nmethod = \"knock\"\nsequence = [\"{kport}:udp\", \"{kport}:udp\"]\n"
        ),
    )
    .unwrap();
    let with_conf = |args: &[&str]| {
        let mut c = bin();
        c.env("XDG_CONFIG_HOME", d.path()).args(args);
        c
    };
    let out = with_conf(&["open", "myserver"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut b = [0u8; 4];
    assert_eq!(knocks.recv(&mut b).unwrap(), 1);
    assert_eq!(knocks.recv(&mut b).unwrap(), 1);

    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hi").unwrap();
    });
    let out = with_conf(&["connect", "myserver", &port]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hi");
    server.join().unwrap();
    assert_eq!(knocks.recv(&mut b).unwrap(), 1, "connect knocked first");

    let out = with_conf(&["open", "unknown-host"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"unknown-host\"") && err.contains("client.toml"), "{err}");
    let out = with_conf(&["connect", "unknown-host", "22"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
}
