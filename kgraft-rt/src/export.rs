//! How a patch's descriptor leaves the crate, by target.

/// Declares kernel types that a patch names but does not define: usable behind pointers only.
#[macro_export]
macro_rules! opaque_types {
    ($($name:ident),* $(,)?) => {
        $(
            #[repr(C)]
            pub struct $name {
                _data: [u8; 0],
                _not_send_sync_unpin: ::core::marker::PhantomData<(*mut u8, ::core::marker::PhantomPinned)>,
            }
        )*
    };
}

/// Asserts at compile time that a generated kernel type has the kernel's size and member
/// offsets: `assert_layout!(seq_file, 120; buf = 0, size = 8)`. A patch whose types do not match
/// its target kernel does not build.
#[macro_export]
macro_rules! assert_layout {
    ($ty:ident, $size:literal $(; $($field:ident = $offset:literal),* $(,)?)?) => {
        const _: () = {
            assert!(
                ::core::mem::size_of::<$ty>() == $size,
                concat!("kgraft: the size of `", stringify!($ty), "` is not the kernel's")
            );
            $($(
                assert!(
                    ::core::mem::offset_of!($ty, $field) == $offset,
                    concat!("kgraft: `", stringify!($ty), ".", stringify!($field), "` is not at the kernel's offset")
                );
            )*)?
        };
    };
}

/// Exports the patch descriptor `$patch` of the module `$name` for the target's engine.
///
/// Without a target feature the descriptor is only type-checked.
#[cfg(not(any(feature = "host", feature = "kernel")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_patch {
    ($patch:ident, $name:literal) => {};
}

/// Exports the patch descriptor for the user-mode host: its loader compares `kgraft_abi_v1`
/// with its own [`ABI_STAMP`](crate::patch::ABI_STAMP), then reads `kgraft_patch_v1`.
#[cfg(feature = "host")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_patch {
    ($patch:ident, $name:literal) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub static kgraft_abi_v1: [u8; $crate::patch::ABI_STAMP_LEN] = $crate::patch::ABI_STAMP;

        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub static kgraft_patch_v1: &$crate::Patch = &$patch;

        /// A patch is a `no_std` shared object: a panic in it stops the host, as an oops would.
        #[cfg(not(test))]
        #[panic_handler]
        fn __kgraft_panic(_info: &::core::panic::PanicInfo<'_>) -> ! {
            // SAFETY: `ud2` raises an invalid-opcode fault and never returns.
            unsafe { ::core::arch::asm!("ud2", options(noreturn)) }
        }
    };
}

/// The entry a direct call from the target's fentry site reaches (see
/// [`Func::direct`](crate::Func::direct)): without the kernel's kgraft engine, none.
#[cfg(not(feature = "kgraft-engine"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __direct_entry {
    ($new:path) => {
        ::core::ptr::null()
    };
}

/// The entry a direct call from the target's fentry site reaches: ftrace's direct call (or
/// the return from its handler) arrives with the return address into the old function on the
/// stack; the entry drops it and jumps to the replacement, which then returns to the old
/// function's caller. Two instructions, no frame: a patched call costs one call and one jump.
#[cfg(feature = "kgraft-engine")]
#[doc(hidden)]
#[macro_export]
macro_rules! __direct_entry {
    ($new:path) => {{
        // SAFETY: the function has no prologue to rely on: its code drops the one stack slot
        // the direct call pushed and jumps to the replacement, with the arguments untouched in
        // their registers; only the kernel enters it, from the target's fentry site.
        #[unsafe(naked)]
        unsafe extern "C" fn __kgraft_direct_entry() {
            ::core::arch::naked_asm!("lea rsp, [rsp + 8]", "jmp {new}", new = sym $new)
        }
        __kgraft_direct_entry as *const ()
    }};
}
