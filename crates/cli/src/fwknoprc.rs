//! Reading a stanza of an existing `~/.fwknoprc`, so fwknop users keep their set-up.
//!
//! Format: `[default]` and `[name]` sections of `VARIABLE value` lines, `#` comments.
//! A named stanza inherits from `[default]`; command-line options override both.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};

/// The variables of one stanza (upper-cased names), with `[default]` folded in.
pub type Stanza = HashMap<String, String>;

/// Read `name` (or just `[default]` if `name` is None) from the rc file text.
pub fn stanza(text: &str, name: Option<&str>, path: &Path) -> anyhow::Result<Stanza> {
    let mut sections: HashMap<String, Stanza> = HashMap::new();
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(sec) = rest.strip_suffix(']') else {
                bail!("{}:{}: malformed section header {line:?}", path.display(), i + 1);
            };
            current = Some(sec.trim().to_string());
            sections.entry(sec.trim().to_string()).or_default();
            continue;
        }
        let Some(sec) = &current else {
            bail!("{}:{}: {line:?} is outside any [stanza]", path.display(), i + 1);
        };
        let (k, v) = line.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((line, ""));
        sections.entry(sec.clone()).or_default().insert(k.to_ascii_uppercase(), v.trim().to_string());
    }
    let mut out = sections.get("default").cloned().unwrap_or_default();
    if let Some(n) = name {
        let named = sections.get(n).with_context(|| format!("no [{n}] stanza in {}", path.display()))?;
        out.extend(named.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_stanza_overrides_default() {
        let text = "[default]\nSPA_SERVER_PORT 62201\nUSE_HMAC N\n\n# comment\n[myserver]\nSPA_SERVER 192.0.2.1\nACCESS tcp/22\nUSE_HMAC Y\nKEY_BASE64 abc=\n";
        let s = stanza(text, Some("myserver"), Path::new("rc")).unwrap();
        assert_eq!(s["SPA_SERVER"], "192.0.2.1");
        assert_eq!(s["USE_HMAC"], "Y");
        assert_eq!(s["SPA_SERVER_PORT"], "62201");
        assert!(stanza(text, Some("nope"), Path::new("rc")).is_err());
        assert!(stanza("KEY x\n", None, Path::new("rc")).is_err());
        assert!(stanza("[oops\n", None, Path::new("rc")).is_err());
    }
}
