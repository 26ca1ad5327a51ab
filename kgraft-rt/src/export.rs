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
