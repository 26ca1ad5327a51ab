//! Locks that keep two kgraftc builds out of each other's directories.
//!
//! Each build holds the lock of the directory it writes its crate to (and the Linux target that
//! of its whole cache) until its output is in place; a second build of a patch of the same name
//! waits, saying which process it waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The name of the lock file in a lowered crate's directory.
pub(crate) const FILE: &str = "kgraftc.lock";

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

/// Takes the lock at `path` (a file, created), waiting while another process holds it; `what`
/// names what the lock protects in the waiting message.
///
/// The holder writes its process id into the file, so a waiting build can say whom it waits for.
/// The lock is the kernel's (`flock`): a holder that dies releases it.
pub(crate) fn take(path: &Path, what: &str) -> Result<Lock, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let who = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("kgraftc (pid {pid})"),
                Err(_) => "another kgraftc".to_owned(),
            };
            eprintln!("      waiting for {who}, which is building {what} (lock `{}`)", path.display());
            file.lock().map_err(|e| format!("cannot lock `{}`: {e}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(format!("cannot lock `{}`: {e}", path.display()));
        }
    }
    // The lock is ours; saying so is only a courtesy to the next build.
    let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(Lock { _file: file })
}
