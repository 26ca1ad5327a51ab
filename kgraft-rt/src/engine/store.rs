//! The shadow store: data attached to any object address under an id, as in `klp_shadow_*`.
//!
//! Each entry is keyed by (object address, id) and owns a zeroed allocation of the size asked
//! for. The constructor runs, under the store's lock, when an entry is created; if it fails the
//! entry is not kept. The destructor runs before an entry is freed. The store is safe to use from
//! any number of threads.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::hint::spin_loop;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::shadow::{Ctor, Dtor};

/// The alignment of every shadow allocation.
const ALIGN: usize = 16;

/// One shadow allocation.
struct Entry {
    data: *mut u8,
    size: usize,
}

/// The shadow store.
///
/// # Invariants
///
/// `map` is touched only while `locked` is held; every entry's `data` is a live allocation of
/// `size` bytes (at least one) aligned to [`ALIGN`], owned by the store.
pub struct Store {
    locked: AtomicBool,
    map: UnsafeCell<BTreeMap<(usize, u64), Entry>>,
}

// SAFETY: the map is only reached under the spin lock, and the raw pointers it holds are owned
// allocations that are not tied to any thread.
unsafe impl Sync for Store {}
// SAFETY: as above, the store owns its allocations.
unsafe impl Send for Store {}

/// The lock guard of a [`Store`].
struct Guard<'a>(&'a Store);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store, usable in a `static`.
    pub const fn new() -> Store {
        Store { locked: AtomicBool::new(false), map: UnsafeCell::new(BTreeMap::new()) }
    }

    fn lock(&self) -> Guard<'_> {
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spin_loop();
        }
        Guard(self)
    }

    /// Runs `f` on the map under the lock.
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<(usize, u64), Entry>) -> R) -> R {
        let _guard = self.lock();
        // SAFETY: the lock is held, so this is the only reference to the map (type invariant).
        f(unsafe { &mut *self.map.get() })
    }

    /// Returns the data of `obj` under `id`, or null.
    pub fn get(&self, obj: *mut c_void, id: u64) -> *mut c_void {
        self.with(|map| map.get(&(obj as usize, id)).map_or(null_mut(), |e| e.data.cast()))
    }

    /// Creates the data of `obj` under `id`; null if it exists already, memory ran out or the
    /// constructor failed.
    ///
    /// # Safety
    ///
    /// `ctor`, if given, must be safe to call with the new data of `size` bytes, `obj` and
    /// `ctor_data`.
    pub unsafe fn alloc(
        &self,
        obj: *mut c_void,
        id: u64,
        size: usize,
        ctor: Option<Ctor>,
        ctor_data: *mut c_void,
    ) -> *mut c_void {
        self.with(|map| {
            if map.contains_key(&(obj as usize, id)) {
                return null_mut();
            }
            // SAFETY: the caller's contract on `ctor` is passed on.
            unsafe { Self::create(map, obj, id, size, ctor, ctor_data) }
        })
    }

    /// Returns the data of `obj` under `id`, creating it as [`Store::alloc`] does if there is none.
    ///
    /// # Safety
    ///
    /// As for [`Store::alloc`].
    pub unsafe fn get_or_alloc(
        &self,
        obj: *mut c_void,
        id: u64,
        size: usize,
        ctor: Option<Ctor>,
        ctor_data: *mut c_void,
    ) -> *mut c_void {
        self.with(|map| match map.get(&(obj as usize, id)) {
            Some(e) => e.data.cast(),
            // SAFETY: the caller's contract on `ctor` is passed on.
            None => unsafe { Self::create(map, obj, id, size, ctor, ctor_data) },
        })
    }

    /// Allocates, constructs and inserts an entry; null on failure.
    ///
    /// # Safety
    ///
    /// As for [`Store::alloc`].
    unsafe fn create(
        map: &mut BTreeMap<(usize, u64), Entry>,
        obj: *mut c_void,
        id: u64,
        size: usize,
        ctor: Option<Ctor>,
        ctor_data: *mut c_void,
    ) -> *mut c_void {
        let Ok(layout) = Layout::from_size_align(size.max(1), ALIGN) else {
            return null_mut();
        };
        // SAFETY: the layout has a non-zero size.
        let data = unsafe { alloc_zeroed(layout) };
        if data.is_null() {
            return null_mut();
        }
        if let Some(ctor) = ctor {
            // SAFETY: `data` is a fresh zeroed allocation of `size` bytes; the caller vouches for
            // `ctor`.
            let ret: c_int = unsafe { ctor(obj, data.cast(), ctor_data) };
            if ret != 0 {
                // SAFETY: `data` was allocated above with this layout and is not shared.
                unsafe { dealloc(data, layout) };
                return null_mut();
            }
        }
        // INVARIANT: `data` is a live allocation of `size.max(1)` bytes aligned to ALIGN.
        map.insert((obj as usize, id), Entry { data, size: size.max(1) });
        data.cast()
    }

    /// Frees the data of `obj` under `id`, calling `dtor` first; nothing if there is none.
    ///
    /// # Safety
    ///
    /// `dtor`, if given, must be safe to call on the data; no reference to it may be in use.
    pub unsafe fn free(&self, obj: *mut c_void, id: u64, dtor: Option<Dtor>) {
        let entry = self.with(|map| map.remove(&(obj as usize, id)));
        if let Some(e) = entry {
            // SAFETY: the entry was removed from the map, so nobody else frees it.
            unsafe { Self::destroy(obj, e, dtor) };
        }
    }

    /// Frees the data of every object under `id`, calling `dtor` on each.
    ///
    /// # Safety
    ///
    /// As for [`Store::free`], for every entry under `id`.
    pub unsafe fn free_all(&self, id: u64, dtor: Option<Dtor>) {
        let entries: Vec<((usize, u64), Entry)> = self.with(|map| {
            let keys: Vec<(usize, u64)> = map.keys().filter(|k| k.1 == id).copied().collect();
            keys.into_iter().filter_map(|k| map.remove(&k).map(|e| (k, e))).collect()
        });
        for ((obj, _), e) in entries {
            // SAFETY: each entry was removed from the map, so nobody else frees it.
            unsafe { Self::destroy(obj as *mut c_void, e, dtor) };
        }
    }

    /// Returns how many entries the store holds under `id`.
    pub fn count(&self, id: u64) -> usize {
        self.with(|map| map.keys().filter(|k| k.1 == id).count())
    }

    /// Runs the destructor and frees an entry that was removed from the map.
    ///
    /// # Safety
    ///
    /// `e` must be an entry taken out of the map; `dtor` as for [`Store::free`].
    unsafe fn destroy(obj: *mut c_void, e: Entry, dtor: Option<Dtor>) {
        if let Some(dtor) = dtor {
            // SAFETY: the caller vouches for `dtor`; the data is still allocated.
            unsafe { dtor(obj, e.data.cast()) };
        }
        // SAFETY: the entry's data was allocated with this layout (type invariant) and the entry
        // left the map, so this is its only owner.
        unsafe { dealloc(e.data, Layout::from_size_align_unchecked(e.size, ALIGN)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    static DTORS: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn ctor_seven(_o: *mut c_void, data: *mut c_void, _c: *mut c_void) -> c_int {
        // SAFETY: the store passes at least 8 bytes, aligned.
        unsafe { data.cast::<u64>().write(7) };
        0
    }

    unsafe extern "C" fn ctor_refuses(_o: *mut c_void, _d: *mut c_void, _c: *mut c_void) -> c_int {
        -12
    }

    unsafe extern "C" fn dtor_count(_o: *mut c_void, _d: *mut c_void) {
        DTORS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn klp_shadow_semantics() {
        let store = Store::new();
        let a = 0x1000 as *mut c_void;
        let b = 0x2000 as *mut c_void;
        assert!(store.get(a, 1).is_null());
        // SAFETY: the constructors write within 8 bytes.
        unsafe {
            let d = store.alloc(a, 1, 8, Some(ctor_seven), null_mut());
            assert_eq!(*d.cast::<u64>(), 7);
            assert!(store.alloc(a, 1, 8, Some(ctor_seven), null_mut()).is_null(), "exists");
            assert_eq!(store.get_or_alloc(a, 1, 8, Some(ctor_seven), null_mut()), d);
            assert!(store.get_or_alloc(b, 1, 8, Some(ctor_refuses), null_mut()).is_null());
            assert!(store.get(b, 1).is_null(), "a refused constructor keeps nothing");
            store.get_or_alloc(b, 1, 8, None, null_mut());
            store.get_or_alloc(b, 2, 8, None, null_mut());
            assert_eq!(store.count(1), 2);
            store.free(a, 1, Some(dtor_count));
            assert!(store.get(a, 1).is_null());
            store.free_all(1, Some(dtor_count));
            assert_eq!(store.count(1), 0);
            assert_eq!(store.count(2), 1);
        }
        assert_eq!(DTORS.load(Ordering::SeqCst), 2);
    }
}
