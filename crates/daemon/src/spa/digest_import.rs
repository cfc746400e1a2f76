//! fwknopd's digest cache (`DIGEST_FILE`, default `/var/run/fwknop/digest.cache`),
//! imported into our replay cache on the first start after a switch, so packets
//! fwknopd already accepted cannot be replayed against us.
//!
//! Its lines are `<base64 SHA-256 of the wire text> <proto> <src ip> <src port>
//! <dst ip> <dst port> <unix time>`, with `#` comments. fwknopd hashes the packet as
//! received, so an imported entry is checked against the SHA-256 of the wire payload
//! ([`wire_key`]) before anything else.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::replay::ReplayCache;

/// Most lines read from a digest file (fwknopd never trims its file).
const MAX_LINES: usize = 1_000_000;
/// Longest line kept: fwknopd's are under 120 bytes; a longer one is skipped, unread
/// beyond this bound.
const MAX_LINE: usize = 512;

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
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut r = BufReader::new(f);
    let (mut n, mut line) = (0, Vec::with_capacity(MAX_LINE + 1));
    for _ in 0..MAX_LINES {
        line.clear();
        // Bounded read of one line; the rest of an overlong line is skipped.
        let got = (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if got == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && got > MAX_LINE {
            skip_line(&mut r)?;
            continue;
        }
        // Not UTF-8: not a line fwknopd wrote; skipped like any other malformed line.
        let Some((digest, created)) = std::str::from_utf8(&line).ok().and_then(parse_line) else { continue };
        let expires = keep.map_or(u64::MAX, |k| created.saturating_add(k));
        if expires > now && cache.admit(digest, expires, now).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Read up to and including the next newline, keeping nothing.
fn skip_line(r: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = buf.len();
                r.consume(len);
            }
        }
    }
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

    #[test]
    fn overlong_and_non_utf8_lines_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("digest.cache");
        let d = base64::engine::general_purpose::STANDARD_NO_PAD.encode(wire_key(b"packet"));
        let mut text = vec![b'x'; 1 << 20];
        text.extend_from_slice(b"\n\xff\xfe not utf-8\n");
        text.extend_from_slice(format!("{d} 17 192.0.2.2 40000 192.0.2.1 62201 1000\n").as_bytes());
        std::fs::write(&p, text).unwrap();
        let mut c = ReplayCache::in_memory(10);
        assert_eq!(import(&mut c, &p, Some(120), 500).unwrap(), 1, "the good line after them is read");
        assert!(import(&mut c, dir.path(), None, 500).is_err(), "a directory is not a digest file");
    }
}
