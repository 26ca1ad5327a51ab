//! The patch descriptor: what a patch module carries to the engine that applies it.

use core::ffi::{CStr, c_int};

/// A live patch as built by `kgraft_macros::patch!`.
///
/// The descriptor is plain data in a `static`; the engine of the target (the user-mode host, or
/// the kernel glue on top of the livepatch core) reads it and never writes it.
pub struct Patch {
    /// The patch's name, which is also the kernel module's name (`[a-z0-9_]+`).
    pub name: &'static CStr,
    /// One line saying what the patch fixes.
    pub description: &'static CStr,
    /// The kernel releases the patch is built for, as a glob (`6.1.0-*-amd64`), if given.
    pub kernel: Option<&'static CStr>,
    /// Whether the patch atomically replaces every patch applied before it.
    pub replace_all: bool,
    /// The replacement functions, in source order.
    pub funcs: &'static [Func],
    /// The shadow data the patch attaches to existing objects.
    pub shadows: &'static [ShadowDecl],
    /// The callbacks run around the transitions.
    pub callbacks: Callbacks,
}

impl Patch {
    /// Returns the distinct objects the patch's functions live in, `None` standing for vmlinux.
    ///
    /// The objects come in order of first appearance, which keeps what the engines register
    /// deterministic.
    pub fn objects(&self) -> impl Iterator<Item = Option<&'static CStr>> + '_ {
        self.funcs.iter().enumerate().filter_map(|(i, func)| {
            let first = self.funcs[..i].iter().all(|f| f.object != func.object);
            first.then_some(func.object)
        })
    }

    /// Returns the functions of the patch that live in `object` (`None`: vmlinux).
    pub fn funcs_in<'a>(&'a self, object: Option<&'a CStr>) -> impl Iterator<Item = &'static Func> + 'a {
        self.funcs.iter().filter(move |f| f.object == object)
    }
}

/// One replacement: the function `name` of `object` is redirected to `new_fn`.
pub struct Func {
    /// The name of the target function.
    pub name: &'static CStr,
    /// The object holding the target: `None` for vmlinux, or a module's name.
    pub object: Option<&'static CStr>,
    /// Which of several local symbols of that name is meant (1-based), or 0 when it is unique.
    pub sympos: u32,
    /// The replacement's code, an `unsafe extern "C" fn` with the target's signature.
    pub new_fn: *const (),
}

// SAFETY: `new_fn` is the address of code, never written through; the other fields are shared
// references to immutable data.
unsafe impl Sync for Func {}

/// Shadow data attached by a patch to objects of one kernel type.
///
/// The layout follows the kernel's `klp_shadow_*` API: data is keyed by (object address, `id`),
/// created by `ctor` and dropped by `dtor`.
pub struct ShadowDecl {
    /// The kernel type the data is attached to, for messages.
    pub type_name: &'static CStr,
    /// The shadow id, derived from the type name and the fields so that two patches that declare
    /// the same fields share the data.
    pub id: u64,
    /// The size of the fields.
    pub size: usize,
    /// Drops the fields in place when the shadow data is freed.
    pub dtor: crate::shadow::Dtor,
}

/// The callbacks of a patch, run around the transitions as in the kernel's livepatch.
///
/// `pre_patch` runs before anything changes and may refuse the patch with a negative errno;
/// `post_patch` runs after the transition to the patch completed; `pre_unpatch` before the
/// transition away from it starts; `post_unpatch` after it completed. A patch whose
/// `pre_patch` refused gets no other callback.
#[derive(Default)]
pub struct Callbacks {
    /// Runs before patching; a negative errno refuses the patch.
    pub pre_patch: Option<unsafe fn() -> c_int>,
    /// Runs once the transition to the patch has completed.
    pub post_patch: Option<unsafe fn()>,
    /// Runs before the transition away from the patch starts.
    pub pre_unpatch: Option<unsafe fn()>,
    /// Runs once the transition away from the patch has completed.
    pub post_unpatch: Option<unsafe fn()>,
}

impl Callbacks {
    /// No callbacks at all, usable in a `static`.
    pub const NONE: Callbacks =
        Callbacks { pre_patch: None, post_patch: None, pre_unpatch: None, post_unpatch: None };
}
