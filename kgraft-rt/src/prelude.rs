//! The names every patch body sees: the C types, the kernel's fixed-width aliases, the shadow,
//! state and log macros.

#![expect(non_camel_case_types, reason = "the aliases keep the kernel's C spelling")]

pub use core::ffi::{
    CStr, c_char, c_int, c_long, c_longlong, c_schar, c_short, c_uchar, c_uint, c_ulong, c_ulonglong, c_ushort, c_void,
};

pub use crate::{
    pr_err, pr_info, pr_notice, pr_warn, shadow, shadow_alloc, shadow_free, shadow_free_all, shadow_get, state,
    state_prev,
};

/// The kernel's `size_t`.
pub type size_t = usize;
/// The kernel's `ssize_t`.
pub type ssize_t = isize;
/// The kernel's `loff_t`.
pub type loff_t = i64;
/// The kernel's `gfp_t`.
pub type gfp_t = u32;
/// The kernel's signed 8-bit integer.
pub type s8 = i8;
/// The kernel's signed 16-bit integer.
pub type s16 = i16;
/// The kernel's signed 32-bit integer.
pub type s32 = i32;
/// The kernel's signed 64-bit integer.
pub type s64 = i64;
