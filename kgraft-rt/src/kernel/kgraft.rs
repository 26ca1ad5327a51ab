//! kgraft's own engine in the kernel (`--engine kgraft`): the patch module applies itself.
//!
//! The kernel-facing half is `engine.c`, compiled by kbuild into the same module: the reality
//! check on each changed function, the task universes, the system call hooks, the fake signals,
//! the direct calls and the sysfs files. This half runs the [`Transition`] state machine over
//! it and calls the patch's callbacks at the same points as the livepatch core: `pre_patch`
//! before anything changes (a negative errno refuses the patch), `post_patch` once every task
//! runs the patch, `pre_unpatch` when `enabled` is set to 0, `post_unpatch` once every task
//! runs the original code again, after which the module may be removed.
//!
//! Every entry point runs under the engine's mutex (`kg_lock`): `init`, the poll worker and the
//! sysfs writes.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char, c_int, c_ulong};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::contract::{CallbackKind, errno};
use crate::layout::MODULE_STATE_COMING;
use crate::patch::{Callbacks, ModuleState, Object, Patch};
use crate::state::State;
use crate::transition::{Backend, POLL_EVERY_MS, Poll, Refused, Transition};

use super::klp;

/// One replacement as `engine.c` reads it (`struct kg_func`, from the contract).
type KgFunc = crate::contract::Func;

unsafe extern "C" {
    fn kg_prepare(
        patch: *const c_char,
        funcs: *const KgFunc,
        n: c_int,
        replace_all: bool,
        states: *mut State,
        nstates: c_int,
    ) -> c_int;
    fn kg_unprepare();
    fn kg_begin(goal: u8) -> c_int;
    fn kg_migrate() -> c_int;
    fn kg_kick();
    fn kg_reverse();
    fn kg_settle();
    fn kg_done();
    fn kg_schedule(ms: u32);
    fn kg_now_ms() -> u64;
    fn kg_hold();
    fn kg_release_hold();
    fn kg_lock();
    fn kg_unlock();
    fn kg_object_present(name: *const c_char) -> bool;
    fn kg_state_get(id: c_ulong) -> *mut State;
    fn kg_state_prev(id: c_ulong) -> *mut State;
}

/// The patch's system states, which `engine.c` shows its peers: allocated by [`init`], freed
/// by [`exit`].
static STATES: AtomicPtr<State> = AtomicPtr::new(ptr::null_mut());

/// Returns this patch's state `id`, or null.
///
/// # Safety
///
/// Call from the patch's callbacks or bodies, while the module is loaded.
pub(crate) unsafe fn state_get(id: c_ulong) -> *mut State {
    // SAFETY: `engine.c` reads the array `init` handed it, or returns null before that.
    unsafe { kg_state_get(id) }
}

/// Returns the state `id` of the last kgraft patch that went on before this one, or null.
///
/// # Safety
///
/// Call from a callback of this patch: the other patch's module is kept loaded while it is on.
pub(crate) unsafe fn state_prev(id: c_ulong) -> *mut State {
    // SAFETY: `engine.c` walks its registry under the registry's lock.
    unsafe { kg_state_prev(id) }
}

/// Frees the states [`init`] allocated, once `engine.c` no longer shows them.
fn free_states() {
    let states = STATES.swap(ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: null or the allocation from `init`, which nothing reads any more.
    unsafe { klp::kfree(states.cast()) };
}

/// The engine's primitives, in `engine.c`.
struct Kernel;

impl Backend for Kernel {
    type Error = c_int;

    fn begin(&mut self, goal: bool) -> Result<(), c_int> {
        // SAFETY: called under the engine's lock, after `kg_prepare` succeeded.
        match unsafe { kg_begin(u8::from(goal)) } {
            0 => Ok(()),
            err => Err(err),
        }
    }

    fn migrate(&mut self) -> usize {
        // SAFETY: called under the engine's lock during a transition.
        usize::try_from(unsafe { kg_migrate() }).unwrap_or(0)
    }

    fn kick(&mut self) {
        // SAFETY: called under the engine's lock during a transition.
        unsafe { kg_kick() }
    }

    fn reverse(&mut self) {
        // SAFETY: called under the engine's lock during a transition.
        unsafe { kg_reverse() }
    }

    fn settle(&mut self, _goal: bool) -> Result<(), c_int> {
        // SAFETY: called under the engine's lock once `kg_migrate` found no task behind.
        unsafe { kg_settle() };
        Ok(())
    }
}

/// What the module keeps: its patch and the state machine, touched under the engine's lock.
struct Engine {
    patch: Option<&'static Patch>,
    transition: Transition,
}

/// The engine's state, behind `kg_lock`.
struct Locked(UnsafeCell<Engine>);

// SAFETY: every access goes through `with_engine`, which holds the engine's mutex.
unsafe impl Sync for Locked {}

static ENGINE: Locked =
    Locked(UnsafeCell::new(Engine { patch: None, transition: Transition::new(crate::transition::KERNEL_KICKS) }));

/// Runs `f` on the engine's state.
///
/// # Safety
///
/// The caller holds the engine's lock (`kg_lock`, or is called by `engine.c` with it held).
unsafe fn with_engine<R>(f: impl FnOnce(&mut Engine) -> R) -> R {
    // SAFETY: the caller holds the lock, so this is the only reference.
    f(unsafe { &mut *ENGINE.0.get() })
}

/// Logs `fmt`, which starts with the kernel's `KERN_*` level and takes one `%s`: the patch's
/// name.
fn log(patch: &'static Patch, fmt: &CStr) {
    // SAFETY: the format takes exactly one NUL-terminated string.
    unsafe {
        klp::_printk(fmt.as_ptr(), patch.name.as_ptr());
    }
}

/// The objects of the patch that are here now, each with its callbacks: vmlinux (always: it
/// carries the patch-wide callbacks), then each loaded module the patch names.
fn objects(patch: &'static Patch) -> impl Iterator<Item = (&'static Callbacks, Object)> {
    let vmlinux = core::iter::once((&patch.callbacks, Object::VMLINUX));
    let loaded = super::modules(patch).filter_map(move |name| {
        // SAFETY: a NUL-terminated name; the C side only looks it up.
        if !unsafe { kg_object_present(name.as_ptr()) } {
            return None;
        }
        Some((super::callbacks_of(patch, Some(name))?, Object { name: Some(name), state: Some(ModuleState::Live) }))
    });
    vmlinux.chain(loaded)
}

/// Runs the `post_unpatch` callbacks, then frees the shadow data the patch owns.
///
/// # Safety
///
/// No task runs the patch's code any more.
unsafe fn after_unpatch(patch: &'static Patch) {
    for (c, o) in objects(patch) {
        if let Some(f) = c.post_unpatch {
            // SAFETY: the transition away from the patch completed, as the callback expects.
            unsafe { f(&o) }
        }
    }
    for shadow in patch.shadows.iter().filter(|s| s.owned) {
        // SAFETY: no replacement runs any more, so no reference to the data is alive; the
        // destructor matches the fields stored under this id.
        unsafe { crate::shadow::klp_shadow_free_all(shadow.id as c_ulong, Some(shadow.dtor)) };
    }
}

/// Applies `patch`: resolves its targets, runs `pre_patch`, starts the transition. The
/// transition completes in the background; `/sys/kernel/kgraft/<patch>/transition` shows it.
///
/// # Safety
///
/// Call once, from the module's `init_module`, with the module's only patch descriptor.
pub(super) unsafe fn init(patch: &'static Patch) -> c_int {
    let n = patch.funcs.len();
    // SAFETY: a zeroed array of `n` (at least one) entries, or null.
    let funcs: *mut KgFunc = unsafe { super::alloc(n.max(1)) };
    if funcs.is_null() {
        return -errno::ENOMEM;
    }
    for (i, f) in patch.funcs.iter().enumerate() {
        // SAFETY: `i < n`, the array's length.
        unsafe {
            *funcs.add(i) = KgFunc {
                name: f.name.as_ptr(),
                object: f.object.map_or(ptr::null(), CStr::as_ptr),
                sympos: c_ulong::from(f.sympos),
                new_fn: f.new_fn,
                direct: f.direct,
            };
        }
    }
    let nstates = patch.states.len();
    // SAFETY: a zeroed array of at least one entry, or null.
    let states: *mut State = unsafe { super::alloc(nstates.max(1)) };
    if states.is_null() {
        // SAFETY: from `alloc`, unused.
        unsafe { klp::kfree(funcs.cast()) };
        return -errno::ENOMEM;
    }
    for (i, decl) in patch.states.iter().enumerate() {
        // SAFETY: `i < nstates`, the array's length.
        unsafe { *states.add(i) = State { id: decl.id as c_ulong, version: decl.version, data: ptr::null_mut() } };
    }
    STATES.store(states, Ordering::Release);
    // SAFETY: the array holds `n` entries whose strings are the descriptor's, which live as
    // long as the module; `kg_prepare` copies what it keeps, and keeps the states, which live
    // until `exit`.
    let ret =
        unsafe { kg_prepare(patch.name.as_ptr(), funcs, n as c_int, patch.replaces_all(), states, nstates as c_int) };
    // SAFETY: from `alloc`, and `kg_prepare` keeps no pointer to it.
    unsafe { klp::kfree(funcs.cast()) };
    if ret != 0 {
        free_states();
        log(patch, c"\x013kgraft: %s: the kgraft engine refused the patch\n");
        return ret;
    }
    for (c, o) in objects(patch) {
        if let Some(f) = c.pre_patch {
            // SAFETY: nothing has changed yet, as the callback expects.
            let err = unsafe { f(&o) };
            if err != 0 {
                log(patch, c"\x013kgraft: %s: pre-patch callback refused the patch\n");
                // SAFETY: no transition started.
                unsafe { kg_unprepare() };
                free_states();
                return err;
            }
        }
    }
    // SAFETY: `kg_prepare` succeeded; the lock is taken and released here.
    unsafe {
        kg_lock();
        let ret = with_engine(|e| {
            e.patch = Some(patch);
            match e.transition.start(&mut Kernel, true, kg_now_ms()) {
                Ok(()) => 0,
                Err(Refused::Backend(err)) => err,
                Err(_) => -errno::EBUSY,
            }
        });
        if ret == 0 {
            // The module stays loaded while any task may run its code.
            kg_hold();
            kg_schedule(0);
            log(patch, c"\x016kgraft: %s: patching started\n");
        }
        kg_unlock();
        if ret != 0 {
            after_unpatch(patch);
            kg_unprepare();
            free_states();
        }
        ret
    }
}

/// Removes what [`init`] prepared; the kernel calls `cleanup_module` only once the module's
/// reference is dropped, after the transition away from the patch completed.
///
/// # Safety
///
/// Call once, from the module's `cleanup_module`.
pub(super) unsafe fn exit() {
    // SAFETY: no transition is in progress (the module's reference held it loaded).
    unsafe { kg_unprepare() };
    free_states();
}

/// One step of the transition: the poll worker calls it with the engine's lock held.
///
/// # Safety
///
/// Called by `engine.c` only, with the lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kgraft_engine_poll() {
    // SAFETY: the caller holds the lock.
    let (patch, poll) = unsafe {
        with_engine(|e| {
            let now = kg_now_ms();
            // Settling in the kernel cannot fail: a function without its direct call keeps its
            // reality check, which then sends every task to the patch.
            (e.patch, e.transition.poll(&mut Kernel, now).unwrap_or(Poll::Idle))
        })
    };
    let Some(patch) = patch else { return };
    match poll {
        Poll::Idle => {}
        // SAFETY: the worker is set up by `kg_prepare`.
        Poll::Pending { .. } => unsafe { kg_schedule(POLL_EVERY_MS) },
        Poll::Done { goal: true, reversed } => {
            log(
                patch,
                if reversed {
                    c"\x016kgraft: %s: unpatching reversed: the patch stays\n"
                } else {
                    c"\x016kgraft: %s: patching complete\n"
                },
            );
            for (c, o) in objects(patch) {
                if let Some(f) = c.post_patch {
                    // SAFETY: every task runs the patch, as the callback expects.
                    unsafe { f(&o) }
                }
            }
            // SAFETY: under the lock; `transition` reads 0 from here on.
            unsafe { kg_done() };
        }
        Poll::Done { goal: false, reversed } => {
            log(
                patch,
                if reversed {
                    c"\x016kgraft: %s: patching reversed: the original code runs\n"
                } else {
                    c"\x016kgraft: %s: unpatching complete\n"
                },
            );
            // SAFETY: every task runs the original code; then the module may go.
            unsafe {
                after_unpatch(patch);
                kg_done();
                kg_release_hold();
            }
        }
    }
}

/// `enabled` was set to 1 while the patch was not enabled: turn an unpatching transition
/// around (a patch that was taken off stays off: its module is to be removed).
///
/// # Safety
///
/// Called by `engine.c` only, with the lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kgraft_engine_enable() -> c_int {
    // SAFETY: the caller holds the lock.
    unsafe {
        with_engine(|e| match e.transition.phase() {
            crate::transition::Phase::Moving { goal: false, .. } => {
                match e.transition.reverse(&mut Kernel, kg_now_ms()) {
                    Ok(()) => {
                        kg_schedule(0);
                        0
                    }
                    Err(_) => -errno::EINVAL,
                }
            }
            _ => -errno::EINVAL,
        })
    }
}

/// `enabled` was set to 0: unpatch, or turn a patching transition around.
///
/// # Safety
///
/// Called by `engine.c` only, with the lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kgraft_engine_disable() -> c_int {
    // SAFETY: the caller holds the lock.
    unsafe {
        with_engine(|e| {
            let Some(patch) = e.patch else { return -errno::EINVAL };
            let now = kg_now_ms();
            let res = match e.transition.phase() {
                crate::transition::Phase::Moving { .. } => e.transition.reverse(&mut Kernel, now),
                _ => {
                    for (c, o) in objects(patch) {
                        if let Some(f) = c.pre_unpatch {
                            // SAFETY: every task runs the patch, as the callback expects.
                            f(&o);
                        }
                    }
                    e.transition.start(&mut Kernel, false, now)
                }
            };
            match res {
                Ok(()) => {
                    kg_schedule(0);
                    0
                }
                Err(Refused::Backend(err)) => err,
                Err(Refused::Busy | Refused::AlreadyThere) => -errno::EINVAL,
            }
        })
    }
}

/// Whether the module `name` is one of the patch's objects (its functions', or declared).
///
/// # Safety
///
/// Called by `engine.c` only, with the lock held, `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kgraft_engine_has_object(name: *const c_char) -> bool {
    // SAFETY: the caller's contract.
    let name = unsafe { CStr::from_ptr(name) };
    // SAFETY: the caller holds the lock.
    unsafe { with_engine(|e| e.patch.is_some_and(|p| super::modules(p).any(|m| m == name))) }
}

/// Runs the callback `kind` (a [`CallbackKind`]) of the module `name`, which is coming
/// (`state` [`MODULE_STATE_COMING`]) or going while the patch is on.
/// Returns what `pre_patch` returns (a negative errno refuses the module), otherwise 0.
///
/// # Safety
///
/// Called by `engine.c`'s module notifier only, with the lock held, `name` a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kgraft_engine_object_event(name: *const c_char, kind: c_int, state: c_int) -> c_int {
    // SAFETY: the caller holds the lock.
    let Some(patch) = (unsafe { with_engine(|e| e.patch) }) else { return 0 };
    // The descriptor's own name, which lives as long as the module: the object passed to the
    // callback may keep it.
    // SAFETY: the caller's contract.
    let wanted = unsafe { CStr::from_ptr(name) };
    let Some(name) = super::modules(patch).find(|m| *m == wanted) else { return 0 };
    let Some(c) = super::callbacks_of(patch, Some(name)) else { return 0 };
    let state = if state == MODULE_STATE_COMING { ModuleState::Coming } else { ModuleState::Going };
    let o = Object { name: Some(name), state: Some(state) };
    // SAFETY: the module is coming or going at the point of its life the callback's kind names,
    // as the livepatch core calls them.
    unsafe {
        match (CallbackKind::from_c(kind), c) {
            (Some(CallbackKind::PrePatch), Callbacks { pre_patch: Some(f), .. }) => f(&o),
            (Some(CallbackKind::PostPatch), Callbacks { post_patch: Some(f), .. }) => {
                f(&o);
                0
            }
            (Some(CallbackKind::PreUnpatch), Callbacks { pre_unpatch: Some(f), .. }) => {
                f(&o);
                0
            }
            (Some(CallbackKind::PostUnpatch), Callbacks { post_unpatch: Some(f), .. }) => {
                f(&o);
                0
            }
            _ => 0,
        }
    }
}

/// A `replace_all` patch took every function of this one over: the patch is off, without a
/// transition or callbacks of its own (as the livepatch core treats a replaced patch).
///
/// # Safety
///
/// Called by `engine.c` only, with the lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kgraft_engine_replaced() {
    // SAFETY: the caller holds the lock.
    unsafe {
        with_engine(|e| {
            e.transition.taken_over();
        })
    }
}
