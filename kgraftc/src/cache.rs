//! kgraftc's cache directory (`KGRAFT_CACHE_DIR`, else `$XDG_CACHE_HOME/kgraft`, else
//! `~/.cache/kgraft`): kernel descriptions, builds, unpacked sources.
//!
//! What the cache holds is trusted (a cached kernel description decides the layouts a patch
//! writes with; a cached build is linked into a module), so the directory must be the user's
//! alone: owned by them, not a symbolic link, and writable by no one else. One shared with
//! another user (a common `XDG_CACHE_HOME`, `sudo -E`) is refused, never read or written.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The cache's subdirectory `sub` (`kernels`, `linux`), created private and checked.
pub(crate) fn dir(sub: &str) -> Result<PathBuf, String> {
    let base = if let Some(dir) = std::env::var_os("KGRAFT_CACHE_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("kgraft")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".cache").join("kgraft")
    } else {
        return Err("no cache directory: set KGRAFT_CACHE_DIR or HOME".into());
    };
    private(&base)?;
    let dir = base.join(sub);
    private(&dir)?;
    Ok(dir)
}

/// Creates `dir` (mode 0700) if it is missing, and checks that it is a directory of this user's
/// that no one else can write; one this user owns that others could write is made private.
fn private(dir: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the cache directory {}: {e}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let refuse = |why: String| {
        Err(format!(
            "the cache directory {} {why}: kgraftc trusts what its cache holds, so it uses only a directory of \
             its own user's; set KGRAFT_CACHE_DIR to one",
            dir.display()
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(format!("belongs to user {}, not to this one ({me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        let mode = meta.mode() & 0o7777 & !0o077;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot make the cache directory {} private: {e}", dir.display()))?;
    }
    Ok(())
}
