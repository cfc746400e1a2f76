//! knockd's `One_Time_Sequences`: after a sequence is used, its line's first byte is
//! overwritten with `#` (so the file keeps its length and other lines their offsets)
//! and the next unused line becomes the door's sequence; when none is left the door is
//! disabled.
//!
//! Unlike knockd, the used line is found by comparing whole sequences (knockd compares
//! half the bytes), the write is fsync'd before the next sequence is armed, and the new
//! sequence applies to IPv4 and IPv6 alike (the tracker is family-agnostic).

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use portcullis_proto::Service;

use crate::config::knockd::load_one_time;

/// Mark the first unused line of `path` whose sequence is `used` as used, and return
/// the sequence that follows (`None`: the file is exhausted, disable the door).
pub fn consume(path: &Path, used: &[Service]) -> Result<Option<Vec<Service>>, String> {
    let ot = load_one_time(path)?;
    let Some(pos) = ot.remaining.iter().position(|l| l.sequence == used) else {
        return Err(format!(
            "{}: the sequence just used is no longer in the file (edited while running?)",
            path.display()
        ));
    };
    let line = &ot.remaining[pos];
    let mut f = OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(line.offset))
        .and_then(|_| f.write_all(b"#"))
        .and_then(|_| f.sync_data())
        .map_err(|e| format!("{}: marking line {} used: {e}", path.display(), line.line))?;
    Ok(ot.remaining.iter().enumerate().find(|&(i, _)| i != pos).map(|(_, l)| l.sequence.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumes_lines_in_order_then_exhausts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("otp");
        std::fs::write(&p, "# my sequences\n 1000,2000:udp,3000\n\n 4000, 5000:tcp\n#6000\n 7000:udp\n")
            .unwrap();
        let s = |v: &[(u16, bool)]| -> Vec<Service> {
            v.iter().map(|&(p, udp)| if udp { Service::udp(p) } else { Service::tcp(p) }).collect()
        };
        let first = s(&[(1000, false), (2000, true), (3000, false)]);
        assert_eq!(load_one_time(&p).unwrap().remaining[0].sequence, first);
        assert_eq!(consume(&p, &first).unwrap(), Some(s(&[(4000, false), (5000, false)])));
        assert_eq!(consume(&p, &s(&[(4000, false), (5000, false)])).unwrap(), Some(s(&[(7000, true)])));
        assert_eq!(consume(&p, &s(&[(7000, true)])).unwrap(), None);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# my sequences\n#1000,2000:udp,3000\n\n#4000, 5000:tcp\n#6000\n#7000:udp\n"
        );
        assert!(consume(&p, &s(&[(7000, true)])).is_err());
    }
}
