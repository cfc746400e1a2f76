//! fwknopd's digest cache (`DIGEST_FILE`, default `/var/run/fwknop/digest.cache`),
//! imported into our replay cache on the first start after a switch, so packets
//! fwknopd already accepted cannot be replayed against us.
//!
//! Its lines are `<base64 SHA-256 of the wire text> <proto> <src ip> <src port>
//! <dst ip> <dst port> <unix time>`, with `#` comments. fwknopd hashes the packet as
//! received, so an imported entry is checked against the SHA-256 of the wire payload
//! ([`wire_key`]) before anything else.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::replay::ReplayCache;

/// Most lines read from a digest file (fwknopd never trims its file).
const MAX_LINES: usize = 1_000_000;

/// The key a packet has in an imported fwknopd digest cache: SHA-256 of the wire text.
pub fn wire_key(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// One line: (digest, time the entry was made).
pub fn parse_line(line: &str) -> Option<([u8; 32], u64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut f = line.split_whitespace();
    let b64 = f.next()?;
    let digest = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.trim_end_matches('=')).ok()?;
    let digest: [u8; 32] = digest.try_into().ok()?;
    let created = f.nth(5)?.parse().ok()?;
    Some((digest, created))
}

/// Import `path` into `cache`. Each entry lives `keep` seconds from when fwknopd made
/// it (the packet-age window: an older packet is refused as stale anyway), or for ever
/// when `keep` is `None` (packet aging off: the digest is the only protection).
/// Returns how many entries were imported; a missing file imports nothing.
pub fn import(cache: &mut ReplayCache, path: &Path, keep: Option<u64>, now: u64) -> io::Result<usize> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for line in BufReader::new(f).lines().take(MAX_LINES) {
        let Some((digest, created)) = parse_line(&line?) else { continue };
        let expires = keep.map_or(u64::MAX, |k| created.saturating_add(k));
        if expires > now && cache.admit(digest, expires, now).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_fwknopd_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("digest.cache");
        let d1 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(wire_key(b"packet one"));
        let d2 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(wire_key(b"packet two"));
        std::fs::write(
            &p,
            format!(
                "# <digest> <proto> <src_ip> <src_port> <dst_ip> <dst_port> <time>\n\
                 {d1} 17 192.0.2.2 40000 192.0.2.1 62201 1000\n\
                 {d2} 17 192.0.2.2 40001 192.0.2.1 62201 10\n\
                 garbage\nzz 17 1.2.3.4 1 1.2.3.4 1 5\n"
            ),
        )
        .unwrap();
        let mut c = ReplayCache::in_memory(10);
        assert_eq!(import(&mut c, &p, Some(120), 500).unwrap(), 1, "the old entry is past its window");
        assert!(c.admit(wire_key(b"packet one"), 2000, 500).is_err());
        let mut c = ReplayCache::in_memory(10);
        assert_eq!(import(&mut c, &p, None, 500).unwrap(), 2, "without aging entries never expire");
        assert_eq!(import(&mut c, &dir.path().join("missing"), None, 500).unwrap(), 0);
    }
}
