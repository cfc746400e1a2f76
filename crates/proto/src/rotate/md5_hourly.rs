//! The 2008 write-up's recipe: N = MD5 hex digest of `date +%Y-%m-%d-%H-SECRET` (UTC,
//! with its trailing newline) read as one number; port i = (N / n^i) mod n + bottom.

use md5::{Digest, Md5};

use super::civil::UtcHour;
use super::{PortRange, RotateError, Secret};
use crate::service::Service;

pub(super) fn check(secret: &Secret, range: PortRange, count: usize) -> Result<(), RotateError> {
    if secret.bytes().iter().any(|&b| b == b'%' || b < 0x20 || b == 0x7f) {
        return Err(RotateError::Md5SecretChars);
    }
    // The divisor of the last knock must exist; beyond the digest every knock would be
    // the range's first port, a constant that adds nothing.
    let exp = u32::try_from(count - 1).map_err(|_| RotateError::BadCount)?;
    u128::from(range.len()).checked_pow(exp).ok_or(RotateError::CountTooLargeForDigest)?;
    Ok(())
}

/// The text hashed for UTC hour `hour` (hours since the epoch).
pub(super) fn text(secret: &Secret, hour: u64) -> Vec<u8> {
    let mut t = format!("{}-", UtcHour::from_epoch_hours(hour)).into_bytes();
    t.extend_from_slice(secret.bytes());
    t.push(b'\n');
    t
}

pub(super) fn sequence(secret: &Secret, range: PortRange, count: usize, hour: u64) -> Vec<Service> {
    let text = zeroize::Zeroizing::new(text(secret, hour));
    // The hex digest read as a number is the digest's 16 bytes big-endian.
    let n_big = u128::from_be_bytes(Md5::digest(&*text).into());
    let n = u128::from(range.len());
    let mut divisor: u128 = 1;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let port = (n_big / divisor) % n + u128::from(range.bottom());
        // port <= top <= 65535 by construction.
        out.push(Service::tcp(port as u16));
        if i + 1 < count {
            // Checked at construction: n^(count-1) fits.
            divisor = divisor.saturating_mul(n);
        }
    }
    out
}
