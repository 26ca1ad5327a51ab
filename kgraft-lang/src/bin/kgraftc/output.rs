//! Writing what kgraftc produces: built files renamed into place, never onto an input; the
//! directories lowered crates are written to; standard output.
//!
//! A built file is copied to a new temporary file next to the output and renamed over it, so a
//! reader of the old file (a host that mapped a loaded patch) keeps the old inode whole, and an
//! interrupted build never leaves half a file under the output's name.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Failure;

/// Refuses an output path that is one of the inputs (the same file, through any path).
pub(crate) fn refuse_input(out: &Path, inputs: &[&Path]) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(out) else {
        return Ok(());
    };
    if meta.is_dir() {
        return Err(format!("`{}` is a directory: `-o` names the file to write", out.display()));
    }
    for input in inputs {
        if std::fs::metadata(input).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino())) {
            return Err(format!(
                "`-o {}` names the input `{}`: writing there would destroy it; choose another output",
                out.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// Copies the built file `from` to `out` through a temporary file in `out`'s directory renamed
/// into place, after refusing an `out` that is one of `inputs`.
///
/// An `out` that is a symbolic link is replaced at the file it names; one that is not a regular
/// file (`/dev/null`, a pipe) is written into, as there is no file to replace.
pub(crate) fn install(from: &Path, out: &Path, inputs: &[&Path]) -> Result<(), String> {
    refuse_input(out, inputs)?;
    let resolved = std::fs::canonicalize(out);
    let out = match (&resolved, std::fs::metadata(out)) {
        (_, Ok(meta)) if !meta.is_file() => {
            let mut source = std::fs::File::open(from).map_err(|e| format!("cannot read `{}`: {e}", from.display()))?;
            let mut sink = OpenOptions::new()
                .write(true)
                .open(out)
                .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
            return std::io::copy(&mut source, &mut sink)
                .map(drop)
                .map_err(|e| format!("cannot write `{}`: {e}", out.display()));
        }
        (Ok(target), Ok(_)) => target.as_path(),
        _ => out,
    };
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let cannot = |what: &str, at: &Path, e: std::io::Error| format!("cannot {what} `{}`: {e}", at.display());
    let mut source = std::fs::File::open(from).map_err(|e| cannot("read", from, e))?;
    let (tmp, mut file) = (0..100)
        .find_map(|n| {
            let tmp = dir.join(format!(".{name}.kgraftc-{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).mode(0o755).open(&tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                r => Some(r.map(|f| (tmp.clone(), f)).map_err(|e| cannot("create", &tmp, e))),
            }
        })
        .unwrap_or_else(|| Err(format!("cannot create a temporary file in `{}`", dir.display())))?;
    let written = std::io::copy(&mut source, &mut file)
        .and_then(|_| file.sync_all())
        .map_err(|e| cannot("write", &tmp, e))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| cannot("write", out, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The first line of every manifest kgraftc writes: what marks a directory as kgraftc's own.
pub(crate) const MANIFEST_MARK: &str = "# Written by kgraftc: ";

/// Refuses to write a lowered crate into `dir` unless it is new, empty, or a crate kgraftc
/// wrote before (its `Cargo.toml` starts with [`MANIFEST_MARK`]).
pub(crate) fn check_crate_dir(dir: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return match std::fs::symlink_metadata(dir) {
            Ok(_) => Err(format!("`{}` is not a directory", dir.display())),
            Err(_) => Ok(()),
        };
    };
    // A lock file alone is what a build stopped before writing anything left.
    if entries.into_iter().all(|e| e.is_ok_and(|e| e.file_name() == crate::lock::FILE)) {
        return Ok(());
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if manifest.starts_with(MANIFEST_MARK) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not empty and holds no crate written by kgraftc: the lowered crate would \
         overwrite its files; give `--out` a new or empty directory",
        dir.display()
    ))
}

/// Set once standard output is a closed pipe: what follows is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output and flushes it.
///
/// A closed pipe (`kgraftc expand x.kgp | head -1`) is the reader's choice: the text is dropped
/// and the command goes on quietly. Any other error (a full disk) is an I/O failure.
pub(crate) fn stdout(text: &str) -> Result<(), Failure> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Failure::io("cannot write to standard output", e)),
    }
}
