//! The facts the kgraft engine's C half (`kernel/engine.c`) and the Rust side share, written
//! once, here: the relocation table kgraftc writes and the engine reads, the function record
//! the runtime hands the engine, the callback kinds of the engine's module events (whose
//! states are the kernel's `MODULE_STATE_*`, of `layout`), and the errno values the runtime
//! returns to the C. kgraftc writes them as the C header `kgraft_contract.h` that `engine.c`
//! includes (`C_STRUCTS` and the constants, with `static_assert`s of every offset and size, and
//! that the kernel's own constants agree), and the Rust side uses these definitions: a change
//! here changes both, and a disagreement with the kernel stops the build.

use core::ffi::{c_char, c_int, c_ulong};
use core::mem::{offset_of, size_of};

/// The section of a kgraft-engine module that holds its relocation table.
pub const RELOCS_SECTION: &str = ".kgraft.relocs";
/// The table's magic, `"KGRL"` little-endian.
pub const RELOCS_MAGIC: u32 = 0x4c52_474b;
/// The table format's version.
pub const RELOCS_VERSION: u16 = 1;
/// Record flag: the place is writable data, written directly (else through `text_poke_copy`).
pub const RELOC_WRITABLE: u32 = 1;

/// The head of the relocation table (`struct kg_relocs_head`): `count` records follow it,
/// then their strings.
#[repr(C)]
pub struct RelocsHead {
    pub magic: u32,
    pub version: u16,
    pub record_size: u16,
    pub count: u32,
    pub reserved: u32,
}

/// One record of the relocation table (`struct kg_reloc`). The three address fields are 64-bit
/// on the only architecture the engine supports; the module loader fills them through the
/// table's own `R_X86_64_64` relocations, so the engine reads plain pointers.
#[repr(C)]
pub struct Reloc {
    /// The address to write.
    pub place: u64,
    /// The symbol's name, a C string of the table.
    pub name: u64,
    /// `"vmlinux"` or the module's name, a C string of the table.
    pub object: u64,
    /// The removed relocation's addend.
    pub addend: i64,
    /// Its ELF relocation type, one of [`RELOC_TYPES`].
    pub r_type: u32,
    /// 0: the only symbol of the name; N: the Nth in kallsyms order.
    pub sympos: u32,
    /// [`RELOC_WRITABLE`] or 0.
    pub flags: u32,
    pub reserved: u32,
}

/// The x86-64 relocation types the engine applies, with the kernel's name of each and the
/// bytes its place covers.
pub const RELOC_TYPES: &[(u32, &str, usize)] = &[
    (1, "R_X86_64_64", 8),
    (2, "R_X86_64_PC32", 4),
    (4, "R_X86_64_PLT32", 4),
    (10, "R_X86_64_32", 4),
    (11, "R_X86_64_32S", 4),
    (24, "R_X86_64_PC64", 8),
];

/// One replacement as the runtime hands it to the engine (`struct kg_func`).
#[repr(C)]
pub struct Func {
    /// The replaced function's name.
    pub name: *const c_char,
    /// Its module's name; null for vmlinux.
    pub object: *const c_char,
    /// 0: the only symbol of the name; N: the Nth in kallsyms order.
    pub sympos: c_ulong,
    /// The new function.
    pub new_fn: *const (),
    /// The entry a direct call reaches: it jumps to `new_fn`.
    pub direct: *const (),
}

/// The callback kinds of the engine's module events (`kgraft_engine_object_event`), in the
/// order of the livepatch core's callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum CallbackKind {
    PrePatch = 0,
    PostPatch = 1,
    PreUnpatch = 2,
    PostUnpatch = 3,
}

impl CallbackKind {
    /// Every kind, in order.
    pub const ALL: [CallbackKind; 4] =
        [CallbackKind::PrePatch, CallbackKind::PostPatch, CallbackKind::PreUnpatch, CallbackKind::PostUnpatch];

    /// The kind the C passes as `kind`.
    pub fn from_c(kind: c_int) -> Option<CallbackKind> {
        Self::ALL.into_iter().find(|k| *k as c_int == kind)
    }

    /// Its C name (`KG_PRE_PATCH`).
    pub const fn c_name(self) -> &'static str {
        match self {
            CallbackKind::PrePatch => "KG_PRE_PATCH",
            CallbackKind::PostPatch => "KG_POST_PATCH",
            CallbackKind::PreUnpatch => "KG_PRE_UNPATCH",
            CallbackKind::PostUnpatch => "KG_POST_UNPATCH",
        }
    }
}

/// The errno values the runtime returns to the engine's C, negated there (`-EBUSY`).
pub mod errno {
    use core::ffi::c_int;

    /// No memory for the engine's tables.
    pub const ENOMEM: c_int = 12;
    /// A patch or transition is already in the way.
    pub const EBUSY: c_int = 16;
    /// A request that does not fit the engine's state.
    pub const EINVAL: c_int = 22;

    /// Every value, with the kernel's name, for the header's assertions.
    pub const ALL: &[(c_int, &str)] = &[(ENOMEM, "ENOMEM"), (EBUSY, "EBUSY"), (EINVAL, "EINVAL")];
}

const _: () = {
    assert!(size_of::<RelocsHead>() == 16);
    assert!(size_of::<Reloc>() == 48);
    assert!(offset_of!(Reloc, r_type) == 32);
};

/// A C struct of the contract: its name, each member's declaration with its Rust offset, and
/// its Rust size.
pub struct CStruct {
    pub name: &'static str,
    pub members: &'static [(&'static str, usize)],
    pub size: usize,
}

/// The structs the header defines, from the Rust definitions above.
pub const C_STRUCTS: &[CStruct] = &[
    CStruct {
        name: "kg_relocs_head",
        members: &[
            ("u32 magic", offset_of!(RelocsHead, magic)),
            ("u16 version", offset_of!(RelocsHead, version)),
            ("u16 record_size", offset_of!(RelocsHead, record_size)),
            ("u32 count", offset_of!(RelocsHead, count)),
            ("u32 reserved", offset_of!(RelocsHead, reserved)),
        ],
        size: size_of::<RelocsHead>(),
    },
    CStruct {
        name: "kg_reloc",
        members: &[
            ("unsigned long place", offset_of!(Reloc, place)),
            ("const char *name", offset_of!(Reloc, name)),
            ("const char *object", offset_of!(Reloc, object)),
            ("s64 addend", offset_of!(Reloc, addend)),
            ("u32 type", offset_of!(Reloc, r_type)),
            ("u32 sympos", offset_of!(Reloc, sympos)),
            ("u32 flags", offset_of!(Reloc, flags)),
            ("u32 reserved", offset_of!(Reloc, reserved)),
        ],
        size: size_of::<Reloc>(),
    },
    CStruct {
        name: "kg_func",
        members: &[
            ("const char *name", offset_of!(Func, name)),
            ("const char *object", offset_of!(Func, object)),
            ("unsigned long sympos", offset_of!(Func, sympos)),
            ("unsigned long new_fn", offset_of!(Func, new_fn)),
            ("unsigned long direct", offset_of!(Func, direct)),
        ],
        size: size_of::<Func>(),
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn callback_kinds_round_trip_through_their_c_values() {
        for kind in CallbackKind::ALL {
            assert_eq!(CallbackKind::from_c(kind as c_int), Some(kind));
        }
        assert_eq!(CallbackKind::from_c(4), None);
        assert_eq!(CallbackKind::from_c(-1), None);
    }

    #[test]
    fn every_struct_member_lies_inside_its_struct_in_order() {
        for s in C_STRUCTS {
            let offsets: Vec<usize> = s.members.iter().map(|m| m.1).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{}: {offsets:?}", s.name);
            assert!(offsets.iter().all(|o| *o < s.size), "{}", s.name);
        }
    }
}
