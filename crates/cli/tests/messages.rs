//! What a user sees: the `portcullis` binary run as a person would, checking the exact
//! text of messages that used to leak internals or mislead. Nothing leaves the machine:
//! every case fails (or prints) before any packet or connection.

use std::path::Path;
use std::process::{Command, Output};

fn portcullis(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("HOME", home)
        .env_remove("PORTCULLIS_TOKEN")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Run, expect failure, return stderr.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = portcullis(home, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", text(&out.stdout));
    text(&out.stderr)
}

#[test]
fn knock_in_the_grant_form_says_how_knocks_are_written() {
    let home = tempfile::tempdir().unwrap();
    assert_eq!(
        fails(home.path(), &["knock", "h", "tcp/7000"]),
        "portcullis: bad knock \"tcp/7000\": knocks are PORT[:PROTO]; write 7000:tcp\n"
    );
}

#[test]
fn spa_access_without_protocol_says_tcp_slash_port() {
    let home = tempfile::tempdir().unwrap();
    assert_eq!(
        fails(home.path(), &["spa", "-A", "22", "127.0.0.1"]),
        "portcullis: access \"22\": say which protocol: write tcp/22 (or udp/22)\n"
    );
}

#[test]
fn grants_url_refuses_to_send_the_token_off_the_machine() {
    let home = tempfile::tempdir().unwrap();
    assert_eq!(
        fails(home.path(), &["grants", "--url", "http://192.0.2.10:8080", "list"]),
        "portcullis: refusing to send the API token in clear text to 192.0.2.10:8080 (192.0.2.10 is not \
         loopback); use the unix socket (--socket), or tunnel to the daemon's loopback port: ssh -L \
         8080:127.0.0.1:8080 HOST, then --url http://127.0.0.1:8080 (--insecure-allow-remote sends it anyway)\n"
    );
}

#[test]
fn keygen_out_creates_the_folder_and_native_test_mode_prints_base64() {
    use base64::Engine;
    use portcullis_proto::spa::native::{self, ServerPublicKey};
    use std::os::unix::fs::PermissionsExt;

    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // As in the README, with a folder that does not exist yet.
    let out = portcullis(h, &["keygen", "--user", "--out", "~/.config/portcullis/alice.key"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("created {} (mode 0700)", h.join(".config").display()));
    assert_eq!(
        lines[1],
        format!(
            "user secret key (client: --user-key) written to {}",
            h.join(".config/portcullis/alice.key").display()
        )
    );
    assert!(lines[2].starts_with("user public key (daemon: [[spa.user]] key): pcu1-pub-"), "{stdout}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.join(".config")), 0o700);
    assert_eq!(mode(&h.join(".config/portcullis")), 0o700);
    assert_eq!(mode(&h.join(".config/portcullis/alice.key")), 0o600);

    let out = portcullis(h, &["keygen", "--server"]);
    let stdout = text(&out.stdout);
    let server_pub = stdout
        .lines()
        .find_map(|l| l.strip_prefix("server public key (clients: --server-key): "))
        .unwrap()
        .to_string();
    let key = h.join(".config/portcullis/alice.key");
    let out = portcullis(
        h,
        &[
            "spa",
            "--native",
            "--server-key",
            &server_pub,
            "--user-key",
            key.to_str().unwrap(),
            "-A",
            "tcp/22",
            "-T",
            "127.0.0.1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout.strip_suffix('\n').unwrap();
    assert!(!line.contains('\u{fffd}'), "no replacement characters: {line}");
    let packet = base64::engine::general_purpose::STANDARD.decode(line).expect("one line of base64");
    let server: ServerPublicKey = server_pub.parse().unwrap();
    native::precheck(&packet, &server).expect("the printed bytes are the packet");
}
