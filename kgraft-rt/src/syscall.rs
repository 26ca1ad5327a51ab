//! What a system call's entries receive on x86-64, and how `SYSCALL_DEFINE` unpacks it.
//!
//! Since Linux 4.17 every x86-64 system call entry (`__x64_sys_NAME`, `__ia32_sys_NAME`) takes
//! the task's saved registers and unpacks the arguments itself: the 64-bit ABI from `di`, `si`,
//! `dx`, `r10`, `r8`, `r9`; the 32-bit one from `bx`, `cx`, `dx`, `si`, `di`, `bp`, each cut to
//! 32 bits and widened to a `long` without sign. The value is then cast to the declared type,
//! which truncates it (so an `int` argument takes the low 32 bits, with their sign).

/// The kernel's `struct pt_regs` on x86-64, the registers a system call entry receives; its
/// layout is [`crate::layout::pt_regs`], asserted against the target's headers when a module is
/// built.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
#[allow(missing_docs, reason = "the registers keep the kernel's names")]
pub struct PtRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

crate::layout::assert_kernel_layout!(
    PtRegs =
        pt_regs { r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss }
);

/// A type a system call argument may have: an integer, `bool` or a pointer.
pub trait SyscallArg {
    /// Converts the register's value (widened to 64 bits) as the kernel's cast does.
    fn from_reg(value: u64) -> Self;
}

macro_rules! ints {
    ($($t:ty)*) => {$(
        impl SyscallArg for $t {
            fn from_reg(value: u64) -> Self {
                // The kernel casts the `long` to the declared type: truncation, as `as` does.
                value as $t
            }
        }
    )*};
}
ints!(u8 u16 u32 u64 usize i8 i16 i32 i64 isize);

impl SyscallArg for bool {
    fn from_reg(value: u64) -> Self {
        value != 0
    }
}

impl<T> SyscallArg for *const T {
    fn from_reg(value: u64) -> Self {
        value as usize as *const T
    }
}

impl<T> SyscallArg for *mut T {
    fn from_reg(value: u64) -> Self {
        value as usize as *mut T
    }
}

/// Unpacks a 64-bit ABI argument from its register.
pub fn arg<T: SyscallArg>(reg: u64) -> T {
    T::from_reg(reg)
}

/// Unpacks a 32-bit ABI argument from its register: the low 32 bits, widened without sign.
pub fn arg32<T: SyscallArg>(reg: u64) -> T {
    T::from_reg(u64::from(reg as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_unpack_as_syscall_define_does() {
        assert_eq!(arg::<i32>(0xffff_ffff_ffff_fffe), -2);
        assert_eq!(arg32::<i32>(0x1234_5678_ffff_fffe), -2);
        assert_eq!(arg32::<i64>(0xffff_ffff_ffff_fffe), 0xffff_fffe);
        assert_eq!(arg32::<*const u8>(0xdead_0000_0000_1000) as usize, 0x1000);
        assert_eq!(arg::<u64>(u64::MAX), u64::MAX);
        assert!(arg::<bool>(0x1_0000_0000));
    }
}
