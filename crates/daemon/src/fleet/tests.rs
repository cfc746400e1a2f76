use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::config::{read_url, validate, FleetConfig, OnDbDown, RawFleet};
use super::shared::{check_row, parse_notice, Notice, RawRow, RowRefusal};

fn cfg(text: &str) -> Result<FleetConfig, String> {
    let raw: RawFleet = toml::from_str(text).map_err(|e| e.to_string())?;
    validate(raw, Path::new("/etc/portcullis")).map_err(|(_, m)| m)
}

#[test]
fn fleet_section_is_validated() {
    let c = cfg("database_url_file = \"fleet.url\"\nnode = \"gw1\"\n").unwrap();
    assert_eq!(c.database_url_file, Path::new("/etc/portcullis/fleet.url"));
    assert_eq!(c.on_db_down, OnDbDown::Refuse);
    assert!(c.knows("anything-valid"));
    let c =
        cfg("database_url_file = \"/u\"\nnode = \"gw1\"\nnodes = [\"gw1\", \"gw2\"]\non_db_down = \"local\"")
            .unwrap();
    assert_eq!(c.on_db_down, OnDbDown::Local);
    assert!(c.knows("gw2") && !c.knows("gw9"));
    assert!(cfg("node = \"gw1\"").unwrap_err().contains("database_url_file"));
    assert!(cfg("database_url_file = \"/u\"").unwrap_err().contains("node"));
    assert!(cfg("database_url_file = \"/u\"\nnode = \"g w\"").unwrap_err().contains("node"));
    assert!(cfg("database_url_file = \"/u\"\nnode = \"gw1\"\nnodes = [\"gw2\"]")
        .unwrap_err()
        .contains("this node"));
    assert!(cfg("database_url_file = \"/u\"\nnode = \"gw1\"\non_db_down = \"open\"")
        .unwrap_err()
        .contains("on_db_down"));
    assert!(cfg("database_url_file = \"/u\"\nnode = \"gw1\"\nbogus = 1").is_err());
}

#[test]
fn url_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("url");
    std::fs::write(&p, "postgresql://u:hunter2@db/fleet\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_url(&p).unwrap(), "postgresql://u:hunter2@db/fleet");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = read_url(&p).unwrap_err().to_string();
    assert!(e.contains("chmod 600") && !e.contains("hunter2"), "{e}");
    std::fs::write(dir.path().join("empty"), "  \n").unwrap();
    std::fs::set_permissions(dir.path().join("empty"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(read_url(&dir.path().join("empty")).unwrap_err().to_string().contains("empty"));
    assert!(read_url(&dir.path().join("missing")).is_err());
    assert!(read_url(dir.path()).unwrap_err().to_string().contains("regular file"));
}

#[test]
fn notifications_are_parsed_strictly() {
    assert_eq!(parse_notice("g 12"), Some(Notice::Grant(12)));
    assert_eq!(parse_notice("r 7"), Some(Notice::Revoke(7)));
    for bad in ["", "g", "g ", "g 0", "g -1", "g +1", "g 1 ", "x 1", "g 1a", "G 1", "g 99999999999999999999"]
    {
        assert_eq!(parse_notice(bad), None, "{bad:?}");
    }
    assert_eq!(parse_notice(&format!("g {}", "1".repeat(40))), None);
}

#[test]
fn rows_from_strangers_or_malformed_are_refused() {
    let c = cfg("database_url_file = \"/u\"\nnode = \"gw1\"\nnodes = [\"gw1\", \"gw2\"]").unwrap();
    let row = |node: &str, addr: &str, svc: &str| {
        let raw = RawRow {
            id: 1,
            node: node.into(),
            addr: addr.into(),
            service: svc.into(),
            expires_at: 10,
            origin: "spa:user a".into(),
            created_at: 0,
        };
        check_row(&c, raw)
    };
    let ok = row("gw2", "192.0.2.7", "tcp/22").unwrap();
    assert_eq!(ok.service.to_string(), "tcp/22");
    assert_eq!(ok.remaining(4), Some(std::time::Duration::from_millis(6)));
    assert_eq!(ok.remaining(10), None);
    assert!(matches!(row("evil", "192.0.2.7", "tcp/22"), Err(RowRefusal::UnknownNode(..))));
    assert_eq!(row("gw2", "nope", "tcp/22"), Err(RowRefusal::Malformed(1)));
    assert_eq!(row("gw2", "192.0.2.7", "tcp/0"), Err(RowRefusal::Malformed(1)));
}

fn native(tail: &str) -> Result<crate::config::Config, String> {
    use portcullis_proto::spa::native::{ServerKey, UserKey};
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("server.key");
    std::fs::write(&server, ServerKey::generate(&mut |b: &mut [u8]| b.fill(3)).to_text().as_str()).unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = UserKey::generate(&mut |b: &mut [u8]| b.fill(7)).public();
    let text = format!(
        "[spa]\nserver_key_file = \"{}\"\n[[spa.user]]\nname = \"alice\"\nkey = \"{key}\"\nopen = [\"tcp/22\"]\n{tail}",
        server.display()
    );
    crate::config::parse(&text, Path::new("/etc/portcullis/p.toml")).map_err(|e| e.to_string())
}

#[test]
fn native_config_reads_fleet_and_scope() {
    let c = native("").unwrap();
    assert!(c.fleet.is_none() && !c.spa.unwrap().users["alice"].fleet, "no [fleet]: local, as before");
    let c =
        native("scope = \"fleet\"\n[fleet]\ndatabase_url_file = \"fleet.url\"\nnode = \"gw1\"\n").unwrap();
    assert_eq!(c.fleet.unwrap().node, "gw1");
    assert!(c.spa.unwrap().users["alice"].fleet);
    assert!(native("scope = \"fleet\"\n").unwrap_err().contains("no [fleet]"));
    let e = native("scope = \"fleet\"\ngrant_prefix_v6 = 64\n[fleet]\ndatabase_url_file = \"fleet.url\"\nnode = \"gw1\"\n")
        .unwrap_err();
    assert!(e.contains("[[spa.user]] \"alice\"") && e.contains("grant prefix"), "{e}");
    assert!(native("scope = \"world\"\n").unwrap_err().contains("scope"));
    let e = native("[fleet]\nnode = \"gw1\"\n").unwrap_err();
    assert!(e.contains("p.toml") && e.contains("database_url_file"), "{e}");
}

mod scope {
    use std::path::Path;

    use crate::config::{parse, Config};

    const FLEET: &str = "[fleet]\ndatabase_url_file = \"fleet.url\"\nnode = \"gw1\"\n";
    const DOOR: &str = "[[door]]\nname = \"ssh\"\nsequence = [7000, 9000, 8000]\nopen = [\"tcp/22\"]\n";
    const KEYS: &str = "key_base64 = \"wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=\"\n\
        hmac_key_base64 = \"Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==\"\n";

    fn p(text: &str) -> Result<Config, String> {
        parse(text, Path::new("/etc/portcullis/test.toml")).map_err(|e| e.to_string())
    }

    fn stanza(extra: &str) -> String {
        format!("[spa]\n[[spa.fwknop]]\nname = \"ops\"\n{KEYS}open_ports = [\"tcp/22\"]\n{extra}")
    }

    #[test]
    fn doors_and_inline_stanzas_take_a_scope() {
        let c = p(&format!("{FLEET}{DOOR}scope = \"fleet\"\n{}", stanza("scope = \"fleet\"\n"))).unwrap();
        assert!(c.doors[0].fleet);
        assert!(c.spa.unwrap().stanzas[0].fleet);
        let c = p(&format!("{FLEET}{DOOR}scope = \"local\"\n{}", stanza(""))).unwrap();
        assert!(!c.doors[0].fleet && !c.spa.unwrap().stanzas[0].fleet, "local is the default");
        assert!(p(&format!("{FLEET}{DOOR}scope = \"global\"\n"))
            .unwrap_err()
            .contains("\"local\" or \"fleet\""));
        // Fleet scope without [fleet]: refused, for doors and stanzas alike.
        for text in [format!("{DOOR}scope = \"fleet\"\n"), stanza("scope = \"fleet\"\n")] {
            assert!(p(&text).unwrap_err().contains("no [fleet] section"), "{text}");
        }
        // A command-only door and a command-cycle stanza have nothing another node can open.
        let cmd_door = "[[door]]\nname = \"c\"\nsequence = [7000, 9000, 8000]\nstart_command = \"true\"\n\
                        scope = \"fleet\"\n";
        assert!(p(&format!("{FLEET}{cmd_door}")).unwrap_err().contains("opens nothing"));
        let cycle =
            "scope = \"fleet\"\ncmd_cycle_open = \"true\"\ncmd_cycle_close = \"true\"\ncmd_cycle_timer = 9\n";
        assert!(p(&format!("{FLEET}{}", stanza(cycle))).unwrap_err().contains("CMD_CYCLE"));
        // Fleet grants are single addresses: a fleet door granting a prefix is refused.
        let e = p(&format!("{FLEET}{DOOR}scope = \"fleet\"\ngrant_prefix_v4 = 24\n")).unwrap_err();
        assert!(e.contains("door \"ssh\"") && e.contains("grant prefix"), "{e}");
        assert!(p(&format!("{FLEET}{DOOR}grant_prefix_v4 = 24\n")).is_ok(), "local prefix doors stay");
    }

    #[test]
    fn access_conf_scope_applies_to_the_file_s_stanzas() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access.conf");
        std::fs::write(
            &access,
            "SOURCE ANY\nKEY_BASE64 wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=\n\
             HMAC_KEY_BASE64 Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==\n\
             OPEN_PORTS tcp/22\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o600)).unwrap();
        let spa = |scope: &str| format!("[spa]\naccess_conf = \"{}\"\n{scope}", access.display());
        let c = p(&format!("{FLEET}{}", spa("access_conf_scope = \"fleet\"\n"))).unwrap();
        assert!(c.spa.unwrap().stanzas.iter().all(|s| s.fleet));
        let c = p(&format!("{FLEET}{}", spa(""))).unwrap();
        assert!(c.spa.unwrap().stanzas.iter().all(|s| !s.fleet));
        assert!(p(&spa("access_conf_scope = \"fleet\"\n")).unwrap_err().contains("no [fleet] section"));
        assert!(p(
            &format!("{FLEET}{}", stanza("")).replace("[spa]\n", "[spa]\naccess_conf_scope = \"fleet\"\n")
        )
        .unwrap_err()
        .contains("needs access_conf"));
    }
}

#[test]
fn remaining_time_never_exceeds_the_grant_s_length() {
    use super::shared::FleetGrant;
    let g = FleetGrant {
        id: 1,
        node: "gw1".into(),
        addr: "192.0.2.7".parse().unwrap(),
        service: portcullis_proto::Service::tcp(22),
        expires_at: 40_000,
        origin: "door:ssh".into(),
        created_at: 10_000,
    };
    // A clock far behind would otherwise keep it open minutes longer.
    assert_eq!(g.remaining(-300_000), Some(std::time::Duration::from_secs(30)));
    assert_eq!(g.remaining(30_000), Some(std::time::Duration::from_secs(10)));
    assert_eq!(g.remaining(40_000), None);
}
