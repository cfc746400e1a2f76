//! Order statistics for latency samples, and a small deterministic RNG.
//!
//! Percentiles use the nearest-rank method on the sorted samples (p95 of 30 samples is
//! the 29th smallest): every reported figure is a value that was actually measured.
//! The median of an even count is the mean of the two middle values.

use std::time::Duration;

/// min / median / p95 / max of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

/// Nearest-rank percentile `p` (0..=100) of already sorted samples. `None` if empty.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of already sorted samples. `None` if empty.
pub fn median_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Summarise samples (any order). `None` if empty.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        min: *s.first()?,
        median: median_sorted(&s)?,
        p95: percentile_sorted(&s, 95.0)?,
        max: *s.last()?,
    })
}

/// Median of durations, in milliseconds.
pub fn median_ms(samples: &[Duration]) -> Option<f64> {
    let mut s: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    s.sort_by(f64::total_cmp);
    median_sorted(&s)
}

/// A duration in (fractional) milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// SplitMix64: fast, seeded, good enough for junk payloads and port numbers. Not for keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the clock and PID (different every run).
    pub fn from_time() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ (u64::from(std::process::id()) << 32))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_measured_values() {
        let s: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(percentile_sorted(&s, 95.0), Some(29.0));
        assert_eq!(percentile_sorted(&s, 100.0), Some(30.0));
        assert_eq!(percentile_sorted(&s, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0, 10.0]), Some(2.5));
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0]), Some(2.0));
    }

    #[test]
    fn summary_sorts_and_ignores_non_finite() {
        let s = summarize(&[5.0, 1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!((s.n, s.min, s.median, s.p95, s.max), (3, 1.0, 3.0, 5.0, 5.0));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn rng_is_deterministic_per_seed() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
    }
}
