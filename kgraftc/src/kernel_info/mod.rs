//! Reading the target kernel: its BTF, its symbols, its modules, cached per kernel image.
//!
//! The BTF of vmlinux comes from, in order: `--vmlinux FILE` (an ELF with a `.BTF` section, or a
//! raw BTF file), `/sys/kernel/btf/vmlinux` when the running kernel is the release of `--kdir`,
//! or the kernel image `/boot/vmlinuz-R`, decompressed. A module's split BTF and its symbols come
//! from its `.ko` (under `/lib/modules/R`, or given with `--module FILE.ko`). What was read of
//! vmlinux is cached under the user's cache directory, keyed by the image's path, size and time,
//! so a check against a known kernel reads one file.

mod btf;
mod image;
mod inlined;
mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kgraft_lang::kernel::{Kernel, Symbol};

use crate::Failure;

/// The options that name the target kernel.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct KernelArgs {
    /// The kernel build directory of the target (`/lib/modules/R/build`): names the release
    /// whose BTF, symbols and modules the patch is checked against. `check`, `build` and
    /// `package` take it more than once, and as a quoted glob (`'target/kernels/*/build'`): one
    /// target each.
    #[arg(long = "kdir", value_name = "DIR")]
    pub(crate) kdirs: Vec<PathBuf>,
    /// A vmlinux with BTF (and, when it has them, symbols and fentry sites), instead of the
    /// kernel image of the release; also a raw BTF file.
    #[arg(long)]
    pub(crate) vmlinux: Option<PathBuf>,
    /// A module's `.ko` that is not installed under `/lib/modules/R` (repeatable).
    #[arg(long = "module", value_name = "FILE.ko")]
    pub(crate) modules: Vec<PathBuf>,
    /// Do not boot a kernel image under qemu to learn its symbols and fentry sites (the checks
    /// then rely on its BTF alone).
    #[arg(long)]
    pub(crate) no_probe: bool,
    /// A vmlinux with DWARF (Debian: the `linux-image-R-amd64-dbg` package's): warns of every
    /// function into which a replaced function was inlined, since those callers keep the old code.
    #[arg(long, value_name = "VMLINUX")]
    pub(crate) debuginfo: Option<PathBuf>,
}

impl KernelArgs {
    /// Whether a target kernel was named.
    pub(crate) fn given(&self) -> bool {
        !self.kdirs.is_empty() || self.vmlinux.is_some()
    }

    /// The one build directory named (commands for several kernels ask [`Self::single`] first).
    pub(crate) fn kdir(&self) -> Option<&Path> {
        self.kdirs.first().map(PathBuf::as_path)
    }

    /// These arguments for the build directory `kdir` alone.
    pub(crate) fn with_kdir(&self, kdir: &Path) -> KernelArgs {
        KernelArgs { kdirs: vec![kdir.to_path_buf()], ..self.clone() }
    }

    /// Refuses more than one `--kdir`, or a glob, for `command`, which acts on one kernel.
    pub(crate) fn single(&self, command: &str) -> Result<(), Failure> {
        if self.kdirs.len() > 1 || self.kdirs.iter().any(|k| crate::fleet::is_glob(k)) {
            return Err(Failure::Fatal(format!(
                "`kgraftc {command}` acts on one kernel: give one --kdir (`kgraftc check`, `build` and `package` \
                 take several)"
            )));
        }
        Ok(())
    }
}

/// Bumped whenever the cached form of [`Kernel`] changes, or what a reading puts in it (3: the
/// fentry sites of a linked vmlinux, which the linker script puts inside the init data; 4: each
/// object's own type ids).
const CACHE_FORMAT: u32 = 5;

/// What vmlinux's reading leaves in the cache: the model, and beside it in a file of its own
/// the raw BTF, which a module's split BTF needs as its base (read only then).
#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    kernel: Kernel,
    #[serde(skip)]
    btf: Vec<u8>,
    /// Whether the image has no symbol table to be found (raw BTF, or the probe could not run).
    probe_failed: bool,
    /// Why the probe failed, when it did.
    probe_error: String,
}

/// Reads the target kernel for a patch that replaces `targets` (object, function).
pub(crate) fn load(args: &KernelArgs, targets: &[(String, String)]) -> Result<Kernel, Failure> {
    let modules: Vec<String> = targets.iter().filter(|(o, _)| o != "vmlinux").map(|(o, _)| o.clone()).collect();
    let start = Instant::now();
    let release = match args.kdir() {
        Some(kdir) => Some(crate::build_linux::release_of(kdir)?),
        None => None,
    };
    let timing = std::env::var_os("KGRAFT_TIMING").is_some();
    let lap = |what: &str| {
        if timing {
            eprintln!("  {what}: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
        }
    };
    let (mut kernel, raw_btf) = load_vmlinux(args, release.as_deref())?;
    let mut raw_btf = Some(raw_btf);
    lap("vmlinux read");
    kernel.release = release.clone().unwrap_or_else(|| kernel.release.clone());
    // The release's modules are listed only for a patch that names one.
    let installed = match release.as_deref() {
        Some(release) if !modules.is_empty() => {
            installed_modules(&crate::linux::kdir::home(args.kdir(), release).modules)
        }
        _ => BTreeMap::new(),
    };
    lap("modules listed");
    if (release.is_some() && !modules.is_empty()) || !args.modules.is_empty() {
        let mut names: BTreeSet<String> = installed.keys().cloned().collect();
        names.extend(args.modules.iter().filter_map(|p| module_name(p)));
        kernel.modules = Some(names);
    }
    let mut wanted: Vec<String> = modules.iter().map(|m| m.replace('-', "_")).collect();
    wanted.sort();
    wanted.dedup();
    let mut base: Option<btf_rs::Btf> = None;
    for name in wanted {
        let path = args
            .modules
            .iter()
            .find(|p| module_name(p).as_deref() == Some(name.as_str()))
            .cloned()
            .or_else(|| installed.get(&name).cloned());
        let Some(path) = path else { continue };
        let data = std::fs::read(&path).map_err(|e| Failure::io(format!("cannot read `{}`", path.display()), e))?;
        let info = image::read_elf(&data).map_err(|e| Failure::Fatal(format!("`{}`: {e}", path.display())))?;
        let origin = path.display().to_string();
        let mut object = match &info.btf {
            Some(split) => {
                if base.is_none() {
                    base = Some(
                        btf_rs::Btf::from_bytes(&raw_btf.take().map(RawBtf::bytes).transpose()?.unwrap_or_default())
                            .map_err(|e| Failure::Fatal(format!("cannot parse vmlinux's BTF again: {e}")))?,
                    );
                }
                let Some(base) = base.as_ref() else { continue };
                let btf = btf_rs::Btf::from_split_bytes(split, base)
                    .map_err(|e| Failure::Fatal(format!("`{}`: corrupt BTF: {e}", path.display())))?;
                let base_len = base.base().type_id_range().1 + 1;
                btf::append(&btf, &mut kernel, base_len, &origin).map_err(Failure::Fatal)?
            }
            None => kgraft_lang::kernel::Object { origin, ..Default::default() },
        };
        object.symbols = info.symbols;
        object.kallsyms = info.order;
        kernel.objects.insert(name, object);
    }
    lap("modules read");
    if let Some(path) = &args.debuginfo {
        let wanted = targets.iter().filter(|(o, _)| o == "vmlinux").map(|(_, f)| f.clone()).collect();
        let data = std::fs::read(path).map_err(|e| Failure::io(format!("cannot read `{}`", path.display()), e))?;
        check_release(path, image::banner_release(&data).as_ref(), release.as_deref())?;
        eprintln!("   Reading the DWARF of {} for inlined copies", path.display());
        let found =
            inlined::callers(&data, &wanted).map_err(|e| Failure::Fatal(format!("`{}`: {e}", path.display())))?;
        if let Some(vmlinux) = kernel.objects.get_mut("vmlinux") {
            vmlinux.inlined = found;
        }
        lap("debug information read");
    }
    kernel.index();
    if timing {
        eprintln!("kernel description read in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(kernel)
}

/// The raw BTF of the target's vmlinux.
pub(crate) fn vmlinux_btf(args: &KernelArgs) -> Result<Vec<u8>, Failure> {
    let release = match args.kdir() {
        Some(kdir) => Some(crate::build_linux::release_of(kdir)?),
        None => None,
    };
    load_vmlinux(args, release.as_deref())?.1.bytes()
}

/// The name a module's file gives it, spelled as the kernel does.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    Some(file.strip_suffix(".ko").unwrap_or(file).replace('-', "_"))
}

/// Every `.ko` under `root` (a release's modules: `/lib/modules/R`), by module name.
fn installed_modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                // `build` and `source` point into the headers, which hold no modules.
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "ko") => {
                    if let Some(name) = module_name(&path) {
                        out.entry(name).or_insert(path);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// vmlinux's raw BTF, read from the cache only when a module needs it as its base.
enum RawBtf {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl RawBtf {
    fn bytes(self) -> Result<Vec<u8>, Failure> {
        match self {
            RawBtf::Bytes(b) => Ok(b),
            RawBtf::File(path) => {
                std::fs::read(&path).map_err(|e| Failure::io(format!("cannot read the cached `{}`", path.display()), e))
            }
        }
    }
}

/// Where vmlinux's BTF comes from.
enum Source {
    /// A file given or found: an ELF, a bzImage or raw BTF.
    File(PathBuf),
    /// The running kernel's `/sys/kernel/btf/vmlinux`, with `/proc/kallsyms`.
    Running,
}

fn running_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned())
}

/// Reads vmlinux, from the cache when it holds this image; returns the model and the raw BTF.
fn load_vmlinux(args: &KernelArgs, release: Option<&str>) -> Result<(Kernel, RawBtf), Failure> {
    let source = match (&args.vmlinux, release) {
        (Some(path), _) => Source::File(path.clone()),
        (None, Some(r))
            if running_release().as_deref() == Some(r) && Path::new("/sys/kernel/btf/vmlinux").is_file() =>
        {
            Source::Running
        }
        (None, Some(r)) => {
            let image = crate::linux::kdir::home(args.kdir(), r).image;
            if !image.is_file() {
                return Err(Failure::Fatal(format!(
                    "no BTF for {r}: {} does not exist and {r} is not the running kernel\n\
                     help: install the kernel image of that release, or give a vmlinux with --vmlinux FILE",
                    image.display()
                )));
            }
            Source::File(image)
        }
        (None, None) => return Err(Failure::Fatal("no target kernel: give --kdir DIR or --vmlinux FILE".into())),
    };
    match source {
        Source::Running => {
            let btf = std::fs::read("/sys/kernel/btf/vmlinux")
                .map_err(|e| Failure::io("cannot read /sys/kernel/btf/vmlinux", e))?;
            let mut kernel = from_btf(&btf, "/sys/kernel/btf/vmlinux")?;
            if let Some(vmlinux) = kernel.objects.get_mut("vmlinux")
                && let Some((symbols, order)) = kallsyms()
            {
                vmlinux.symbols = Some(symbols);
                vmlinux.kallsyms = order;
            }
            Ok((kernel, RawBtf::Bytes(btf)))
        }
        Source::File(path) => {
            let meta =
                std::fs::metadata(&path).map_err(|e| Failure::io(format!("cannot read `{}`", path.display()), e))?;
            let cache = cache_path(&path, &meta);
            // A description read without the probe's symbols is not used when probing is allowed.
            let complete = |c: &Cached| {
                args.no_probe || c.kernel.objects.get("vmlinux").is_some_and(|v| v.symbols.is_some()) || c.probe_failed
            };
            if let Some(cached) = cache.as_deref().and_then(read_cache).filter(complete) {
                check_release(&path, Some(&cached.kernel.release), release)?;
                if cached.probe_failed && !args.no_probe {
                    // Said each time, not only the first: the checks are weaker for it.
                    eprintln!(
                        "warning: the symbols and fentry sites of {} are unknown: the probe failed when this kernel was \
                         first read{}\nnote: the checks rely on its BTF alone; remove {} to probe it again",
                        cached.kernel.release,
                        if cached.probe_error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", cached.probe_error)
                        },
                        cache.as_deref().map_or_else(String::new, |c| c.display().to_string())
                    );
                }
                let btf = cache
                    .as_deref()
                    .map(|c| RawBtf::File(c.with_extension("btf")))
                    .unwrap_or(RawBtf::Bytes(Vec::new()));
                return Ok((cached.kernel, btf));
            }
            let data = std::fs::read(&path).map_err(|e| Failure::io(format!("cannot read `{}`", path.display()), e))?;
            let bad = |e: String| Failure::Fatal(format!("`{}`: {e}", path.display()));
            // Raw BTF never has symbols, and not probing was asked for: neither is a failure.
            let no_symbols_expected = data.starts_with(&BTF_MAGIC_BYTES) || args.no_probe;
            let (btf, found_release, symbols, probe_error) = if data.starts_with(&BTF_MAGIC_BYTES) {
                (data, None, None, String::new())
            } else {
                let data_was_elf = data.starts_with(b"\x7fELF");
                let elf = if data_was_elf {
                    data
                } else {
                    eprintln!("   Reading the BTF of {} (decompressing the image, a few seconds once)", path.display());
                    image::decompress_bzimage(&data).map_err(bad)?
                };
                let info = image::read_elf(&elf).map_err(bad)?;
                let bzimage = !data_was_elf;
                let btf = info.btf.ok_or_else(|| {
                    Failure::Fatal(format!(
                        "`{}` has no .BTF section: the kernel was built without CONFIG_DEBUG_INFO_BTF\n\
                         help: kernel types stay opaque without BTF; build without --kdir, or give a vmlinux with BTF",
                        path.display()
                    ))
                })?;
                // A compressed image has no symbol table: ask the kernel itself.
                let mut probe_error = String::new();
                let symbols = match info.symbols {
                    Some(symbols) => Some((symbols, info.order)),
                    None if bzimage && !args.no_probe => {
                        let release = info.release.as_deref().or(release).unwrap_or("the kernel");
                        match probe::probe(&path, release) {
                            Ok(probed) => Some(probed),
                            Err(e) => {
                                eprintln!(
                                    "warning: the symbols and fentry sites of {release} are unknown: {e}\n\
                                     note: the checks rely on its BTF alone, which lists functions without fentry sites too"
                                );
                                probe_error = e.lines().next().unwrap_or_default().to_owned();
                                None
                            }
                        }
                    }
                    None => None,
                };
                (btf, info.release, symbols, probe_error)
            };
            check_release(&path, found_release.as_ref(), release)?;
            let mut kernel = from_btf(&btf, &path.display().to_string())?;
            // A kernel names its release in its banner; another image (the user-mode host) is
            // named by its file.
            kernel.release = found_release
                .unwrap_or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            if let Some(vmlinux) = kernel.objects.get_mut("vmlinux")
                && let Some((symbols, order)) = symbols
            {
                vmlinux.symbols = Some(symbols);
                vmlinux.kallsyms = order;
            }
            let probe_failed =
                !no_symbols_expected && kernel.objects.get("vmlinux").is_some_and(|v| v.symbols.is_none());
            let cached = Cached { kernel, btf, probe_failed, probe_error };
            if let Some(cache) = &cache {
                write_cache(cache, &cached);
            }
            Ok((cached.kernel, RawBtf::Bytes(cached.btf)))
        }
    }
}

const BTF_MAGIC_BYTES: [u8; 2] = image::BTF_MAGIC;

fn check_release(path: &Path, found: Option<&String>, wanted: Option<&str>) -> Result<(), Failure> {
    match (found, wanted) {
        (Some(found), Some(wanted)) if !found.is_empty() && found != wanted => Err(Failure::Fatal(format!(
            "`{}` is the kernel {found}, but --kdir is for {wanted}\nhelp: give the vmlinux of {wanted}, or the build directory of {found}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

fn from_btf(bytes: &[u8], origin: &str) -> Result<Kernel, Failure> {
    let btf = btf_rs::Btf::from_bytes(bytes).map_err(|e| Failure::Fatal(format!("`{origin}`: corrupt BTF: {e}")))?;
    let mut kernel = Kernel::default();
    let object = btf::append(&btf, &mut kernel, 0, origin).map_err(Failure::Fatal)?;
    kernel.objects.insert("vmlinux".into(), object);
    Ok(kernel)
}

/// The running kernel's text symbols, and which of them ftrace can trace, with vmlinux's
/// symbol names in kallsyms order; `None` unless both lists are readable.
fn kallsyms() -> Option<probe::Probed> {
    let all = std::fs::read_to_string("/proc/kallsyms").ok()?;
    let traced = std::fs::read_to_string("/sys/kernel/tracing/available_filter_functions").ok()?;
    let mut out: BTreeMap<String, Symbol> = BTreeMap::new();
    let mut order = Vec::new();
    for line in all.lines() {
        let mut it = line.split_whitespace();
        let (_, kind, name) = (it.next(), it.next()?, it.next()?);
        if it.next().is_some() {
            continue;
        }
        if matches!(kind, "t" | "T") {
            out.entry(name.to_owned()).or_default().count += 1;
        }
        order.push(name.to_owned());
    }
    for line in traced.lines() {
        let mut it = line.split_whitespace();
        if let (Some(name), None) = (it.next(), it.next())
            && let Some(s) = out.get_mut(name)
        {
            s.traceable += 1;
        }
    }
    Some((out, order))
}

fn cache_dir() -> Option<PathBuf> {
    match crate::cache::dir("kernels") {
        Ok(dir) => Some(dir),
        Err(e) => {
            // Without a cache of its own the kernel is read again each time, which is slower,
            // not wrong.
            eprintln!("warning: {e}");
            None
        }
    }
}

/// The cache file of an image: its absolute path, size, modification and change times, device
/// and inode, hashed.
fn cache_path(path: &Path, meta: &std::fs::Metadata) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(path).ok()?.hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok()?.hash(&mut h);
    // A file rewritten with its size and modification time put back still gets a new change
    // time (no one can set it), and a file put in its place a new inode.
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()).hash(&mut h);
    }
    CACHE_FORMAT.hash(&mut h);
    Some(cache_dir()?.join(format!("{:016x}.kernel", h.finish())))
}

fn read_cache(path: &Path) -> Option<Cached> {
    let bytes = std::fs::read(path).ok()?;
    let cached: Cached = postcard::from_bytes(&bytes).ok()?;
    path.with_extension("btf").is_file().then_some(cached)
}

/// Writes the cache through a private temporary file renamed into place, so a reader never
/// sees half a file; a cache that cannot be written only costs time.
fn write_cache(path: &Path, cached: &Cached) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // The raw BTF first: a model in the cache always has its BTF beside it.
    if !write_atomically(&path.with_extension("btf"), &cached.btf) {
        return;
    }
    let Ok(bytes) = postcard::to_stdvec(cached) else { return };
    write_atomically(path, &bytes);
}

/// Writes through a private temporary file renamed into place; false if it could not.
fn write_atomically(path: &Path, bytes: &[u8]) -> bool {
    let Some(dir) = path.parent() else { return false };
    let tmp = dir.join(format!(".{}.{}", std::process::id(), path.file_name().and_then(|n| n.to_str()).unwrap_or("k")));
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes));
    if written.is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return false;
    }
    true
}
