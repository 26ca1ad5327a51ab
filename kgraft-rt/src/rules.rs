//! The rules the compiler, the proc macros and the runtime share, written once.
//!
//! `kgraft-lang` checks a source against them, `kgraft-macros` checks the lowered crate against
//! them, and the runtime's descriptor is shaped by them; each reads them from here.

/// The callbacks a patch may have, in the order the runtime's `Callbacks` holds them: the first
/// returns `c_int` (non-zero refuses the patch), the others return nothing.
pub const CALLBACKS: [&str; 4] = ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"];

/// The slot of a callback kind in [`CALLBACKS`], and whether it returns `c_int`.
pub fn callback(kind: &str) -> Option<(usize, bool)> {
    CALLBACKS.iter().position(|k| *k == kind).map(|slot| (slot, slot == 0))
}

/// The longest patch or module name, in bytes: the kernel's `MODULE_NAME_LEN` (56) less its NUL.
pub const MAX_NAME_LEN: usize = 55;

/// The type names [`crate::prelude`] gives every body besides Rust's own.
pub const PRELUDE_TYPES: [&str; 21] = [
    "c_char",
    "c_int",
    "c_long",
    "c_longlong",
    "c_schar",
    "c_short",
    "c_uchar",
    "c_uint",
    "c_ulong",
    "c_ulonglong",
    "c_ushort",
    "c_void",
    "CStr",
    "size_t",
    "ssize_t",
    "loff_t",
    "gfp_t",
    "s8",
    "s16",
    "s32",
    "s64",
];

/// Rust's own type names that a body may write without a path.
pub const RUST_TYPES: [&str; 20] = [
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64", "bool",
    "char", "str", "Self", "Option", "Result",
];

/// The environment variable that names the user-mode host's control socket. Without it the
/// socket is [`host_socket_name`] in the temporary directory (`$TMPDIR`, or `/tmp`): the host
/// binds there and `kgraftc host` connects there.
pub const HOST_SOCKET_VAR: &str = "KGRAFT_HOST_SOCKET";

/// The file name of the host's control socket for the user `uid`: `kgraft-host-UID.sock`.
pub fn host_socket_name(uid: u32) -> impl core::fmt::Display {
    struct Name(u32);
    impl core::fmt::Display for Name {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "kgraft-host-{}.sock", self.0)
        }
    }
    Name(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_slots() {
        assert_eq!(callback("pre_patch"), Some((0, true)));
        assert_eq!(callback("post_unpatch"), Some((3, false)));
        assert_eq!(callback("on_patch"), None);
    }

    #[test]
    fn host_socket_is_per_user() {
        extern crate alloc;
        use alloc::string::ToString;
        assert_eq!(host_socket_name(1000).to_string(), "kgraft-host-1000.sock");
    }
}
