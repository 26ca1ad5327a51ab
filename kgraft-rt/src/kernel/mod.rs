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
//! The callbacks of vmlinux and the freeing of shadow data hang on the vmlinux object, which is
//! always loaded; it is registered (possibly without functions) whenever the patch has vmlinux
//! callbacks or shadow data, or no other object. Each module the patch names, by its functions
//! or by an [`ObjectDecl`](crate::patch::ObjectDecl), is one more object with its callbacks.

#[cfg(feature = "kgraft-engine")]
mod kgraft;
#[cfg(feature = "kgraft-engine")]
pub(crate) use kgraft::{state_get, state_prev};
mod klp;
mod macros;
#[cfg(target_os = "none")]
mod panic;

use core::ffi::{CStr, c_int, c_ulong};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::patch::{Callbacks, ModuleState, Object, Patch};
use crate::state::State;
use klp::{KlpCallbacks, KlpFunc, KlpObject, KlpPatch};

/// The module's `.modinfo` entries besides those modpost adds: the GPL license (the kernel
/// exports ftrace's and the livepatch core's functions to GPL modules only) and, for the
/// livepatch core, `livepatch=Y`, which makes the module loader keep the ELF data the core needs.
#[cfg(not(feature = "kgraft-engine"))]
pub const MODINFO: [u8; 24] = *b"license=GPL\0livepatch=Y\0";

/// The module's `.modinfo` entries besides those modpost adds: the GPL license. A module that
/// applies itself is no livepatch module for the loader, so it also loads where the kernel was
/// built without the livepatch core.
#[cfg(feature = "kgraft-engine")]
pub const MODINFO: [u8; 12] = *b"license=GPL\0";

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
    // SAFETY: the caller's contract, passed on.
    #[cfg(feature = "kgraft-engine")]
    return unsafe { kgraft::init(patch) };
    // SAFETY: the caller's contract, passed on.
    #[cfg(not(feature = "kgraft-engine"))]
    return unsafe { klp_init(patch) };
}

/// [`init`] with the livepatch core.
///
/// # Safety
///
/// As for [`init`].
#[cfg_attr(feature = "kgraft-engine", allow(dead_code))]
unsafe fn klp_init(patch: &'static Patch) -> c_int {
    PATCH.store(ptr::from_ref(patch).cast_mut(), Ordering::Release);
    let wants_vmlinux = patch.funcs_in(None).next().is_some()
        || patch.callbacks.any()
        || !patch.shadows.is_empty()
        || modules(patch).next().is_none();
    let nobjs = modules(patch).count() + usize::from(wants_vmlinux);

    // SAFETY: plain allocations; a null result is handled below.
    let (kpatch, objs, funcs, states) = unsafe {
        (
            alloc::<KlpPatch>(1),
            alloc::<KlpObject>(nobjs + 1),
            // One terminator per object.
            alloc::<KlpFunc>(patch.funcs.len() + nobjs),
            // The zeroed entry after the states ends the array.
            alloc::<State>(patch.states.len() + 1),
        )
    };
    if kpatch.is_null() || objs.is_null() || funcs.is_null() || states.is_null() {
        // SAFETY: each pointer is null or came from `kgraft_kzalloc`.
        unsafe {
            free3(kpatch, objs, funcs);
            klp::kfree(states.cast());
        }
        return -ENOMEM;
    }
    for (i, decl) in patch.states.iter().enumerate() {
        // SAFETY: the array holds one zeroed entry per declared state, and one more.
        unsafe {
            let st = &mut *states.add(i);
            st.id = decl.id as c_ulong;
            st.version = decl.version;
        }
    }

    let mut func_i = 0;
    let objects = wants_vmlinux.then_some(None).into_iter().chain(modules(patch).map(Some));
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
            obj.callbacks = callbacks(patch, object);
        }
    }

    // SAFETY: `kpatch` is a zeroed `KlpPatch`; `__this_module` is this module, defined by the
    // `.mod.c` file that kbuild links in.
    unsafe {
        (*kpatch).module = (&raw mut klp::__this_module).cast();
        (*kpatch).objs = objs;
        (*kpatch).replace = patch.replaces_all();
        (*kpatch).states = states;
    }
    // Callbacks run inside `klp_enable_patch` and may ask for the patch's states.
    REGISTERED.store(kpatch, Ordering::Release);
    // SAFETY: the arrays are complete and terminated, and they stay allocated until `exit`,
    // which the kernel calls only after the core released the patch.
    let ret = unsafe { klp::klp_enable_patch(kpatch) };
    if ret != 0 {
        REGISTERED.store(ptr::null_mut(), Ordering::Release);
        // Nothing is logged here: the core logs why it refused and the loader reports the
        // errno, and a line of the module's own would differ from what the same patch written
        // in C logs (upstream's livepatch selftests compare the kernel log line by line).
        // SAFETY: a failed `klp_enable_patch` keeps no reference to the arrays.
        unsafe {
            free3(kpatch, objs, funcs);
            klp::kfree(states.cast());
        }
        PATCH.store(ptr::null_mut(), Ordering::Release);
        return ret;
    }
    0
}

/// Returns the `klp_patch` registered by [`init`], or null.
#[cfg_attr(feature = "kgraft-engine", allow(dead_code))]
pub(crate) fn registered() -> *mut KlpPatch {
    REGISTERED.load(Ordering::Acquire)
}

/// Frees what [`init`] handed to the livepatch core.
///
/// # Safety
///
/// Call once, from the module's `cleanup_module`: the kernel runs it only after the core
/// released the patch (the patch was disabled, or replaced, and its kobjects are gone).
pub unsafe fn exit() {
    // SAFETY: the caller's contract, passed on.
    #[cfg(feature = "kgraft-engine")]
    unsafe {
        kgraft::exit()
    };
    // SAFETY: the caller's contract, passed on.
    #[cfg(not(feature = "kgraft-engine"))]
    unsafe {
        klp_exit()
    };
}

/// [`exit`] with the livepatch core.
///
/// # Safety
///
/// As for [`exit`].
#[cfg_attr(feature = "kgraft-engine", allow(dead_code))]
unsafe fn klp_exit() {
    let kpatch = REGISTERED.swap(ptr::null_mut(), Ordering::AcqRel);
    if kpatch.is_null() {
        return;
    }
    // SAFETY: `kpatch` and its arrays came from `init`, and the core no longer uses them. The
    // functions array starts at the first object's functions.
    unsafe {
        let objs = (*kpatch).objs;
        let funcs = (*objs).funcs;
        klp::kfree((*kpatch).states.cast());
        free3(kpatch, objs, funcs);
    }
}

/// Returns the modules the patch registers, each once: those it declares (with callbacks, or
/// without functions) in the order of the source, then the other modules of its functions.
///
/// The core runs each kind of callback over the objects in this order, so a patch's modules
/// log their callbacks in the order the source declares them, as a C patch's `klp_object`
/// array does.
fn modules(patch: &'static Patch) -> impl Iterator<Item = &'static CStr> {
    let declared = patch
        .objects
        .iter()
        .map(|o| o.name)
        .enumerate()
        .filter(move |&(i, name)| patch.objects[..i].iter().all(|o| o.name != name))
        .map(|(_, name)| name);
    let of_funcs = patch.objects().flatten().filter(move |&m| patch.objects.iter().all(|o| o.name != m));
    declared.chain(of_funcs)
}

/// Returns the callbacks of `object` (`None`: vmlinux) in `patch`.
fn callbacks_of(patch: &'static Patch, object: Option<&CStr>) -> Option<&'static Callbacks> {
    match object {
        None => Some(&patch.callbacks),
        Some(name) => patch.objects.iter().find(|o| o.name == name).map(|o| &o.callbacks),
    }
}

/// Returns the hooks of `object` for `patch`.
fn callbacks(patch: &'static Patch, object: Option<&CStr>) -> KlpCallbacks {
    // SAFETY: an all-zero `KlpCallbacks` is valid: no hooks, and `false`.
    let mut k: KlpCallbacks = unsafe { core::mem::zeroed() };
    let none = Callbacks::NONE;
    let c = callbacks_of(patch, object).unwrap_or(&none);
    k.pre_patch = c.pre_patch.map(|_| pre_patch as _);
    k.post_patch = c.post_patch.map(|_| post_patch as _);
    k.pre_unpatch = c.pre_unpatch.map(|_| pre_unpatch as _);
    if c.post_unpatch.is_some() || (object.is_none() && !patch.shadows.is_empty()) {
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

/// Describes the livepatch core's object `obj` as the callbacks see it.
///
/// # Safety
///
/// `obj` is one of the objects [`init`] registered, which the core passes to a callback: its
/// name is null or one of the patch's C strings, and its module pointer is null or a live
/// module.
unsafe fn object(obj: *mut KlpObject) -> Object {
    // SAFETY: the caller's contract; the module's state is read as the kernel's `enum
    // module_state` (an `int` of the values `ModuleState` names, asserted by the layout file).
    unsafe {
        let name = (*obj).name;
        if name.is_null() {
            return Object::VMLINUX;
        }
        let module = klp::object_module(obj);
        let state = (!module.is_null()).then(|| ModuleState::from_kernel(klp::module_state(module)));
        // The name is one of the descriptor's `&'static CStr`s, kept by `init`.
        Object { name: Some(CStr::from_ptr(name)), state }
    }
}

/// Returns the callbacks of the core's object `obj` with the object as they see it.
///
/// # Safety
///
/// As for [`object`].
unsafe fn hooks(obj: *mut KlpObject) -> Option<(&'static Callbacks, Object)> {
    let p = patch()?;
    // SAFETY: the caller's contract.
    let o = unsafe { object(obj) };
    Some((callbacks_of(p, o.name)?, o))
}

/// Runs the `pre_patch` callback of the object.
///
/// # Safety
///
/// Called by the livepatch core only.
unsafe extern "C" fn pre_patch(obj: *mut KlpObject) -> c_int {
    // SAFETY: the core passes one of the patch's objects.
    match unsafe { hooks(obj) } {
        // SAFETY: the core runs the callback at the time its contract names.
        Some((Callbacks { pre_patch: Some(f), .. }, o)) => unsafe { f(&o) },
        _ => 0,
    }
}

/// Runs the `post_patch` callback of the object.
///
/// # Safety
///
/// Called by the livepatch core only.
unsafe extern "C" fn post_patch(obj: *mut KlpObject) {
    // SAFETY: the core passes one of the patch's objects.
    if let Some((Callbacks { post_patch: Some(f), .. }, o)) = unsafe { hooks(obj) } {
        // SAFETY: the core runs the callback at the time its contract names.
        unsafe { f(&o) }
    }
}

/// Runs the `pre_unpatch` callback of the object.
///
/// # Safety
///
/// Called by the livepatch core only.
unsafe extern "C" fn pre_unpatch(obj: *mut KlpObject) {
    // SAFETY: the core passes one of the patch's objects.
    if let Some((Callbacks { pre_unpatch: Some(f), .. }, o)) = unsafe { hooks(obj) } {
        // SAFETY: the core runs the callback at the time its contract names.
        unsafe { f(&o) }
    }
}

/// Runs the `post_unpatch` callback of the object; for vmlinux, then frees the patch's shadow
/// data.
///
/// # Safety
///
/// Called by the livepatch core only, once no task runs the patch's code any more.
unsafe extern "C" fn post_unpatch(obj: *mut KlpObject) {
    // SAFETY: the core passes one of the patch's objects.
    let Some((c, o)) = (unsafe { hooks(obj) }) else { return };
    if let Some(f) = c.post_unpatch {
        // SAFETY: the core runs the callback at the time its contract names.
        unsafe { f(&o) }
    }
    if !o.is_vmlinux() {
        return;
    }
    let Some(p) = patch() else { return };
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
    // SAFETY: any size is valid; `kgraft_kzalloc` returns null on failure.
    unsafe { klp::kgraft_kzalloc(size).cast() }
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
