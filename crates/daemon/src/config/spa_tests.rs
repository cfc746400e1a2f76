//! `[spa]` settings added for hostile conditions: weak-stanza warnings that name the
//! stanza and its line, native `allow_addresses`, budget prefix lengths.

use std::path::Path;

use super::*;

const HMAC_B64: &str =
    "Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==";

fn spa_config(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    parse(text, &dir.join("pc.toml"))
}

#[test]
fn no_hmac_and_legacy_stanzas_are_warned_about_with_name_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("access.conf"),
        format!(
            "SOURCE ANY\nKEY_BASE64 wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=\nHMAC_KEY_BASE64 {HMAC_B64}\n\n\
             SOURCE 192.0.2.0/24\nKEY plainkey\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("access.conf"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[spa]\naccess_conf = \"access.conf\"\n\n[[spa.fwknop]]\nname = \"good\"\nkey = \"k1\"\nhmac_key_base64 = \"{HMAC_B64}\"\n\n\
         [[spa.fwknop]]\nname = \"old\"\nkey = \"k2\"\nencryption_mode = \"legacy\"\n"
    );
    let c = spa_config(dir.path(), &text).unwrap();
    let w = c.warnings();
    let pc = dir.path().join("pc.toml").display().to_string();
    let on = |needle: &str| w.iter().filter(|l| l.contains(needle)).cloned().collect::<Vec<_>>();
    let old = on("fwknop stanza \"old\"");
    assert_eq!(old.len(), 2, "no HMAC and legacy: {w:#?}");
    assert!(old.iter().all(|l| l.contains(&format!("({pc}:9)"))), "{old:#?}");
    assert!(old[0].contains("no HMAC key") && old[1].contains("legacy encryption mode"), "{old:#?}");
    let plain = on("fwknop stanza access.conf:5");
    assert_eq!(plain.len(), 1, "{w:#?}");
    assert!(plain[0].contains("no HMAC key") && plain[0].contains("access.conf)"), "{plain:#?}");
    assert!(on("\"good\"").is_empty() && on("access.conf:1 ").is_empty(), "HMAC stanzas are fine: {w:#?}");
}

#[test]
fn allow_addresses_and_source_prefixes_are_parsed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "pcs1-sec-EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi-TW0YV\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let user = "pcu1-pub-JUO5L_EJVRFHatyDadtt3JM2ZaEZeN2hQE7hBmypVZ03nsZG";
    let cfg = |extra_spa: &str, extra_user: &str| {
        format!(
            "[spa]\nserver_key_file = \"server.key\"\n{extra_spa}\n[[spa.user]]\nname = \"a\"\nkey = \"{user}\"\nopen = [\"tcp/22\"]\n{extra_user}\n"
        )
    };
    let c = spa_config(dir.path(), &cfg("", "")).unwrap();
    let spa = c.spa.unwrap();
    assert_eq!(spa.source_prefix, (24, 56));
    assert!(spa.users["a"].allow_addresses.is_empty(), "the source only by default");

    let c = spa_config(
        dir.path(),
        &cfg(
            "source_prefix_v4 = 16\nsource_prefix_v6 = 48",
            "allow_addresses = [\"198.51.100.0/24\", \"2001:db8::1\"]",
        ),
    )
    .unwrap();
    let spa = c.spa.unwrap();
    assert_eq!(spa.source_prefix, (16, 48));
    assert_eq!(spa.users["a"].allow_addresses.len(), 2);

    let e = spa_config(dir.path(), &cfg("", "allow_addresses = [\"example.org\"]")).unwrap_err();
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.to_string().contains("\"example.org\" is not an address or CIDR"), "{e}");
    let e = spa_config(dir.path(), &cfg("source_prefix_v4 = 33", "")).unwrap_err();
    assert!(e.to_string().contains("source_prefix_v4 must be 0 to 32"), "{e}");
    let e = spa_config(dir.path(), &cfg("source_prefix_v6 = 129", "")).unwrap_err();
    assert!(e.to_string().contains("source_prefix_v6 must be 0 to 128"), "{e}");
}
