//! The kernel host: registers a patch with the Linux kernel's livepatch core.
//!
//! The patch module's `init_module` (written by [`__export_patch!`](crate::__export_patch))
//! calls [`init`], which turns the target-independent [`Patch`] descriptor into the kernel's
//! `klp_patch`, `klp_object` and `klp_func` arrays and hands them to `klp_enable_patch`. The
//! livepatch core then does the rest: it redirects the functions through ftrace, moves each task
//! to the new universe at a safe point, patches modules as they load, and shows the state under
//! `/sys/kernel/livepatch/<name>/`. `cleanup_module` calls [`exit`], which frees the arrays once
//! the core has let go of them (the core holds a reference on the module while the patch is
//! enabled, so `rmmod` succeeds only after the patch was disabled).
//!
//! Patch-wide callbacks and the freeing of shadow data hang on the vmlinux object, which is
//! always loaded; it is registered (possibly without functions) whenever the patch has
//! callbacks or shadow data.

mod klp;
mod macros;
#[cfg(target_os = "none")]
mod panic;

use core::ffi::{CStr, c_int, c_ulong};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::patch::Patch;
use klp::{KlpCallbacks, KlpFunc, KlpObject, KlpPatch};

/// The kernel's `ENOMEM`.
const ENOMEM: c_int = 12;

/// The patch this module carries, set by [`init`] before registration.
static PATCH: AtomicPtr<Patch> = AtomicPtr::new(ptr::null_mut());

/// The memory handed to the livepatch core, freed by [`exit`].
static REGISTERED: AtomicPtr<KlpPatch> = AtomicPtr::new(ptr::null_mut());

/// Registers `patch` with the livepatch core and starts the transition to it.
///
/// Returns 0 or a negative errno; on error nothing stays registered or allocated.
///
/// # Safety
///
/// Call once, from the module's `init_module`, with the module's only patch descriptor.
pub unsafe fn init(patch: &'static Patch) -> c_int {
    PATCH.store(ptr::from_ref(patch).cast_mut(), Ordering::Release);
    let wants_vmlinux = patch.funcs_in(None).next().is_some()
        || has_callbacks(patch)
        || !patch.shadows.is_empty();
    let nobjs = patch.objects().filter(|o| o.is_some()).count() + usize::from(wants_vmlinux);

    // SAFETY: plain allocations; a null result is handled below.
    let (kpatch, objs, funcs) = unsafe {
        (
            alloc::<KlpPatch>(1),
            alloc::<KlpObject>(nobjs + 1),
            // One terminator per object.
            alloc::<KlpFunc>(patch.funcs.len() + nobjs),
        )
    };
    if kpatch.is_null() || objs.is_null() || funcs.is_null() {
        // SAFETY: each pointer is null or came from `__kmalloc`.
        unsafe { free3(kpatch, objs, funcs) };
        return -ENOMEM;
    }

    let mut func_i = 0;
    let objects = wants_vmlinux
        .then_some(None)
        .into_iter()
        .chain(patch.objects().filter(|o| o.is_some()));
    for (obj_i, object) in objects.enumerate() {
        // SAFETY: `obj_i < nobjs` and the array holds `nobjs + 1` zeroed entries; the functions
        // array holds every function plus one zeroed terminator per object.
        unsafe {
            let obj = &mut *objs.add(obj_i);
            obj.name = object.map_or(ptr::null(), CStr::as_ptr);
            obj.funcs = funcs.add(func_i);
            for func in patch.funcs_in(object) {
                let kf = &mut *funcs.add(func_i);
                kf.old_name = func.name.as_ptr();
                kf.new_func = func.new_fn.cast();
                kf.old_sympos = c_ulong::from(func.sympos);
                func_i += 1;
            }
            // The zeroed entry after the object's functions ends its list.
            func_i += 1;
            if object.is_none() {
                obj.callbacks = callbacks(patch);
            }
        }
    }

    // SAFETY: `kpatch` is a zeroed `KlpPatch`; `__this_module` is this module, defined by the
    // `.mod.c` file that kbuild links in.
    unsafe {
        (*kpatch).module = (&raw mut klp::__this_module).cast();
        (*kpatch).objs = objs;
        (*kpatch).replace = patch.replace_all;
    }
    // SAFETY: the arrays are complete and terminated, and they stay allocated until `exit`,
    // which the kernel calls only after the core released the patch.
    let ret = unsafe { klp::klp_enable_patch(kpatch) };
    if ret != 0 {
        // SAFETY: a failed `klp_enable_patch` keeps no reference to the arrays; the format
        // takes the NUL-terminated name and an int.
        unsafe {
            free3(kpatch, objs, funcs);
            klp::_printk(
                c"\x013kgraft: %s: the livepatch core refused the patch (error %d)\n".as_ptr(),
                patch.name.as_ptr(),
                ret,
            );
        }
        PATCH.store(ptr::null_mut(), Ordering::Release);
        return ret;
    }
    REGISTERED.store(kpatch, Ordering::Release);
    0
}

/// Frees what [`init`] handed to the livepatch core.
///
/// # Safety
///
/// Call once, from the module's `cleanup_module`: the kernel runs it only after the core
/// released the patch (the patch was disabled, or replaced, and its kobjects are gone).
pub unsafe fn exit() {
    let kpatch = REGISTERED.swap(ptr::null_mut(), Ordering::AcqRel);
    if kpatch.is_null() {
        return;
    }
    // SAFETY: `kpatch` and its arrays came from `init`, and the core no longer uses them. The
    // functions array starts at the first object's functions.
    unsafe {
        let objs = (*kpatch).objs;
        let funcs = (*objs).funcs;
        free3(kpatch, objs, funcs);
    }
}

/// Returns whether the patch has at least one callback, or shadow data to free.
fn has_callbacks(patch: &Patch) -> bool {
    let c = &patch.callbacks;
    c.pre_patch.is_some() || c.post_patch.is_some() || c.pre_unpatch.is_some() || c.post_unpatch.is_some()
}

/// Returns the vmlinux object's hooks for `patch`.
fn callbacks(patch: &Patch) -> KlpCallbacks {
    let c = &patch.callbacks;
    // SAFETY: an all-zero `KlpCallbacks` is valid: no hooks, and `false`.
    let mut k: KlpCallbacks = unsafe { core::mem::zeroed() };
    k.pre_patch = c.pre_patch.map(|_| pre_patch as _);
    k.post_patch = c.post_patch.map(|_| post_patch as _);
    k.pre_unpatch = c.pre_unpatch.map(|_| pre_unpatch as _);
    if c.post_unpatch.is_some() || !patch.shadows.is_empty() {
        k.post_unpatch = Some(post_unpatch);
    }
    k
}

/// Returns the patch registered by [`init`].
fn patch() -> Option<&'static Patch> {
    let p = PATCH.load(Ordering::Acquire);
    // SAFETY: `PATCH` is null or a `&'static Patch` stored by `init`.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Runs the patch's `pre_patch` callback.
///
/// # Safety
///
/// Called by the livepatch core only.
unsafe extern "C" fn pre_patch(_obj: *mut KlpObject) -> c_int {
    match patch().and_then(|p| p.callbacks.pre_patch) {
        // SAFETY: the core runs the callback at the time its contract names.
        Some(f) => unsafe { f() },
        None => 0,
    }
}

/// Runs the patch's `post_patch` callback.
///
/// # Safety
///
/// Called by the livepatch core only.
unsafe extern "C" fn post_patch(_obj: *mut KlpObject) {
    if let Some(f) = patch().and_then(|p| p.callbacks.post_patch) {
        // SAFETY: the core runs the callback at the time its contract names.
        unsafe { f() }
    }
}

/// Runs the patch's `pre_unpatch` callback.
///
/// # Safety
///
/// Called by the livepatch core only.
unsafe extern "C" fn pre_unpatch(_obj: *mut KlpObject) {
    if let Some(f) = patch().and_then(|p| p.callbacks.pre_unpatch) {
        // SAFETY: the core runs the callback at the time its contract names.
        unsafe { f() }
    }
}

/// Runs the patch's `post_unpatch` callback, then frees the patch's shadow data.
///
/// # Safety
///
/// Called by the livepatch core only, once no task runs the patch's code any more.
unsafe extern "C" fn post_unpatch(_obj: *mut KlpObject) {
    let Some(p) = patch() else { return };
    if let Some(f) = p.callbacks.post_unpatch {
        // SAFETY: the core runs the callback at the time its contract names.
        unsafe { f() }
    }
    for shadow in p.shadows.iter().filter(|s| s.owned) {
        // SAFETY: no replacement runs any more, so no reference to the data is alive; the
        // destructor matches the fields stored under this id.
        unsafe { crate::shadow::klp_shadow_free_all(shadow.id as c_ulong, Some(shadow.dtor)) };
    }
}

/// Allocates `n` zeroed `T`s, or returns null.
///
/// # Safety
///
/// The memory must be freed with `kfree`.
unsafe fn alloc<T>(n: usize) -> *mut T {
    let Some(size) = core::mem::size_of::<T>().checked_mul(n) else { return ptr::null_mut() };
    // SAFETY: any size is valid; `__kmalloc` returns null on failure.
    unsafe { klp::__kmalloc(size, klp::GFP_KERNEL_ZERO).cast() }
}

/// Frees three allocations from [`alloc`]; null pointers are skipped.
///
/// # Safety
///
/// Each pointer is null or an allocation from [`alloc`] that nothing uses any more.
unsafe fn free3(a: *mut KlpPatch, b: *mut KlpObject, c: *mut KlpFunc) {
    // SAFETY: the caller's contract; `kfree` accepts null.
    unsafe {
        klp::kfree(a.cast());
        klp::kfree(b.cast());
        klp::kfree(c.cast());
    }
}
