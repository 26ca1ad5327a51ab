//! The kernel arm of `__export_patch!`: the module's entry points and its `.modinfo`.

/// Exports the patch descriptor as a Linux kernel module.
///
/// The expansion defines `init_module` and `cleanup_module`, which the `.mod.c` file written by
/// modpost names as the module's init and exit, and the module's `.modinfo` entries: the GPL
/// license (the livepatch core exports its functions to GPL modules only) and, for the
/// livepatch core only (not under `kgraft-engine`), `livepatch=Y`, which makes the module loader
/// keep the ELF data the core needs. modpost adds the module's name and vermagic itself.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_patch {
    ($patch:ident, $name:literal) => {
        #[doc(hidden)]
        mod __kgraft_module {
            /// Registers the patch; the kernel calls this once when the module is inserted.
            ///
            /// # Safety
            ///
            /// Called by the module loader only.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn init_module() -> ::core::ffi::c_int {
                // SAFETY: the loader calls `init_module` once, and this is the module's only
                // patch descriptor.
                unsafe { $crate::kernel::init(&super::$patch) }
            }

            /// Frees the registration; the kernel calls this when the module is removed.
            ///
            /// # Safety
            ///
            /// Called by the module loader only, after the patch was disabled.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn cleanup_module() {
                // SAFETY: the loader calls `cleanup_module` once, after `init_module` succeeded
                // and the livepatch core released the patch.
                unsafe { $crate::kernel::exit() }
            }

            // Not `#[used]`: rustc would mark the section SHF_GNU_RETAIN, and the linker would
            // then keep two `.modinfo` sections, hiding modpost's entries from `modinfo`.
            #[unsafe(no_mangle)]
            #[unsafe(link_section = ".modinfo")]
            #[doc(hidden)]
            pub static __kgraft_modinfo: [u8; $crate::kernel::MODINFO.len()] = $crate::kernel::MODINFO;
        }
    };
}
