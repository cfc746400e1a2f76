//! Pending stop commands, persisted so that a restart (or kill -9) never loses one.
//!
//! The file `pending-stops.toml` in the state directory holds every stop command not
//! yet run to completion, with its due time as Unix milliseconds and the exact command
//! text it was scheduled with (a config change does not alter a scheduled stop). It is
//! replaced atomically and is private ([`crate::fsperm::replace`]); one that others
//! could write is refused (here, and by [`crate::statedir`] before the daemon starts). It is bounded: at most [`MAX_ENTRIES`] entries; a start whose stop cannot
//! be recorded is not run. Stops are at-least-once: a crash right after a stop ran but
//! before the file was updated runs it again at start (an `iptables -D` that finds no
//! rule just fails, logged).

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::CommandLine;

/// Most pending stops kept (and so most grants with a stop command open at once).
pub const MAX_ENTRIES: usize = 4096;
/// File name inside the state directory.
pub const FILE_NAME: &str = "pending-stops.toml";
/// Largest file accepted when reading (entries hold commands of up to 4 KiB).
const MAX_FILE: u64 = 32 << 20;

/// One scheduled stop command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique within the file.
    pub id: u64,
    /// When to run it, Unix time in milliseconds.
    pub due_unix_ms: u64,
    /// The door (for logs and to find a grant again on a repeat knock).
    pub door: String,
    /// The knocker.
    pub addr: IpAddr,
    /// A shell command line (knockd style) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// ... or an argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
}

impl Entry {
    /// The command to run.
    pub fn command(&self) -> Option<CommandLine> {
        match (&self.shell, &self.argv) {
            (Some(s), _) => Some(CommandLine::Shell(s.clone())),
            (None, Some(v)) if !v.is_empty() => Some(CommandLine::Argv(v.clone())),
            _ => None,
        }
    }

    /// An entry for `cmd`.
    pub fn new(id: u64, due_unix_ms: u64, door: &str, addr: IpAddr, cmd: &CommandLine) -> Entry {
        let (shell, argv) = match cmd {
            CommandLine::Shell(s) => (Some(s.clone()), None),
            CommandLine::Argv(v) => (None, Some(v.clone())),
        };
        Entry { id, due_unix_ms, door: door.to_string(), addr, shell, argv }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    #[serde(default)]
    stop: Vec<Entry>,
}

/// The on-disk store. Only the scheduler thread writes it.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> Store {
        Store { path: state_dir.join(FILE_NAME) }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the entries. A missing file is empty. An unreadable one is moved aside to
    /// `*.corrupt` (so it can be inspected) and reported as an error.
    pub fn load(&self) -> Result<Vec<Entry>, String> {
        let meta = match fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        if !meta.file_type().is_file() {
            return Err(format!("{} is not a regular file; ignored", self.path.display()));
        }
        crate::fsperm::check_trusted(&self.path, &meta).map_err(|e| format!("{e}; ignored"))?;
        let parsed = if meta.len() > MAX_FILE {
            Err(format!("larger than {MAX_FILE} bytes"))
        } else {
            fs::read_to_string(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str::<FileFormat>(&t).map_err(|e| e.to_string()))
        };
        match parsed {
            Ok(f) => Ok(f.stop.into_iter().take(MAX_ENTRIES).collect()),
            Err(e) => {
                let aside = self.path.with_extension("toml.corrupt");
                let _ = fs::rename(&self.path, &aside);
                Err(format!("{}: {e} (moved to {})", self.path.display(), aside.display()))
            }
        }
    }

    /// Replace the file with `entries`, atomically and durably.
    pub fn save(&self, entries: &[Entry]) -> std::io::Result<()> {
        let text = toml::to_string(&FileFormat { version: 1, stop: entries.to_vec() })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        crate::fsperm::replace(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        assert_eq!(s.load().unwrap(), Vec::new());
        let e = vec![
            Entry::new(
                1,
                1000,
                "ssh",
                "192.0.2.2".parse().unwrap(),
                &CommandLine::Shell("x %IP% 'q\"'".into()),
            ),
            Entry::new(
                2,
                2000,
                "v6",
                "2001:db8::2".parse().unwrap(),
                &CommandLine::Argv(vec!["/bin/true".into()]),
            ),
        ];
        s.save(&e).unwrap();
        assert_eq!(s.load().unwrap(), e);
        assert!(!dir.path().join("pending-stops.toml.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(s.path()).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(s.path(), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(s.load().unwrap_err().contains("group/others may write it"));
        fs::set_permissions(s.path(), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(s.path(), "version = 1\n[[stop]]\nid = 1\naddr = '1.2.3.4; rm -rf /'\n").unwrap();
        let err = s.load().unwrap_err();
        assert!(err.contains("moved to"), "{err}");
        assert_eq!(s.load().unwrap(), Vec::new());
    }

    #[test]
    fn a_file_others_can_write_or_a_symlink_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        s.save(&[Entry::new(
            1,
            1000,
            "ssh",
            "192.0.2.2".parse().unwrap(),
            &CommandLine::Shell("true".into()),
        )])
        .unwrap();
        assert_eq!(s.load().unwrap().len(), 1);
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(s.load().unwrap_err().contains("ignored"));
        let real = dir.path().join("elsewhere.toml");
        std::fs::rename(s.path(), &real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, s.path()).unwrap();
        assert!(s.load().is_err(), "followed a symlink");
        // A planted temporary file (here a symlink) is replaced, not written through.
        let _ = std::fs::remove_file(s.path());
        std::os::unix::fs::symlink(&real, s.path().with_extension("toml.tmp")).unwrap();
        s.save(&[]).unwrap();
        assert!(std::fs::read_to_string(&real).unwrap().contains("true"), "written through a symlink");
    }
}
