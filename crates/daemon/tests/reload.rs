//! SIGHUP end to end: the daemon in throwaway namespaces with real nftables; its config
//! file is rewritten and the daemon signalled. Root required (CI runs as root); as
//! non-root: SKIPPED.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

const OLD: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
open = ["tcp/2222"]
open_for = 120
"#;

const NEW: &str = r#"
[[door]]
name = "ssh"
sequence = [7100, 7200, "7300:udp"]
open = ["tcp/2222"]
open_for = 120
"#;

/// Rewrite the running daemon's config file (as [`Server::spawn`] writes it) and HUP it.
fn reload_with(s: &Server, config: &str) {
    let state = s.dir.join("state");
    let text = format!("[daemon]\nstate_dir = \"{}\"\n{config}", state.display());
    std::fs::write(s.dir.join("portcullis.toml"), text).unwrap();
    kill(Pid::from_raw(i32::try_from(s.pid).unwrap()), Signal::SIGHUP).unwrap();
}

fn knock(s: &Server, ns: &str, ports: &[&str]) {
    let c = client_bin();
    let mut args = vec![c.as_str(), "knock", "-d", "20", lab::SERVER4];
    args.extend_from_slice(ports);
    run_ok(&s.lab, ns, &args);
}

#[test]
fn a_changed_sequence_takes_effect_and_a_live_grant_survives() {
    if !root_or_skip("a_changed_sequence_takes_effect_and_a_live_grant_survives") {
        return;
    }
    let s = Server::start("rl-seq", OLD, &[2222]);
    let (client, other) = (s.lab.client.clone(), s.lab.other.clone());
    knock(&s, &client, &["7000", "8000:udp", "9000"]);
    s.wait_probe(&client, lab::SERVER4, 2222, Probe::Open);

    reload_with(&s, NEW);
    s.wait_log("reloaded:", 1);
    assert!(s.log_text().contains("1 door(s)"), "{}", s.log_text());
    assert_eq!(s.probe(&client, lab::SERVER4, 2222), Probe::Open, "the live grant must survive the reload");

    // The old sequence no longer opens anything, the new one does.
    knock(&s, &other, &["7000", "8000:udp", "9000"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(s.probe(&other, lab::SERVER4, 2222), Probe::Filtered, "old sequence still opens");
    knock(&s, &other, &["7100", "7200", "7300:udp"]);
    s.wait_probe(&other, lab::SERVER4, 2222, Probe::Open);
}

#[test]
fn a_bad_config_is_refused_and_the_old_one_keeps_working() {
    if !root_or_skip("a_bad_config_is_refused_and_the_old_one_keeps_working") {
        return;
    }
    let s = Server::start("rl-bad", OLD, &[2222]);
    let client = s.lab.client.clone();
    reload_with(
        &s,
        "[[door]]\nname = \"ssh\"\nsequence = [7000]\nopen = [\"tcp/2222\"]\nopen_for = \"soon\"\n",
    );
    s.wait_log("reload refused", 1);
    let log = s.log_text();
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(line.contains("portcullis.toml:7"), "the refusal names file and line: {line}");
    assert!(line.contains("ERROR"), "logged at error: {line}");
    // Still running, still the old doors.
    assert!(nix::sys::signal::kill(Pid::from_raw(i32::try_from(s.pid).unwrap()), None).is_ok());
    knock(&s, &client, &["7000", "8000:udp", "9000"]);
    s.wait_probe(&client, lab::SERVER4, 2222, Probe::Open);
}

#[test]
fn a_change_that_needs_a_restart_is_refused() {
    if !root_or_skip("a_change_that_needs_a_restart_is_refused") {
        return;
    }
    let s = Server::start("rl-restart", OLD, &[2222]);
    reload_with(&s, &OLD.replace("tcp/2222", "tcp/2223"));
    s.wait_log("reload refused", 1);
    assert!(s.log_text().contains("protected services changed"), "{}", s.log_text());
    let client = s.lab.client.clone();
    knock(&s, &client, &["7000", "8000:udp", "9000"]);
    s.wait_probe(&client, lab::SERVER4, 2222, Probe::Open);
}

#[test]
fn api_tokens_change_on_reload() {
    if !root_or_skip("api_tokens_change_on_reload") {
        return;
    }
    const OLD_TOKEN: &str = "ci-old-0123456789abcdef";
    const NEW_TOKEN: &str = "ci-new-0123456789abcdef";
    let dir = std::env::temp_dir().join(format!("pc-test-rl-api-{}", std::process::id()));
    let api = format!("\n[api]\nsocket = \"{}/api.sock\"\ntokens_file = \"tokens\"\n", dir.display());
    let conf = format!("{OLD}{api}");
    let old_tokens = format!("ci {OLD_TOKEN}\n");
    let s = Server::start_with("rl-api", &conf, &[2222], &[("tokens", &old_tokens)]);
    let list = |token: &str| {
        std::process::Command::new(client_bin())
            .args(["grants", "list", "--socket", s.dir.join("api.sock").to_str().unwrap()])
            .env("PORTCULLIS_TOKEN", token)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(list(OLD_TOKEN));
    assert!(!list(NEW_TOKEN));
    std::fs::write(s.dir.join("tokens"), format!("ci {NEW_TOKEN}\n")).unwrap();
    reload_with(&s, &conf);
    s.wait_log("reloaded:", 1);
    assert!(wait_until(std::time::Duration::from_secs(2), || list(NEW_TOKEN)), "{}", s.log_text());
    assert!(!list(OLD_TOKEN), "the removed token still works");
}

// fwknop keys in its --key-gen format (test-only): the stanza's before and after.
const KEY_OLD: &str = "wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=";
const HMAC_OLD: &str =
    "Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==";
const KEY_NEW: &str = "L/LmTNxJlgN/6XJ2u0DeZ27r53p1Jn4AlGKSCBqQ3Qo=";
const HMAC_NEW: &str =
    "3fM/DVOcp287SNS+fxLDFiqnERv4dBwwgQayW/ad4l8d5ECelV2L/6xhiSTfNm+Bj+5kbZBfQFPbHCYh4yurqw==";

fn stanza(key: &str, hmac: &str) -> String {
    format!("SOURCE ANY\nKEY_BASE64 {key}\nHMAC_KEY_BASE64 {hmac}\nHMAC_DIGEST_TYPE sha256\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 20\n")
}

/// The stock fwknop client in `ns`, asking for tcp/2222 for `addr` at `server`.
fn fwknop(s: &Server, ns: &str, server: &str, addr: &str, key: &str, hmac: &str) {
    let home = format!("HOME={}", s.dir.display());
    let fwknop = tool("fwknop");
    let args = [
        "env",
        &home,
        &fwknop,
        "--no-rc-file",
        "-A",
        "tcp/2222",
        "-a",
        addr,
        "-D",
        server,
        "--use-hmac",
        "--key-base64-rijndael",
        key,
        "--key-base64-hmac",
        hmac,
    ];
    run_ok(&s.lab, ns, &args);
}

fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The daemon's one child (its unprivileged part).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let p: u32 = e.file_name().to_str()?.parse().ok()?;
        (status_field(p, "PPid") == pid.to_string()).then_some(p)
    })
}

#[test]
fn a_split_daemon_reloads_an_edited_root_only_access_conf() {
    if !root_or_skip("a_split_daemon_reloads_an_edited_root_only_access_conf") {
        return;
    }
    // Root-only files the config names: the server key and access.conf, which includes
    // the stanza (all 0600 root). The unprivileged part can read none of them.
    let (server_secret, _) = keygen("--server");
    let conf = "[spa]\nserver_key_file = \"server.key\"\naccess_conf = \"access.conf\"\n";
    let files = [
        ("server.key", server_secret.as_str()),
        ("access.conf", "%include stanza.conf\n"),
        ("stanza.conf", &stanza(KEY_OLD, HMAC_OLD)),
    ];
    let s = Server::start_with("rl-acc", conf, &[2222], &files);
    assert!(!s.one_process);
    let child = child_of(s.pid).expect("a split daemon has an unprivileged child");
    assert_ne!(status_field(child, "Uid").split_whitespace().next(), Some("0"));
    let (client, other) = (s.lab.client.clone(), s.lab.other.clone());
    fwknop(&s, &client, lab::SERVER4, lab::CLIENT4, KEY_OLD, HMAC_OLD);
    s.wait_probe(&client, lab::SERVER4, 2222, Probe::Open);

    // Edit the included file (writing keeps its mode 0600), then SIGHUP.
    std::fs::write(s.dir.join("stanza.conf"), stanza(KEY_NEW, HMAC_NEW)).unwrap();
    reload_with(&s, conf);
    s.wait_log("reloaded:", 1);
    assert!(!s.log_text().contains("reload refused"), "{}", s.log_text());
    assert!(s.log_text().contains("offered to the unprivileged part"), "{}", s.log_text());

    // The old key no longer opens anything, the new one does.
    fwknop(&s, &other, lab::SERVER4_OTHER, lab::OTHER4, KEY_OLD, HMAC_OLD);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(s.probe(&other, lab::SERVER4_OTHER, 2222), Probe::Filtered, "the old key still opens");
    fwknop(&s, &other, lab::SERVER4_OTHER, lab::OTHER4, KEY_NEW, HMAC_NEW);
    s.wait_probe(&other, lab::SERVER4_OTHER, 2222, Probe::Open);

    // Still split, the same unprivileged child, still not root, no capabilities.
    assert_eq!(child_of(s.pid), Some(child));
    assert_ne!(status_field(child, "Uid").split_whitespace().next(), Some("0"));
    assert_eq!(status_field(child, "CapEff"), "0000000000000000");

    // A file the config names that the privileged part refuses (group-readable) refuses
    // the reload in the privileged part; the running stanza stays.
    use std::os::unix::fs::PermissionsExt;
    let p = s.dir.join("server.key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    reload_with(&s, conf);
    s.wait_log("reload refused", 1);
    assert!(s.log_text().contains("server.key"), "{}", s.log_text());
    fwknop(&s, &client, lab::SERVER4, lab::CLIENT4, KEY_NEW, HMAC_NEW);
    s.wait_probe(&client, lab::SERVER4, 2222, Probe::Open);
}
