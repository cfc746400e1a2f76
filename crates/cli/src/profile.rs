//! Client profiles: `~/.config/portcullis/client.toml` (`$XDG_CONFIG_HOME` honoured), one
//! `[host.NAME]` table per server, so `portcullis open NAME` and `portcullis connect NAME
//! 22` need no flags. Secrets never live in this file, only paths to 0600 files. The
//! format is in docs/client.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::rotating::RotatingOpts;
use crate::secretfile;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// Profiles by name.
    #[serde(default)]
    pub host: BTreeMap<String, Profile>,
}

/// How a server is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    /// A fixed knock sequence.
    Knock,
    /// A rotating sequence.
    Rotating,
    /// An fwknop SPA packet.
    SpaFwknop,
    /// A native portcullis SPA packet.
    SpaNative,
    /// Nothing: connect directly (for `Host *` ProxyCommand set-ups).
    None,
}

/// A knock in the config: `7000` or `"8000:udp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KnockSpec {
    /// A bare port (TCP).
    Port(u32),
    /// `PORT`, `PORT:tcp` or `PORT:udp`.
    Text(String),
}

impl KnockSpec {
    /// The knock form, as `portcullis knock` takes it.
    pub fn text(&self) -> String {
        match self {
            KnockSpec::Port(p) => p.to_string(),
            KnockSpec::Text(s) => s.clone(),
        }
    }
}

/// One `[host.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Host name or address to knock and connect to; default: the profile's name.
    pub address: Option<String>,
    /// Other names this profile answers to (e.g. what ssh passes as `%h`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// How to open the server.
    pub method: MethodName,
    /// knock: the sequence.
    pub sequence: Option<Vec<KnockSpec>>,
    /// knock, rotating: milliseconds between knocks.
    pub delay_ms: Option<u64>,
    /// rotating: md5-hourly or hmac-sha256.
    pub algorithm: Option<String>,
    /// rotating: the secret file (0600).
    pub secret_file: Option<PathBuf>,
    /// rotating: BOTTOM-TOP.
    pub range: Option<String>,
    /// rotating: knocks per sequence.
    pub count: Option<usize>,
    /// rotating (hmac-sha256): step, e.g. "30s".
    pub step: Option<String>,
    /// rotating (hmac-sha256): tcp, udp or mixed.
    pub protocols: Option<String>,
    /// spa-fwknop: stanza of the fwknop rc file holding the keys.
    pub fwknop_stanza: Option<String>,
    /// spa-fwknop: the rc file (default ~/.fwknoprc).
    pub fwknop_rc: Option<PathBuf>,
    /// spa-fwknop: a key file as `portcullis keygen --out` writes it (instead of a stanza).
    pub fwknop_keys: Option<PathBuf>,
    /// spa-native: the server's public key (pcs1-pub-...).
    pub server_key: Option<String>,
    /// spa-native: your user secret key file (0600).
    pub user_key_file: Option<PathBuf>,
    /// SPA: the server's UDP port (default 62201).
    pub spa_port: Option<u16>,
    /// SPA: what to ask for, e.g. ["tcp/22"] (connect defaults to tcp/PORT).
    pub open: Option<Vec<String>>,
    /// connect: how long to keep trying, e.g. "5s".
    pub wait: Option<String>,
}

impl Profile {
    /// The rotating options this profile gives, with paths resolved.
    pub fn rotating(&self, base: &Path) -> RotatingOpts {
        RotatingOpts {
            algorithm: self.algorithm.clone(),
            secret: None,
            secret_file: self.secret_file.as_deref().map(|p| resolve_path(p, base)),
            range: self.range.clone(),
            count: self.count,
            step: self.step.clone(),
            protocols: self.protocols.clone(),
        }
    }
}

/// A loaded file and where it came from (relative paths in it are relative to its
/// directory).
#[derive(Debug)]
pub struct Profiles {
    /// The file.
    pub path: PathBuf,
    file: ClientFile,
}

/// `$XDG_CONFIG_HOME/portcullis/client.toml`, else `$HOME/.config/portcullis/client.toml`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?)
            .join(".config"),
    };
    Ok(base.join("portcullis").join("client.toml"))
}

/// `~/x` is under $HOME; a relative path is relative to `base` (the config's directory).
pub fn resolve_path(p: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Profiles {
    /// Load `path` (or the default path). A missing default file is an empty set of
    /// profiles; a missing explicit file is an error.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Profiles> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_path()?, false),
        };
        if !explicit && !path.exists() {
            return Ok(Profiles { path, file: ClientFile { host: BTreeMap::new() } });
        }
        let text = secretfile::read_config(&path)?;
        Profiles::parse(&text, path)
    }

    /// Parse file text (errors name the file).
    pub fn parse(text: &str, path: PathBuf) -> anyhow::Result<Profiles> {
        let file: ClientFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (name, p) in &file.host {
            if name.is_empty() || p.aliases.iter().any(String::is_empty) {
                bail!("{}: empty host name or alias", path.display());
            }
        }
        Ok(Profiles { path, file })
    }

    /// The directory relative paths are resolved against.
    pub fn base(&self) -> PathBuf {
        self.path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// The profile called `name`, or answering to it as an address or alias.
    pub fn find(&self, name: &str) -> Option<(&str, &Profile)> {
        if let Some((k, p)) = self.file.host.get_key_value(name) {
            return Some((k, p));
        }
        self.file
            .host
            .iter()
            .find(|(_, p)| p.address.as_deref() == Some(name) || p.aliases.iter().any(|a| a == name))
            .map(|(k, p)| (k.as_str(), p))
    }

    /// Like [`Profiles::find`], failing with the names that exist.
    pub fn get(&self, name: &str) -> anyhow::Result<(&str, &Profile)> {
        self.find(name).with_context(|| {
            let known: Vec<&str> = self.file.host.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("no profile {name:?}: {} has no [host.NAME] tables", self.path.display())
            } else {
                format!("no profile {name:?} in {} (known: {})", self.path.display(), known.join(", "))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[host.myserver]
address = "192.0.2.1"
aliases = ["ms", "myserver.example.org"]
method = "knock"
sequence = [7000, "8000:udp", "9000"]
delay_ms = 20

[host.rot]
method = "rotating"
algorithm = "hmac-sha256"
secret_file = "rot.secret"
range = "10000-10999"
count = 5
step = "30s"
"#;

    #[test]
    fn profiles_are_found_by_name_address_or_alias() {
        let p = Profiles::parse(FILE, PathBuf::from("/etc/x/client.toml")).unwrap();
        for n in ["myserver", "ms", "myserver.example.org", "192.0.2.1"] {
            assert_eq!(p.find(n).unwrap().0, "myserver", "{n}");
        }
        let (_, m) = p.get("myserver").unwrap();
        assert_eq!(m.method, MethodName::Knock);
        let seq: Vec<String> = m.sequence.as_ref().unwrap().iter().map(KnockSpec::text).collect();
        assert_eq!(seq, ["7000", "8000:udp", "9000"]);
        let (_, r) = p.get("rot").unwrap();
        assert_eq!(r.rotating(&p.base()).secret_file.unwrap(), PathBuf::from("/etc/x/rot.secret"));
        let e = p.get("nope").unwrap_err().to_string();
        assert!(e.contains("no profile \"nope\"") && e.contains("known: myserver, rot"), "{e}");
    }

    #[test]
    fn unknown_keys_and_methods_are_errors() {
        let e = Profiles::parse("[host.a]\nmethod = \"knock\"\nsequense = [1]\n", "c.toml".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("sequense"), "{e}");
        assert!(Profiles::parse("[host.a]\nmethod = \"telnet\"\n", "c.toml".into()).is_err());
        assert!(Profiles::parse("[host.a]\n", "c.toml".into()).is_err());
        assert!(Profiles::parse("[hosts.a]\nmethod = \"none\"\n", "c.toml".into()).is_err());
    }

    #[test]
    fn explicit_missing_files_are_errors() {
        assert!(Profiles::load(Some(Path::new("/nonexistent/client.toml"))).is_err());
    }
}
