//! A reference interpreter for the programs [`super::program`] emits (test support).

use super::*;

/// Run `prog` on `pkt` like the kernel would for a packet with this `pkttype` and
/// `ethertype`, and return the filter's verdict (0 = drop).
///
/// Test support, public so that daemon tests can check the filter they install. Covers the
/// subset [`program`] emits: `ld`/`ldh`/`ldb` absolute and indirect, `ldx` immediate and
/// `4*([k]&0xf)`, `and #k`, `ja`/`jeq`/`jgt`/`jge`/`jset` with a constant, `ret #k`/`ret a`,
/// and the `pkttype`/`protocol` ancillary loads. As in the kernel, an out-of-bounds load
/// returns 0. Anything else (unknown opcode, jump out of the program, falling off the end)
/// also returns 0; the kernel would have refused such a program.
#[doc(hidden)]
pub fn interpret(prog: &[Insn], pkt: &[u8], pkttype: u32, ethertype: u16) -> u32 {
    let load = |off: u32, size: usize| -> Option<u32> {
        let start = usize::try_from(off).ok()?;
        let bytes = pkt.get(start..start.checked_add(size)?)?;
        Some(bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
    };
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    // Jumps only go forward, so this terminates after at most prog.len() steps.
    while let Some(insn) = prog.get(pc) {
        let k = insn.k;
        pc += 1;
        let size = match insn.code & 0x18 {
            op::W => 4,
            op::H => 2,
            _ => 1,
        };
        match insn.code {
            c if c & 0x07 == op::LD && c & 0xe0 == op::ABS && k >= SKF_AD_OFF => {
                a = match k - SKF_AD_OFF {
                    SKF_AD_PROTOCOL => ethertype.into(),
                    SKF_AD_PKTTYPE => pkttype,
                    _ => return 0,
                };
            }
            c if c & 0x07 == op::LD && c & 0xe0 == op::ABS && c & 0x18 != 0x18 => {
                let Some(v) = load(k, size) else { return 0 };
                a = v;
            }
            c if c & 0x07 == op::LD && c & 0xe0 == op::IND && c & 0x18 != 0x18 => {
                let Some(v) = x.checked_add(k).and_then(|off| load(off, size)) else {
                    return 0;
                };
                a = v;
            }
            c if c == op::LD | op::W | op::IMM => a = k,
            c if c == op::LDX | op::W | op::IMM => x = k,
            c if c == op::LDX | op::B | op::MSH => {
                let Some(v) = load(k, 1) else { return 0 };
                x = 4 * (v & 0x0f);
            }
            c if c == op::ALU | op::AND | op::K => a &= k,
            c if c == op::JMP | op::JA => {
                pc = match usize::try_from(k).ok().and_then(|k| pc.checked_add(k)) {
                    Some(pc) => pc,
                    None => return 0,
                };
            }
            c if c & 0x07 == op::JMP && c & 0x08 == op::K => {
                let taken = match c & 0xf0 {
                    op::JEQ => a == k,
                    op::JGT => a > k,
                    op::JGE => a >= k,
                    op::JSET => a & k != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            c if c == op::RET | op::K => return k,
            c if c == op::RET | op::A => return a,
            _ => return 0,
        }
    }
    0
}
