//! Universes: which version of the patched functions each thread runs during a transition.
//!
//! Every thread carries a one-byte flag, its universe (0 or 1). A transition gives the sites a
//! *reality check*: each site jumps to a small trampoline that reads the calling thread's flag
//! through `%fs` and jumps to the code of that universe, either the old body (just after the
//! site's NOP) or a replacement. It touches no register but the flags, so the arguments reach
//! the function intact. Threads change universe only at a safe point, where none of their frames
//! is inside patched code; when every thread is in the goal universe the sites jump straight to
//! the goal's code and the trampolines can go. Reversing a transition just moves the goal back.

use core::sync::atomic::{AtomicU8, Ordering};

/// The size of a trampoline, a multiple of 16.
pub const TRAMPOLINE_LEN: usize = 64;

/// The size of a thunk, a multiple of 16.
pub const THUNK_LEN: usize = 16;

/// Where the two absolute target slots of a trampoline are.
const SLOTS: [usize; 2] = [40, 48];

/// Encodes a reality-check trampoline placed at `at`.
///
/// `tls_offset` is the offset of the thread's universe flag from the thread pointer (`%fs`
/// base); `targets[u]` is where a thread of universe `u` goes. A target within `rel32` reach is
/// jumped to directly, a far one through an absolute slot:
///
/// ```text
///  0: cmpb  $0, %fs:tls_offset
///  9: jne   targets[1]          (or 32: jmp *slot1(%rip))
/// 15: jmp   targets[0]          (or 24: jmp *slot0(%rip))
/// 40: slot0, 48: slot1          (the absolute targets, always filled)
/// ```
pub fn encode_trampoline(at: usize, tls_offset: i32, targets: [usize; 2]) -> [u8; TRAMPOLINE_LEN] {
    let mut code = [0xccu8; TRAMPOLINE_LEN];
    let off = tls_offset.to_le_bytes();
    // cmpb $0, %fs:disp32 (64 80 /7 with a SIB byte for a bare disp32).
    code[..9].copy_from_slice(&[0x64, 0x80, 0x3c, 0x25, off[0], off[1], off[2], off[3], 0x00]);
    let rel = |end: usize, target: usize| i32::try_from(target as i64 - (at + end) as i64).ok();
    // jne rel32: to targets[1], or to the indirect jump at 32.
    let r1 = rel(15, targets[1]).unwrap_or(32 - 15);
    code[9..11].copy_from_slice(&[0x0f, 0x85]);
    code[11..15].copy_from_slice(&r1.to_le_bytes());
    // jmp rel32: to targets[0], or to the indirect jump at 24.
    let r0 = rel(20, targets[0]).unwrap_or(24 - 20);
    code[15] = 0xe9;
    code[16..20].copy_from_slice(&r0.to_le_bytes());
    // jmp *slot0(%rip) at 24 (ends at 30) and jmp *slot1(%rip) at 32 (ends at 38).
    code[24..30].copy_from_slice(&[0xff, 0x25, (SLOTS[0] - 30) as u8, 0, 0, 0]);
    code[32..38].copy_from_slice(&[0xff, 0x25, (SLOTS[1] - 38) as u8, 0, 0, 0]);
    code[SLOTS[0]..SLOTS[0] + 8].copy_from_slice(&targets[0].to_le_bytes());
    code[SLOTS[1]..SLOTS[1] + 8].copy_from_slice(&targets[1].to_le_bytes());
    code
}

/// Reads back the targets of a trampoline made by [`encode_trampoline`].
pub fn trampoline_targets(code: &[u8; TRAMPOLINE_LEN]) -> [usize; 2] {
    let slot = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&code[at..at + 8]);
        usize::from_le_bytes(b)
    };
    [slot(SLOTS[0]), slot(SLOTS[1])]
}

/// Encodes a thunk: `jmp *0(%rip)` followed by the absolute target, for far replacements.
pub fn encode_thunk(target: usize) -> [u8; THUNK_LEN] {
    let mut code = [0xccu8; THUNK_LEN];
    code[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    code[6..14].copy_from_slice(&target.to_le_bytes());
    code
}

/// The universe every thread should reach, shared by the engine and the safe points.
#[derive(Debug, Default)]
pub struct Goal(AtomicU8);

impl Goal {
    /// A goal of universe 0, where every thread starts.
    pub const fn new() -> Goal {
        Goal(AtomicU8::new(0))
    }

    /// Returns the goal universe.
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the goal universe; threads follow at their next safe point.
    ///
    /// The store is sequentially consistent: a thread that announces it enters the kernel and
    /// then reads the goal either sees the new goal or is seen inside the kernel by the engine.
    pub fn set(&self, universe: u8) {
        self.0.store(universe & 1, Ordering::SeqCst);
    }

    /// Moves a thread's flag to the goal; call only where the thread runs no patched code.
    ///
    /// Returns whether the thread changed universe.
    pub fn migrate(&self, flag: &AtomicU8) -> bool {
        let goal = self.get();
        if flag.load(Ordering::Relaxed) != goal {
            flag.store(goal, Ordering::Release);
            true
        } else {
            false
        }
    }
}

/// Counts the threads whose flag is not yet the goal universe.
pub fn pending<I: IntoIterator<Item = u8>>(flags: I, goal: u8) -> usize {
    flags.into_iter().filter(|&u| u != goal).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_keeps_its_targets() {
        let code = encode_trampoline(0x40_0000, -0x40, [0x1111_2222_3333, 0x4444_5555_6666]);
        assert_eq!(trampoline_targets(&code), [0x1111_2222_3333, 0x4444_5555_6666]);
        assert_eq!(&code[4..8], &(-0x40i32).to_le_bytes());
        // Far targets go through the slots: jne to 32, jmp to 24.
        assert_eq!(&code[9..15], &[0x0f, 0x85, 17, 0, 0, 0]);
        assert_eq!(&code[15..20], &[0xe9, 4, 0, 0, 0]);
    }

    #[test]
    fn near_targets_are_jumped_to_directly() {
        let at = 0x40_0000;
        let code = encode_trampoline(at, 0, [at + 0x1000, at - 0x1000]);
        let jne = i32::from_le_bytes([code[11], code[12], code[13], code[14]]);
        assert_eq!((at + 15).wrapping_add_signed(jne as isize), at - 0x1000);
        let jmp = i32::from_le_bytes([code[16], code[17], code[18], code[19]]);
        assert_eq!((at + 20).wrapping_add_signed(jmp as isize), at + 0x1000);
    }

    #[test]
    fn thunk_holds_absolute_target() {
        let code = encode_thunk(0x7f00_dead_beef);
        assert_eq!(&code[..2], &[0xff, 0x25]);
        assert_eq!(&code[6..14], &0x7f00_dead_beefusize.to_le_bytes());
    }

    #[test]
    fn migration_moves_a_flag_once() {
        let goal = Goal::new();
        let flag = AtomicU8::new(0);
        assert!(!goal.migrate(&flag));
        goal.set(1);
        assert_eq!(pending([flag.load(Ordering::Relaxed)], 1), 1);
        assert!(goal.migrate(&flag));
        assert!(!goal.migrate(&flag));
        assert_eq!(pending([flag.load(Ordering::Relaxed)], 1), 0);
    }
}
