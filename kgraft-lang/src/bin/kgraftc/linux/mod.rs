//! The Linux kernel module build, step by step (see `build_linux.rs`).

mod cargo;
mod kbuild;
mod kdir;
mod klp;
mod object;
mod toolchain;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to build: a lowered patch crate and where it goes.
pub(crate) struct LinuxBuild<'a> {
    /// The patch's name, which is also the module's name.
    pub(crate) name: &'a str,
    /// The patch's `kernel` glob, if the source gives one.
    pub(crate) kernel_glob: Option<&'a str>,
    /// The lowered crate's `lib.rs`.
    pub(crate) crate_src: &'a str,
    /// The kernel build directory (`/lib/modules/RELEASE/build`); found when `None`.
    pub(crate) kdir: Option<&'a Path>,
    /// Where the `.ko` goes; `NAME.ko` in the current directory when `None`.
    pub(crate) out: Option<&'a Path>,
    /// Whether to print progress to standard error.
    pub(crate) progress: bool,
}

/// A failed build step: what went wrong, and what to do about it.
#[derive(Debug)]
pub(crate) struct Error {
    /// One line saying what failed.
    pub(crate) message: String,
    /// Further output (a tool's own messages), shown after the message.
    pub(crate) detail: Option<String>,
    /// What to do about it.
    pub(crate) help: Option<String>,
}

impl Error {
    /// Returns an error with only a message.
    fn new(message: impl Into<String>) -> Error {
        Error { message: message.into(), detail: None, help: None }
    }

    /// Adds a help line.
    fn help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }

    /// Adds a tool's output.
    fn detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "\n{}", detail.trim_end())?;
        }
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

/// Prints numbered progress lines with the time each step took.
struct Progress {
    on: bool,
    step: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        if self.on {
            eprintln!("[{}/{}] {what}", self.step, self.total);
        }
    }

    fn done(&self, out: &Path) {
        if self.on {
            eprintln!("built {} in {:.1}s", out.display(), self.start.elapsed().as_secs_f64());
        }
    }
}

/// Builds the kernel module for `req` and returns its path.
pub(crate) fn build(req: &LinuxBuild<'_>) -> Result<PathBuf, Error> {
    let mut progress = Progress { on: req.progress, step: 0, total: 6, start: Instant::now() };

    progress.step("checking the kernel build directory");
    let kdir = kdir::find(req.kdir)?;
    kdir::check_glob(req.kernel_glob, &kdir.release)?;
    let toolchain = toolchain::find()?;

    let cache = cache_dir()?;
    let crate_dir = cache.join("crates").join(req.name);
    let target_dir = cache.join("target");
    progress.step(if cargo::core_is_built(&target_dir) {
        "compiling the patch crate"
    } else {
        "compiling the patch crate (the first build also compiles `core`, about a minute)"
    });
    let archive = cargo::build(req.name, req.crate_src, &crate_dir, &target_dir, &toolchain)?;

    progress.step("checking the object");
    let build_dir = cache.join("kbuild").join(&kdir.release).join(req.name);
    let obj = build_dir.join(format!("{}_rust.o_shipped", req.name));
    object::extract(&archive, req.name, &obj)?;
    object::check(&obj)?;
    let symvers = kdir::symvers(&kdir.path)?;
    let unexported: Vec<String> = object::undefined_symbols(&obj)?
        .into_iter()
        .filter(|s| s != "__this_module" && !symvers.contains(s))
        .collect();
    if let Some(map) = kdir::system_map(&kdir.release) {
        for sym in unexported.iter().filter(|s| !map.contains(*s)) {
            eprintln!(
                "warning: `{sym}` is not a symbol of {}: the module will fail to load",
                kdir.release
            );
        }
    }

    progress.step("linking through kbuild");
    let linked = kbuild::link(req.name, &build_dir, &kdir.path, !unexported.is_empty())?;

    progress.step(if unexported.is_empty() {
        "no unexported symbols to resolve"
    } else {
        "writing livepatch relocations for unexported symbols"
    });
    let ko = build_dir.join(format!("{}.klp.ko", req.name));
    klp::convert(&linked, &ko, &unexported)?;

    progress.step("verifying with modinfo");
    kbuild::verify(&ko, req.name, &kdir.release)?;

    let out = match req.out {
        Some(out) => out.to_path_buf(),
        None => PathBuf::from(format!("{}.ko", req.name)),
    };
    std::fs::copy(&ko, &out)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    progress.done(&out);
    Ok(out)
}

/// Returns the cache directory of kernel builds, creating it.
fn cache_dir() -> Result<PathBuf, Error> {
    let base = if let Some(dir) = std::env::var_os("KGRAFT_CACHE_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("kgraft")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".cache").join("kgraft")
    } else {
        return Err(Error::new("no cache directory: set KGRAFT_CACHE_DIR or HOME"));
    };
    let dir = base.join("linux");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Writes `contents` to `path` unless the file already holds exactly that, so that tools
/// that compare times (cargo, make) see an unchanged input as unchanged.
fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), Error> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(path, contents)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

/// Runs `cmd`, returning its standard output, or an error holding its output.
fn run(cmd: &mut std::process::Command, what: &str) -> Result<String, Error> {
    let out = cmd.output().map_err(|e| {
        Error::new(format!("cannot run {what} ({:?}): {e}", cmd.get_program()))
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(format!("{what} failed ({})", out.status))
            .detail(format!("{stdout}{stderr}")));
    }
    Ok(stdout)
}
