//! Where parsing a config reads the other files it names (SPA server keys, fwknop
//! `access.conf` and its includes, rotating door secrets).
//!
//! By default they are read from disk, each reader checking ownership and mode on the
//! opened file. A split daemon's unprivileged part cannot read them (they are root's and
//! Landlock allows nothing outside the state dir), so on SIGHUP the privileged part
//! parses with [`recording`]: every file read (after the reader's own checks), every
//! canonical path and every `%include_folder` listing is kept in a [`Files`] bundle that
//! travels with the config text. The unprivileged part parses that text with
//! [`serving`]: answers come only from the bundle, a path that is not in it is an error,
//! and the filesystem is never touched. The checks are the parent's; the child trusts
//! what the parent checked.
//!
//! The mode is a scoped thread-local, so the parse functions need no extra parameter:
//! a parse runs on one thread from start to end.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The files one parse read, as the privileged part checked them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Path → content (base64 on the wire: a rotating secret need not be text).
    #[serde(default, with = "b64_map")]
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Path → its canonical form (include loop detection).
    #[serde(default)]
    pub canon: BTreeMap<PathBuf, PathBuf>,
    /// Directory → the `*.conf` regular files in it, sorted (`%include_folder`).
    #[serde(default)]
    pub dirs: BTreeMap<PathBuf, Vec<PathBuf>>,
}

enum Mode {
    Record(Files),
    Serve(Files),
}

thread_local! {
    static MODE: RefCell<Option<Mode>> = const { RefCell::new(None) };
}

/// Puts the previous mode back when a scope ends, even by a panic.
struct Scope {
    prev: Option<Mode>,
    left: bool,
}

impl Scope {
    fn enter(mode: Mode) -> Scope {
        Scope { prev: MODE.with(|m| m.borrow_mut().replace(mode)), left: false }
    }

    fn leave(mut self) -> Option<Mode> {
        self.left = true;
        let prev = self.prev.take();
        MODE.with(|m| std::mem::replace(&mut *m.borrow_mut(), prev))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.left {
            let prev = self.prev.take();
            MODE.with(|m| *m.borrow_mut() = prev);
        }
    }
}

/// Run `f` reading from disk, and return with its result every file it read.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, Files) {
    let scope = Scope::enter(Mode::Record(Files::default()));
    let out = f();
    match scope.leave() {
        Some(Mode::Record(files)) => (out, files),
        _ => (out, Files::default()),
    }
}

/// Run `f` with every file read served from `files` alone.
pub fn serving<T>(files: Files, f: impl FnOnce() -> T) -> T {
    let scope = Scope::enter(Mode::Serve(files));
    let out = f();
    drop(scope.leave());
    out
}

fn missing(path: &Path) -> String {
    format!("{} is not among the files the privileged part read and checked for this config", path.display())
}

/// What to do with one question: ask the disk (and maybe record), or answer from the bundle.
fn with_mode<T: Clone>(
    disk: impl FnOnce() -> Result<T, String>,
    record: impl FnOnce(&mut Files, &T),
    serve: impl FnOnce(&Files) -> Result<T, String>,
) -> Result<T, String> {
    // The borrow is not held across `disk`: a reader may ask again (nested includes).
    let serving = MODE.with(|m| match &*m.borrow() {
        Some(Mode::Serve(files)) => Some(serve(files)),
        _ => None,
    });
    if let Some(r) = serving {
        return r;
    }
    let v = disk()?;
    MODE.with(|m| {
        if let Some(Mode::Record(files)) = &mut *m.borrow_mut() {
            record(files, &v);
        }
    });
    Ok(v)
}

/// Read `path` with `disk` (which opens, checks and reads at most `max` bytes), or take
/// it from the bundle (still at most `max` bytes).
pub fn read(
    path: &Path,
    max: u64,
    disk: impl FnOnce(&Path) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    with_mode(
        || disk(path),
        |f, v| {
            f.files.insert(path.to_owned(), v.clone());
        },
        |f| {
            let v = f.files.get(path).ok_or_else(|| missing(path))?;
            if v.len() as u64 > max {
                return Err(format!("{} is larger than {max} bytes", path.display()));
            }
            Ok(v.clone())
        },
    )
}

/// [`read`] of UTF-8 text.
pub fn read_text(
    path: &Path,
    max: u64,
    disk: impl FnOnce(&Path) -> Result<String, String>,
) -> Result<String, String> {
    let bytes = read(path, max, |p| disk(p).map(String::into_bytes))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// A check of `path` on disk (ownership, mode); served, only a file the privileged part
/// read passes (it passed the same check there).
pub fn check(path: &Path, disk: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), String> {
    with_mode(
        || disk(path),
        |_, _| {},
        |f| f.files.contains_key(path).then_some(()).ok_or_else(|| missing(path)),
    )
}

/// `std::fs::canonicalize`, or the bundle's answer.
pub fn canonicalize(path: &Path) -> Result<PathBuf, String> {
    with_mode(
        || std::fs::canonicalize(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
        |f, v| {
            f.canon.insert(path.to_owned(), v.clone());
        },
        |f| f.canon.get(path).cloned().ok_or_else(|| missing(path)),
    )
}

/// Whether `path` is a directory (served: a directory whose listing was recorded).
pub fn is_dir(path: &Path) -> bool {
    MODE.with(|m| match &*m.borrow() {
        Some(Mode::Serve(files)) => Some(files.dirs.contains_key(path)),
        _ => None,
    })
    .unwrap_or_else(|| path.is_dir())
}

/// The `*.conf` regular files in `dir`, sorted.
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    with_mode(
        || {
            let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect();
            files.sort();
            Ok(files)
        },
        |f, v| {
            f.dirs.insert(dir.to_owned(), v.clone());
        },
        |f| f.dirs.get(dir).cloned().ok_or_else(|| missing(dir)),
    )
}

mod b64_map {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<PathBuf, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        let enc: BTreeMap<&PathBuf, String> = m.iter().map(|(k, v)| (k, STANDARD.encode(v))).collect();
        enc.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<PathBuf, Vec<u8>>, D::Error> {
        let enc = BTreeMap::<PathBuf, String>::deserialize(d)?;
        enc.into_iter()
            .map(|(k, v)| STANDARD.decode(v).map(|b| (k, b)).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_never(_: &Path) -> Result<Vec<u8>, String> {
        panic!("served reads must not touch the disk")
    }

    #[test]
    fn recording_keeps_what_the_checked_reads_returned() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.conf");
        std::fs::write(&p, "x").unwrap();
        let (r, files) = recording(|| {
            let canon = canonicalize(&p).unwrap();
            let list = conf_files(d.path()).unwrap();
            let bytes = read(&p, 10, |p| std::fs::read(p).map_err(|e| e.to_string())).unwrap();
            let refused = read(&d.path().join("b"), 10, |_| Err("refused by its check".into()));
            (canon, list, bytes, refused)
        });
        assert_eq!(r.2, b"x");
        assert!(r.3.is_err());
        assert_eq!(files.files.len(), 1, "a refused read is not recorded");
        assert_eq!(files.files[&p], b"x");
        assert_eq!(files.canon[&p], r.0);
        assert_eq!(files.dirs[d.path()], vec![p.clone()]);
        // Outside the scope: the disk again, nothing recorded.
        assert!(MODE.with(|m| m.borrow().is_none()));
    }

    #[test]
    fn serving_answers_from_the_bundle_only() {
        let mut files = Files::default();
        files.files.insert("/etc/k".into(), b"secret".to_vec());
        files.canon.insert("/etc/k".into(), "/real/k".into());
        files.dirs.insert("/etc/d".into(), vec!["/etc/d/a.conf".into()]);
        serving(files, || {
            assert_eq!(read(Path::new("/etc/k"), 10, disk_never).unwrap(), b"secret");
            let e = read(Path::new("/etc/other"), 10, disk_never).unwrap_err();
            assert!(e.contains("/etc/other is not among the files the privileged part read"), "{e}");
            // The readers' per-file bound holds for served files too.
            assert!(read(Path::new("/etc/k"), 3, disk_never).unwrap_err().contains("larger than 3"));
            assert!(check(Path::new("/etc/k"), |_| panic!("disk")).is_ok());
            assert!(check(Path::new("/etc/passwd"), |_| panic!("disk")).is_err());
            assert_eq!(canonicalize(Path::new("/etc/k")).unwrap(), Path::new("/real/k"));
            assert!(canonicalize(Path::new("/")).is_err());
            assert!(is_dir(Path::new("/etc/d")) && !is_dir(Path::new("/etc")));
            assert_eq!(conf_files(Path::new("/etc/d")).unwrap().len(), 1);
            assert!(conf_files(Path::new("/etc")).is_err());
        });
        assert!(MODE.with(|m| m.borrow().is_none()), "the scope ends with the call");
    }

    #[test]
    fn a_bundle_round_trips_and_refuses_unknown_fields() {
        let mut files = Files::default();
        files.files.insert("/k".into(), vec![0, 255, 7]);
        files.canon.insert("/k".into(), "/k".into());
        let json = serde_json::to_string(&files).unwrap();
        assert_eq!(serde_json::from_str::<Files>(&json).unwrap(), files);
        assert!(serde_json::from_str::<Files>(r#"{"files":{"/k":"!!"}}"#).is_err(), "bad base64");
        assert!(serde_json::from_str::<Files>(r#"{"extra":1}"#).is_err());
        assert_eq!(serde_json::from_str::<Files>("{}").unwrap(), Files::default());
    }

    /// A config naming every kind of file parsing reads: a server key, an access folder
    /// whose file includes another, a rotating secret.
    fn config_with_files(dir: &Path) -> String {
        use portcullis_proto::spa::native::{ServerKey, UserKey};
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write("server.key", ServerKey::generate(&mut |b: &mut [u8]| b.fill(3)).to_text().as_str());
        write("access.d/a.conf", "%include ../stanza.inc\n");
        write("stanza.inc", "SOURCE ANY\nKEY secretkey1\nOPEN_PORTS tcp/2222\n");
        write("s", "f00b4r\n");
        let user = UserKey::generate(&mut |b: &mut [u8]| b.fill(7)).public();
        format!(
            "[spa]\nserver_key_file = \"server.key\"\naccess_conf = \"access.d\"\n\
             [[spa.user]]\nname = \"alice\"\nkey = \"{user}\"\nopen = [\"tcp/22\"]\n\
             [[door]]\nname = \"r\"\nopen = [\"tcp/23\"]\nrotating = {{ algorithm = \"hmac-sha256\", \
             secret_file = \"s\", range = \"10000-10999\", count = 5 }}\n"
        )
    }

    #[test]
    fn a_config_parses_from_the_files_its_checked_parse_recorded_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.toml");
        let text = config_with_files(d.path());
        let (on_disk, files) = recording(|| crate::config::parse(&text, &path));
        let on_disk = on_disk.unwrap();
        let names: Vec<_> = files.files.keys().filter_map(|p| p.file_name()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(files.dirs.len(), 1);
        // The bundle crosses the socket as JSON.
        let files: Files = serde_json::from_str(&serde_json::to_string(&files).unwrap()).unwrap();
        // Nothing on disk any more: served from the bundle alone.
        std::fs::remove_dir_all(d.path()).unwrap();
        let served = serving(files.clone(), || crate::config::parse(&text, &path)).unwrap();
        let (a, b) = (served.spa.as_ref().unwrap(), on_disk.spa.as_ref().unwrap());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!((a.stanzas.len(), a.users.len()), (1, 1));
        assert_eq!(served.doors, on_disk.doors);
        // A file the bundle lacks is refused, by name (the disk is not asked).
        for drop in files.files.keys() {
            let mut less = files.clone();
            less.files.remove(drop);
            let e = serving(less, || crate::config::parse(&text, &path)).unwrap_err().to_string();
            assert!(e.contains(&format!("{} is not among the files", drop.display())), "{e}");
        }
        assert!(crate::config::parse(&text, &path).is_err(), "outside the scope: the disk again");
    }

    #[test]
    fn the_previous_mode_comes_back_after_a_panic() {
        let r = std::panic::catch_unwind(|| serving(Files::default(), || panic!("boom")));
        assert!(r.is_err());
        assert!(MODE.with(|m| m.borrow().is_none()));
    }
}
