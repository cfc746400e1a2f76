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
