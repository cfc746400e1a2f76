//! Rotating doors (`rotating = { ... }` in a `[[door]]`): the sequence is derived from a
//! secret and the time (see `docs/rotating.md`). The secret file must be root's alone.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawRotating;
use portcullis_proto::rotate::{Algorithm, AlgorithmName, PortRange, Protocols, Rotation, Secret};
use portcullis_proto::Service;

/// Secret files larger than this are refused (a secret is a few dozen bytes).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A door's rotating sequence: the rotation and where its secret came from.
#[derive(Clone)]
pub struct RotatingDoor {
    /// The validated rotation (holds the secret).
    pub rotation: Rotation,
    /// The secret file (for messages and for the kernel-mode regeneration units).
    pub secret_file: PathBuf,
}

impl RotatingDoor {
    /// The config spelling of the algorithm.
    pub fn algorithm_name(&self) -> &'static str {
        match self.rotation.algorithm() {
            Algorithm::Md5Hourly => "md5-hourly",
            Algorithm::HmacSha256 { .. } => "hmac-sha256",
        }
    }

    /// The inline TOML table of this definition (`secret_file` already quoted).
    pub fn to_toml(&self, secret_file: &str) -> String {
        let r = &self.rotation;
        let extra = match r.algorithm() {
            Algorithm::Md5Hourly => String::new(),
            Algorithm::HmacSha256 { step_secs, protocols } => {
                let p = match protocols {
                    Protocols::Tcp => "tcp",
                    Protocols::Udp => "udp",
                    Protocols::Mixed => "mixed",
                };
                format!(", step = \"{step_secs}s\", protocols = \"{p}\"")
            }
        };
        format!(
            "{{ algorithm = \"{}\", secret_file = {secret_file}, range = \"{}\", count = {}{extra} }}",
            self.algorithm_name(),
            r.range(),
            r.count()
        )
    }

    /// The sequences a knock may follow at Unix time `now`: the current step's and the
    /// previous step's (clock skew, knocks straddling a boundary), newest first.
    pub fn accepted_at(&self, now: u64) -> [(u64, Vec<Service>); 2] {
        let step = self.rotation.step_at(now);
        let prev = step.saturating_sub(1);
        [(step, self.rotation.sequence(step)), (prev, self.rotation.sequence(prev))]
    }
}

impl fmt::Debug for RotatingDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingDoor")
            .field("rotation", &self.rotation)
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

/// Equal when defined alike (same algorithm, range, count and secret file); the secret
/// bytes themselves are never compared or printed.
impl PartialEq for RotatingDoor {
    fn eq(&self, other: &Self) -> bool {
        self.rotation.algorithm() == other.rotation.algorithm()
            && self.rotation.range() == other.rotation.range()
            && self.rotation.count() == other.rotation.count()
            && self.secret_file == other.secret_file
    }
}

/// Validate a `rotating` table whose `step` the caller has already read (`step`, with
/// its span);
/// `dir` resolves a relative `secret_file`. Errors carry the span of the offending value.
pub(super) fn validate(
    raw: RawRotating,
    step: Option<(Duration, std::ops::Range<usize>)>,
    dir: &Path,
) -> Result<RotatingDoor, (std::ops::Range<usize>, String)> {
    let name = raw
        .algorithm
        .get_ref()
        .parse::<AlgorithmName>()
        .map_err(|e| (raw.algorithm.span(), format!("rotating.algorithm: {e}")))?;
    let range: PortRange =
        raw.range.get_ref().parse().map_err(|e| (raw.range.span(), format!("rotating.range: {e}")))?;
    let count = usize::try_from(*raw.count.get_ref())
        .map_err(|_| (raw.count.span(), "rotating.count must be 1 to 32".to_string()))?;
    let algorithm = match name {
        AlgorithmName::Md5Hourly => {
            if let Some((_, at)) = step {
                return Err((at, "rotating.step: md5-hourly always steps by the UTC hour".into()));
            }
            if let Some(p) = raw.protocols.as_ref().filter(|p| !p.get_ref().eq_ignore_ascii_case("tcp")) {
                return Err((p.span(), "rotating.protocols: md5-hourly knocks are TCP only".into()));
            }
            Algorithm::Md5Hourly
        }
        AlgorithmName::HmacSha256 => {
            let step_secs = match step {
                Some((d, at)) if d.subsec_nanos() != 0 => {
                    return Err((at, "rotating.step must be whole seconds".into()))
                }
                Some((d, _)) => d.as_secs(),
                None => portcullis_proto::rotate::DEFAULT_STEP_SECS,
            };
            let protocols = match &raw.protocols {
                None => Protocols::Tcp,
                Some(p) => p.get_ref().parse().map_err(|e| (p.span(), format!("rotating.protocols: {e}")))?,
            };
            Algorithm::HmacSha256 { step_secs, protocols }
        }
    };
    let path = {
        let p = Path::new(raw.secret_file.get_ref());
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };
    let secret = read_root_secret(&path)
        .and_then(|b| Secret::from_file_contents(b).map_err(|e| format!("{}: {e}", path.display())))
        .map_err(|m| (raw.secret_file.span(), format!("rotating.secret_file: {m}")))?;
    let rotation = Rotation::new(algorithm, secret, range, count)
        .map_err(|e| (raw.range.span(), format!("rotating: {e}")))?;
    Ok(RotatingDoor { rotation, secret_file: path })
}

/// Read a secret that only root (or the user running us) may read: a regular file
/// owned by root or by us, no group/other permission bits, at most 64 KiB. Checked on
/// the opened file, so the file checked is the file read.
pub fn read_root_secret(path: &Path) -> Result<Vec<u8>, String> {
    super::files::read(path, MAX_SECRET_FILE, read_disk)
}

fn read_disk(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let md = f.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !md.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != 0 && md.uid() != me {
        return Err(format!("{} is owned by uid {}, not root: refusing it", path.display(), md.uid()));
    }
    if md.mode() & 0o077 != 0 {
        return Err(format!(
            "{} has mode {:04o}: it must be readable by its owner only (chmod 600 {})",
            path.display(),
            md.mode() & 0o7777,
            path.display()
        ));
    }
    let mut buf = Vec::new();
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        return Err(format!("{} is larger than {MAX_SECRET_FILE} bytes", path.display()));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::config;

    fn parse(dir: &std::path::Path, rotating: &str, extra: &str) -> Result<config::Config, String> {
        let text = format!("[[door]]\nname = \"r\"\nrotating = {rotating}\nopen = [\"tcp/22\"]\n{extra}");
        config::parse(&text, &dir.join("p.toml")).map_err(|e| e.to_string())
    }

    fn secret(dir: &std::path::Path, mode: u32) {
        let p = dir.join("s");
        std::fs::write(&p, "f00b4r\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const OK: &str = r#"{ algorithm = "hmac-sha256", secret_file = "s", range = "10000-10999", count = 5 }"#;

    #[test]
    fn a_valid_rotating_door_has_no_fixed_sequence() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), 0o600);
        let c = parse(dir.path(), OK, "").unwrap();
        let d = &c.doors[0];
        assert!(d.sequence.is_empty());
        let r = d.rotating.as_ref().unwrap();
        assert_eq!(r.rotation.step_secs(), 30);
        assert_eq!(r.secret_file, dir.path().join("s"));
        // The docs' vector: 2008-08-19T17:59:12Z.
        let [(step, seq), (prev, _)] = r.accepted_at(1_219_168_752);
        assert_eq!((step, prev), (40_638_958, 40_638_957));
        assert_eq!(portcullis_proto::rotate::format_knocks(&seq), "10088 10979 10708 10718 10193");
        assert!(!format!("{r:?}").contains("f00b4r"), "the secret never shows in Debug");
    }

    #[test]
    fn weak_rotating_doors_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), 0o600);
        let weak = r#"{ algorithm = "md5-hourly", secret_file = "s", range = "1-1000", count = 2 }"#;
        let w = parse(dir.path(), weak, "").unwrap().warnings().join("\n");
        for want in ["only 2 knock(s) per step", "contains protected port tcp/22", "prefer hmac-sha256"] {
            assert!(w.contains(want), "missing {want:?} in\n{w}");
        }
        assert!(parse(dir.path(), OK, "").unwrap().warnings().is_empty());
    }

    #[test]
    fn bad_rotating_definitions_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), 0o640);
        let e = parse(dir.path(), OK, "").unwrap_err();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        secret(dir.path(), 0o600);
        let cases = [
            (OK.replace("count = 5", "count = 5, step = \"1500ms\""), "whole seconds"),
            (OK.replace("10000-10999", "10000-10003"), "fewer than the 5 knocks"),
            (
                OK.replace("hmac-sha256", "md5-hourly").replace("count = 5", "count = 5, step = \"60s\""),
                "UTC hour",
            ),
            (OK.replace("hmac-sha256", "sha1"), "md5-hourly or hmac-sha256"),
            (OK.replace("\"s\"", "\"missing\""), "cannot open"),
            (OK.replace("count = 5", "count = 5, protocols = \"sctp\""), "tcp, udp or mixed"),
        ];
        for (rot, want) in cases {
            let e = parse(dir.path(), &rot, "").unwrap_err();
            assert!(e.contains(want), "{rot}: {e}");
        }
        let e = parse(dir.path(), OK, "sequence = [1, 2, 3]\n").unwrap_err();
        assert!(e.contains("rotating replaces sequence"), "{e}");
    }
}
