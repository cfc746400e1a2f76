use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::{convert, load, load_as, Format};

const ACCESS: &str = "\
SOURCE              ANY
KEY_BASE64          wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=
HMAC_KEY_BASE64     Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==
OPEN_PORTS          tcp/22
FW_ACCESS_TIMEOUT   30
";

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn setup(conf: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("access.conf"), ACCESS);
    let p = dir.path().join("fwknopd.conf");
    write(&p, conf);
    (dir, p)
}

#[test]
fn stock_all_comments_file_runs_with_fwknopd_defaults() {
    // Debian ships fwknopd.conf with every line commented out.
    let stock = std::fs::read_to_string("/etc/fwknop/fwknopd.conf")
        .unwrap_or_else(|_| "# fwknopd.conf\n#PCAP_INTF eth0;\n".to_string());
    let (_d, p) = setup(&stock);
    let c = load(&p).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    let spa = c.spa.as_ref().unwrap();
    assert_eq!(spa.ports, vec![62201]);
    assert_eq!((spa.max_age, spa.aging, spa.persist_replay), (120, true, true));
    assert_eq!(spa.import_digest_file.as_deref(), Some(Path::new("/var/run/fwknop/digest.cache")));
    assert_eq!(spa.stanzas.len(), 1);
    assert!(c.daemon.firewall.accept);
    assert_eq!(c.daemon.firewall.iptables_chain, "FWKNOP_INPUT");
    assert_eq!(c.daemon.backend, Backend::Iptables(IptablesVariant::Auto));
    assert!(c.daemon.flush_at_start && c.daemon.flush_at_exit);
    assert_eq!(c.daemon.syslog.identity, "fwknopd");
    assert_eq!(c.daemon.pid_file.as_deref(), Some(Path::new("/var/run/fwknop/fwknopd.pid")));
    assert_eq!(c.protected(), vec![portcullis_proto::Service::tcp(22)]);
}

#[test]
fn honours_its_keys() {
    let (d, p) = setup(
        "PCAP_INTF eth1;\nPCAP_FILTER udp port 40001;\nENABLE_UDP_SERVER Y;\nUDPSERV_PORT 40002;\n\
         ENABLE_SPA_PACKET_AGING N;\nMAX_SPA_PACKET_AGE 60;\nENABLE_DIGEST_PERSISTENCE Y;\n\
         FWKNOP_RUN_DIR /run/fw;\nDIGEST_FILE $FWKNOP_RUN_DIR/d.cache;\n\
         IPT_INPUT_ACCESS ACCEPT, filter, INPUT, 3, MY_SPA, 1;\nFLUSH_IPT_AT_INIT N;\nFLUSH_IPT_AT_EXIT N;\n\
         ENABLE_IPT_FORWARDING Y;\nSYSLOG_IDENTITY fwk;\nSYSLOG_FACILITY LOG_LOCAL3;\nVERBOSE 1;\n\
         CMD_EXEC_TIMEOUT 7;\nACCESS_FILE other.conf;\n",
    );
    write(&d.path().join("other.conf"), ACCESS);
    let c = load(&p).unwrap();
    let spa = c.spa.as_ref().unwrap();
    assert_eq!(c.daemon.interfaces, Interfaces::Named(vec!["eth1".into()]));
    assert_eq!(spa.ports, vec![40001, 40002]);
    assert_eq!(spa.udp_server, Some(40002));
    assert_eq!((spa.aging, spa.max_age), (false, 60));
    assert_eq!(spa.import_digest_file.as_deref(), Some(Path::new("/run/fw/d.cache")));
    assert_eq!(c.daemon.pid_file.as_deref(), Some(Path::new("/run/fw/fwknopd.pid")));
    assert_eq!((c.daemon.firewall.iptables_chain.as_str(), c.daemon.firewall.iptables_jump), ("MY_SPA", 3));
    assert!(!c.daemon.flush_at_start && !c.daemon.flush_at_exit);
    assert!(spa.forwarding && spa.local_nat);
    assert_eq!(c.daemon.syslog.identity, "fwk");
    assert_eq!(c.daemon.syslog.facility, SyslogFacility::Local(3));
    assert!(c.daemon.verbose);
    assert_eq!(c.daemon.command_time_limit, Duration::from_secs(7));
    assert_eq!(spa.access_conf.as_deref(), Some(d.path().join("other.conf").as_path()));
}

#[test]
fn unhonoured_keys_are_named_in_one_note_with_lines() {
    let (_d, p) = setup("EXIT_AT_INTF_DOWN Y;\nENABLE_SPA_OVER_HTTP Y;\nENABLE_PCAP_PROMISC N;\nFIREWD_INPUT_ACCESS x;\nBOGUS_KEY 1;\n");
    let c = load(&p).unwrap();
    assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
    let n = &c.notes[0];
    assert!(n.contains("EXIT_AT_INTF_DOWN (line 1): moot"), "{n}");
    assert!(n.contains("ENABLE_SPA_OVER_HTTP (line 2): not supported"), "{n}");
    assert!(!n.contains("ENABLE_PCAP_PROMISC"), "switching a missing feature off needs no note: {n}");
    assert!(n.contains("FIREWD_INPUT_ACCESS (line 4)") && n.contains("BOGUS_KEY (line 5)"), "{n}");
    assert!(c.warnings().iter().any(|w| w == n), "the note is logged at start");
}

#[test]
fn refusals_name_file_and_line() {
    let cases = [
        ("PCAP_FILTER udp port 1 or tcp port 2;\n", 1, "PCAP_FILTER"),
        ("\nIPT_INPUT_ACCESS DROP, filter, INPUT, 1, FWKNOP_INPUT, 1;\n", 2, "only ACCEPT"),
        ("IPT_INPUT_ACCESS ACCEPT, filter, FORWARD, 1, FWKNOP_INPUT, 1;\n", 1, "INPUT"),
        ("MAX_SPA_PACKET_AGE 0;\n", 1, "MAX_SPA_PACKET_AGE"),
        ("SYSLOG_FACILITY LOG_KERN;\n", 1, "SYSLOG_FACILITY"),
        ("ACCESS_FILE missing.conf;\n", 1, "cannot read"),
        ("lowercase 1;\n", 1, "variable name"),
    ];
    for (text, line, needle) in cases {
        let (_d, p) = setup(text);
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
    // A GnuPG stanza: refused with its line in access.conf and a pointer to the native format.
    let (d, p) = setup("");
    write(&d.path().join("access.conf"), "SOURCE ANY\nGPG_DECRYPT_ID ABCD1234\n");
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("access.conf:2: GPG_DECRYPT_ID") && e.contains("docs/spa-native.md"), "{e}");
}

#[test]
fn detection() {
    let p = Path::new("/x/server.conf");
    assert!(looks_like_fwknopd("# comment\nPCAP_INTF eth0;\n", p));
    assert!(looks_like_fwknopd("# fwknopd config, all defaults\n", p));
    assert!(!looks_like_fwknopd("[options]\nlogfile = x\n", p));
    assert!(!looks_like_fwknopd("[daemon]\nbackend = \"none\"\n", p));
    assert!(looks_like_fwknopd("", Path::new("/etc/fwknop/fwknopd.conf")));
    let (_d, p) = setup("VERBOSE 0;\n");
    let renamed = p.with_file_name("server.cfg");
    std::fs::rename(&p, &renamed).unwrap();
    assert!(load_as(&renamed, Format::Fwknopd).is_ok());
    assert!(load(&renamed).is_ok(), "detected by content");
}

#[test]
fn convert_round_trips_to_the_same_plan() {
    let (d, p) = setup(
        "PCAP_FILTER udp port 40001;\nENABLE_UDP_SERVER Y;\nENABLE_SPA_PACKET_AGING N;\n\
         IPT_INPUT_ACCESS ACCEPT, filter, INPUT, 2, FWKNOP_INPUT, 1;\nENABLE_IPT_FORWARDING Y;\n\
         SYSLOG_IDENTITY fwk;\nEXIT_AT_INTF_DOWN Y;\n",
    );
    let a = load(&p).unwrap();
    let text = convert::to_toml(&a);
    assert!(text.contains("# note: ") && text.contains("EXIT_AT_INTF_DOWN"), "{text}");
    let native = d.path().join("converted.toml");
    std::fs::write(&native, &text).unwrap();
    let b = load_as(&native, Format::Native).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(crate::daemon::plan_for(&a), crate::daemon::plan_for(&b), "{text}");
    assert_eq!(a.daemon.firewall, b.daemon.firewall);
    assert_eq!(a.daemon.syslog, b.daemon.syslog);
    assert_eq!(a.daemon.backend, b.daemon.backend);
    assert_eq!(
        (a.daemon.flush_at_start, a.daemon.flush_at_exit),
        (b.daemon.flush_at_start, b.daemon.flush_at_exit)
    );
    assert_eq!(a.daemon.pid_file, b.daemon.pid_file);
    let (sa, sb) = (a.spa.unwrap(), b.spa.unwrap());
    assert_eq!(
        (sa.ports, sa.udp_server, sa.aging, sa.max_age),
        (sb.ports, sb.udp_server, sb.aging, sb.max_age)
    );
    assert_eq!(
        (sa.forwarding, sa.local_nat, sa.persist_replay),
        (sb.forwarding, sb.local_nat, sb.persist_replay)
    );
    assert_eq!(sa.import_digest_file, sb.import_digest_file);
    let names = |s: &[crate::config::spa::FwknopStanza]| {
        s.iter().map(|x| (x.name.clone(), x.open_ports.clone())).collect::<Vec<_>>()
    };
    assert_eq!(names(&sa.stanzas), names(&sb.stanzas));
}
