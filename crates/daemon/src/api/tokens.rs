//! API tokens: a root-only file of `name token` lines, compared in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted (a token is a password: make it long and random).
pub const MIN_TOKEN_LEN: usize = 16;

/// Named bearer tokens, kept as SHA-256 digests: comparing fixed-length digests means
/// neither the comparison's timing nor its length check says anything about a token.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, [u8; 32])>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_list().entries(self.entries.iter().map(|(n, _)| n)).finish()
    }
}

impl Tokens {
    /// Parse `name token` lines (`#` comments and blank lines ignored).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `name token`", i + 1));
            };
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                return Err(format!("line {}: token name must be 1-64 of A-Z a-z 0-9 _ . -", i + 1));
            }
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: token for {name} must be at least {MIN_TOKEN_LEN} printable characters",
                    i + 1
                ));
            }
            if entries.iter().any(|(n, _)| n == name) {
                return Err(format!("line {}: token name {name} is used twice", i + 1));
            }
            let token = digest(token.as_bytes());
            if entries.iter().any(|(_, t)| *t == token) {
                return Err(format!("line {}: the token for {name} is the same as another's", i + 1));
            }
            entries.push((name.to_string(), token));
        }
        if entries.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Tokens { entries })
    }

    /// Read `path`, refusing a file that group or others may read or write, or that
    /// someone else owns ([`crate::fsperm::read_secret`]).
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = crate::fsperm::read_secret(path, 1 << 20)?;
        Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The name of the token `presented`, comparing its digest against every token's in
    /// constant time (no early exit, fixed length).
    pub fn lookup(&self, presented: &[u8]) -> Option<&str> {
        let presented = digest(presented);
        let mut found: Option<&str> = None;
        for (name, token) in &self.entries {
            if bool::from(token.ct_eq(&presented)) {
                found = Some(name);
            }
        }
        found
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let t = Tokens::parse("# comment\nalice 0123456789abcdef0\n\nbob   fedcba98765432100\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(b"0123456789abcdef0"), Some("alice"));
        assert_eq!(t.lookup(b"fedcba98765432100"), Some("bob"));
        assert_eq!(t.lookup(b"0123456789abcdef"), None);
        assert_eq!(t.lookup(b""), None);
        assert!(!format!("{t:?}").contains("0123"), "Debug must not show secrets");
    }

    #[test]
    fn refuses_bad_files() {
        for (text, needle) in [
            ("alice short", "at least"),
            ("alice", "expected"),
            ("a b c", "expected"),
            ("al/ce 0123456789abcdef0", "name"),
            ("a 0123456789abcdef0\na 0123456789abcdef1", "twice"),
            ("a 0123456789abcdef0\nb 0123456789abcdef0", "same"),
            ("# nothing", "no tokens"),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn refuses_group_or_world_readable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "alice 0123456789abcdef0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Tokens::load(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Tokens::load(&p).unwrap().len(), 1);
    }
}
