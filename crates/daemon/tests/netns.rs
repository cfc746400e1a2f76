//! End-to-end tests: real packets through real namespaces, real nftables in the server
//! namespace, real peer tools (Debian's `knock` client, `nmap`). Each test builds its
//! own throwaway lab, so they run in parallel and clean up after themselves.
//! They need root: as non-root they fail under `CI=true`, and elsewhere print SKIPPED
//! and return.

mod support;

use std::time::{Duration, Instant};

use support::*;

const DOOR: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
seq_timeout = 5
tcp_flags = "syn"
open = ["tcp/2222"]
open_for = 4
"#;

#[test]
fn debian_knock_client_opens_the_door_for_the_knocker_only() {
    if !root_or_skip("debian_knock_client_opens_the_door_for_the_knocker_only") {
        return;
    }
    let s = Server::start("knockd", DOOR, &[2222]);
    assert_eq!(s.nmap(&s.lab.client, lab::SERVER4, 2222), "filtered", "protected before knocking");
    assert_eq!(s.nmap(&s.lab.client, lab::SERVER4, 2223), "closed", "unprotected ports are left alone");

    let knock = tool("knock");
    s.client(&[&knock, "-d", "50", lab::SERVER4, "7000", "8000:udp", "9000"]);
    s.wait_log("OPEN SESAME", 1);
    assert_eq!(s.nmap(&s.lab.client, lab::SERVER4, 2222), "open", "open for the knocker");
    assert_eq!(s.nmap(&s.lab.other, lab::SERVER4_OTHER, 2222), "filtered", "still filtered for others");

    let log = s.log_text();
    for line in [
        format!("{}: ssh: Stage 1", lab::CLIENT4),
        format!("{}: ssh: Stage 2", lab::CLIENT4),
        format!("{}: ssh: OPEN SESAME", lab::CLIENT4),
        format!("{}: ssh: opened tcp/2222 until ", lab::CLIENT4),
    ] {
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
}

#[test]
fn wrong_orders_and_port_sweeps_do_not_open() {
    if !root_or_skip("wrong_orders_and_port_sweeps_do_not_open") {
        return;
    }
    let s = Server::start("wrong", DOOR, &[2222]);
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "9000", "8000:udp", "7000"]);
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "8000:tcp", "9000"]);
    // 9000 out of turn resets; the later knocks then never start a new attempt.
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "9000", "8000:udp", "9000"]);
    // A sweep that touches every knock port in order must not walk the sequence.
    let nmap = tool("nmap");
    s.client(&[
        &nmap,
        "-Pn",
        "-n",
        "-sS",
        "-p",
        "6990-9010",
        "--max-retries",
        "0",
        "-r",
        "-T5",
        lab::SERVER4,
    ]);
    s.client(&[
        &nmap,
        "-Pn",
        "-n",
        "-sU",
        "-p",
        "7999-8001",
        "--max-retries",
        "0",
        "-r",
        "-T5",
        lab::SERVER4,
    ]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered, "log:\n{}", s.log_text());
    assert!(!s.log_text().contains("OPEN SESAME"));
}

#[test]
fn portcullis_client_opens_udp_and_ipv6_doors() {
    if !root_or_skip("portcullis_client_opens_udp_and_ipv6_doors") {
        return;
    }
    let conf = r#"
[[door]]
name = "udp-only"
sequence = ["4000:udp", "5000:udp", "6000:udp"]
open = ["tcp/2222"]
open_for = 5

[[door]]
name = "v6"
sequence = [7100, 7200, "7300:udp"]
open = ["tcp/2223"]
open_for = 5
"#;
    let s = Server::start("udp6", conf, &[2222, 2223]);
    let c = client_bin();
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
    s.client(&[&c, "knock", "-u", lab::SERVER4, "4000", "5000", "6000"]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);

    assert_eq!(s.probe(&s.lab.client, lab::SERVER6, 2223), Probe::Filtered);
    let knock = tool("knock");
    s.client(&[&knock, "-6", "-d", "20", lab::SERVER6, "7100", "7200", "7300:udp"]);
    s.wait_probe(&s.lab.client, lab::SERVER6, 2223, Probe::Open);
    assert_eq!(s.nmap(&s.lab.client, lab::SERVER6, 2223), "open");
    assert_eq!(s.nmap(&s.lab.other, lab::SERVER6_OTHER, 2223), "filtered");
    // The IPv6 grant is for the IPv6 source only.
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2223), Probe::Filtered);
}

/// Time from the last knock until a probe first finds the port filtered again.
fn time_to_close(s: &Server, knocked: Instant, limit: Duration) -> Option<Duration> {
    while knocked.elapsed() < limit {
        if s.lab
            .probe(&s.lab.client, lab::SERVER4.parse().unwrap(), 2222, Duration::from_millis(150))
            .unwrap()
            == Probe::Filtered
        {
            return Some(knocked.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn grant_expires_within_a_second_of_its_duration() {
    if !root_or_skip("grant_expires_within_a_second_of_its_duration") {
        return;
    }
    let s = Server::start("expiry", DOOR, &[2222]);
    let c = client_bin();
    s.client(&[&c, "knock", lab::SERVER4, "7000", "8000:udp", "9000"]);
    let knocked = Instant::now();
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    let closed = time_to_close(&s, knocked, Duration::from_secs(8)).expect("grant never closed");
    assert!(
        closed >= Duration::from_millis(3700) && closed <= Duration::from_secs(5),
        "4 s grant closed after {closed:?}"
    );
}

#[test]
fn grants_still_expire_after_kill_9() {
    if !root_or_skip("grants_still_expire_after_kill_9") {
        return;
    }
    let mut s = Server::start("kill9", DOOR, &[2222]);
    let c = client_bin();
    s.client(&[&c, "knock", lab::SERVER4, "7000", "8000:udp", "9000"]);
    let knocked = Instant::now();
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    s.kill9();
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Open, "grant survives the daemon");
    let closed =
        time_to_close(&s, knocked, Duration::from_secs(8)).expect("grant never closed without the daemon");
    assert!(closed <= Duration::from_secs(5), "closed after {closed:?}");
    assert_eq!(s.nmap(&s.lab.other, lab::SERVER4_OTHER, 2222), "filtered", "fail closed: still protected");

    // A restart neither reopens nor breaks anything: knocking works again.
    s.spawn(DOOR);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
    s.client(&[&c, "knock", lab::SERVER4, "7000", "8000:udp", "9000"]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
}

#[test]
fn restart_keeps_open_grants_with_their_remaining_time() {
    if !root_or_skip("restart_keeps_open_grants_with_their_remaining_time") {
        return;
    }
    let mut s = Server::start("restart", DOOR, &[2222]);
    let c = client_bin();
    s.client(&[&c, "knock", lab::SERVER4, "7000", "8000:udp", "9000"]);
    let knocked = Instant::now();
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    s.kill9();
    s.spawn(DOOR);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Open, "restart must not close live grants");
    let closed = time_to_close(&s, knocked, Duration::from_secs(8)).expect("grant never closed");
    assert!(closed <= Duration::from_secs(5), "restart must not extend grants: closed after {closed:?}");
}

#[test]
fn knocks_work_after_the_interface_goes_down_and_up() {
    if !root_or_skip("knocks_work_after_the_interface_goes_down_and_up") {
        return;
    }
    let s = Server::start("linkflap", DOOR, &[2222]);
    run_ok(&s.lab, &s.lab.server, &["ip", "link", "set", "vcli", "down"]);
    std::thread::sleep(Duration::from_millis(300));
    run_ok(&s.lab, &s.lab.server, &["ip", "link", "set", "vcli", "up"]);
    run_ok(&s.lab, &s.lab.server, &["ip", "addr", "add", "192.0.2.77/24", "dev", "vcli"]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2223, Probe::Closed);
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "10", lab::SERVER4, "7000", "8000:udp", "9000"]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    // An address added after start counts too (the view follows rtnetlink events).
    let knock = tool("knock");
    s.other(&[&knock, "-d", "10", "192.0.2.77", "7000", "8000:udp", "9000"]);
    s.wait_log(&format!("{}: ssh: OPEN SESAME", lab::OTHER4), 1);
}

#[test]
fn check_prints_plan_and_refuses_bad_configs() {
    let dir = std::env::temp_dir().join(format!("pc-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, DOOR).unwrap();
    let out = daemon_check(&good);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("protected (dropped unless granted): tcp/2222"), "{text}");
    assert!(text.contains("table inet portcullis"), "{text}");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[door]]\nname = 'x'\nsequence = [7000, 99999]\nopen = ['tcp/22']\n").unwrap();
    let out = daemon_check(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml:3:") && err.contains("99999"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn teardown_removes_the_table_and_unprotects_the_ports() {
    if !root_or_skip("teardown_removes_the_table_and_unprotects_the_ports") {
        return;
    }
    let mut s = Server::start("teardown", DOOR, &[2222]);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
    s.kill9();
    assert_eq!(
        s.probe(&s.lab.client, lab::SERVER4, 2222),
        Probe::Filtered,
        "fail closed after the daemon dies"
    );
    run_ok(&s.lab, &s.lab.server, &[daemon_bin(), "teardown"]);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Open);
    let out = s.lab.exec(&s.lab.server, &["nft", "list", "tables"]).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("portcullis"));
    run_ok(&s.lab, &s.lab.server, &[daemon_bin(), "teardown"]);
}
