//! `kgraftc build --target linux`: a lowered patch crate becomes a livepatch kernel module.
//!
//! The steps, each in its own module of [`crate::linux`]:
//!
//! 1. `kdir`: find the kernel build directory and its release, and check the patch's `kernel`
//!    glob against it before anything is compiled; `toolchain`: find a Rust compiler whose
//!    library source can build `core` for the kernel;
//! 2. `cargo`: write the crate into a cache directory and build it (through the shared
//!    `build::write_crate` and `build::run_cargo`, which reports rustc's errors at `.kgp`
//!    lines) as a `staticlib` for `x86_64-unknown-none` with the kernel's code model; the
//!    target directory is shared, so `core` is built once and an unchanged patch is not
//!    recompiled;
//! 3. `object`: take the crate's own object out of the archive and refuse what the module loader
//!    would reject (GOT and other unsupported relocations) or SIMD register use;
//! 4. `kbuild`: link the object through the kernel's own kbuild, next to a C file that asserts
//!    the layouts the runtime assumes against the kernel's headers, so modpost writes vermagic
//!    and symbol versions;
//! 5. `klp`: turn references to symbols the kernel does not export into livepatch relocations,
//!    which the livepatch core resolves when the module loads; with the kgraft engine, `relocs`
//!    moves them into the engine's own table instead, which the engine resolves itself;
//! 6. check the result with `modinfo` and copy it out.

use crate::linux;
use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// The release a kernel build directory builds modules for.
pub(crate) fn release_of(kdir: &std::path::Path) -> Result<String, Failure> {
    linux::kdir::find(Some(kdir))
        .map(|k| k.release)
        .map_err(|e| Failure::Fatal(e.to_string().trim_start_matches("error: ").to_owned()))
}

/// Builds the patch of `args` as a kernel module at `out` and returns the module's description
/// and the release its vermagic names (what `kgraftc test` boots and `kgraftc package` targets).
pub(crate) fn build_module(
    build: BuildArgs,
    out: &std::path::Path,
    ui: &Ui,
) -> Result<(crate::kernel_ctl::ModuleFile, String), Failure> {
    let build = BuildArgs { target: crate::Target::Linux, out: Some(out.to_path_buf()), ..build };
    run(&build, ui)?;
    let module = crate::kernel_ctl::module_file(out)?;
    let release = module
        .vermagic
        .as_deref()
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| Failure::Fatal(format!("the module {} has no vermagic", module.name)))?
        .to_owned();
    Ok((module, release))
}

/// Builds the patch as a Linux kernel module.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let fatal = |e: linux::Error| {
        if e.reported {
            Failure::Reported
        } else if e.of_patch {
            // The patch's fault, like a diagnostic: status 1.
            eprintln!("{e}");
            Failure::Reported
        } else {
            Failure::Fatal(e.to_string().trim_start_matches("error: ").to_owned())
        }
    };
    let checked = crate::load(&args.file, ui)?;
    if let Some(out) = &args.out {
        crate::output::refuse_input(out, &args.inputs()).map_err(Failure::Fatal)?;
    }
    let engine = match (args.engine, checked.engine()) {
        (Some(engine), _) => engine,
        (None, Some("kgraft")) => crate::Engine::Kgraft,
        (None, _) => crate::Engine::Klp,
    };
    let mut prepared = linux::prepare(args.kernel.kdir(), checked.kernel()).map_err(fatal)?;
    prepared.engine = engine;
    // The kernel checks always run for this target, against the build directory found.
    let mut target = args.kernel.clone();
    target.kdirs = vec![prepared.kdir_path().to_path_buf()];
    let kernel = crate::check_kernel(&checked, &target, ui)?;
    // What kgraft's own engine is told of the target, from its BTF.
    if engine == crate::Engine::Kgraft {
        prepared.engine_defines = engine_defines(kernel.as_ref())?;
    }
    let lowered = crate::lower(&checked, kernel.as_ref(), ui)?;
    prepared.module_symbols = lowered.module_symbols.clone();
    prepared.vmlinux_functions = kernel
        .as_ref()
        .and_then(|k| k.objects.get("vmlinux"))
        .and_then(|o| o.symbols.as_ref())
        .map(|s| s.keys().cloned().collect());
    prepared.module_symbol_names = kernel
        .as_ref()
        .map(|k| {
            k.objects
                .iter()
                .filter(|(name, _)| *name != "vmlinux")
                .filter_map(|(name, o)| Some((name.clone(), o.symbols.as_ref()?.keys().cloned().collect())))
                .collect()
        })
        .unwrap_or_default();
    prepared.kallsyms = kernel
        .as_ref()
        .map(|k| k.objects.iter().map(|(name, o)| (name.clone(), o.kallsyms.clone())).collect())
        .unwrap_or_default();
    let crate_name = crate::build::crate_name(&lowered);
    let crate_dir = prepared.crate_dir(&crate_name);
    let spec = match engine {
        crate::Engine::Klp => &linux::cargo::KERNEL,
        crate::Engine::Kgraft => &linux::cargo::KERNEL_KGRAFT,
    };
    crate::build::write_crate(&crate_dir, spec, &lowered)?;
    let cargo = prepared.cargo_command(&crate_dir).map_err(fatal)?;
    ui.progress(&format!("building `{}` with cargo", lowered.name));
    let built = crate::build::run_cargo(cargo, &crate_dir, &checked, &lowered, ui)?;
    let archive = built
        .files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "a"))
        .ok_or_else(|| Failure::Fatal(format!("cargo built no archive for `{crate_name}`")))?;
    let report = |output: &str| crate::cbuild::report(output, &checked, ui);
    // The source the C includes from, unpacked as far as it needs from a tarball.
    let tree = match (&args.ksrc, lowered.c_units.is_empty()) {
        (Some(ksrc), false) => {
            let cache = linux::cache_dir().map_err(fatal)?;
            let units: Vec<(Option<&str>, &str)> =
                lowered.c_units.iter().map(|u| (u.name.as_deref(), u.text.as_str())).collect();
            let tree = crate::fromdiff::ksrc::Tree::for_units(ksrc, &cache, prepared.kdir_path(), &units)
                .map_err(|e| Failure::Fatal(format!("--ksrc: {e}")))?;
            Some(tree)
        }
        _ => None,
    };
    let c = (!lowered.c_units.is_empty()).then(|| linux::CFile {
        units: &lowered.c_units,
        ksrc: tree.as_ref().map(|t| t.root.as_path()),
        report: &report,
    });
    let kdir = prepared.kdir_path().to_path_buf();
    let known: Vec<String> = prepared.vmlinux_functions.iter().flatten().cloned().collect();
    let out = prepared.finish(checked.name(), archive, &crate_name, args.out.as_deref(), c).map_err(|e| {
        if e.missing.is_empty() {
            return fatal(e);
        }
        let release = prepared_release(&kdir);
        ui.emit(&checked.source, &missing_functions(&checked.source, &e.missing, &known, &release));
        Failure::Reported
    })?;
    if let (Some(key), Some(cert)) = (&args.sign_key, &args.sign_cert) {
        // A module that should have been signed is not left behind unsigned.
        if let Err(e) = crate::sign::sign(&kdir, key, cert, &out) {
            let _ = std::fs::remove_file(&out);
            return Err(e);
        }
    }
    Ok(())
}

/// The defines that tell the kgraft engine's C what `kernel` offers where kernels differ:
/// `KG_DIRECT_MULTI` when ftrace's direct calls go through `register_ftrace_direct_multi` (Linux
/// 6.1 to 6.4; `register_ftrace_direct` of an ops after), `KG_KALLSYMS_MODULE` when a
/// `kallsyms_on_each_symbol` callback takes the symbol's module (before 6.3). Read from the
/// target's BTF; without it, the engine cannot be built safely.
fn engine_defines(kernel: Option<&kgraft_lang::kernel::Kernel>) -> Result<Vec<String>, Failure> {
    let Some((kernel, vmlinux)) = kernel.and_then(|k| Some((k, k.objects.get("vmlinux").filter(|o| o.has_btf)?)))
    else {
        return Err(Failure::Fatal(
            "the kgraft engine is built for what the target kernel offers, which its BTF tells: give the target \
             (--kdir with its image, or --vmlinux)"
                .into(),
        ));
    };
    let mut defines = Vec::new();
    match (
        vmlinux.functions.contains_key("register_ftrace_direct_multi"),
        vmlinux.functions.contains_key("register_ftrace_direct"),
    ) {
        (true, _) => defines.push("KG_DIRECT_MULTI".to_string()),
        (false, true) => {}
        (false, false) => {
            return Err(Failure::Fatal(format!(
                "the kgraft engine redirects functions with ftrace's direct calls, which {} does not have \
                 (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS): build its module with --engine klp",
                kernel.release
            )));
        }
    }
    // The callback is the first parameter: a pointer to a prototype of 3 or 4 parameters.
    let callback_params =
        vmlinux.functions.get("kallsyms_on_each_symbol").and_then(|ids| kernel.proto(*ids.first()?)).and_then(|p| {
            match kernel.ty(kernel.resolve(p.params.first()?.ty)) {
                kgraft_lang::kernel::Ty::Ptr(to) => kernel.proto(kernel.resolve(*to)).map(|cb| cb.params.len()),
                _ => None,
            }
        });
    match callback_params {
        Some(4) => defines.push("KG_KALLSYMS_MODULE".to_string()),
        Some(3) => {}
        other => {
            return Err(Failure::Fatal(format!(
                "the kgraft engine walks kallsyms with kallsyms_on_each_symbol, whose callback in {} {}: build its \
                 module with --engine klp",
                kernel.release,
                match other {
                    None => "its BTF does not describe".to_string(),
                    Some(n) => format!("takes {n} parameters, which the engine does not know"),
                }
            )));
        }
    }
    Ok(defines)
}

/// The release of the build directory `kdir`, for messages.
fn prepared_release(kdir: &std::path::Path) -> String {
    linux::kdir::find(Some(kdir)).map(|k| k.release).unwrap_or_else(|_| "the target".into())
}

/// One `E0048` per function the module calls that the target lacks: at the name's first use
/// in the `.kgp` (a C body, a `c { }` item or an `extern` block), with the kernel function of
/// the closest name.
fn missing_functions(
    source: &kgraft_lang::SourceFile,
    missing: &[String],
    known: &[String],
    release: &str,
) -> Vec<kgraft_lang::Diagnostic> {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let text = source.text.as_bytes();
    missing
        .iter()
        .map(|name| {
            let at = source.text.match_indices(name.as_str()).map(|(i, _)| i).find(|&i| {
                let before = i.checked_sub(1).and_then(|j| text.get(j)).is_some_and(|&b| ident(b));
                let after = text.get(i + name.len()).is_some_and(|&b| ident(b));
                !before && !after
            });
            let mut d = kgraft_lang::Diagnostic::error(
                kgraft_lang::build_codes::E0048,
                format!("`{name}` is not a function of {release}: the module could not be loaded"),
            );
            if let Some(at) = at {
                d = d.primary(kgraft_lang::Span::new(at, at + name.len()), "called here");
            }
            match kgraft_lang::closest(name, known.iter().map(String::as_str)) {
                Some(near) => d.help(format!("did you mean `{near}`?")),
                None => d.help(
                    "a static function the kernel's compiler inlined everywhere has no symbol: copy its definition \
                     into the `c { }` item (`kgraftc from-diff` does this; `kgraftc check --ksrc` tells which)",
                ),
            }
        })
        .collect()
}
