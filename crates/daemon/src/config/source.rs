//! Reading config files: bounded in size, UTF-8 only, and byte offsets turned into the
//! line numbers messages show.

use std::path::Path;

use super::error::ConfigError;

/// Read a config file, refusing absurd sizes (a config is never megabytes).
pub fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    const MAX: u64 = 1 << 20;
    let err = |message: String| ConfigError { path: path.to_owned(), line: None, message };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() > MAX {
        return Err(err(format!("file is larger than {MAX} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| err("file is not valid UTF-8".into()))
}

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}
