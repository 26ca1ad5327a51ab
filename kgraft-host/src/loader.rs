//! Inserting patches: the shared objects built by `kgraftc build --target host`.

use std::ffi::{CStr, CString};

use kgraft_rt::Patch;

/// The symbol a patch exports its descriptor under (`kgraft_rt::__export_patch!`).
const ENTRY: &CStr = c"kgraft_patch_v1";

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
    /// A message when the file cannot be loaded (a missing symbol included) or exports no patch.
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
        let sym = unsafe { libc::dlsym(handle, ENTRY.as_ptr()) };
        if sym.is_null() {
            return Err(format!("{path} is not a kgraft patch: it exports no `kgraft_patch_v1`"));
        }
        // SAFETY: `kgraft_patch_v1` is a `&'static Patch` static made by `__export_patch!` with
        // the same kgraft-rt; it stays valid while the library is loaded, which the engine
        // guarantees by holding the library as long as the patch is applied.
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
