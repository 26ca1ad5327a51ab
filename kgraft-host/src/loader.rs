//! Inserting patches: the shared objects built by `kgraftc build --target host`.

use std::ffi::{CStr, CString};

use kgraft_rt::Patch;
use kgraft_rt::patch::{ABI_STAMP, ABI_STAMP_LEN};

/// The symbol a patch exports its descriptor under (`kgraft_rt::__export_patch!`).
const ENTRY: &CStr = c"kgraft_patch_v1";

/// The symbol a patch exports its ABI stamp under, `ABI_STAMP_LEN` bytes long.
const STAMP: &CStr = c"kgraft_abi_v1";

/// A loaded patch shared object; dropping it unloads it.
pub struct Library {
    handle: *mut libc::c_void,
}

// SAFETY: a dlopen handle may be used and closed from any thread.
unsafe impl Send for Library {}

impl Library {
    /// Loads the shared object at `path` and returns it with its patch descriptor.
    ///
    /// # Errors
    ///
    /// A message when the file cannot be loaded (a missing symbol included), was built with
    /// another kgraft-rt (its ABI stamp is missing or differs from the host's, in which case
    /// its descriptor is not read), or exports no patch.
    pub fn open(path: &str) -> Result<(Library, &'static Patch), String> {
        let c = CString::new(path).map_err(|_| format!("{path}: the path contains a NUL byte"))?;
        // SAFETY: `c` is a valid C string; RTLD_NOW resolves every symbol now, so a patch using
        // a symbol the host lacks fails here rather than on first call.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load {path}: {}", dlerror()));
        }
        let lib = Library { handle };
        // SAFETY: the handle is open; the name is a C string.
        let stamp = unsafe { libc::dlsym(handle, STAMP.as_ptr()) };
        if stamp.is_null() {
            return Err(format!(
                "{path} has no ABI stamp (`kgraft_abi_v1`): it was not built by this kgraft, \
                 whose stamp is `{}`; rebuild it with this kgraftc",
                stamp_text(&ABI_STAMP)
            ));
        }
        // SAFETY: a symbol named `kgraft_abi_v1` is the `[u8; ABI_STAMP_LEN]` static of
        // `__export_patch!` (the version in the name fixes the length); it is plain bytes,
        // valid while the library is loaded.
        let theirs: [u8; ABI_STAMP_LEN] = unsafe { *stamp.cast::<[u8; ABI_STAMP_LEN]>() };
        if theirs != ABI_STAMP {
            return Err(format!(
                "{path} was built with another kgraft-rt: its ABI stamp is `{}`, this host's is `{}`; \
                 rebuild the patch with this kgraftc",
                stamp_text(&theirs),
                stamp_text(&ABI_STAMP)
            ));
        }
        // SAFETY: the handle is open; the name is a C string.
        let sym = unsafe { libc::dlsym(handle, ENTRY.as_ptr()) };
        if sym.is_null() {
            return Err(format!("{path} is not a kgraft patch: it exports no `kgraft_patch_v1`"));
        }
        // SAFETY: `kgraft_patch_v1` is a `&'static Patch` static made by `__export_patch!` with
        // a kgraft-rt of the same version and descriptor layouts (the stamps are equal); it
        // stays valid while the library is loaded, which the engine guarantees by holding the
        // library as long as the patch is applied.
        let patch: &'static Patch = unsafe { *sym.cast::<&'static Patch>() };
        Ok((lib, patch))
    }

    /// Unloads the shared object.
    pub fn close(self) {}
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and is closed once; the engine drops a library
        // only after no thread can run its code.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// Returns the text of an ABI stamp: up to its first NUL, non-UTF-8 bytes replaced.
fn stamp_text(stamp: &[u8]) -> String {
    let end = stamp.iter().position(|&b| b == 0).unwrap_or(stamp.len());
    String::from_utf8_lossy(&stamp[..end]).into_owned()
}

/// Returns the dynamic loader's last error message.
fn dlerror() -> String {
    // SAFETY: dlerror returns null or a C string valid until the next dl call on this thread.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, so a valid C string.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}
