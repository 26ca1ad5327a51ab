//! The livepatch core's structures of Linux 6.1 as the kernel lays them out on x86_64.
//!
//! Only the fields a patch module fills in ("external" in the kernel's header) are named; the
//! fields the core owns are kept as opaque words so that the sizes match. The sizes and offsets
//! are those of [`crate::layout`]: asserted here at compile time, and against the target
//! kernel's own headers by the C file `kgraftc build --target linux` writes from the same
//! table, so a kernel whose layout differs is refused at build time instead of being corrupted
//! at load time.

use core::ffi::{c_char, c_int, c_ulong, c_void};

use crate::layout::{self, assert_kernel_layout};

/// The kernel's `struct klp_func`: one function to replace.
#[repr(C)]
pub(crate) struct KlpFunc {
    /// The name of the function to replace.
    pub(crate) old_name: *const c_char,
    /// The replacement's code.
    pub(crate) new_func: *const c_void,
    /// Which local symbol of that name (1-based), or 0 when the name is unique.
    pub(crate) old_sympos: c_ulong,
    /// `old_func`, the kobject, the lists, sizes and state flags owned by the core.
    _internal: [u64; 16],
}

/// The kernel's `struct klp_callbacks`: hooks run around the transitions of one object.
#[repr(C)]
pub(crate) struct KlpCallbacks {
    /// Runs before the object is patched; a negative errno refuses the patch.
    pub(crate) pre_patch: Option<unsafe extern "C" fn(obj: *mut KlpObject) -> c_int>,
    /// Runs after the object has been patched.
    pub(crate) post_patch: Option<unsafe extern "C" fn(obj: *mut KlpObject)>,
    /// Runs before the object is unpatched.
    pub(crate) pre_unpatch: Option<unsafe extern "C" fn(obj: *mut KlpObject)>,
    /// Runs after the object has been unpatched.
    pub(crate) post_unpatch: Option<unsafe extern "C" fn(obj: *mut KlpObject)>,
    /// Set by the core when `post_unpatch` is due.
    _post_unpatch_enabled: bool,
}

/// The kernel's `struct klp_object`: vmlinux or one module, with its functions.
#[repr(C)]
pub(crate) struct KlpObject {
    /// The module's name, or null for vmlinux.
    pub(crate) name: *const c_char,
    /// The functions, ended by an entry whose fields are all zero.
    pub(crate) funcs: *mut KlpFunc,
    /// The hooks of this object.
    pub(crate) callbacks: KlpCallbacks,
    /// The kobject, the lists, the module pointer and the state flags owned by the core.
    _internal: [u64; 14],
}

/// The kernel's `struct klp_patch`: the whole patch as registered by `klp_enable_patch`.
#[repr(C)]
pub(crate) struct KlpPatch {
    /// The patch module (`THIS_MODULE`).
    pub(crate) module: *mut c_void,
    /// The objects, ended by an entry whose name and functions are null.
    pub(crate) objs: *mut KlpObject,
    /// The system states the patch declares, ended by an entry whose id is zero (or null).
    pub(crate) states: *mut crate::state::State,
    /// Whether the patch atomically replaces every earlier patch.
    pub(crate) replace: bool,
    _pad: [u8; 7],
    /// The list node, kobject, object list, flags, free work and completion owned by the core.
    _internal: [u64; 21],
}

assert_kernel_layout!(KlpFunc = klp_func { old_name, new_func, old_sympos });
assert_kernel_layout!(KlpCallbacks = klp_callbacks {
    pre_patch,
    post_patch,
    pre_unpatch,
    post_unpatch,
    _post_unpatch_enabled as post_unpatch_enabled,
});
assert_kernel_layout!(KlpObject = klp_object { name, funcs, callbacks });
assert_kernel_layout!(KlpPatch = klp_patch { module, objs, states, replace });

/// Returns the core's `obj->mod`: the module of the object (null for vmlinux or a module not
/// loaded), among the fields the core owns.
///
/// # Safety
///
/// `obj` points to a `struct klp_object` the core initialised.
pub(crate) unsafe fn object_module(obj: *mut KlpObject) -> *mut c_void {
    // SAFETY: the offset is inside the object (asserted against the kernel's headers by the
    // layout file), where the core keeps an aligned pointer.
    unsafe { obj.cast::<u8>().add(layout::klp_object::module.offset).cast::<*mut c_void>().read() }
}

/// Returns the `enum module_state` of the loaded module `module`.
///
/// # Safety
///
/// `module` points to a live `struct module`.
pub(crate) unsafe fn module_state(module: *mut c_void) -> c_int {
    const { assert!(matches!(layout::module::state.size, Some(n) if n == core::mem::size_of::<c_int>())) };
    // SAFETY: the caller's contract; the state is an `int` at this offset (asserted against the
    // kernel's headers by the layout file).
    unsafe { module.cast::<u8>().add(layout::module::state.offset).cast::<c_int>().read() }
}

unsafe extern "C" {
    /// Registers and enables a live patch; returns 0 or a negative errno.
    pub(crate) fn klp_enable_patch(patch: *mut KlpPatch) -> c_int;
    /// Allocates `size` zeroed bytes of kernel memory that may sleep (`kzalloc(size,
    /// GFP_KERNEL)`, an inline of the kernel's headers, which the module's layout file wraps:
    /// the function it calls is `__kmalloc` on 6.1, `__kmalloc_noprof` on 6.12).
    pub(crate) fn kgraft_kzalloc(size: usize) -> *mut c_void;
    /// Frees memory from `kgraft_kzalloc`; null is allowed.
    pub(crate) fn kfree(ptr: *const c_void);
    /// Writes a message to the kernel log; the format starts with a level such as `"\x016"`.
    pub(crate) fn _printk(fmt: *const c_char, ...) -> c_int;
    /// The module being built, defined by the `.mod.c` file that modpost writes.
    pub(crate) static mut __this_module: u8;
}
