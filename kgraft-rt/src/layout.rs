//! The kernel's layouts and constants that the runtime relies on, written once.
//!
//! The kernel glue (`kernel::klp`) and the system call glue ([`crate::syscall`]) build and read
//! kernel structures whose layout they cannot learn at run time. Every number they assume is
//! stated here, once: the Rust side asserts its `#[repr(C)]` structures against these constants
//! at compile time, and `kgraftc build --target linux` writes each entry of [`FACTS`] as a C
//! `static_assert` compiled against the target kernel's own headers, so a kernel that disagrees
//! fails the build, naming the fact it broke.
//!
//! The numbers are Linux 6.1's on x86-64. A structure's module holds its `SIZE` and one
//! [`Field`] per member the runtime touches, named as the kernel names it.

use core::fmt;

/// A member of a kernel structure the runtime touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The member's name in C.
    pub member: &'static str,
    /// `offsetof(TYPE, MEMBER)`.
    pub offset: usize,
    /// `sizeof(((TYPE *)0)->MEMBER)`, when the runtime reads the member as a type of its own.
    pub size: Option<usize>,
}

/// One fact about the target kernel: a C constant expression and the value the runtime assumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// `sizeof(TYPE)`.
    Size {
        /// The C type, such as `struct klp_func`.
        ty: &'static str,
        /// The size in bytes.
        value: usize,
    },
    /// `offsetof(TYPE, MEMBER)`.
    Offset {
        /// The C type.
        ty: &'static str,
        /// The member, as C names it.
        member: &'static str,
        /// The offset in bytes.
        value: usize,
    },
    /// `sizeof(((TYPE *)0)->MEMBER)`.
    MemberSize {
        /// The C type.
        ty: &'static str,
        /// The member, as C names it.
        member: &'static str,
        /// The size in bytes.
        value: usize,
    },
    /// A constant of the headers: an enumerator or a macro's value.
    Value {
        /// The C expression.
        c: &'static str,
        /// Its value.
        value: u64,
    },
}

/// Writes the fact as a C condition that holds when the kernel agrees:
/// `offsetof(struct klp_object, mod) == 152`.
impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fact::Size { ty, value } => write!(f, "sizeof({ty}) == {value}"),
            Fact::Offset { ty, member, value } => write!(f, "offsetof({ty}, {member}) == {value}"),
            Fact::MemberSize { ty, member, value } => write!(f, "sizeof((({ty} *)0)->{member}) == {value}"),
            Fact::Value { c, value } => write!(f, "({c}) == {value:#x}"),
        }
    }
}

/// Picks a member's C name: the one given, or the Rust name.
macro_rules! c_name {
    ($name:ident) => {
        stringify!($name)
    };
    ($name:ident, $c:literal) => {
        $c
    };
}

/// Turns an optional literal into an `Option`.
macro_rules! optional {
    () => {
        None
    };
    ($value:literal) => {
        Some($value)
    };
}

/// Defines a module of constants per structure, a constant per value, and [`FACTS`] with all
/// of them.
macro_rules! layout {
    (
        structs {
            $(
                $(#[$sdoc:meta])*
                struct $s:ident $(size $size:literal)? {
                    $( $(#[$mdoc:meta])* $m:ident $(= $mc:literal)? @ $off:literal $(: $msize:literal)? ),* $(,)?
                }
            )*
        }
        values {
            $(
                $(#[$vdoc:meta])*
                const $v:ident: $vty:ty = $val:literal $(= $vc:literal)?;
            )*
        }
    ) => {
        $(
            $(#[$sdoc])*
            #[expect(non_upper_case_globals, reason = "members keep the kernel's names")]
            pub mod $s {
                use super::Field;

                $(
                    #[doc = concat!("`sizeof(struct ", stringify!($s), ")`.")]
                    pub const SIZE: usize = $size;
                )?
                $(
                    $(#[$mdoc])*
                    pub const $m: Field = Field { member: c_name!($m $(, $mc)?), offset: $off, size: optional!($($msize)?) };
                )*
            }
        )*
        $(
            $(#[$vdoc])*
            pub const $v: $vty = $val;
        )*

        /// Every fact above, in the order written: what the build asserts against the target
        /// kernel's headers.
        pub const FACTS: &[Fact] = &[
            $(
                $(
                    Fact::Size { ty: concat!("struct ", stringify!($s)), value: $size },
                )?
                $(
                    Fact::Offset { ty: concat!("struct ", stringify!($s)), member: $s::$m.member, value: $off },
                    $(
                        Fact::MemberSize { ty: concat!("struct ", stringify!($s)), member: $s::$m.member, value: $msize },
                    )?
                )*
            )*
            $(
                Fact::Value { c: c_name!($v $(, $vc)?), value: $v as u64 },
            )*
        ];
    };
}

layout! {
    structs {
        /// `struct klp_func`: one function to replace (the members a patch module fills in).
        struct klp_func size 152 {
            /// The name of the function to replace.
            old_name @ 0,
            /// The replacement's code.
            new_func @ 8,
            /// Which local symbol of that name.
            old_sympos @ 16,
        }

        /// `struct klp_callbacks`: the hooks of one object.
        struct klp_callbacks size 40 {
            /// Runs before the object is patched.
            pre_patch @ 0,
            /// Runs after the object has been patched.
            post_patch @ 8,
            /// Runs before the object is unpatched.
            pre_unpatch @ 16,
            /// Runs after the object has been unpatched.
            post_unpatch @ 24,
            /// Set by the core when `post_unpatch` is due.
            post_unpatch_enabled @ 32,
        }

        /// `struct klp_object`: vmlinux or one module, with its functions.
        struct klp_object size 168 {
            /// The module's name, or null for vmlinux.
            name @ 0,
            /// The functions.
            funcs @ 8,
            /// The hooks (a `struct klp_callbacks`).
            callbacks @ 16,
            /// `mod`, the core's `struct module *` of the loaded module, which callbacks read.
            module = "mod" @ 152,
        }

        /// `struct klp_patch`: the whole patch as `klp_enable_patch` registers it.
        struct klp_patch size 200 {
            /// `mod`, the patch module.
            module = "mod" @ 0,
            /// The objects.
            objs @ 8,
            /// The system states.
            states @ 16,
            /// Whether the patch replaces every earlier one.
            replace @ 24,
        }

        /// `struct klp_state`: one system state.
        struct klp_state size 24 {
            /// The state's id, an `unsigned long`.
            id @ 0 : 8,
            /// Its version, an `unsigned int`.
            version @ 8 : 4,
            /// The data the patches owning the state share.
            data @ 16,
        }

        /// `struct module`, of which callbacks read the state.
        struct module {
            /// The module's `enum module_state`, an `int`.
            state @ 0 : 4,
        }

        /// `struct pt_regs` on x86-64: the registers a system call entry receives.
        struct pt_regs size 168 {
            /// `r15`.
            r15 @ 0,
            /// `r14`.
            r14 @ 8,
            /// `r13`.
            r13 @ 16,
            /// `r12`.
            r12 @ 24,
            /// `bp`: the sixth argument of the ia32 ABI.
            bp @ 32,
            /// `bx`: the first argument of the ia32 ABI.
            bx @ 40,
            /// `r11`.
            r11 @ 48,
            /// `r10`: the fourth argument of the x86-64 ABI.
            r10 @ 56,
            /// `r9`: the sixth argument of the x86-64 ABI.
            r9 @ 64,
            /// `r8`: the fifth argument of the x86-64 ABI.
            r8 @ 72,
            /// `ax`.
            ax @ 80,
            /// `cx`: the second argument of the ia32 ABI.
            cx @ 88,
            /// `dx`: the third argument of both ABIs.
            dx @ 96,
            /// `si`: the second argument of the x86-64 ABI, the fourth of the ia32 one.
            si @ 104,
            /// `di`: the first argument of the x86-64 ABI, the fifth of the ia32 one.
            di @ 112,
            /// `orig_ax`: the system call's number.
            orig_ax @ 120,
            /// `ip`.
            ip @ 128,
            /// `cs`.
            cs @ 136,
            /// `flags`.
            flags @ 144,
            /// `sp`.
            sp @ 152,
            /// `ss`.
            ss @ 160,
        }
    }
    values {
        /// `MODULE_STATE_LIVE`: the module runs normally.
        const MODULE_STATE_LIVE: i32 = 0;
        /// `MODULE_STATE_COMING`: fully formed, running its `module_init`.
        const MODULE_STATE_COMING: i32 = 1;
        /// `MODULE_STATE_GOING`: going away.
        const MODULE_STATE_GOING: i32 = 2;
        /// `MODULE_STATE_UNFORMED`: still being set up.
        const MODULE_STATE_UNFORMED: i32 = 3;
    }
}

/// A constant whose value differs between the kernels a patch is built for: the layout file
/// defines it from the target's own headers as a `u32` object named `symbol`, which the
/// runtime reads ([`crate::shadow::gfp_atomic`]), instead of asserting one value. (For a helper
/// of [`TARGET_HELPERS`], `c` is the whole definition.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetValue {
    /// The object's symbol.
    pub symbol: &'static str,
    /// The C expression that gives its value.
    pub c: &'static str,
}

/// The constants each target's headers give (`GFP_ATOMIC` lost `__GFP_ATOMIC`, 0x200, in 6.4:
/// 0xa20 on 6.1, 0x820 on 6.12).
pub const TARGET_VALUES: &[TargetValue] = &[TargetValue { symbol: "kgraft_gfp_atomic", c: "GFP_ATOMIC" }];

/// The kernel's inline helpers the runtime calls, each defined by the layout file as a function
/// of the module from the target's own headers (C, one line each): the function an inline
/// calls may change between releases where the inline does not.
pub const TARGET_HELPERS: &[TargetValue] = &[TargetValue {
    symbol: "kgraft_kzalloc",
    c: "void *kgraft_kzalloc(size_t size) { return kzalloc(size, GFP_KERNEL); }",
}];

/// The symbols the layout file defines for the runtime: the module defines them itself, so they
/// are never the kernel's to resolve.
pub fn target_symbols() -> impl Iterator<Item = &'static str> {
    TARGET_VALUES.iter().chain(TARGET_HELPERS).map(|v| v.symbol)
}

/// Asserts at compile time that the Rust structure `$ty` has the size of the kernel structure
/// `$s` of this module and its members at their offsets (and sizes, where given):
/// `assert_kernel_layout!(KlpFunc = klp_func { old_name, new_func })`. A Rust member named
/// otherwise than the kernel's is written `rust_name as kernel_name`.
macro_rules! assert_kernel_layout {
    ($ty:ty = $s:ident { $($m:ident $(as $k:ident)?),* $(,)? }) => {
        const _: () = {
            use $crate::layout::$s as kernel;
            assert!(::core::mem::size_of::<$ty>() == kernel::SIZE, concat!("the size of ", stringify!($ty)));
            $(
                let field = $crate::layout::assert_kernel_layout!(@kernel kernel $m $($k)?);
                assert!(
                    ::core::mem::offset_of!($ty, $m) == field.offset,
                    concat!("the offset of ", stringify!($ty), ".", stringify!($m))
                );
                if let Some(size) = field.size {
                    assert!(
                        $crate::layout::member_size(|s: &$ty| &s.$m) == size,
                        concat!("the size of ", stringify!($ty), ".", stringify!($m))
                    );
                }
            )*
        };
    };
    (@kernel $kernel:ident $m:ident) => { $kernel::$m };
    (@kernel $kernel:ident $m:ident $k:ident) => { $kernel::$k };
}
pub(crate) use assert_kernel_layout;

/// Returns the size of the member that `member` selects (it is never called).
pub(crate) const fn member_size<T, M>(_member: fn(&T) -> &M) -> usize {
    core::mem::size_of::<M>()
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn facts_read_as_c_conditions() {
        let c: alloc::vec::Vec<_> = FACTS.iter().map(ToString::to_string).collect();
        assert!(c.contains(&"sizeof(struct klp_func) == 152".to_string()), "{c:?}");
        assert!(c.contains(&"offsetof(struct klp_object, mod) == 152".to_string()), "{c:?}");
        assert!(c.contains(&"sizeof(((struct klp_state *)0)->version) == 4".to_string()), "{c:?}");
        assert!(c.contains(&"(MODULE_STATE_GOING) == 0x2".to_string()), "{c:?}");
        // What differs between the fleet's kernels is taken from each, not asserted.
        assert!(!c.iter().any(|f| f.contains("GFP")), "{c:?}");
    }
}
