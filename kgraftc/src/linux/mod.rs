//! The Linux kernel module build, step by step (see `build_linux.rs`).

pub(crate) mod cargo;
mod contract;
pub(crate) mod kbuild;
pub(crate) mod kdir;
mod klp;
mod object;
mod relocs;
pub(crate) mod sympos;
mod toolchain;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A failed build step: what went wrong, and what to do about it.
#[derive(Debug)]
pub(crate) struct Error {
    /// One line saying what failed.
    pub(crate) message: String,
    /// Further output (a tool's own messages), shown after the message.
    pub(crate) detail: Option<String>,
    /// What to do about it.
    pub(crate) help: Option<String>,
    /// Whether the failure was already reported as diagnostics on the `.kgp` source (gcc's
    /// errors in a C body).
    pub(crate) reported: bool,
    /// The functions the module calls that the target does not have, for diagnostics at their
    /// use in the `.kgp`.
    pub(crate) missing: Vec<String>,
    /// Whether the patch is at fault (a kernel symbol its C names that the target cannot tell
    /// apart), not the machine or the tools: the command's status is then 1.
    pub(crate) of_patch: bool,
}

impl Error {
    /// Returns an error with only a message.
    fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            detail: None,
            help: None,
            reported: false,
            missing: Vec::new(),
            of_patch: false,
        }
    }

    /// Marks the error as the patch's fault.
    fn of_patch(mut self) -> Error {
        self.of_patch = true;
        self
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

/// The patch's C files, compiled by kbuild into the module.
pub(crate) struct CFile<'a> {
    /// Its units (`Lowered::c_units`), each compiled apart.
    pub(crate) units: &'a [kgraft_lang::CUnit],
    /// A kernel source tree for its include path (`--ksrc`).
    pub(crate) ksrc: Option<&'a Path>,
    /// Reports gcc's messages about the `.kgp` file in kbuild's output; returns whether any was
    /// an error.
    pub(crate) report: &'a dyn Fn(&str) -> bool,
}

/// What the first step found: the kernel, the compiler, the cache.
pub(crate) struct Prepared {
    kdir: kdir::Kdir,
    toolchain: toolchain::Toolchain,
    cache: PathBuf,
    progress: Progress,
    /// The symbols the patch takes from modules (`extern` in a `module` block), with the module.
    pub(crate) module_symbols: Vec<(String, String)>,
    /// What applies the patch in the kernel.
    pub(crate) engine: crate::Engine,
    /// The functions of the target's vmlinux, when its symbols were read (the probe): a call to
    /// a name outside them could not be resolved at load.
    pub(crate) vmlinux_functions: Option<std::collections::BTreeSet<String>>,
    /// The symbols of each module the patch replaces functions of, when they were read.
    pub(crate) module_symbol_names: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// What the kgraft engine's C is told of the target (`KG_DIRECT_MULTI`, ...).
    pub(crate) engine_defines: Vec<String>,
    /// Each object's symbol names in kallsyms order, where they were read (for `sympos`).
    pub(crate) kallsyms: std::collections::BTreeMap<String, Vec<String>>,
    /// Held for the whole build: two builds sharing the cache would overwrite each other's
    /// crate and kbuild directories.
    _cache_lock: crate::lock::Lock,
}

/// Finds the kernel build directory and checks the patch's `kernel` glob against its release,
/// then finds the compiler; nothing is compiled before these checks pass.
pub(crate) fn prepare(kdir: Option<&Path>, kernel_glob: Option<&str>) -> Result<Prepared, Error> {
    let mut progress = Progress { on: true, step: 0, total: 6, start: Instant::now() };
    progress.step("checking the kernel build directory");
    let kdir = kdir::find(kdir)?;
    kdir::check_glob(kernel_glob, &kdir.release)?;
    let toolchain = toolchain::find()?;
    let cache = cache_dir()?;
    let _cache_lock = lock_cache(&cache)?;
    Ok(Prepared {
        kdir,
        toolchain,
        cache,
        progress,
        module_symbols: Vec::new(),
        engine: crate::Engine::Klp,
        vmlinux_functions: None,
        module_symbol_names: std::collections::BTreeMap::new(),
        kallsyms: std::collections::BTreeMap::new(),
        engine_defines: Vec::new(),
        _cache_lock,
    })
}

/// Takes the cache's lock, waiting (and saying for whom) while another build holds it.
fn lock_cache(cache: &Path) -> Result<crate::lock::Lock, Error> {
    crate::lock::take(&cache.join("lock"), &format!("in `{}`", cache.display())).map_err(Error::new)
}

impl Prepared {
    /// The kernel build directory found.
    pub(crate) fn kdir_path(&self) -> &Path {
        &self.kdir.path
    }

    /// Returns the directory the lowered crate `crate_name` is written to.
    pub(crate) fn crate_dir(&self, crate_name: &str) -> PathBuf {
        self.cache.join("crates").join(crate_name)
    }

    /// Returns the cargo command (without the message-format arguments) that builds the crate
    /// written in `crate_dir`.
    pub(crate) fn cargo_command(&mut self, crate_dir: &Path) -> Result<std::process::Command, Error> {
        let target_dir = self.cache.join("target");
        self.progress.step(if cargo::core_is_built(&target_dir) {
            "compiling the patch crate"
        } else {
            "compiling the patch crate (the first build also compiles `core`, about a minute)"
        });
        cargo::command(crate_dir, &target_dir, &self.toolchain)
    }

    /// Turns the built archive into the module `name` and writes it to `out` (default:
    /// `NAME.ko` in the current directory).
    pub(crate) fn finish(
        mut self,
        name: &str,
        archive: &Path,
        crate_name: &str,
        out: Option<&Path>,
        c: Option<CFile<'_>>,
    ) -> Result<PathBuf, Error> {
        let kdir = &self.kdir;
        let kgraft = self.engine == crate::Engine::Kgraft;
        self.progress.step("checking the object");
        let build_dir = self.cache.join("kbuild").join(&kdir.release).join(name);
        let obj = build_dir.join(format!("{name}_rust.o_shipped"));
        object::extract(archive, crate_name, &obj)?;
        object::check(&obj)?;
        let symvers = kdir::symvers(&kdir.path)?;
        let mut unexported: Vec<String> = object::undefined_symbols(&obj)?
            .into_iter()
            // The C bodies are defined by the C file, linked into the same module.
            .filter(|s| s != "__this_module" && !symvers.contains(s) && !s.starts_with("__kgraft_c_"))
            // The kgraft engine's C half, linked into the same module.
            .filter(|s| !(kgraft && s.starts_with("kg_")))
            // The layout file's values and helpers, linked into every module.
            .filter(|s| !kgraft_rt::layout::target_symbols().any(|t| t == s))
            .collect();
        // The patch's Rust code is compiled with retpolines and return thunks, as Debian builds
        // its kernels, and calls the kernel's thunks, which such a kernel exports. A kernel built
        // without them has none: the module could not even return from its init.
        if let Some(thunk) =
            unexported.iter().find(|s| s.starts_with("__x86_indirect_thunk") || *s == "__x86_return_thunk")
        {
            return Err(Error::new(format!(
                "{} does not export `{thunk}`, which the patch's compiled code calls",
                kdir.release
            ))
            .help("the patch is compiled for a kernel built with CONFIG_RETPOLINE and CONFIG_RETHUNK; build against such a kernel"));
        }

        self.progress.step("linking through kbuild");
        let unresolved = !unexported.is_empty() || c.is_some();
        let engine = kgraft.then(|| kbuild::KgraftEngine { defines: self.engine_defines.clone() });
        let engine = engine.as_ref();
        let linked = match kbuild::link(name, &build_dir, &kdir.path, unresolved, c.as_ref(), engine) {
            Ok((linked, output)) => {
                if let Some(c) = &c {
                    (c.report)(&output);
                }
                linked
            }
            Err(e) => {
                let reported = c.as_ref().is_some_and(|c| (c.report)(e.detail.as_deref().unwrap_or("")));
                return Err(Error { reported, ..e });
            }
        };
        if c.is_some() {
            // The C object's references count too: take them from the linked module.
            unexported = object::undefined_symbols(&linked)?
                .into_iter()
                .filter(|s| s != "__this_module" && !symvers.contains(s))
                .collect();
        }
        // What a module's C unit leaves undefined is that module's (its statics, declared
        // `extern`), where the module has the symbol, or vmlinux lacks it.
        if let Some(c) = &c {
            for (index, unit) in c.units.iter().enumerate() {
                let Some(module) = &unit.module else { continue };
                let object = build_dir.join(format!("{}.o", crate::cbuild::file_stem(name, index)));
                for sym in object::undefined_symbols(&object)? {
                    let theirs = match (self.module_symbol_names.get(module), &self.vmlinux_functions) {
                        (Some(known), _) => known.contains(&sym),
                        (None, Some(vmlinux)) => !vmlinux.contains(&sym),
                        (None, None) => false,
                    };
                    if theirs && unexported.contains(&sym) && !self.module_symbols.iter().any(|(s, _)| *s == sym) {
                        self.module_symbols.push((sym, module.clone()));
                    }
                }
            }
        }
        // A function called that vmlinux lacks (a static helper the kernel's compiler inlined
        // everywhere, declared instead of copied) would fail only at load: refuse it here.
        if let Some(known) = &self.vmlinux_functions {
            let called = object::called_symbols(&linked)?;
            let missing: Vec<&str> = unexported
                .iter()
                .filter(|s| called.contains(*s) && !known.contains(*s))
                .filter(|s| !self.module_symbols.iter().any(|(m, _)| m == *s))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let names = missing.iter().map(|m| m.to_string()).collect();
                return Err(Error {
                    missing: names,
                    ..Error::new(format!(
                        "the patch calls {}, which {} has no function of that name",
                        missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                        kdir.release
                    ))
                    .help(
                        "a static function the kernel's compiler inlined everywhere has no symbol: copy its definition \
                     into the `c { }` item (`kgraftc from-diff` does this); otherwise check the name",
                    )
                });
            }
        }
        let positions = self.positions(c.as_ref(), &build_dir, name, &unexported)?;
        if let Some(map) = kdir::system_map(&kdir.release) {
            for sym in unexported.iter().filter(|s| !map.contains(*s)) {
                eprintln!("warning: `{sym}` is not a symbol of {}: the module will fail to load", kdir.release);
            }
        }

        let ko = build_dir.join(format!("{name}.klp.ko"));
        if unexported.is_empty() {
            self.progress.step("no unexported symbols to resolve");
        } else if kgraft {
            // Said by name: the engine resolves these itself (vmlinux's as the patch loads, a
            // module's as that module comes), and refuses the patch if one is missing.
            self.progress.step(&format!(
                "writing the kgraft engine's relocation table, resolved by the engine at load: {}",
                unexported.join(", ")
            ));
        } else {
            // Said by name: the livepatch core resolves these when the patch is enabled, and
            // refuses the patch if one is missing from the running kernel.
            self.progress.step(&format!(
                "writing livepatch relocations, resolved by the livepatch core at load: {}",
                unexported.join(", ")
            ));
        }
        if kgraft {
            relocs::rewrite(&linked, &ko, &unexported, &self.module_symbols, &positions)?;
        } else {
            klp::convert(&linked, &ko, &unexported, &self.module_symbols, &positions)?;
        }

        self.progress.step("verifying with modinfo");
        kbuild::verify(&ko, name, &kdir.release, engine)?;

        let out = match out {
            Some(out) => out.to_path_buf(),
            None => PathBuf::from(format!("{name}.ko")),
        };
        crate::output::install(&ko, &out, &[]).map_err(Error::new)?;
        self.progress.done(&out);
        Ok(out)
    }
}

impl Prepared {
    /// The positions the patch's C gives its kernel symbols (`KGRAFT_SYMPOS`, bound to this
    /// target where they name a neighbour), checked against the target's kallsyms; a name the
    /// target has more than once needs one.
    fn positions(
        &self,
        c: Option<&CFile<'_>>,
        build_dir: &Path,
        name: &str,
        unexported: &[String],
    ) -> Result<std::collections::BTreeMap<String, u32>, Error> {
        let mut given = std::collections::BTreeMap::new();
        for index in 0..c.map_or(0, |c| c.units.len()) {
            let object = build_dir.join(format!("{}.o", crate::cbuild::file_stem(name, index)));
            for (symbol, pos) in object::sympos_records(&object)? {
                if given.insert(symbol.clone(), pos.clone()).is_some_and(|old| old != pos) {
                    return Err(Error::new(format!("two C units give `{symbol}` different positions")));
                }
            }
        }
        let object_of =
            |symbol: &str| self.module_symbols.iter().find(|(s, _)| s == symbol).map_or("vmlinux", |(_, o)| o.as_str());
        let no_order = Vec::new();
        let mut positions = std::collections::BTreeMap::new();
        for (symbol, pos) in &given {
            if !unexported.contains(symbol) {
                return Err(Error::new(format!(
                    "KGRAFT_SYMPOS(\"{symbol}\", {pos}) names a symbol the patch does not take from the kernel"
                ))
                .help("a position is for a kernel symbol the patch's C declares and uses; remove the line")
                .of_patch());
            }
            let object = object_of(symbol);
            let order = self.kallsyms.get(object).unwrap_or(&no_order);
            if order.is_empty() && matches!(pos, kgraft_lang::sympos::Position::Near(_)) {
                return Err(Error::new(format!(
                    "KGRAFT_SYMPOS_NEAR for `{symbol}`: the symbols of {object} in {} were not read",
                    self.kdir.release
                ))
                .of_patch());
            }
            let n = sympos::bind(order, symbol, pos).map_err(|why| {
                Error::new(format!("no `{symbol}` of {object} in {} is the one the patch means", self.kdir.release))
                    .detail(why)
                    .help("name another neighbour that is unique in kallsyms, or give the position as a number")
                    .of_patch()
            })?;
            let count = sympos::count(order, symbol);
            if !order.is_empty() && n as usize > count {
                return Err(Error::new(format!(
                    "KGRAFT_SYMPOS(\"{symbol}\", {n}): {object} of {} has {count} symbol(s) of that name",
                    self.kdir.release
                ))
                .of_patch());
            }
            if n > 0 {
                positions.insert(symbol.clone(), n);
            }
        }
        for symbol in unexported.iter().filter(|s| !given.contains_key(*s)) {
            let object = object_of(symbol);
            let Some(order) = self.kallsyms.get(object) else { continue };
            let count = sympos::count(order, symbol);
            if count > 1 {
                return Err(Error::new(format!(
                    "`{symbol}` names {count} symbols of {object} in {}: the kernel cannot tell which the patch means",
                    self.kdir.release
                ))
                .help(format!(
                    "say which in the patch's C with `KGRAFT_SYMPOS_NEAR(\"{symbol}\", \"NEIGHBOUR\");` (the one \
                     nearest a unique symbol) or `KGRAFT_SYMPOS(\"{symbol}\", N);` (N counted from 1 in the order of \
                     /proc/kallsyms); `kgraftc from-diff` finds the neighbour for the file it patches"
                ))
                .of_patch());
            }
        }
        Ok(positions)
    }
}

/// Returns the cache directory of kernel builds, creating it (see `crate::cache`).
pub(crate) fn cache_dir() -> Result<PathBuf, Error> {
    crate::cache::dir("linux").map_err(Error::new)
}

/// Writes `contents` to `path` unless the file already holds exactly that (see
/// `build::write_if_changed`).
fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), Error> {
    crate::build::write_if_changed(path, contents).map_err(|e| Error::new(e.to_string()))
}

/// Runs `cmd`, returning its standard output, or an error holding its output.
fn run(cmd: &mut std::process::Command, what: &str) -> Result<String, Error> {
    let out = crate::process::output(cmd)
        .map_err(|e| Error::new(format!("cannot run {what} ({:?}): {e}", cmd.get_program())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(format!("{what} failed ({})", out.status)).detail(format!("{stdout}{stderr}")));
    }
    Ok(stdout)
}

/// Builds small relocatable x86_64 objects for the tests of the object checks and rewrites.
#[cfg(test)]
pub(crate) mod testobj {
    use object::write::{Object, Relocation, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };

    /// Returns an object whose `.text` holds `text`, with one relocation `(offset, r_type,
    /// symbol)` per entry against an undefined global symbol of that name.
    pub(crate) fn build(text: &[u8], relocs: &[(u64, u32, &str)]) -> Vec<u8> {
        build_with(text, relocs, &[], &[])
    }

    /// Returns the object of [`build`] with writable data sections `(name, bytes)` besides, and
    /// relocations `(section, offset, r_type, symbol)` (addend 0) in them.
    pub(crate) fn build_with(
        text: &[u8],
        relocs: &[(u64, u32, &str)],
        data: &[(&str, &[u8])],
        data_relocs: &[(&str, u64, u32, &str)],
    ) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let section = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(section, text, 16);
        obj.add_symbol(Symbol {
            name: b"patched".to_vec(),
            value: 0,
            size: text.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
        for &(offset, r_type, name) in relocs {
            let symbol = undefined(&mut obj, name);
            obj.add_relocation(
                section,
                Relocation { offset, symbol, addend: -4, flags: RelocationFlags::Elf { r_type } },
            )
            .expect("a valid relocation");
        }
        let mut sections = Vec::new();
        for &(name, bytes) in data {
            let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Data);
            obj.append_section_data(id, bytes, 8);
            sections.push((name, id));
        }
        for &(in_section, offset, r_type, name) in data_relocs {
            let section = sections.iter().find(|(n, _)| *n == in_section).expect("a data section of the list").1;
            let symbol = undefined(&mut obj, name);
            obj.add_relocation(
                section,
                Relocation { offset, symbol, addend: 0, flags: RelocationFlags::Elf { r_type } },
            )
            .expect("a valid relocation");
        }
        obj.write().expect("a writable object")
    }

    /// The symbol `name` of `obj`, added as an undefined global symbol the first time.
    fn undefined(obj: &mut Object<'_>, name: &str) -> object::write::SymbolId {
        obj.symbol_id(name.as_bytes()).unwrap_or_else(|| {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Undefined,
                flags: SymbolFlags::None,
            })
        })
    }
}
