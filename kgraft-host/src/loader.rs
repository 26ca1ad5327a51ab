//! Inserting patches: the shared objects built by `kgraftc build --target host`.
//!
//! A patch file is read once, checked whole, and only then handed to the dynamic loader, as a
//! sealed in-memory copy: a file that is truncated, for another machine, or built with another
//! kgraft-rt is refused before any of its code (its constructors included) runs, and rewriting
//! or truncating the file later cannot pull pages from under the loaded patch.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kgraft_rt::Patch;
use kgraft_rt::patch::{ABI_STAMP, ABI_STAMP_LEN};

/// The symbol a patch exports its descriptor under (`kgraft_rt::__export_patch!`).
const ENTRY: &CStr = c"kgraft_patch_v1";

/// The symbol a patch exports its ABI stamp under, `ABI_STAMP_LEN` bytes long.
const STAMP: &CStr = c"kgraft_abi_v1";

/// The largest patch file the loader reads.
const MAX_FILE: u64 = 256 << 20;

/// A loaded patch shared object; dropping it unloads it.
pub struct Library {
    handle: *mut libc::c_void,
    /// The sealed copy the library was loaded from, open while it is loaded: its
    /// `/proc/self/fd` name stays unique, so the dynamic loader never mistakes a later patch
    /// for this one.
    _copy: std::fs::File,
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
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot load {path}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("cannot load {path}: not a regular file"));
        }
        if meta.len() > MAX_FILE {
            return Err(format!("cannot load {path}: {} bytes, more than a patch ever holds", meta.len()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot load {path}: {e}"))?;
        validate(&bytes).map_err(|why| format!("{path} {why}"))?;
        let copy = sealed_copy(&bytes).map_err(|e| format!("cannot load {path}: copying it: {e}"))?;
        let fd_path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        let c = CString::new(fd_path.clone()).map_err(|_| format!("{path}: the path contains a NUL byte"))?;
        // SAFETY: `c` is a valid C string; RTLD_NOW resolves every symbol now, so a patch using
        // a symbol the host lacks fails here rather than on first call.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load {path}: {}", dlerror().replace(&fd_path, path)));
        }
        let lib = Library { handle, _copy: copy };
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

/// Returns a sealed anonymous file holding `bytes`: nothing can change it any more.
fn sealed_copy(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    // SAFETY: the name is a C string; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"kgraft-patch".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on an open memfd created with MFD_ALLOW_SEALING.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// The ELF machine of the host (`EM_X86_64`): the only one the engine patches.
const MACHINE: u64 = 62;

/// Checks, without loading it, that `b` is a whole shared object for this machine that carries
/// this host's ABI stamp and exports a patch descriptor; the error completes "PATH ...".
///
/// Every program and section header and every byte a segment or section claims must lie in
/// the file, so a truncated file is refused here rather than faulting in the loader; the stamp
/// is read from the file's bytes.
fn validate(b: &[u8]) -> Result<(), String> {
    let not_elf = || "is not a shared object for this machine (an x86-64 ELF64 `.so`)".to_owned();
    let cut = |what: &str| format!("is truncated or malformed: {what} lies outside its {} bytes", b.len());
    let int = |at: u64, n: usize| -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        let s = b.get(at..at.checked_add(n)?)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(s);
        Some(u64::from_le_bytes(v))
    };
    let within = |off: u64, len: u64| off.checked_add(len).is_some_and(|end| end <= b.len() as u64);
    if b.get(..7) != Some(&[0x7f, b'E', b'L', b'F', 2, 1, 1][..]) {
        return Err(not_elf());
    }
    let field = |at: u64, n: usize| int(at, n).ok_or_else(|| cut("the ELF header"));
    if field(16, 2)? != 3 || field(18, 2)? != MACHINE {
        return Err(not_elf());
    }
    let (phoff, phentsize, phnum) = (field(32, 8)?, field(54, 2)?, field(56, 2)?);
    let (shoff, shentsize, shnum) = (field(40, 8)?, field(58, 2)?, field(60, 2)?);
    if phentsize != 56 || shentsize != 64 || shnum == 0 {
        return Err(not_elf());
    }
    if !within(phoff, phnum * 56) {
        return Err(cut("the program header table"));
    }
    if !within(shoff, shnum * 64) {
        return Err(cut("the section header table"));
    }
    // The loadable segments: every file byte they map must be in the file.
    let mut loads = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * 56;
        let (ty, off, vaddr, filesz, memsz) =
            (field(ph, 4)?, field(ph + 8, 8)?, field(ph + 16, 8)?, field(ph + 32, 8)?, field(ph + 40, 8)?);
        if ty == 1 {
            if !within(off, filesz) || filesz > memsz {
                return Err(cut(&format!("segment {i}")));
            }
            loads.push((off, vaddr, filesz));
        }
    }
    // The sections: every one with file bytes must be in the file.
    let section = |i: u64| -> Result<(u64, u64, u64, u64, u64), String> {
        let sh = shoff + i * 64;
        Ok((field(sh + 4, 4)?, field(sh + 24, 8)?, field(sh + 32, 8)?, field(sh + 40, 4)?, field(sh + 56, 8)?))
    };
    let mut dynsym = None;
    for i in 0..shnum {
        let (ty, off, size, link, entsize) = section(i)?;
        if ty != 8 && ty != 0 && !within(off, size) {
            return Err(cut(&format!("section {i}")));
        }
        if ty == 11 {
            dynsym = Some((off, size, link, entsize));
        }
    }
    let no_stamp = || {
        format!(
            "has no ABI stamp (`kgraft_abi_v1`): it was not built by this kgraft, whose stamp is `{}`; \
             rebuild it with this kgraftc",
            stamp_text(&ABI_STAMP)
        )
    };
    let (symoff, symsize, link, entsize) = dynsym.ok_or_else(no_stamp)?;
    if entsize != 24 || link >= shnum {
        return Err(not_elf());
    }
    let (_, stroff, strsize, _, _) = section(link)?;
    let name_at = |n: u64| -> Option<&[u8]> {
        let start = usize::try_from(stroff.checked_add(n)?).ok()?;
        let end = usize::try_from(stroff.checked_add(strsize)?).ok()?;
        let s = b.get(start..end)?;
        Some(&s[..s.iter().position(|&c| c == 0)?])
    };
    // The defined dynamic symbols named `kgraft_abi_v1` and `kgraft_patch_v1`: (value, size).
    let (mut stamp, mut entry) = (None, None);
    for i in 0..symsize / 24 {
        let sym = symoff + i * 24;
        if field(sym + 6, 2)? == 0 {
            continue;
        }
        match name_at(field(sym, 4)?) {
            Some(n) if n == STAMP.to_bytes() => stamp = Some((field(sym + 8, 8)?, field(sym + 16, 8)?)),
            Some(n) if n == ENTRY.to_bytes() => entry = Some(()),
            _ => {}
        }
    }
    let (value, size) = stamp.ok_or_else(no_stamp)?;
    // The stamp's bytes, through the segment that maps its address.
    let theirs = loads
        .iter()
        .find(|&&(_, vaddr, filesz)| value >= vaddr && value - vaddr + ABI_STAMP_LEN as u64 <= filesz)
        .and_then(|&(off, vaddr, _)| {
            let at = usize::try_from(off + (value - vaddr)).ok()?;
            b.get(at..at + ABI_STAMP_LEN)
        })
        .filter(|_| size == ABI_STAMP_LEN as u64)
        .ok_or_else(|| {
            format!("has a malformed ABI stamp (`kgraft_abi_v1` is not {ABI_STAMP_LEN} bytes of the file)")
        })?;
    if theirs != ABI_STAMP {
        return Err(format!(
            "was built with another kgraft-rt: its ABI stamp is `{}`, this host's is `{}`; \
             rebuild the patch with this kgraftc",
            stamp_text(theirs),
            stamp_text(&ABI_STAMP)
        ));
    }
    entry.ok_or_else(|| "is not a kgraft patch: it exports no `kgraft_patch_v1`".to_owned())
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
