//! Shadow data: fields attached to existing kernel objects, keyed by the object's address.
//!
//! Patches reach shadow data through the kernel's `klp_shadow_*` interface, whatever the target:
//! the kernel exports it, and the user-mode host exports functions of the same names and
//! semantics. The typed layer on top is the [`Shadowed`] trait, which `kgraft_macros::shadow!`
//! implements for a kernel type, and the [`shadow!`](crate::shadow!) macro bodies use.

use core::ffi::{c_int, c_ulong, c_void};

/// A constructor as the `klp_shadow_*` interface calls it: fills `shadow_data` for `obj`.
pub type Ctor =
    unsafe extern "C" fn(obj: *mut c_void, shadow_data: *mut c_void, ctor_data: *mut c_void) -> c_int;

/// A destructor as the `klp_shadow_*` interface calls it, before the data is freed.
pub type Dtor = unsafe extern "C" fn(obj: *mut c_void, shadow_data: *mut c_void);

/// The allocation flags a patch passes to the shadow allocator (Linux 6.1's `GFP_ATOMIC`).
///
/// A replacement may run in any context, interrupts included, so shadow data is allocated
/// without sleeping. The user-mode host ignores the flags.
pub const GFP_ATOMIC: u32 = 0x20 | 0x200 | 0x800;

unsafe extern "C" {
    /// Returns the shadow data of `obj` under `id`, or null.
    pub fn klp_shadow_get(obj: *mut c_void, id: c_ulong) -> *mut c_void;
    /// Returns the shadow data of `obj` under `id`, creating it with `ctor` when there is none.
    pub fn klp_shadow_get_or_alloc(
        obj: *mut c_void,
        id: c_ulong,
        size: usize,
        gfp_flags: u32,
        ctor: Option<Ctor>,
        ctor_data: *mut c_void,
    ) -> *mut c_void;
    /// Creates the shadow data of `obj` under `id`; null if it exists already or memory ran out.
    pub fn klp_shadow_alloc(
        obj: *mut c_void,
        id: c_ulong,
        size: usize,
        gfp_flags: u32,
        ctor: Option<Ctor>,
        ctor_data: *mut c_void,
    ) -> *mut c_void;
    /// Frees the shadow data of `obj` under `id`, calling `dtor` first.
    pub fn klp_shadow_free(obj: *mut c_void, id: c_ulong, dtor: Option<Dtor>);
    /// Frees the shadow data of every object under `id`, calling `dtor` on each.
    pub fn klp_shadow_free_all(id: c_ulong, dtor: Option<Dtor>);
}

/// A kernel type that carries shadow fields.
///
/// # Safety
///
/// `ID` must be used for no other fields type: the shadow store hands out memory under `ID` as
/// `Fields`. `kgraft_macros::shadow!` derives `ID` from the type's name and its fields.
pub unsafe trait Shadowed {
    /// The fields attached to each object.
    type Fields: 'static;
    /// The shadow id, unique to the kernel type and its fields.
    const ID: u64;
    /// Returns the initial value of the fields for a new object.
    fn init() -> Self::Fields;
}

/// A pointer to an object that may carry shadow data.
pub trait ShadowPtr {
    /// The object's kernel type.
    type Target: Shadowed;
    /// Returns the object's address.
    fn addr(self) -> *mut c_void;
}

impl<T: Shadowed> ShadowPtr for *mut T {
    type Target = T;
    fn addr(self) -> *mut c_void {
        self.cast()
    }
}

impl<T: Shadowed> ShadowPtr for *const T {
    type Target = T;
    fn addr(self) -> *mut c_void {
        self.cast_mut().cast()
    }
}

/// Fills a new shadow allocation with `T::init()`.
///
/// # Safety
///
/// `shadow_data` must point to writable memory of the size and alignment of `T::Fields`.
unsafe extern "C" fn construct<T: Shadowed>(
    _obj: *mut c_void,
    shadow_data: *mut c_void,
    _ctor_data: *mut c_void,
) -> c_int {
    // SAFETY: the caller passes memory sized and aligned for `T::Fields`, which the store
    // allocated for this id.
    unsafe { shadow_data.cast::<T::Fields>().write(T::init()) };
    0
}

/// Drops the fields of a shadow allocation before the store frees it.
///
/// # Safety
///
/// `shadow_data` must hold a `T::Fields` that `construct::<T>` wrote and nobody dropped yet.
pub unsafe extern "C" fn destruct<T: Shadowed>(_obj: *mut c_void, shadow_data: *mut c_void) {
    // SAFETY: the store calls the destructor once, on data the constructor initialised.
    unsafe { shadow_data.cast::<T::Fields>().drop_in_place() };
}

/// Returns the shadow fields of `obj`, creating them with `T::init()` on first use.
///
/// # Safety
///
/// `obj` must point to a live object of its type; the fields must not be reached through
/// another reference while the returned one is in use, and not after the object or the patch is
/// gone.
///
/// # Panics
///
/// When the shadow store cannot allocate the fields (an atomic allocation that failed).
pub unsafe fn get_or_alloc<'a, P: ShadowPtr>(obj: P) -> &'a mut <P::Target as Shadowed>::Fields {
    let fields = core::mem::size_of::<<P::Target as Shadowed>::Fields>();
    // SAFETY: the constructor matches the size passed, and `ID` belongs to these fields only
    // (the `Shadowed` contract).
    let data = unsafe {
        klp_shadow_get_or_alloc(
            obj.addr(),
            <P::Target as Shadowed>::ID as c_ulong,
            fields,
            GFP_ATOMIC,
            Some(construct::<P::Target>),
            core::ptr::null_mut(),
        )
    };
    assert!(!data.is_null(), "kgraft: out of memory for shadow data");
    // SAFETY: non-null data under this id was written by `construct::<P::Target>`, and the
    // caller keeps the reference unique.
    unsafe { &mut *data.cast() }
}

/// Returns the shadow fields of `obj` if it has any.
///
/// # Safety
///
/// As for [`get_or_alloc`].
pub unsafe fn get<'a, P: ShadowPtr>(obj: P) -> Option<&'a mut <P::Target as Shadowed>::Fields> {
    // SAFETY: a lookup only reads the store.
    let data = unsafe { klp_shadow_get(obj.addr(), <P::Target as Shadowed>::ID as c_ulong) };
    // SAFETY: data under this id was written by `construct::<P::Target>`, and the caller keeps
    // the reference unique.
    (!data.is_null()).then(|| unsafe { &mut *data.cast() })
}

/// Frees the shadow fields of `obj`, dropping them first.
///
/// # Safety
///
/// No reference to the fields may be in use.
pub unsafe fn free<P: ShadowPtr>(obj: P) {
    // SAFETY: the destructor matches the fields type of this id.
    unsafe {
        klp_shadow_free(
            obj.addr(),
            <P::Target as Shadowed>::ID as c_ulong,
            Some(destruct::<P::Target>),
        )
    };
}

/// Reaches a shadow field of an object: `shadow!(dev.writes_refused)` is a `&mut` to the field.
///
/// The object's pointee type selects the shadow declaration; the fields are created on first
/// use. Use it inside `unsafe`, with the contract of [`shadow::get_or_alloc`](get_or_alloc).
#[macro_export]
macro_rules! shadow {
    ($obj:ident . $field:ident) => {
        &mut $crate::shadow::get_or_alloc($obj).$field
    };
    (($obj:expr) . $field:ident) => {
        &mut $crate::shadow::get_or_alloc($obj).$field
    };
}
