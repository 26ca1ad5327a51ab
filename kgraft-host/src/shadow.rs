//! The `klp_shadow_*` functions the host exports to patches, on the engine's shadow store.
//!
//! Patches are shared objects; they call these by name, resolved against the host executable
//! when they are loaded, so that the one store lives in the host and outlives every patch.

use std::ffi::{c_ulong, c_void};

use kgraft_rt::engine::store::Store;
use kgraft_rt::shadow::{Ctor, Dtor};

/// The host's shadow store.
pub static SHADOW: Store = Store::new();

/// Returns the shadow data of `obj` under `id`, or null.
#[unsafe(no_mangle)]
pub extern "C" fn klp_shadow_get(obj: *mut c_void, id: c_ulong) -> *mut c_void {
    SHADOW.get(obj, id)
}

/// Creates the shadow data of `obj` under `id`, as the kernel's `klp_shadow_alloc`.
///
/// # Safety
///
/// `ctor`, if given, must be safe to call on `size` bytes of new data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    _gfp: u32,
    ctor: Option<Ctor>,
    ctor_data: *mut c_void,
) -> *mut c_void {
    // SAFETY: the caller's contract is the store's.
    unsafe { SHADOW.alloc(obj, id, size, ctor, ctor_data) }
}

/// Returns or creates the shadow data of `obj` under `id`, as `klp_shadow_get_or_alloc`.
///
/// # Safety
///
/// As for [`klp_shadow_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_get_or_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    _gfp: u32,
    ctor: Option<Ctor>,
    ctor_data: *mut c_void,
) -> *mut c_void {
    // SAFETY: the caller's contract is the store's.
    unsafe { SHADOW.get_or_alloc(obj, id, size, ctor, ctor_data) }
}

/// Frees the shadow data of `obj` under `id`, as `klp_shadow_free`.
///
/// # Safety
///
/// `dtor`, if given, must be safe to call on the data, which nobody may still use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_free(obj: *mut c_void, id: c_ulong, dtor: Option<Dtor>) {
    // SAFETY: the caller's contract is the store's.
    unsafe { SHADOW.free(obj, id, dtor) }
}

/// Frees the shadow data of every object under `id`, as `klp_shadow_free_all`.
///
/// # Safety
///
/// As for [`klp_shadow_free`], for every object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_free_all(id: c_ulong, dtor: Option<Dtor>) {
    // SAFETY: the caller's contract is the store's.
    unsafe { SHADOW.free_all(id, dtor) }
}

/// Returns the addresses of the exported functions, so that the linker keeps them.
pub(crate) fn exports() -> [*const (); 5] {
    [
        klp_shadow_get as *const (),
        klp_shadow_alloc as *const (),
        klp_shadow_get_or_alloc as *const (),
        klp_shadow_free as *const (),
        klp_shadow_free_all as *const (),
    ]
}
