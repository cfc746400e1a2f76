//! Files the daemon keeps or trusts, checked and created the same way everywhere:
//!
//! - secrets (server key, API tokens, fwknop keys in a config or `access.conf`) must be
//!   regular files owned by us (or root) that group and others cannot read or write;
//! - files whose content the daemon acts on as root (`pending-stops.toml`, the state
//!   directory) must be owned by us and not writable by group or others;
//! - files it writes are 0600 whatever the umask, and temporary files are created
//!   `O_CREAT|O_EXCL|O_NOFOLLOW`, so a planted file or symlink is never followed.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file the daemon writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the state directory.
pub const DIR_MODE: u32 = 0o700;

fn owner_ok(uid: u32) -> bool {
    uid == nix::unistd::geteuid().as_raw() || uid == 0
}

fn who(path: &Path, md: &Metadata) -> String {
    format!("{} (owner uid {}, mode {:04o})", path.display(), md.uid(), md.mode() & 0o7777)
}

/// `md` (of `path`) may hold a secret: a regular file, owned by us or root, no access
/// for group or others.
pub fn check_secret(path: &Path, md: &Metadata) -> Result<(), String> {
    if !md.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if !owner_ok(md.uid()) {
        return Err(format!(
            "{}: holds secrets but is owned by someone else; chown it to root",
            who(path, md)
        ));
    }
    if md.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: holds secrets but group/others may read or write it; chmod 600 {}",
            who(path, md),
            path.display()
        ));
    }
    Ok(())
}

/// `md` (of `path`) may be trusted: owned by us or root, not writable by group or others.
pub fn check_trusted(path: &Path, md: &Metadata) -> Result<(), String> {
    if !owner_ok(md.uid()) {
        return Err(format!(
            "{}: not owned by root (or by this daemon's user); refusing to trust it",
            who(path, md)
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: group/others may write it; refusing to trust it (chmod go-w {})",
            who(path, md),
            path.display()
        ));
    }
    Ok(())
}

/// Read a secret file of at most `max` bytes after [`check_secret`] on the opened file.
pub fn read_secret(path: &Path, max: u64) -> Result<String, String> {
    let f = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let md = f.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    check_secret(path, &md)?;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e} (must be UTF-8 text)", path.display()))?;
    if text.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(text)
}

/// Create `path` as a new private file: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600 whatever
/// the umask. A leftover file or symlink of that name is removed first (never followed).
pub fn create_new(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    open_new(path)
}

/// `O_CREAT|O_EXCL|O_NOFOLLOW`, then exactly 0600 (the umask only ever takes bits away).
fn open_new(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Replace `path` with `bytes` atomically and durably: a new private `*.tmp` next to
/// it (see [`create_new`]), fsync, rename over, fsync the directory.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `path` with `.tmp` appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Make an existing `path` mode 0600 (a regular file, not a symlink), or create it so.
pub fn make_private(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_file() => {
            if md.mode() & 0o7777 != FILE_MODE {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
            }
            Ok(())
        }
        Ok(_) => Err(io::Error::other(format!("{} is not a regular file", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => open_new(path).map(drop),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "k = 1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn secrets_must_be_private_regular_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_secret(&file(d.path(), "ok", 0o600), 100).unwrap(), "k = 1\n");
        assert!(read_secret(&file(d.path(), "ro", 0o400), 100).is_ok());
        for (name, m) in [("g", 0o640), ("o", 0o604), ("gw", 0o620)] {
            let e = read_secret(&file(d.path(), name, m), 100).unwrap_err();
            assert!(e.contains("chmod 600") && e.contains(&format!("{m:04o}")), "{e}");
        }
        assert!(read_secret(d.path(), 100).unwrap_err().contains("not a regular file"));
        assert!(read_secret(&file(d.path(), "big", 0o600), 3).unwrap_err().contains("larger"));
        if nix::unistd::geteuid().is_root() {
            let p = file(d.path(), "theirs", 0o600);
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            assert!(read_secret(&p, 100).unwrap_err().contains("owned by someone else"));
        }
    }

    #[test]
    fn trusted_files_are_not_writable_by_others() {
        let d = tempfile::tempdir().unwrap();
        let ok = file(d.path(), "ok", 0o644);
        assert!(check_trusted(&ok, &std::fs::metadata(&ok).unwrap()).is_ok());
        for m in [0o664, 0o646] {
            let p = file(d.path(), &format!("w{m:o}"), m);
            let e = check_trusted(&p, &std::fs::metadata(&p).unwrap()).unwrap_err();
            assert!(e.contains("chmod go-w"), "{e}");
        }
    }

    #[test]
    fn new_files_are_0600_whatever_the_umask_and_symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o000));
        let p = d.path().join("state");
        replace(&p, b"one").unwrap();
        nix::sys::stat::umask(old);
        assert_eq!(mode(&p), 0o600);
        assert!(!tmp_path(&p).exists());
        // A symlink planted at the temporary name is removed, not written through.
        let target = file(d.path(), "target", 0o644);
        std::os::unix::fs::symlink(&target, tmp_path(&p)).unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "k = 1\n", "the target is untouched");
        // make_private fixes a loose mode, creates a missing file, refuses a symlink.
        let loose = file(d.path(), "loose", 0o644);
        make_private(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
        let missing = d.path().join("missing");
        make_private(&missing).unwrap();
        assert_eq!(mode(&missing), 0o600);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(make_private(&link).is_err());
        assert_eq!(mode(&target), 0o644);
    }
}
