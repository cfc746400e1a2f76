//! A native config that holds fwknop keys inline (`[[spa.fwknop]]` with `key`,
//! `hmac_key`...) is itself a secret: it must pass the same check as the server key,
//! the API tokens and `access.conf` ([`crate::fsperm::check_secret`]).

use std::path::Path;

/// Whether native TOML `text` holds `[[spa.fwknop]]` stanzas (whose keys are inline).
pub fn holds_inline_keys(text: &str) -> bool {
    let Ok(t) = toml::from_str::<toml::Table>(text) else { return false };
    t.get("spa").and_then(|s| s.get("fwknop")).and_then(toml::Value::as_array).is_some_and(|a| !a.is_empty())
}

/// Refuse `path` if it holds inline keys and someone else owns it or group/others may
/// read or write it.
pub fn check(path: &Path, text: &str) -> Result<(), String> {
    if !holds_inline_keys(text) {
        return Ok(());
    }
    let md = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    crate::fsperm::check_secret(path, &md).map_err(|e| format!("{e} (it holds fwknop keys inline)"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const INLINE: &str = "[spa]\n[[spa.fwknop]]\nname = 'a'\nkey_base64 = 'x'\n";

    #[test]
    fn only_configs_with_inline_keys_must_be_private() {
        assert!(holds_inline_keys(INLINE));
        assert!(!holds_inline_keys("[spa]\naccess_conf = '/etc/fwknop/access.conf'\n"));
        assert!(!holds_inline_keys("not toml ["));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, INLINE).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check(&p, INLINE).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("fwknop keys inline"), "{e}");
        assert!(check(&p, "[[door]]\nname = 'x'\n").is_ok(), "no keys: readable is fine");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check(&p, INLINE).is_ok());
    }
}
