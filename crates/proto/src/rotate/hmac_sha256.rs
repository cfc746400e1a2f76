//! portcullis' rotating form: a byte stream from HMAC-SHA256(secret, label || step || block),
//! read as 32-bit words; each knock draws its protocol (mixed only) and then a port among
//! those not used yet, by rejection sampling (no modulo bias). See docs/rotating.md.

use hmac::digest::{KeyInit, Mac};
use hmac::Hmac;
use sha2::Sha256;

use super::{PortRange, Protocols, Secret};
use crate::service::{Proto, Service};

/// Domain separation: these bytes never start the input of another portcullis HMAC.
pub(super) const LABEL: &[u8] = b"portcullis rotating v1\0";

/// Upper bound on HMAC blocks per sequence. A draw is rejected with probability below
/// 2^-16 (ranges have at most 65535 ports), so a 32-knock sequence needs 33 words = 5
/// blocks in all but astronomically rare cases; the bound only guarantees termination.
const MAX_BLOCKS: u32 = 1024;

/// The 32-bit words of HMAC-SHA256(secret, LABEL || step (u64 BE) || block (u32 BE)),
/// block = 0, 1, 2, ..., each block's 32 bytes read as 8 big-endian words.
struct Words<'a> {
    secret: &'a Secret,
    step: u64,
    block: u32,
    buf: [u8; 32],
    pos: usize,
}

impl Words<'_> {
    fn new(secret: &Secret, step: u64) -> Words<'_> {
        Words { secret, step, block: 0, buf: [0; 32], pos: 32 }
    }

    fn next_word(&mut self) -> Option<u32> {
        if self.pos == 32 {
            if self.block == MAX_BLOCKS {
                return None;
            }
            self.buf = block(self.secret, self.step, self.block);
            self.block += 1;
            self.pos = 0;
        }
        let w = u32::from_be_bytes([
            self.buf[self.pos],
            self.buf[self.pos + 1],
            self.buf[self.pos + 2],
            self.buf[self.pos + 3],
        ]);
        self.pos += 4;
        Some(w)
    }

    /// A uniform value in 0..m (m >= 1): words at or above the largest multiple of m
    /// below 2^32 are rejected.
    fn uniform(&mut self, m: u32) -> Option<u32> {
        let limit = u64::from(u32::MAX) + 1 - (u64::from(u32::MAX) + 1) % u64::from(m);
        loop {
            let w = self.next_word()?;
            if u64::from(w) < limit {
                return Some(w % m);
            }
        }
    }
}

pub(super) fn block(secret: &Secret, step: u64, block: u32) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.bytes()).expect("HMAC accepts any key length");
    mac.update(LABEL);
    mac.update(&step.to_be_bytes());
    mac.update(&block.to_be_bytes());
    mac.finalize().into_bytes().into()
}

pub(super) fn sequence(
    secret: &Secret,
    range: PortRange,
    count: usize,
    protocols: Protocols,
    step: u64,
) -> Vec<Service> {
    let mut words = Words::new(secret, step);
    let n = range.len();
    // Offsets (from bottom) already used, kept sorted for the skip below.
    let mut used: Vec<u32> = Vec::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let proto = match protocols {
            Protocols::Tcp => Proto::Tcp,
            Protocols::Udp => Proto::Udp,
            Protocols::Mixed => match words.next_word() {
                Some(w) if w & 1 == 1 => Proto::Udp,
                Some(_) => Proto::Tcp,
                None => return out,
            },
        };
        // Draw r among the n - i unused offsets, then take the r-th unused offset.
        let Some(mut r) = words.uniform(n - i as u32) else {
            return out;
        };
        for &u in &used {
            if u <= r {
                r += 1;
            } else {
                break;
            }
        }
        let pos = used.partition_point(|&u| u < r);
        used.insert(pos, r);
        // bottom + r <= top by construction.
        out.push(Service { proto, port: range.bottom() + r as u16 });
    }
    out
}
