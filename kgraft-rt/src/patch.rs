//! The patch descriptor: what a patch module carries to the engine that applies it.

use core::ffi::{CStr, c_int};

use crate::layout;

/// A live patch as built by `kgraft_macros::patch!`.
///
/// The descriptor is plain data in a `static`; the engine of the target (the user-mode host, or
/// the kernel glue on top of the livepatch core) reads it and never writes it. The host reads it
/// across a shared object's boundary, after comparing the object's [`ABI_STAMP`] with its own.
#[repr(C)]
pub struct Patch {
    /// The patch's name, which is also the kernel module's name (`[a-z0-9_]+`).
    pub name: &'static CStr,
    /// One line saying what the patch fixes.
    pub description: &'static CStr,
    /// The kernel releases the patch is built for, as a glob (`6.1.0-*-amd64`), if given.
    pub kernel: Option<&'static CStr>,
    /// Whether the patch atomically replaces every patch applied before it.
    pub replace_all: bool,
    /// Decides `replace_all` when the patch is applied instead, from a module parameter
    /// (`replace_all: NAME` in the source): whether the parameter is set.
    pub replace_all_param: Option<fn() -> bool>,
    /// The replacement functions, in source order.
    pub funcs: &'static [Func],
    /// The shadow data the patch attaches to existing objects.
    pub shadows: &'static [ShadowDecl],
    /// The callbacks of vmlinux, run around the transitions.
    pub callbacks: Callbacks,
    /// The modules the patch registers besides those of its functions: each with its own
    /// callbacks, run when that module is patched or unpatched (also when it loads later).
    pub objects: &'static [ObjectDecl],
    /// The system states the patch declares (`state NAME (id = N, version = V);`).
    pub states: &'static [crate::state::StateDecl],
}

/// A loadable module the patch registers, with the callbacks of that object.
#[repr(C)]
pub struct ObjectDecl {
    /// The module's name.
    pub name: &'static CStr,
    /// Its callbacks.
    pub callbacks: Callbacks,
}

/// The state of a loadable module, as the kernel's `enum module_state` numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub enum ModuleState {
    /// `MODULE_STATE_LIVE`: the module runs normally.
    Live = layout::MODULE_STATE_LIVE as isize,
    /// `MODULE_STATE_COMING`: fully formed, running its `module_init`.
    Coming = layout::MODULE_STATE_COMING as isize,
    /// `MODULE_STATE_GOING`: going away.
    Going = layout::MODULE_STATE_GOING as isize,
    /// `MODULE_STATE_UNFORMED`: still being set up.
    Unformed = layout::MODULE_STATE_UNFORMED as isize,
}

impl ModuleState {
    /// Returns the state the kernel's `enum module_state` value `state` names (`Unformed` for
    /// one this runtime does not know).
    pub fn from_kernel(state: c_int) -> ModuleState {
        match state {
            layout::MODULE_STATE_LIVE => ModuleState::Live,
            layout::MODULE_STATE_COMING => ModuleState::Coming,
            layout::MODULE_STATE_GOING => ModuleState::Going,
            _ => ModuleState::Unformed,
        }
    }
}

/// The object a callback runs for: vmlinux or a loaded module.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Object {
    /// The module's name, or `None` for vmlinux.
    pub name: Option<&'static CStr>,
    /// The module's state when the callback runs (`None` for vmlinux).
    pub state: Option<ModuleState>,
}

impl Object {
    /// vmlinux.
    pub const VMLINUX: Object = Object { name: None, state: None };

    /// Returns the module's name, or `c"vmlinux"`.
    pub fn name(&self) -> &'static CStr {
        self.name.unwrap_or(c"vmlinux")
    }

    /// Returns whether the object is vmlinux.
    pub fn is_vmlinux(&self) -> bool {
        self.name.is_none()
    }

    /// Returns the kernel's text for the module's state, as upstream's livepatch samples print
    /// it (`"[MODULE_STATE_LIVE] Normal state"`), or `None` for vmlinux.
    pub fn state_text(&self) -> Option<&'static CStr> {
        Some(match self.state? {
            ModuleState::Live => c"[MODULE_STATE_LIVE] Normal state",
            ModuleState::Coming => c"[MODULE_STATE_COMING] Full formed, running module_init",
            ModuleState::Going => c"[MODULE_STATE_GOING] Going away",
            ModuleState::Unformed => c"[MODULE_STATE_UNFORMED] Still setting it up",
        })
    }
}

impl Patch {
    /// Returns whether the patch replaces every patch applied before it: `replace_all`, or the
    /// module parameter that decides it, read now.
    pub fn replaces_all(&self) -> bool {
        self.replace_all || self.replace_all_param.is_some_and(|set| set())
    }

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

/// A module parameter that can decide `replace_all`: set when true or non-zero.
pub trait Flag: Copy {
    /// Returns whether the parameter is set.
    fn is_set(self) -> bool;
}

impl Flag for bool {
    fn is_set(self) -> bool {
        self
    }
}

macro_rules! int_flags {
    ($($t:ty),*) => {$(
        impl Flag for $t {
            fn is_set(self) -> bool {
                self != 0
            }
        }
    )*};
}

int_flags!(i8, u8, i16, u16, i32, u32, i64, u64, isize, usize);

/// One replacement: the function `name` of `object` is redirected to `new_fn`.
#[repr(C)]
pub struct Func {
    /// The name of the target function.
    pub name: &'static CStr,
    /// The object holding the target: `None` for vmlinux, or a module's name.
    pub object: Option<&'static CStr>,
    /// Which of several local symbols of that name is meant (1-based), or 0 when it is unique.
    pub sympos: u32,
    /// The replacement's code, an `unsafe extern "C" fn` with the target's signature.
    pub new_fn: *const (),
    /// Where a direct call from the target's fentry site enters the replacement (the kernel's
    /// kgraft engine, between transitions): code that drops the call's return address and jumps
    /// to `new_fn`. Null where the engine has no use for it.
    pub direct: *const (),
}

// SAFETY: `new_fn` and `direct` are addresses of code, never written through; the other fields
// are shared references to immutable data.
unsafe impl Sync for Func {}

/// Shadow data attached by a patch to objects of one kernel type.
///
/// The layout follows the kernel's `klp_shadow_*` API: data is keyed by (object address, `id`),
/// created by `ctor` and dropped by `dtor`.
#[repr(C)]
pub struct ShadowDecl {
    /// The kernel type the data is attached to, for messages.
    pub type_name: &'static CStr,
    /// The shadow id: declared in the source (`id = N`), or derived from the type name and the
    /// fields, so that two patches that declare the same fields share the data.
    pub id: u64,
    /// The size of the fields.
    pub size: usize,
    /// Runs the block's destructor on the fields when the shadow data is freed.
    pub dtor: crate::shadow::Dtor,
    /// Whether the patch frees the data under `id` when it is disabled; `false` for a block
    /// declared `keep`, whose data another patch owns.
    pub owned: bool,
}

/// The callbacks of a patch, run around the transitions as in the kernel's livepatch.
///
/// Each callback receives the [`Object`] it runs for.
/// `pre_patch` runs before anything changes and may refuse the patch with a negative errno;
/// `post_patch` runs after the transition to the patch completed; `pre_unpatch` before the
/// transition away from it starts; `post_unpatch` after it completed. A patch whose
/// `pre_patch` refused gets no other callback.
#[derive(Default)]
#[repr(C)]
pub struct Callbacks {
    /// Runs before patching; a negative errno refuses the patch.
    pub pre_patch: Option<unsafe fn(&Object) -> c_int>,
    /// Runs once the transition to the patch has completed.
    pub post_patch: Option<unsafe fn(&Object)>,
    /// Runs before the transition away from the patch starts.
    pub pre_unpatch: Option<unsafe fn(&Object)>,
    /// Runs once the transition away from the patch has completed.
    pub post_unpatch: Option<unsafe fn(&Object)>,
}

impl Callbacks {
    /// No callbacks at all, usable in a `static`.
    pub const NONE: Callbacks = Callbacks { pre_patch: None, post_patch: None, pre_unpatch: None, post_unpatch: None };

    /// Returns whether there is at least one callback.
    pub fn any(&self) -> bool {
        self.pre_patch.is_some()
            || self.post_patch.is_some()
            || self.pre_unpatch.is_some()
            || self.post_unpatch.is_some()
    }
}

/// The length of [`ABI_STAMP`], fixed for the symbol `kgraft_abi_v1` that carries it.
pub const ABI_STAMP_LEN: usize = 128;

/// What a patch built with this kgraft-rt assumes of the engine that reads its descriptor.
///
/// It is NUL-padded text: kgraft-rt's version, the size and alignment of [`Patch`], [`Func`],
/// [`ShadowDecl`], [`Callbacks`], [`ObjectDecl`] and [`StateDecl`](crate::state::StateDecl), and the order of the two words of a slice or `CStr`
/// reference (which the language leaves unspecified), for example
/// `kgraft-rt 0.1.0; Patch 128/8, Func 48/8, ShadowDecl 48/8, Callbacks 32/8, ObjectDecl 48/8,
/// StateDecl 16/8; slices ptr,len`.
/// The host's loader refuses a patch whose stamp differs from its own. The stamp is a cheap
/// check, not a proof: two builds of the same version whose field types changed but kept every
/// size would compare equal.
pub const ABI_STAMP: [u8; ABI_STAMP_LEN] = {
    let mut w = StampWriter { buf: [0; ABI_STAMP_LEN], len: 0 };
    w.text("kgraft-rt ");
    w.text(env!("CARGO_PKG_VERSION"));
    w.text("; Patch ");
    w.layout(size_of::<Patch>(), align_of::<Patch>());
    w.text(", Func ");
    w.layout(size_of::<Func>(), align_of::<Func>());
    w.text(", ShadowDecl ");
    w.layout(size_of::<ShadowDecl>(), align_of::<ShadowDecl>());
    w.text(", Callbacks ");
    w.layout(size_of::<Callbacks>(), align_of::<Callbacks>());
    w.text(", ObjectDecl ");
    w.layout(size_of::<ObjectDecl>(), align_of::<ObjectDecl>());
    w.text(", StateDecl ");
    w.layout(size_of::<crate::state::StateDecl>(), align_of::<crate::state::StateDecl>());
    w.text("; slices ");
    w.text(slice_word_order());
    w.buf
};

/// Writes the stamp's text in const context; a stamp too long for its buffer fails the build.
struct StampWriter {
    buf: [u8; ABI_STAMP_LEN],
    len: usize,
}

impl StampWriter {
    /// Appends `s`.
    const fn text(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // The last byte stays NUL, so that the stamp is also a C string.
            assert!(self.len + 1 < ABI_STAMP_LEN, "the ABI stamp outgrew its buffer");
            self.buf[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
    }

    /// Appends `size/align` in decimal.
    const fn layout(&mut self, size: usize, align: usize) {
        self.number(size);
        self.text("/");
        self.number(align);
    }

    /// Appends `n` in decimal.
    const fn number(&mut self, n: usize) {
        let mut digits = [0u8; 20];
        let mut count = 0;
        let mut rest = n;
        loop {
            digits[count] = b'0' + (rest % 10) as u8;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        while count > 0 {
            count -= 1;
            assert!(self.len + 1 < ABI_STAMP_LEN, "the ABI stamp outgrew its buffer");
            self.buf[self.len] = digits[count];
            self.len += 1;
        }
    }
}

/// Returns the order of the address and the length in a slice pointer, as this compiler lays
/// it out: `ptr,len` or `len,ptr`.
const fn slice_word_order() -> &'static str {
    let p: *const [u8] = core::ptr::slice_from_raw_parts(core::ptr::null(), 1);
    // SAFETY: a slice pointer is two `usize`-sized words, an address and a length, so it has
    // the size of `[usize; 2]`; the address is null, so both words are plain integers.
    let words: [usize; 2] = unsafe { core::mem::transmute::<*const [u8], [usize; 2]>(p) };
    if words[1] == 1 { "ptr,len" } else { "len,ptr" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_abi_stamp_names_the_version_and_the_layouts() {
        let end = ABI_STAMP.iter().position(|&b| b == 0).expect("the stamp is NUL-terminated");
        let text = core::str::from_utf8(&ABI_STAMP[..end]).expect("the stamp is text");
        let expected = alloc::format!(
            "kgraft-rt {}; Patch {}/{}, Func {}/{}, ShadowDecl {}/{}, Callbacks {}/{}, ObjectDecl {}/{}, StateDecl {}/{}; slices ptr,len",
            env!("CARGO_PKG_VERSION"),
            size_of::<Patch>(),
            align_of::<Patch>(),
            size_of::<Func>(),
            align_of::<Func>(),
            size_of::<ShadowDecl>(),
            align_of::<ShadowDecl>(),
            size_of::<Callbacks>(),
            align_of::<Callbacks>(),
            size_of::<ObjectDecl>(),
            align_of::<ObjectDecl>(),
            size_of::<crate::state::StateDecl>(),
            align_of::<crate::state::StateDecl>(),
        );
        assert_eq!(text, expected);
        assert!(ABI_STAMP[end..].iter().all(|&b| b == 0), "the rest is padding");
    }
}
