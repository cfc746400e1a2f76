use std::os::unix::fs::PermissionsExt;

use super::*;

const CONF: &str = "\
# fwknop access.conf
SOURCE              ANY
KEY_BASE64          wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=
HMAC_KEY_BASE64     Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==
HMAC_DIGEST_TYPE    sha256;
OPEN_PORTS          tcp/22, udp/53
FW_ACCESS_TIMEOUT   45;
REQUIRE_USERNAME    alice
ENABLE_CMD_EXEC     N

SOURCE 192.0.2.0/24, 2001:db8::/32
DESTINATION 198.51.100.1
KEY fwknoptest
ENCRYPTION_MODE legacy
REQUIRE_SOURCE_ADDRESS Y
ACCESS_EXPIRE 12/31/2030
CMD_CYCLE_OPEN  /usr/sbin/nft add element inet filter allow { $SRC . $PORT }
CMD_CYCLE_CLOSE /usr/sbin/nft delete element inet filter allow { $SRC . $PORT }
CMD_CYCLE_TIMER 20
";

#[test]
fn reads_stanzas_with_fwknop_syntax() {
    let s = parse(CONF, Path::new("access.conf")).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].open_ports, vec![Service::tcp(22), Service::udp(53)]);
    assert_eq!(s[0].fw_access_timeout, Duration::from_secs(45));
    assert_eq!(s[0].require_username.as_deref(), Some("alice"));
    assert_eq!(s[0].key.hmac_type(), Some(HashType::Sha256));
    assert!(s[0].source.is_empty() && s[0].destination.is_empty() && s[0].cmd_cycle.is_none());
    assert_eq!(s[1].key.mode(), EncMode::Legacy);
    assert!(s[1].require_source_address);
    assert_eq!(s[1].source.len(), 2);
    assert!(s[1].source[0].contains("192.0.2.77".parse().unwrap()));
    assert!(!s[1].source[0].contains("198.51.100.1".parse().unwrap()));
    assert!(s[1].source[1].contains("2001:db8::5".parse().unwrap()));
    assert!(s[1].destination[0].contains("198.51.100.1".parse().unwrap()));
    assert_eq!(s[1].expires, Some(1_924_992_000));
    assert_eq!(s[1].name, "access.conf:11");
    let c = s[1].cmd_cycle.as_ref().unwrap();
    assert_eq!(c.open[..4], ["/usr/sbin/nft", "add", "element", "inet"]);
    assert_eq!(c.open.last().unwrap(), "}");
    assert_eq!(c.close.as_ref().unwrap()[1], "delete");
    assert_eq!(c.timer, Duration::from_secs(20));
}

#[test]
fn refuses_what_it_cannot_honour_with_line_numbers() {
    let cases = [
        ("KEY x\n", "1:", "before the first SOURCE"),
        ("SOURCE ANY\nKEY x\nFORCE_NAT 10.0.0.1\n", "3:", "FORCE_NAT"),
        ("SOURCE ANY\nGPG_DECRYPT_ID x\n", "2:", "docs/spa-native.md"),
        ("SOURCE ANY\nKEY x\nGPG_REQUIRE_SIG Y\n", "3:", "GnuPG"),
        ("%bogus x\n", "1:", "unknown directive"),
        ("SOURCE ANY\nKEY x\nOPEN_PORTS tcp/99999\n", "3:", "65535"),
        ("SOURCE ANY\nHMAC_KEY y\n", "1:", "no KEY"),
        ("SOURCE 300.1.1.1\nKEY x\n", "1:", "CIDR"),
        ("SOURCE ANY\nKEY x\nDESTINATION 10.0.0.0/40\n", "3:", "DESTINATION"),
        ("SOURCE ANY\nKEY same\nHMAC_KEY same\n", "1:", "equals"),
        ("SOURCE ANY\nKEY x\nCMD_CYCLE_OPEN /bin/true\nCMD_CYCLE_TIMER 5\n", "1:", "CMD_CYCLE_CLOSE"),
        ("SOURCE ANY\nKEY x\nCMD_CYCLE_OPEN /bin/true\nCMD_CYCLE_CLOSE NONE\n", "1:", "CMD_CYCLE_TIMER"),
        ("SOURCE ANY\nKEY x\nCMD_CYCLE_OPEN /bin/echo \"unclosed\n", "3:", "unbalanced"),
        ("SOURCE ANY\nKEY x\nFORWARD_ALL Y\n", "1:", "need FORCE_NAT"),
        ("SOURCE ANY\nKEY x\nFORCE_MASQUERADE Y\n", "3:", "FORCE_SNAT"),
        ("", "", "no SOURCE"),
        ("SOURCE ANY\nKEY_BASE64 __CHANGEME__\nHMAC_KEY_BASE64 __CHANGEME__\n", "1:", "fwknop --key-gen"),
        // Conflicting stanzas: the second can never match.
        (
            "SOURCE 10.0.0.0/8\nKEY x\nOPEN_PORTS tcp/22\nSOURCE 10.0.0.0/8\nKEY x\nOPEN_PORTS tcp/80\n",
            "4:",
            "never match",
        ),
    ];
    for (text, line, needle) in cases {
        let e = parse(text, Path::new("a.conf")).err().unwrap_or_else(|| panic!("{text:?} accepted"));
        assert!(e.contains(&format!("a.conf:{line}")) && e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn unknown_keys_are_notes_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("access.conf");
    write(&p, "SOURCE ANY\nKEY x\nBOGUS y\nENABLE_CMD_EXEC Y\n");
    let parsed = load(&p).unwrap();
    assert_eq!(parsed.stanzas.len(), 1);
    assert_eq!(parsed.notes.len(), 2, "{:?}", parsed.notes);
    assert!(
        parsed.notes[0].ends_with("access.conf:3: unknown access.conf key BOGUS ignored (as fwknopd does)")
    );
    assert!(parsed.notes[1].contains(":4: ENABLE_CMD_EXEC ignored"));
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn includes_folders_and_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("access.d")).unwrap();
    write(&d.join("access.conf"), "%include one.conf\n%include_folder access.d\nSOURCE ANY\n%include_keys keys/alice.keys\nOPEN_PORTS tcp/22\n");
    write(&d.join("one.conf"), "SOURCE 10.0.0.1\nKEY one\n");
    write(&d.join("access.d/b.conf"), "SOURCE 10.0.0.3\nKEY b\n");
    write(&d.join("access.d/a.conf"), "SOURCE 10.0.0.2\nKEY a\n");
    write(&d.join("access.d/ignored.txt"), "SOURCE 10.0.0.9\nKEY z\n");
    std::fs::create_dir(d.join("keys")).unwrap();
    write(&d.join("keys/alice.keys"), "KEY_BASE64 a2V5a2V5a2V5\nHMAC_KEY_BASE64 aG1hY2htYWNobWFj\n");
    let p = load(&d.join("access.conf")).unwrap();
    let names: Vec<&str> = p.stanzas.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one.conf:1", "a.conf:1", "b.conf:1", "access.conf:3"]);
    assert!(p.stanzas[3].key.hmac_type().is_some());
    assert_eq!(p.stanzas[3].open_ports, vec![Service::tcp(22)]);
}

#[test]
fn bad_includes_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A loop through two files.
    write(&d.join("a.conf"), "SOURCE ANY\nKEY a\n%include b.conf\n");
    write(&d.join("b.conf"), "\n%include a.conf\n");
    let e = load(&d.join("a.conf")).unwrap_err();
    assert!(e.contains("a.conf:3: %include") && e.contains("b.conf:2") && e.contains("loop"), "{e}");
    // A missing file.
    write(&d.join("c.conf"), "SOURCE ANY\nKEY c\n%include nowhere.conf\n");
    let e = load(&d.join("c.conf")).unwrap_err();
    assert!(e.contains("c.conf:3: %include: cannot read") && e.contains("nowhere.conf"), "{e}");
    // Too deep (a chain of distinct files).
    for i in 0..12 {
        write(&d.join(format!("deep{i}.conf")), &format!("%include deep{}.conf\n", i + 1));
    }
    write(&d.join("deep12.conf"), "SOURCE ANY\nKEY d\n");
    let e = load(&d.join("deep0.conf")).unwrap_err();
    assert!(e.contains("deeper than 8"), "{e}");
    // %include_keys outside a stanza, and with other keys in it.
    write(&d.join("k.keys"), "KEY k\nOPEN_PORTS tcp/1\n");
    write(&d.join("e.conf"), "%include_keys k.keys\n");
    assert!(load(&d.join("e.conf")).unwrap_err().contains("e.conf:1: %include_keys before the first SOURCE"));
    write(&d.join("f.conf"), "SOURCE ANY\n%include_keys k.keys\n");
    let e = load(&d.join("f.conf")).unwrap_err();
    assert!(e.contains("k.keys:2: OPEN_PORTS: an %include_keys file holds only keys"), "{e}");
}

#[test]
fn included_files_must_be_regular_and_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Its length (0) says nothing: it would be read until memory runs out.
    write(&d.join("z.conf"), "SOURCE ANY\nKEY z\n%include /dev/zero\n");
    let e = load(&d.join("z.conf")).unwrap_err();
    assert!(e.contains("z.conf:3: %include") && e.contains("not a regular file"), "{e}");
    // Anyone in the group could add stanzas or CMD_CYCLE lines (run as root).
    write(&d.join("open.conf"), "SOURCE ANY\nKEY o\nOPEN_PORTS tcp/22\n");
    std::fs::set_permissions(d.join("open.conf"), std::fs::Permissions::from_mode(0o620)).unwrap();
    write(&d.join("w.conf"), "%include open.conf\n");
    let e = load(&d.join("w.conf")).unwrap_err();
    assert!(e.contains("w.conf:1: %include") && e.contains("group/others may write it"), "{e}");
}

#[test]
fn files_holding_keys_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("keys"), "KEY k\n");
    std::fs::set_permissions(d.join("keys"), std::fs::Permissions::from_mode(0o644)).unwrap();
    write(&d.join("a.conf"), "SOURCE ANY\n%include_keys keys\n");
    let e = load(&d.join("a.conf")).unwrap_err();
    assert!(e.contains("a.conf:2: %include_keys") && e.contains("chmod 600"), "{e}");
    // The access.conf itself, when it holds a key.
    write(&d.join("b.conf"), "SOURCE ANY\nKEY k\n");
    std::fs::set_permissions(d.join("b.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = load(&d.join("b.conf")).unwrap_err();
    assert!(e.contains("b.conf:2:") && e.contains("mode 0640"), "{e}");
    // A world-readable file without keys is fine.
    write(&d.join("c.conf"), "SOURCE ANY\n%include_keys private.keys\n");
    write(&d.join("private.keys"), "KEY k\n");
    std::fs::set_permissions(d.join("c.conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(load(&d.join("c.conf")).is_ok());
}
