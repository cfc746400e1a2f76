use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::config::{read_url, validate, FleetConfig, OnDbDown, RawFleet};
use super::shared::{check_row, parse_notice, Notice, RowRefusal};

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
    std::fs::write(&p, "postgresql://u:secret@db/fleet\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_url(&p).unwrap(), "postgresql://u:secret@db/fleet");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = read_url(&p).unwrap_err().to_string();
    assert!(e.contains("chmod 600") && !e.contains("secret"), "{e}");
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
        check_row(&c, 1, node.into(), addr, svc, 10, "spa:user a".into(), 0)
    };
    let ok = row("gw2", "192.0.2.7", "tcp/22").unwrap();
    assert_eq!(ok.service.to_string(), "tcp/22");
    assert_eq!(ok.remaining(4), Some(std::time::Duration::from_millis(6)));
    assert_eq!(ok.remaining(10), None);
    assert!(matches!(row("evil", "192.0.2.7", "tcp/22"), Err(RowRefusal::UnknownNode(..))));
    assert_eq!(row("gw2", "nope", "tcp/22"), Err(RowRefusal::Malformed(1)));
    assert_eq!(row("gw2", "192.0.2.7", "tcp/0"), Err(RowRefusal::Malformed(1)));
}
