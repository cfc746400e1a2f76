//! A tiny two-pass assembler: forward labels, and conditional jumps too long for cBPF's
//! 8-bit offsets rewritten into a short jump over an unconditional `ja`.

use super::{op, Insn, MAX_INSNS};

/// A forward jump target in [`Asm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The next instruction (offset 0).
    Next,
    /// A bound label.
    To(Label),
}
use Target::{Next, To};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Label(usize);

#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    Bind(Label),
    Stmt(Insn),
    Cond { code: u16, k: u32, jt: Target, jf: Target },
}

/// A tiny assembler with labels. Conditional jumps whose target is more than 255
/// instructions ahead are relaxed into `jcc 0,1; ja far` forms, iterating until the layout
/// is stable (relaxing only grows the program, so this terminates).
#[derive(Debug, Default)]
pub(super) struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    pub(super) fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    pub(super) fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    pub(super) fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(Insn::stmt(code, k)));
    }

    pub(super) fn jump(&mut self, cond: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Cond { code: op::JMP | cond | op::K, k, jt, jf });
    }

    /// Instructions a conditional jump takes: 1 if short, else one `ja` per far side.
    pub(super) fn cond_len(long: bool, jt: Target, jf: Target) -> usize {
        if !long {
            1
        } else {
            1 + usize::from(jt != Next) + usize::from(jf != Next)
        }
    }

    /// Lay out, relax and encode. `None` if too long (or, defensively, if a label is
    /// unbound or a jump goes backwards, which cBPF forbids).
    pub(super) fn assemble(&self) -> Option<Vec<Insn>> {
        let mut long = vec![false; self.items.len()];
        let (addr, labels) = loop {
            let (addr, labels, len) = self.layout(&long);
            if len > MAX_INSNS {
                return None;
            }
            let mut changed = false;
            for (i, item) in self.items.iter().enumerate() {
                if let Item::Cond { jt, jf, .. } = *item {
                    if long[i] {
                        continue;
                    }
                    let far = |t| match t {
                        Next => Some(false),
                        To(Label(l)) => {
                            let off = labels[l].and_then(|t| t.checked_sub(addr[i] + 1));
                            debug_assert!(off.is_some(), "unbound label or backward jump");
                            Some(off? > usize::from(u8::MAX))
                        }
                    };
                    if far(jt)? || far(jf)? {
                        long[i] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break (addr, labels);
            }
        };

        let mut out = Vec::with_capacity(addr.last().map_or(0, |a| a + 3));
        // Offset from the instruction at `from` to target `t` (forward, checked above).
        let offset = |from: usize, t: Target| match t {
            Next => Some(0),
            To(Label(l)) => labels[l]?.checked_sub(from + 1),
        };
        for (i, item) in self.items.iter().enumerate() {
            match *item {
                Item::Bind(_) => {}
                Item::Stmt(insn) => out.push(insn),
                Item::Cond { code, k, jt, jf } if !long[i] => {
                    let jt = u8::try_from(offset(addr[i], jt)?).ok()?;
                    let jf = u8::try_from(offset(addr[i], jf)?).ok()?;
                    out.push(Insn::jump(code, k, jt, jf));
                }
                Item::Cond { code, k, jt, jf } => {
                    // `jcc 0,1; ja T; ja F`, or with one side Next, `jcc 0,1; ja T` /
                    // `jcc 1,0; ja F` where skipping the single `ja` is the fallthrough.
                    let (t_skip, f_skip) = if jt == Next { (1, 0) } else { (0, 1) };
                    out.push(Insn::jump(code, k, t_skip, f_skip));
                    let mut pc = addr[i] + 1;
                    for t in [jt, jf] {
                        if t != Next {
                            let k = u32::try_from(offset(pc, t)?).ok()?;
                            out.push(Insn::stmt(op::JMP | op::JA, k));
                            pc += 1;
                        }
                    }
                }
            }
        }
        debug_assert!(out.len() <= MAX_INSNS);
        Some(out)
    }

    /// Address of each item, of each label, and the program length.
    pub(super) fn layout(&self, long: &[bool]) -> (Vec<usize>, Vec<Option<usize>>, usize) {
        let mut addr = Vec::with_capacity(self.items.len());
        let mut labels = vec![None; self.labels];
        let mut pc = 0;
        for (item, &long) in self.items.iter().zip(long) {
            addr.push(pc);
            match *item {
                Item::Bind(Label(l)) => labels[l] = Some(pc),
                Item::Stmt(_) => pc += 1,
                Item::Cond { jt, jf, .. } => pc += Self::cond_len(long, jt, jf),
            }
        }
        (addr, labels, pc)
    }
}
