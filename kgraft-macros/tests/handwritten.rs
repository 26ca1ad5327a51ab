//! A patch written by hand with the macros: the descriptor says what the source says, and
//! `shadow!` reaches per-object fields through the `klp_shadow_*` interface.

use std::collections::HashMap;
use std::ffi::{c_int, c_ulong, c_void};
use std::sync::Mutex;

use kgraft_rt::prelude::*;
use kgraft_rt::shadow::Ctor;

kgraft_rt::opaque_types!(foo_dev);

kgraft_macros::shadow! {
    foo_dev {
        /// How many writes the patch refused.
        writes_refused: u64 = 0,
        limit: usize = 4096,
    }
}

/// Refuses long writes.
///
/// # Safety
///
/// `dev` points to a live device.
#[kgraft_macros::replace(name = "foo_write", object = "vmlinux")]
pub unsafe extern "C" fn foo_write(dev: *mut foo_dev, len: usize) -> isize {
    // SAFETY: the tests pass a pointer to a live object, and nothing else holds its fields.
    unsafe {
        if len > *shadow!(dev.limit) {
            *shadow!(dev.writes_refused) += 1;
            return -22;
        }
    }
    len as isize
}

mod foo {
    #[kgraft_macros::replace(name = "foo_probe", object = "foo", sympos = 2)]
    pub unsafe extern "C" fn foo_probe() -> core::ffi::c_int {
        0
    }
}

// A replacement whose code is compiled elsewhere (a C body): `#[replace]` on its declaration.
#[kgraft_macros::replace(name = "foo_read", object = "vmlinux")]
unsafe extern "C" {
    pub fn __kgraft_c_foo_read(dev: *mut foo_dev) -> isize;
}

/// Stands for the C body, which kgraftc's C file would define.
mod c_file {
    #[unsafe(no_mangle)]
    extern "C" fn __kgraft_c_foo_read(_dev: *mut super::foo_dev) -> isize {
        7
    }
}

#[kgraft_macros::callback(pre_patch)]
unsafe fn refuse_nothing(_obj: &kgraft_rt::Object) -> c_int {
    0
}

#[kgraft_macros::callback(post_unpatch)]
unsafe fn after(_obj: &kgraft_rt::Object) {}

kgraft_macros::patch! {
    name: "foo_write_bound",
    description: "Refuse writes longer than the buffer",
    kernel: "6.1.0-*-amd64",
    replace_all: true,
    functions: [foo_write, foo::foo_probe, __kgraft_c_foo_read],
    shadows: [foo_dev_writes_refused],
    callbacks: { pre_patch: refuse_nothing, post_unpatch: after },
}

/// A shadow store for the test, keyed like the kernel's.
static STORE: Mutex<Option<HashMap<(usize, c_ulong), usize>>> = Mutex::new(None);

#[unsafe(no_mangle)]
extern "C" fn klp_shadow_get_or_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    _gfp: u32,
    ctor: Option<Ctor>,
    ctor_data: *mut c_void,
) -> *mut c_void {
    let mut store = STORE.lock().expect("store lock");
    let store = store.get_or_insert_with(HashMap::new);
    let addr = *store.entry((obj as usize, id)).or_insert_with(|| {
        let data = Box::into_raw(vec![0u64; size.div_ceil(8)].into_boxed_slice()).cast::<c_void>();
        if let Some(ctor) = ctor {
            // SAFETY: `data` is fresh, 8-aligned and `size` bytes long.
            assert_eq!(unsafe { ctor(obj, data, ctor_data) }, 0);
        }
        data as usize
    });
    addr as *mut c_void
}

#[test]
fn descriptor_holds_what_the_source_says() {
    let patch = &__KGRAFT_PATCH;
    assert_eq!(patch.name, c"foo_write_bound");
    assert_eq!(patch.description, c"Refuse writes longer than the buffer");
    assert_eq!(patch.kernel, Some(c"6.1.0-*-amd64"));
    assert!(patch.replace_all);
    let funcs: Vec<_> = patch.funcs.iter().map(|f| (f.name, f.object, f.sympos)).collect();
    assert_eq!(funcs, [(c"foo_write", None, 0), (c"foo_probe", Some(c"foo"), 2), (c"foo_read", None, 0)]);
    assert_eq!(patch.funcs[0].new_fn, foo_write as *const ());
    assert_eq!(patch.funcs[2].new_fn, __kgraft_c_foo_read as *const ());
    // SAFETY: the declaration matches the definition in `c_file`, which ignores its argument.
    assert_eq!(unsafe { __kgraft_c_foo_read(core::ptr::null_mut()) }, 7);
    assert_eq!(patch.objects().collect::<Vec<_>>(), [None, Some(c"foo")]);
    assert_eq!(patch.shadows.len(), 1);
    assert_eq!(patch.shadows[0].type_name, c"foo_dev");
    assert_eq!(patch.shadows[0].size, 16);
    assert!(patch.callbacks.pre_patch.is_some() && patch.callbacks.post_unpatch.is_some());
    assert!(patch.callbacks.post_patch.is_none() && patch.callbacks.pre_unpatch.is_none());
}

#[test]
fn shadow_fields_are_per_object_and_initialised() {
    let mut a = 0u64;
    let mut b = 0u64;
    let (a, b) = ((&raw mut a).cast::<foo_dev>(), (&raw mut b).cast::<foo_dev>());
    // SAFETY: `a` and `b` stand for live objects (their addresses only key the store).
    unsafe {
        assert_eq!(foo_write(a, 10), 10);
        assert_eq!(foo_write(a, 5000), -22);
        assert_eq!(foo_write(a, 5000), -22);
        assert_eq!(foo_write(b, 5000), -22);
        assert_eq!(*shadow!(a.writes_refused), 2);
        assert_eq!(*shadow!(b.writes_refused), 1);
        *shadow!(b.limit) = 8192;
        assert_eq!(foo_write(b, 5000), 5000);
    }
}

#[test]
fn shadow_ids_depend_on_type_and_fields() {
    use kgraft_rt::shadow::ShadowBlock;
    assert_eq!(<__kgraft_shadow_foo_dev_writes_refused as ShadowBlock>::ID, __KGRAFT_PATCH.shadows[0].id);
    assert_ne!(<__kgraft_shadow_foo_dev_writes_refused as ShadowBlock>::ID, 0);
    assert!(__KGRAFT_PATCH.shadows[0].owned);
}
