//! Scenario 4: SPA rejection throughput, in process, one thread.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use portcullis_proto::spa::fwknop::{self, Access, EncMode, FwknopKey, HashType, SpaMessage};
use portcullis_proto::{Proto, Service};

use crate::report::Report;
use crate::stats::Rng;
use crate::table::{fmt_ratio, fmt_us, thousands, Table};

/// fwknopd's SPA intake ceiling by design (PCAP_DISPATCH_COUNT 100 per PCAP_LOOP_SLEEP
/// 100 ms; anchors "Measured baselines").
const FWKNOPD_INTAKE: f64 = 1_000.0;

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decode `inputs` round-robin for about `budget`; returns (packets/s, accepted count).
fn throughput(inputs: &[Vec<u8>], key: &FwknopKey, budget: Duration) -> (f64, u64) {
    let start = Instant::now();
    let (mut n, mut accepted) = (0u64, 0u64);
    // Hard cap on iterations as well as time.
    while start.elapsed() < budget && n < 50_000_000 {
        for p in inputs.iter().take(256) {
            if black_box(fwknop::decode(black_box(p), key)).is_ok() {
                accepted += 1;
            }
            n += 1;
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), accepted)
}

/// A decoder to measure. Hook: the native SPA format (being written in parallel)
/// gets its own entry here once `portcullis_proto` exports it.
struct Case {
    name: &'static str,
    inputs: Vec<Vec<u8>>,
    expect_accept: bool,
}

/// Run scenario 4 with about `budget` per case.
pub fn run(budget: Duration, report: &mut Report) -> anyhow::Result<()> {
    let mut rng = Rng::from_time();
    let mut fill = |b: &mut [u8]| rng.fill(b);
    let (k, h) = fwknop::fwknop_keygen(&mut fill);
    let key = FwknopKey::from_base64(&k, EncMode::Cbc, Some((HashType::Sha256, &h)))
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let access = vec![Access::from(Service { proto: Proto::Tcp, port: 22 })];
    let mut rng2 = Rng::from_time();
    let mut valid = Vec::new();
    for i in 0..256u32 {
        let mut f = |b: &mut [u8]| rng2.fill(b);
        let msg =
            SpaMessage::new_access("root", now, Ipv4Addr::from(0xc612_0000 + i), access.clone(), &mut f);
        let wire = fwknop::encode(&msg, &key, &mut f).map_err(|e| anyhow::anyhow!("encode: {e}"))?;
        valid.push(wire.into_bytes());
    }
    let typical = valid[0].len();
    let mut r = Rng::from_time();
    let junk: Vec<Vec<u8>> =
        (0..256).map(|_| (0..typical).map(|_| B64[(r.next_u64() % 64) as usize]).collect()).collect();
    let flipped: Vec<Vec<u8>> = valid
        .iter()
        .map(|v| {
            let mut v = v.clone();
            let i = (r.next_u64() as usize) % v.len();
            // Swap for another base64 character: same length and charset, one bit-level change.
            v[i] = if v[i] == b'A' { b'B' } else { b'A' };
            v
        })
        .collect();
    let cases = [
        Case {
            name: "random base64 junk, typical length (rejected: HMAC)",
            inputs: junk,
            expect_accept: false,
        },
        Case {
            name: "valid packet with one character flipped (rejected: HMAC)",
            inputs: flipped,
            expect_accept: false,
        },
        Case {
            name: "valid packet (accepted: HMAC + AES + fields), for reference",
            inputs: valid,
            expect_accept: true,
        },
    ];
    let mut t = Table::new(
        "4. SPA rejection throughput (in process, one thread)",
        &["format", "input", "packets/s", "per packet", "÷ fwknopd intake ceiling (~1,000/s)"],
    );
    for c in &cases {
        report.settle();
        let (rate, accepted) = throughput(&c.inputs, &key, budget);
        if c.expect_accept != (accepted > 0) {
            anyhow::bail!("{}: accepted {accepted}, expected {}", c.name, c.expect_accept);
        }
        t.row(vec![
            "fwknop (HMAC-SHA256 + Rijndael)".into(),
            c.name.into(),
            thousands(rate.round() as u64),
            fmt_us(1.0 / rate),
            fmt_ratio(Some(rate), Some(FWKNOPD_INTAKE)),
        ]);
    }
    t.row(vec!["native".into(), "not yet implemented (hook in crates/bench/src/spa.rs)".into(), "–".into()]);
    t.note(format!(
        "`portcullis_proto::spa::fwknop::decode` with an HMAC-SHA256 key configured, {typical}-character packets \
         (the length `fwknop -A tcp/22` produces), 256 distinct inputs round-robin, ~{:.1} s per row. The ratio \
         column compares with fwknopd's intake ceiling by design (PCAP_DISPATCH_COUNT 100 per PCAP_LOOP_SLEEP \
         100 ms), not with an in-process fwknopd measurement.",
        budget.as_secs_f64()
    ));
    report.tables.push(t);
    Ok(())
}
