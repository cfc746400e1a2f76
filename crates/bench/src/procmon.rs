//! Resource sampling of a daemon process from `/proc`: CPU time from `/proc/PID/stat`
//! (utime + stime, all threads) and `VmRSS` from `/proc/PID/status`, every 100 ms on a
//! background thread that stops when asked or after a hard time limit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sampling period.
pub const PERIOD: Duration = Duration::from_millis(100);
/// A sampler never runs longer than this.
const MAX_RUN: Duration = Duration::from_secs(600);

/// One sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub t: Instant,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// Resident set, KiB.
    pub rss_kib: u64,
}

/// Read one sample of `pid` plus its live children (a privilege-separated daemon does
/// its work in a child), or `None` if `pid` is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let mut s = Sample { t: Instant::now(), ticks: ticks(pid)?, rss_kib: rss_kib(pid)? };
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
        s.ticks += ticks(c).unwrap_or(0);
        s.rss_kib += rss_kib(c).unwrap_or(0);
    }
    Some(s)
}

/// utime + stime of `pid`, all threads.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Clock ticks per second for `/proc/PID/stat` times.
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A running sampler.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<JoinHandle<()>>,
    tck: f64,
}

impl Sampler {
    /// Start sampling `pid` every [`PERIOD`].
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let end = Instant::now() + MAX_RUN;
            let mut next = Instant::now();
            while !s2.load(Ordering::Relaxed) && Instant::now() < end {
                match sample(pid) {
                    Some(s) => v2.lock().map(|mut v| v.push(s)).unwrap_or(()),
                    None => break,
                }
                next += PERIOD;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Sampler { stop, samples, handle: Some(handle), tck: clk_tck() }
    }

    /// Samples taken so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// CPU% (100 = one core) averaged over `[a, b]`, and the largest 100 ms interval in it.
    pub fn cpu(&self, a: Instant, b: Instant) -> (f64, f64) {
        let s: Vec<Sample> = self.samples().into_iter().filter(|s| s.t >= a && s.t <= b).collect();
        cpu_of(&s, self.tck)
    }

    /// Peak RSS (KiB) over `[a, b]`.
    pub fn rss_peak(&self, a: Instant, b: Instant) -> u64 {
        self.samples().iter().filter(|s| s.t >= a && s.t <= b).map(|s| s.rss_kib).max().unwrap_or(0)
    }

    /// Stop the thread.
    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (average, max) CPU% over consecutive samples.
pub fn cpu_of(s: &[Sample], tck: f64) -> (f64, f64) {
    if s.len() < 2 {
        return (0.0, 0.0);
    }
    let pct = |a: &Sample, b: &Sample| {
        let dt = b.t.saturating_duration_since(a.t).as_secs_f64();
        if dt > 0.0 {
            (b.ticks.saturating_sub(a.ticks)) as f64 / tck / dt * 100.0
        } else {
            0.0
        }
    };
    let max = s.windows(2).map(|w| pct(&w[0], &w[1])).fold(0.0, f64::max);
    (pct(&s[0], &s[s.len() - 1]), max)
}

/// Packets the kernel dropped from full per-CPU input backlogs, all CPUs (column 2
/// of `/proc/net/softnet_stat`; machine-wide, not per namespace).
pub fn softnet_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|v| u64::from_str_radix(v, 16).ok()))
        .sum()
}

fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (v.iter().take(8).sum(), idle)
}

/// Fraction (0..=1) of all CPUs busy over `window`, whoever uses them.
pub fn machine_busy(window: Duration) -> f64 {
    let (t0, i0) = cpu_times();
    std::thread::sleep(window);
    let (t1, i1) = cpu_times();
    let total = t1.saturating_sub(t0);
    if total == 0 {
        return 0.0;
    }
    1.0 - i1.saturating_sub(i0) as f64 / total as f64
}

/// The machine may be shared (other builds): wait, at most `max`, for a 500 ms window
/// with less than 15 % of the CPUs busy. Returns the busy fraction last seen.
pub fn wait_quiet(max: Duration) -> f64 {
    let end = Instant::now() + max;
    loop {
        let b = machine_busy(Duration::from_millis(500));
        if b < 0.15 || Instant::now() >= end {
            return b;
        }
    }
}

/// Every process whose parent chain leads to `pid` (children, grandchildren, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(p.to_string()).join("stat"))
            else {
                continue;
            };
            if let Some(pp) = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(x) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == x && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_from_ticks() {
        let t = Instant::now();
        let s = [
            Sample { t, ticks: 0, rss_kib: 1 },
            Sample { t: t + Duration::from_millis(100), ticks: 5, rss_kib: 1 },
            Sample { t: t + Duration::from_millis(200), ticks: 15, rss_kib: 1 },
        ];
        let (avg, max) = cpu_of(&s, 100.0);
        assert!((avg - 75.0).abs() < 1e-9, "{avg}");
        assert!((max - 100.0).abs() < 1e-9, "{max}");
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
    }
}
