//! System states in the host: the livepatch core's rules and its `klp_get_state` and
//! `klp_get_prev_state`, which the host exports to patches as it exports `klp_shadow_*`.
//!
//! Each applied patch has its states here, in the order the patches were applied, with the
//! `data` word its callbacks may set. The engine checks a patch against the applied ones before
//! anything runs ([`compatible`]), registers it before its `pre_patch` callbacks and drops it
//! when it is gone.

use std::ffi::{c_ulong, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kgraft_rt::Patch;
use kgraft_rt::state::State;

/// The states of one applied patch.
struct Entry {
    /// The patch's descriptor, as an address (its identity for `klp_get_state`).
    patch: usize,
    /// Its states; boxed, so that their addresses stay while the list changes.
    states: Box<[State]>,
}

/// The applied patches' states, in the order of application.
struct Registry(Vec<Entry>);

// SAFETY: the `data` pointers are never dereferenced here; they belong to the patches'
// callbacks, which the engine runs one at a time.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry(Vec::new()));

/// The descriptor address of the patch in transition, or 0.
static TRANSITION: AtomicUsize = AtomicUsize::new(0);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks `patch` against the patches applied before it, as the kernel's
/// `klp_is_patch_compatible` does: a `replace_all` patch declares every state they declare, and
/// no patch lowers a state's version.
///
/// # Errors
///
/// The message the engine reports, naming the state and the patch that holds it.
pub fn compatible<'a>(patch: &Patch, applied: impl IntoIterator<Item = &'a Patch>) -> Result<(), String> {
    let name = patch.name.to_string_lossy();
    for old in applied {
        for old_state in old.states {
            match patch.states.iter().find(|s| s.id == old_state.id) {
                None if patch.replaces_all() => {
                    return Err(format!(
                        "patch `{name}` is not compatible with the applied patches: it replaces them all but does not \
                         declare state {} of `{}`",
                        old_state.id,
                        old.name.to_string_lossy()
                    ));
                }
                Some(s) if s.version < old_state.version => {
                    return Err(format!(
                        "patch `{name}` is not compatible with the applied patches: state {} has version {} in `{}`, \
                         and this patch would lower it to {}",
                        old_state.id,
                        old_state.version,
                        old.name.to_string_lossy(),
                        s.version
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Registers the states of `patch`, which is now in transition.
pub fn register(patch: &'static Patch) {
    let states = patch
        .states
        .iter()
        .map(|d| State { id: d.id as c_ulong, version: d.version, data: std::ptr::null_mut() })
        .collect();
    let addr = std::ptr::from_ref(patch) as usize;
    registry().0.push(Entry { patch: addr, states });
    TRANSITION.store(addr, Ordering::Release);
}

/// Marks `patch` as in transition (being removed).
pub fn removing(patch: &'static Patch) {
    TRANSITION.store(std::ptr::from_ref(patch) as usize, Ordering::Release);
}

/// Ends the transition.
pub fn settled() {
    TRANSITION.store(0, Ordering::Release);
}

/// Drops the states of `patch`, which is gone.
pub fn unregister(patch: &'static Patch) {
    let addr = std::ptr::from_ref(patch) as usize;
    registry().0.retain(|e| e.patch != addr);
    if TRANSITION.load(Ordering::Acquire) == addr {
        settled();
    }
}

/// Returns the state `id` of the patch whose descriptor is `patch`, or null.
#[unsafe(no_mangle)]
pub extern "C" fn klp_get_state(patch: *mut c_void, id: c_ulong) -> *mut State {
    let mut reg = registry();
    let Some(entry) = reg.0.iter_mut().find(|e| e.patch == patch as usize) else { return std::ptr::null_mut() };
    entry.states.iter_mut().find(|s| s.id == id).map_or(std::ptr::null_mut(), std::ptr::from_mut)
}

/// Returns the state `id` of the last patch applied before the one in transition, or null
/// (also when no patch is in transition, as in the kernel).
#[unsafe(no_mangle)]
pub extern "C" fn klp_get_prev_state(id: c_ulong) -> *mut State {
    let current = TRANSITION.load(Ordering::Acquire);
    if current == 0 {
        return std::ptr::null_mut();
    }
    let mut reg = registry();
    let mut last = std::ptr::null_mut();
    for e in reg.0.iter_mut() {
        if e.patch == current {
            break;
        }
        if let Some(s) = e.states.iter_mut().find(|s| s.id == id) {
            last = std::ptr::from_mut(s);
        }
    }
    last
}
