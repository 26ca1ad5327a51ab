//! Kernel log lines as upstream's modules write them: `pr_info!("fmt", args...)`.
//!
//! Upstream's modules define `pr_fmt(fmt)` as `KBUILD_MODNAME ": " fmt`, so every `pr_info`
//! line starts with the module's name. The macros here do the same for a patch: the line gets
//! the level (`KERN_INFO` is `"\x01" "6"`), the patch's name (which is its module's name) and
//! `": "` before the format, and goes to the kernel's `_printk` (the user-mode host has one
//! with the same interface). The format is a string literal in printf's language, checked by
//! nothing but the kernel: each argument must be of the C type its conversion names, as in C.

use core::ffi::{c_char, c_int};

unsafe extern "C" {
    /// The kernel's `printk`: a format with its `KERN_<LEVEL>` prefix, then the arguments.
    pub fn _printk(fmt: *const c_char, ...) -> c_int;
}

/// Logs one line at `KERN_ERR` (3), after the patch's name: `pr_err!("failed: %d\n", ret)`.
///
/// It calls the kernel's `_printk`: use it where a kernel function may be called (every body
/// of a patch runs inside `unsafe`).
#[macro_export]
macro_rules! pr_err {
    ($fmt:literal $(, $arg:expr)* $(,)?) => { $crate::__pr!("3", $fmt $(, $arg)*) };
}

/// Logs one line at `KERN_WARNING` (4), after the patch's name.
#[macro_export]
macro_rules! pr_warn {
    ($fmt:literal $(, $arg:expr)* $(,)?) => { $crate::__pr!("4", $fmt $(, $arg)*) };
}

/// Logs one line at `KERN_NOTICE` (5), after the patch's name.
#[macro_export]
macro_rules! pr_notice {
    ($fmt:literal $(, $arg:expr)* $(,)?) => { $crate::__pr!("5", $fmt $(, $arg)*) };
}

/// Logs one line at `KERN_INFO` (6), after the patch's name: `pr_info!("%s: vmlinux\n", what)`
/// logs `NAME: WHAT: vmlinux`, as upstream's `pr_info` with `pr_fmt` does.
#[macro_export]
macro_rules! pr_info {
    ($fmt:literal $(, $arg:expr)* $(,)?) => { $crate::__pr!("6", $fmt $(, $arg)*) };
}

/// The body of the `pr_*` macros: the format is `"\x01" LEVEL "%s: " FMT "\0"`, and the patch's
/// name (from the crate's descriptor, `__KGRAFT_PATCH`, which `patch!` defines) is its first
/// argument.
#[doc(hidden)]
#[macro_export]
#[expect(clippy::crate_in_macro_def, reason = "the descriptor is the calling crate's, which `patch!` defines")]
macro_rules! __pr {
    ($level:literal, $fmt:literal $(, $arg:expr)*) => {
        $crate::printk::_printk(
            ::core::concat!("\x01", $level, "%s: ", $fmt, "\0").as_ptr().cast::<::core::ffi::c_char>(),
            crate::__KGRAFT_PATCH.name.as_ptr()
            $(, $arg)*
        )
    };
}
