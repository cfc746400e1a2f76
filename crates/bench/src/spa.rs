//! Scenario 4: SPA rejection throughput, in process, one thread, for both formats.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use portcullis_proto::spa::fwknop::{self, Access, EncMode, FwknopKey, HashType, SpaMessage};
use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey, UserPublicKey};
use portcullis_proto::spa::PacketError;
use portcullis_proto::{Proto, Service};

use crate::report::Report;
use crate::stats::Rng;
use crate::table::{fmt_ratio, fmt_us, thousands, Table};

/// fwknopd's SPA intake ceiling by design (PCAP_DISPATCH_COUNT 100 per PCAP_LOOP_SLEEP
/// 100 ms; anchors "Measured baselines").
const FWKNOPD_INTAKE: f64 = 1_000.0;

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `n` strings of `len` random base64 characters: junk shaped like an fwknop packet
/// (passes the charset and length checks, fails at the HMAC).
pub fn base64_junk(n: usize, len: usize) -> Vec<Vec<u8>> {
    let mut r = Rng::from_time();
    (0..n).map(|_| (0..len).map(|_| B64[(r.next_u64() % 64) as usize]).collect()).collect()
}

/// `n` native packets that pass `precheck` for `server` (valid server tag) but fail
/// the AEAD: genuine sealed packets from `user` whose bytes after the header are
/// replaced with random ones. What an attacker who knows the server public key, or
/// copies headers off the wire, can send.
pub fn tagged_native_junk(server: &ServerKey, user: &UserKey, n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut rng = Rng::from_time();
    (0..n)
        .map(|i| {
            let req = Request::new(
                crate::env::NATIVE_USER,
                now,
                AllowAddr::V4(Ipv4Addr::from(0xc612_0000 + i as u32)),
                [Service { proto: Proto::Tcp, port: 22 }],
                5,
                &mut crate::env::urandom,
            )
            .map_err(|e| anyhow::anyhow!("native request: {e}"))?;
            let mut p = native::seal(&req, server.public(), user, &mut crate::env::urandom)
                .map_err(|e| anyhow::anyhow!("native seal: {e}"))?;
            rng.fill(&mut p[native::HEADER_LEN..]);
            Ok(p)
        })
        .collect()
}

/// Run `decode` over `inputs` round-robin for about `budget`; returns (packets/s,
/// accepted count). `decode` says whether the packet was accepted.
fn throughput(inputs: &[Vec<u8>], budget: Duration, mut decode: impl FnMut(&[u8]) -> bool) -> (f64, u64) {
    let start = Instant::now();
    let (mut n, mut accepted) = (0u64, 0u64);
    // Hard cap on iterations as well as time.
    while start.elapsed() < budget && n < 50_000_000 {
        for p in inputs.iter().take(256) {
            if black_box(decode(black_box(p))) {
                accepted += 1;
            }
            n += 1;
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), accepted)
}

/// Which decoder a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Fwknop,
    Native,
}

/// One row: a decoder, its inputs, and the rejection they must all meet.
struct Case {
    format: Format,
    name: &'static str,
    inputs: Vec<Vec<u8>>,
    /// `None`: every input must be accepted; `Some(e)`: every input rejected with `e`.
    expect: Option<PacketError>,
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
    let junk = base64_junk(256, typical);
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

    // Native: a server key, one user, 256 genuine packets (distinct ephemeral keys).
    let server = ServerKey::generate(&mut crate::env::urandom);
    let user = UserKey::generate(&mut crate::env::urandom);
    let mut users: BTreeMap<String, UserPublicKey> = BTreeMap::new();
    users.insert("bench".into(), user.public());
    let mut nvalid = Vec::new();
    for i in 0..256u32 {
        let req = Request::new(
            "bench",
            now,
            AllowAddr::V4(Ipv4Addr::from(0xc612_0000 + i)),
            [Service { proto: Proto::Tcp, port: 22 }],
            5,
            &mut crate::env::urandom,
        )
        .map_err(|e| anyhow::anyhow!("native request: {e}"))?;
        nvalid.push(
            native::seal(&req, server.public(), &user, &mut crate::env::urandom)
                .map_err(|e| anyhow::anyhow!("native seal: {e}"))?,
        );
    }
    // Right magic and version, exact length, random rest: stops at the server tag.
    let nmagic: Vec<Vec<u8>> = (0..256)
        .map(|_| {
            let mut p = vec![0u8; native::PACKET_LEN];
            r.fill(&mut p);
            p[..3].copy_from_slice(&native::MAGIC);
            p[3] = native::VERSION;
            p
        })
        .collect();
    // Valid header (server tag included), one ciphertext byte flipped: stops at the AEAD,
    // after the X25519 it cannot skip.
    let nflip: Vec<Vec<u8>> = nvalid
        .iter()
        .map(|v| {
            let mut v = v.clone();
            let i = native::HEADER_LEN + (r.next_u64() as usize) % (native::PACKET_LEN - native::HEADER_LEN);
            v[i] ^= 1 << (r.next_u64() % 8);
            v
        })
        .collect();

    let cases = vec![
        Case {
            format: Format::Fwknop,
            name: "random base64 junk, typical length (rejected: HMAC)",
            inputs: junk,
            expect: Some(PacketError::BadMac),
        },
        Case {
            format: Format::Fwknop,
            name: "valid packet with one character flipped (rejected: HMAC)",
            inputs: flipped,
            expect: Some(PacketError::BadMac),
        },
        Case {
            format: Format::Fwknop,
            name: "valid packet (accepted: HMAC + AES + fields), for reference",
            inputs: valid,
            expect: None,
        },
        Case {
            format: Format::Native,
            name: "right magic and version, 256 B, random rest (rejected: server tag)",
            inputs: nmagic,
            expect: Some(PacketError::WrongServer),
        },
        Case {
            format: Format::Native,
            name: "valid header and server tag, one ciphertext bit flipped (rejected: AEAD, after X25519)",
            inputs: nflip,
            expect: Some(PacketError::DecryptFailed),
        },
        Case {
            format: Format::Native,
            name: "valid packet (accepted: tag + X25519 + AEAD + fields + Ed25519), for reference",
            inputs: nvalid,
            expect: None,
        },
    ];
    let mut t = Table::new(
        "4. SPA rejection throughput (in process, one thread)",
        &["format", "input", "packets/s", "per packet", "÷ fwknopd intake ceiling (~1,000/s)"],
    );
    for c in &cases {
        // Every input must meet the expectation before anything is timed.
        for p in &c.inputs {
            let got = match c.format {
                Format::Fwknop => fwknop::decode(p, &key).map(|_| ()),
                Format::Native => native::open(p, &server, &users).map(|_| ()),
            };
            if got.as_ref().err() != c.expect.as_ref() {
                anyhow::bail!("{}: got {got:?}, expected {:?}", c.name, c.expect);
            }
        }
        report.settle();
        let (rate, accepted) = match c.format {
            Format::Fwknop => throughput(&c.inputs, budget, |p| fwknop::decode(p, &key).is_ok()),
            Format::Native => throughput(&c.inputs, budget, |p| native::open(p, &server, &users).is_ok()),
        };
        if c.expect.is_none() != (accepted > 0) {
            anyhow::bail!("{}: accepted {accepted}, expected {:?}", c.name, c.expect);
        }
        t.row(vec![
            match c.format {
                Format::Fwknop => "fwknop (HMAC-SHA256 + Rijndael)".into(),
                Format::Native => "native (X25519 + ChaCha20-Poly1305 + Ed25519)".into(),
            },
            c.name.into(),
            thousands(rate.round() as u64),
            fmt_us(1.0 / rate),
            fmt_ratio(Some(rate), Some(FWKNOPD_INTAKE)),
        ]);
    }
    t.note(format!(
        "fwknop rows: `portcullis_proto::spa::fwknop::decode` with an HMAC-SHA256 key configured, {typical}-character \
         packets (the length `fwknop -A tcp/22` produces). Native rows: `portcullis_proto::spa::native::open` with a \
         server key and one user, {}-byte packets sealed by `native::seal` (tcp/22, explicit IPv4 allow address). \
         256 distinct inputs per row, each checked beforehand to fail at the stage named, round-robin, ~{:.1} s per \
         row. The ratio column compares with fwknopd's intake ceiling by design (PCAP_DISPATCH_COUNT 100 per \
         PCAP_LOOP_SLEEP 100 ms), not with an in-process fwknopd measurement. portcullisd itself runs `precheck` \
         (magic, version, length, server tag) before a budget per source /24 (50/s) under a global ceiling of \
         2,000 native packets/s that may reach X25519; the two X25519 rows are what that budget protects.",
        native::PACKET_LEN,
        budget.as_secs_f64()
    ));
    report.tables.push(t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_junk_has_the_shape_asked_for() {
        let j = base64_junk(8, 204);
        assert_eq!(j.len(), 8);
        assert!(j.iter().all(|p| p.len() == 204 && p.iter().all(|b| B64.contains(b))));
        assert_ne!(j[0], j[1]);
    }

    #[test]
    fn tagged_native_junk_passes_precheck_and_fails_at_the_aead() {
        let server = ServerKey::generate(&mut crate::env::urandom);
        let user = UserKey::generate(&mut crate::env::urandom);
        let mut users: BTreeMap<String, UserPublicKey> = BTreeMap::new();
        users.insert(crate::env::NATIVE_USER.into(), user.public());
        for p in tagged_native_junk(&server, &user, 16).unwrap() {
            assert_eq!(p.len(), native::PACKET_LEN);
            assert_eq!(native::precheck(&p, server.public()), Ok(()));
            assert_eq!(native::open(&p, &server, &users).err(), Some(PacketError::DecryptFailed));
        }
        // Another server's tag check refuses them cheaply.
        let other = ServerKey::generate(&mut crate::env::urandom);
        let p = &tagged_native_junk(&server, &user, 1).unwrap()[0];
        assert_eq!(native::precheck(p, other.public()), Err(PacketError::WrongServer));
    }
}
