//! System states: what a patch changed in the system, with a version, handed on across patches.
//!
//! A patch declares each state it introduces or keeps (`state NAME (id = N, version = V);`), and
//! the livepatch core (or the user-mode host, with the same rules) compares the declarations
//! before a patch loads: a `replace_all` patch must declare every state of the patches it
//! replaces, at a version at least theirs, and no patch may lower the version of a state a
//! loaded patch declares. A callback finds its own state with [`get`] and the state of the
//! patch it follows with [`prev`], typically to take over its `data`.

use core::ffi::{c_uint, c_ulong, c_void};

use crate::patch::Patch;

/// The kernel's `struct klp_state`: one system state of a loaded patch.
#[derive(Debug)]
#[repr(C)]
pub struct State {
    /// The state's id.
    pub id: c_ulong,
    /// Its version: a later patch may raise it, never lower it.
    pub version: c_uint,
    /// Data the patches owning the state share, null until a callback sets it.
    pub data: *mut c_void,
}

crate::layout::assert_kernel_layout!(State = klp_state { id, version, data });

/// A state as the descriptor declares it.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StateDecl {
    /// The state's id.
    pub id: u64,
    /// The version this patch brings.
    pub version: u32,
}

#[cfg(any(feature = "host", all(feature = "kernel", not(feature = "kgraft-engine"))))]
unsafe extern "C" {
    /// Returns the state `id` of `patch` (the kernel's `klp_patch`, the host's descriptor).
    fn klp_get_state(patch: *mut c_void, id: c_ulong) -> *mut State;
    /// Returns the state `id` of the last patch loaded before the one in transition.
    fn klp_get_prev_state(id: c_ulong) -> *mut State;
}

/// Returns this patch's own state `id`, or `None` when the patch does not declare it (or is
/// not registered).
///
/// # Safety
///
/// Call from the patch's callbacks or bodies; the reference must not outlive the patch, and
/// the engine does not order writes to `data` between CPUs.
#[allow(unused_variables, reason = "only the host reads the descriptor")]
#[expect(clippy::mut_from_ref, reason = "the state is the engine's, found through the patch, not part of it")]
pub unsafe fn get(patch: &'static Patch, id: u64) -> Option<&'static mut State> {
    // SAFETY: the kgraft engine returns null or the patch's own state, which lives as long as
    // the module.
    #[cfg(feature = "kgraft-engine")]
    return unsafe { crate::kernel::state_get(id as c_ulong).as_mut() };
    #[cfg(all(feature = "kernel", not(feature = "kgraft-engine")))]
    let p = crate::kernel::registered().cast::<c_void>();
    #[cfg(feature = "host")]
    let p = core::ptr::from_ref(patch).cast_mut().cast::<c_void>();
    #[cfg(any(feature = "host", all(feature = "kernel", not(feature = "kgraft-engine"))))]
    {
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is this patch as the engine knows it; the engine returns null or a state
        // that lives as long as the patch.
        return unsafe { klp_get_state(p, id as c_ulong).as_mut() };
    }
    #[cfg(not(any(feature = "host", feature = "kernel")))]
    None
}

/// Returns the state `id` of the patch loaded before the one in transition, or `None`.
///
/// # Safety
///
/// Call from a callback, while the patch is in transition (as the kernel requires); the
/// reference must not outlive that earlier patch.
#[allow(unused_variables, reason = "without a target there is no engine to ask")]
pub unsafe fn prev(id: u64) -> Option<&'static mut State> {
    // SAFETY: the kgraft engine returns null or a state of a kgraft patch that is on, whose
    // module stays loaded while it is.
    #[cfg(feature = "kgraft-engine")]
    return unsafe { crate::kernel::state_prev(id as c_ulong).as_mut() };
    #[cfg(any(feature = "host", all(feature = "kernel", not(feature = "kgraft-engine"))))]
    {
        // SAFETY: the engine returns null or a state of a patch still loaded.
        return unsafe { klp_get_prev_state(id as c_ulong).as_mut() };
    }
    #[cfg(not(any(feature = "host", feature = "kernel")))]
    None
}

/// `state!(NAME)`: this patch's state `NAME` (`Option<&mut kgraft_rt::state::State>`).
#[macro_export]
#[expect(clippy::crate_in_macro_def, reason = "`crate::__KGRAFT_PATCH` is the calling patch's own descriptor")]
macro_rules! state {
    ($name:ident) => {
        $crate::state::get(&crate::__KGRAFT_PATCH, $name)
    };
}

/// `state_prev!(NAME)`: the state `NAME` of the patch loaded before this one, in a callback
/// run while this patch is in transition (`Option<&mut kgraft_rt::state::State>`).
#[macro_export]
macro_rules! state_prev {
    ($name:ident) => {
        $crate::state::prev($name)
    };
}
