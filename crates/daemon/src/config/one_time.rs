//! knockd's sequence syntax (`port[:tcp|udp],...`) and one-time sequence files, which
//! both config syntaxes can name (`one_time_sequences` / `One_Time_Sequences`).

use std::path::Path;

use portcullis_proto::{Proto, Service};

use super::model::{OneTimeLine, OneTimeSequences, MAX_SEQUENCE};
use super::source::read_bounded;

/// Most lines a one-time sequences file may have.
const MAX_ONE_TIME_LINES: usize = 100_000;

/// Parse knockd's `port[:tcp|udp],...` (spaces around items tolerated; TCP by default).
pub fn parse_sequence(s: &str) -> Result<Vec<Service>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("empty knock in sequence {s:?}"));
        }
        let (port, proto) = match item.split_once(':') {
            Some((p, proto)) => (p.trim(), proto.trim()),
            None => (item, "tcp"),
        };
        let proto = if proto.eq_ignore_ascii_case("tcp") {
            Proto::Tcp
        } else if proto.eq_ignore_ascii_case("udp") {
            Proto::Udp
        } else {
            return Err(format!("knock {item:?}: protocol must be tcp or udp"));
        };
        let port = match port.parse::<u32>() {
            Ok(p @ 1..=65535) => p as u16,
            Ok(p) => return Err(format!("knock port {p} is out of range (1-65535)")),
            Err(_) => return Err(format!("knock {item:?} is not PORT or PORT:tcp / PORT:udp")),
        };
        out.push(Service { proto, port });
    }
    if out.len() > MAX_SEQUENCE {
        return Err(format!("{} knocks in the sequence; knockd allows at most {MAX_SEQUENCE}", out.len()));
    }
    Ok(out)
}

/// Read a one-time sequences file: one knockd sequence per line; lines starting with `#`
/// (comments, and used lines) and blank lines are skipped.
pub fn load_one_time(path: &Path) -> Result<OneTimeSequences, String> {
    let text = read_bounded(path).map_err(|e| e.message)?;
    parse_one_time(&text, path)
}

/// [`load_one_time`] on text already read.
pub fn parse_one_time(text: &str, path: &Path) -> Result<OneTimeSequences, String> {
    let mut remaining = Vec::new();
    let mut offset = 0u64;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i >= MAX_ONE_TIME_LINES {
            return Err(format!("{}: more than {MAX_ONE_TIME_LINES} lines", path.display()));
        }
        let start = offset;
        offset += line.len() as u64;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let sequence = parse_sequence(t).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
        remaining.push(OneTimeLine { line: i + 1, offset: start, sequence });
    }
    Ok(OneTimeSequences { path: path.to_owned(), remaining })
}
