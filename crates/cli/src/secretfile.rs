//! Files the client trusts: secrets must be private to the user, configs must not be
//! writable by anyone else. Checked on the opened file (fstat), so the file checked is
//! the file read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context};

/// Secret files larger than this are refused (a key is a few hundred bytes at most).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Open `path` and check it holds secrets safely: a regular file, owned by the user (or
/// root), no permission bits for group or others (0600 or stricter).
pub fn open_secret(path: &Path) -> anyhow::Result<File> {
    let f = File::open(path).with_context(|| format!("cannot open secret file {}", path.display()))?;
    let md = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if !md.is_file() {
        bail!("secret file {} is not a regular file", path.display());
    }
    check_owner(path, md.uid())?;
    if md.mode() & 0o077 != 0 {
        bail!(
            "secret file {} has mode {:04o}: it must be readable by you only (chmod 600 {})",
            path.display(),
            md.mode() & 0o7777,
            path.display()
        );
    }
    Ok(f)
}

/// Read a whole secret file after [`open_secret`]'s checks.
pub fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let f = open_secret(path)?;
    let mut buf = Vec::new();
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        bail!("secret file {} is larger than {MAX_SECRET_FILE} bytes", path.display());
    }
    Ok(buf)
}

/// Read a configuration file that names secrets: owned by the user (or root) and not
/// writable by group or others, so nobody else can point it at their own keys.
pub fn read_config(path: &Path) -> anyhow::Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let md = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if !md.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    check_owner(path, md.uid())?;
    if md.mode() & 0o022 != 0 {
        bail!(
            "{} has mode {:04o}: it must not be writable by group or others (chmod go-w {})",
            path.display(),
            md.mode() & 0o7777,
            path.display()
        );
    }
    let mut text = String::new();
    f.read_to_string(&mut text).with_context(|| format!("reading {} (must be UTF-8)", path.display()))?;
    Ok(text)
}

fn check_owner(path: &Path, owner: u32) -> anyhow::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if owner != me && owner != 0 {
        bail!("{} is owned by uid {owner}, not by you (uid {me}) or root: refusing it", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn secret_files_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_secret(&file(&d, "ok", "s3cret\n", 0o600)).unwrap(), b"s3cret\n");
        assert_eq!(read_secret(&file(&d, "ro", "s3cret", 0o400)).unwrap(), b"s3cret");
        for (name, mode) in [("g", 0o640), ("o", 0o604), ("w", 0o666)] {
            let e = read_secret(&file(&d, name, "s3cret", mode)).unwrap_err().to_string();
            assert!(e.contains("chmod 600") && e.contains("readable by you only"), "{e}");
            assert!(!e.contains("s3cret"), "the secret must not appear in errors: {e}");
        }
        let e = read_secret(d.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_secret(&d.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot open secret file"), "{e}");
        if nix::unistd::geteuid().is_root() {
            // Someone else's file, however private, is not our secret.
            let p = file(&d, "theirs", "s3cret", 0o600);
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            let e = read_secret(&p).unwrap_err().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
        let big = "x".repeat(MAX_SECRET_FILE as usize + 1);
        assert!(read_secret(&file(&d, "big", &big, 0o600)).is_err());
    }

    #[test]
    fn configs_must_not_be_writable_by_others() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_config(&file(&d, "ok", "a = 1\n", 0o644)).unwrap(), "a = 1\n");
        let e = read_config(&file(&d, "gw", "a = 1\n", 0o664)).unwrap_err().to_string();
        assert!(e.contains("chmod go-w"), "{e}");
    }
}
