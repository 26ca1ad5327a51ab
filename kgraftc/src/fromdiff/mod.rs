//! `kgraftc from-diff`: from a kernel fix (a unified diff) to a reviewed, proved `.kgp`.
//!
//! The phases, each in a module of its own: `patchfile` reads the diff and applies it to the
//! target's source (`ksrc`); `tu` compiles each translation unit the diff touches, before and
//! after, as the target kernel compiles it; `objdiff` reads the two objects and `analyze`
//! compares them function by function to decide what the kernel must replace; `generate` writes
//! the `.kgp` from the fixed source (`csource` finds the functions and what they use); `proof`
//! compiles the patch's C and checks that each replacement is the fixed unit's code.
//! Nothing is written until every phase passed.

mod analyze;
mod csource;
mod generate;
mod kpatch;
pub(crate) mod ksrc;
mod objdiff;
mod patchfile;
mod proof;
pub(crate) mod review;
pub(crate) mod statics;
pub(crate) mod tu;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Failure;
use crate::render::Ui;

/// The arguments of `kgraftc from-diff`.
#[derive(clap::Args, Debug)]
pub(crate) struct FromDiffArgs {
    /// The fix: a unified diff, as `git diff`, `git format-patch` or `diff -Nupr` write it.
    pub(crate) diff: PathBuf,
    /// The target kernel's source: a directory, or Debian's `linux-source-*.tar.xz` (only what
    /// the fix touches is unpacked, once, into the cache).
    #[arg(long)]
    pub(crate) ksrc: PathBuf,
    /// The target kernel (`--kdir`, and `--module FILE.ko` for a module not installed).
    #[command(flatten)]
    pub(crate) kernel: crate::kernel_info::KernelArgs,
    /// A translation unit that a changed header reaches (a path in the source tree; repeatable).
    #[arg(long = "tu", value_name = "FILE.c")]
    pub(crate) tus: Vec<String>,
    /// Where to write the patch source.
    #[arg(short, long)]
    pub(crate) out: PathBuf,
    /// The patch's name (default: the output file's name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Goes on to build the module (the `.kgp`'s name with `.ko`, beside it).
    #[arg(long)]
    pub(crate) build: bool,
    /// What applies the patch in the kernel, for `--build`.
    #[arg(long, value_enum)]
    pub(crate) engine: Option<crate::Engine>,
    /// Goes on to `kgraftc test` with this script: boots the kernel under qemu, loads, runs it,
    /// unloads.
    #[arg(long, value_name = "SCRIPT")]
    pub(crate) test: Option<PathBuf>,
}

/// The largest diff read.
const MAX_DIFF: u64 = 16 << 20;

/// Prints a refusal as a diagnostic.
fn refuse(r: &analyze::Refusal) {
    eprintln!("error[{}]: {}\n  = help: {}", r.code, r.message, r.help);
}

/// A plain error of the input (exit status 1).
fn bad_input(message: impl std::fmt::Display) -> Failure {
    eprintln!("error: {message}");
    Failure::Reported
}

/// Runs `kgraftc from-diff`.
pub(crate) fn run(args: &FromDiffArgs, ui: &Ui) -> Result<(), Failure> {
    let start = Instant::now();
    // The diff.
    let bytes = {
        use std::io::Read;
        let file = std::fs::File::open(&args.diff)
            .map_err(|e| Failure::io(format!("cannot read `{}`", args.diff.display()), e))?;
        let mut bytes = Vec::new();
        file.take(MAX_DIFF + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::io(format!("cannot read `{}`", args.diff.display()), e))?;
        bytes
    };
    if bytes.len() as u64 > MAX_DIFF {
        return Err(bad_input(format!("{} is larger than 16 MiB: not a fix", args.diff.display())));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| bad_input(format!("{} is not UTF-8 text: not a unified diff", args.diff.display())))?;
    let patch = patchfile::parse(&text).map_err(|e| bad_input(format!("{}: {e}", args.diff.display())))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args.out.file_stem().and_then(|s| s.to_str()).unwrap_or("fix").replace(['-', '.'], "_"),
    };
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(Failure::Fatal(format!(
            "`{name}` is not a patch name (letters, digits and `_`): give --name NAME"
        )));
    }

    // The target and its source.
    let kdir = crate::linux::kdir::find(args.kernel.kdir()).map_err(|e| Failure::Fatal(e.to_string()))?;
    let cache = crate::linux::cache_dir().map_err(|e| Failure::Fatal(e.to_string()))?;
    let tree = ksrc::Tree::open(&args.ksrc, &cache).map_err(bad_input)?;
    let strip = patchfile::strip_level(&patch, |p| tree.exists(p)).ok_or_else(|| {
        let names: Vec<String> = patch.files.iter().filter_map(|f| f.path(0)).collect();
        bad_input(format!(
            "the diff's files are not in {} with any -p level from 0 to 3: {}",
            args.ksrc.display(),
            names.join(", ")
        ))
    })?;

    // What the diff touches.
    let mut units: Vec<String> = Vec::new();
    let mut headers: Vec<(String, &patchfile::FilePatch)> = Vec::new();
    let mut touched_files = Vec::new();
    for f in &patch.files {
        let path = f.path(strip).unwrap_or_default();
        if f.is_new_file() || f.is_deleted_file() {
            return Err(bad_input(format!(
                "the fix {} {path}: a live patch changes the functions of files the kernel was built from",
                if f.is_new_file() { "adds the file" } else { "deletes the file" }
            )));
        }
        if path.ends_with(".c") {
            units.push(path.clone());
        } else if path.ends_with(".h") {
            headers.push((path.clone(), f));
        } else if path.starts_with("Documentation/") || path.ends_with(".rst") || path.ends_with(".txt") {
            eprintln!("note: {path} is documentation; nothing to patch there");
            continue;
        } else {
            return Err(bad_input(format!(
                "the fix changes {path}, which is neither C source nor a header: a build or configuration change \
                 cannot be live patched"
            )));
        }
        touched_files.push(path);
    }
    for (h, _) in &headers {
        let dir = h.rsplit_once('/').map_or("", |(d, _)| d);
        let mut reach: Vec<String> = args.tus.clone();
        if !h.starts_with("include/") && !h.starts_with("arch/x86/include/") {
            // The units beside a local header; which of them include it is read once unpacked.
            for c in tree.c_files_in(dir) {
                if !reach.contains(&c) {
                    reach.push(c);
                }
            }
        } else if args.tus.is_empty() && patch.files.iter().any(|f| f.path(strip).is_some_and(|p| p.ends_with(".c"))) {
            // The fix's own units read it; others that include it are the user's to name.
            eprintln!(
                "note: the fix changes the header {h}: from-diff compiles it with the fix's own .c files; other units \
                 whose code it changes are patched only when named with --tu FILE.c"
            );
        } else if args.tus.is_empty() {
            // Which of the kernel's files include it, and inline what changed, only a build of
            // the whole kernel would tell.
            return Err(bad_input(format!(
                "the fix changes the header {h}, which translation units all over the kernel include: name the \
                 units to patch with --tu FILE.c (each is compiled before and after, and what changed in it is \
                 replaced)"
            )));
        }
        for c in reach {
            if !units.contains(&c) {
                units.push(c);
            }
        }
    }
    let mut dirs: BTreeSet<String> = units
        .iter()
        .chain(touched_files.iter())
        .map(|u| u.rsplit_once('/').map_or("", |(d, _)| d).to_string())
        .collect();
    dirs.retain(|d| !d.is_empty());
    tree.unpack(&dirs).map_err(Failure::Fatal)?;
    for u in &units {
        tree.unpack_includes(u).map_err(Failure::Fatal)?;
        if tree.read(u).is_ok_and(|t| t.contains("CREATE_TRACE_POINTS")) {
            tree.unpack(&BTreeSet::from(["include/trace".to_string()])).map_err(Failure::Fatal)?;
        }
    }

    // The source must be the target's.
    let src_version = tree.version().map_err(bad_input)?;
    match ksrc::kdir_version(&kdir.path) {
        Some(v) if v != src_version => {
            return Err(bad_input(format!(
                "the source is Linux {src_version}, but {} was built from Linux {v}: give the source of the kernel \
                 to patch",
                kdir.release
            )));
        }
        Some(_) => {}
        None => {
            eprintln!("warning: cannot tell which version {} was built from; trusting the source", kdir.path.display())
        }
    }

    // The fixed headers of the kernel's include directories: read ahead of each named unit's
    // own includes (their guards keep the kernel's copies out), since the build directory's
    // copies come first on the include path.
    let mut global_headers: Vec<(String, String)> = Vec::new();
    for (h, hp) in &headers {
        if h.starts_with("include/") || h.starts_with("arch/x86/include/") {
            let old = tree.read(h).map_err(bad_input)?;
            global_headers.push((h.clone(), hp.apply(&old).map_err(bad_input)?));
        }
    }

    // Apply the diff: to each unit, and to the headers beside it.
    let mut work_units = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    for rel in &units {
        let before = tree.read(rel).map_err(bad_input)?;
        let fp = patch.files.iter().find(|f| f.path(strip).as_deref() == Some(rel.as_str()));
        let (after, lines) = match fp {
            Some(fp) => fp.apply_with_lines(&before).map_err(|e| {
                if fp.reversed().apply(&before).is_ok() {
                    bad_input(format!(
                        "the fix is already in {rel} of Linux {src_version}: it applies in reverse, so this kernel \
                         needs no patch for it"
                    ))
                } else {
                    bad_input(e)
                }
            })?,
            None => (before.clone(), Vec::new()),
        };
        // A fix written for kpatch-build says some things with kpatch's macros.
        let kpatched = kpatch::translate(rel, &after).map_err(bad_input)?;
        for note in &kpatched.notes {
            eprintln!("note: {note}");
        }
        let after = kpatched.text;
        ignored.extend(kpatched.ignored);
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        let mut local_headers = Vec::new();
        let mut reached = fp.is_some();
        for (h, hp) in &headers {
            let (hdir, hname) = h.rsplit_once('/').unwrap_or(("", h));
            if global_headers.iter().any(|(g, _)| g == h) {
                reached |= args.tus.contains(rel);
                eprintln!("from-diff: {rel} reads {h} as the fix changes it, before its own includes");
                continue;
            }
            let old = tree.read(h).map_err(bad_input)?;
            let new = hp.apply(&old).map_err(bad_input)?;
            if hdir == dir {
                if before.contains(&format!("\"{hname}\"")) {
                    reached = true;
                }
                local_headers.push((hname.to_string(), new));
            } else if args.tus.contains(rel) {
                reached = true;
            }
        }
        if !reached {
            continue;
        }
        if !headers.is_empty() && fp.is_none() {
            eprintln!("from-diff: {rel} includes a changed header");
        }
        // A header the fix includes that the tree does not have would fail in the compiler,
        // far from the reason.
        for header in quoted_includes(&after).difference(&quoted_includes(&before)) {
            let beside = if dir.is_empty() { header.clone() } else { format!("{dir}/{header}") };
            let new_here = local_headers.iter().any(|(name, _)| name == header);
            if !new_here && !tree.exists(&beside) && !tree.exists(header) {
                return Err(bad_input(format!(
                    "the fix has {rel} include \"{header}\", which the kernel source does not have"
                )));
            }
        }
        work_units.push((rel.clone(), before, after, lines, local_headers));
    }
    if work_units.is_empty() {
        return Err(bad_input("the fix touches no translation unit that could be found; name them with --tu FILE.c"));
    }

    // Compile each unit before and after, side by side, and compare.
    let auto_conf = std::fs::read_to_string(kdir.path.join("include/config/auto.conf")).unwrap_or_default();
    let work = tempdir(&cache)?;
    let mut compiled = Vec::new();
    for (index, (rel, before_text, after_text, lines, local_headers)) in work_units.into_iter().enumerate() {
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        let makefile = tree.read(&format!("{dir}/Makefile")).ok();
        let unit = tu::describe(makefile.as_deref(), &auto_conf, &rel);
        if let tu::Home::NotBuilt(option) = &unit.home {
            return Err(bad_input(format!("{rel} is not built in {}: {option} is not set", kdir.release)));
        }
        let unit_work = work.0.join(format!("unit{index}"));
        eprintln!("from-diff: compiling {rel} before and after the fix ({})", unit.object());
        let t = Instant::now();
        let (before_o, after_o) = std::thread::scope(|s| {
            let b = s.spawn(|| {
                tu::compile(&unit, &tree.root, &kdir.path, &unit_work.join("before"), &before_text, &[], &[])
            });
            let a = tu::compile(
                &unit,
                &tree.root,
                &kdir.path,
                &unit_work.join("after"),
                &after_text,
                &local_headers,
                &global_headers,
            );
            (b.join().unwrap_or_else(|_| Err("the compiler thread failed".into())), a)
        });
        let before_o = before_o.map_err(|e| bad_input(format!("the kernel's own source does not compile: {e}")))?;
        let after_o = after_o.map_err(|e| bad_input(format!("the fixed source does not compile: {e}")))?;
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| e.to_string()).and_then(|d| objdiff::Unit::read(&d)).map_err(Failure::Fatal)
        };
        let (mut before, mut after) = (read(&before_o)?, read(&after_o)?);
        // A line that moved changes no code, even where a message names it.
        before.without_line_numbers(&[&rel]);
        after.without_line_numbers(&[&rel]);
        eprintln!("from-diff: compiled in {:.1}s", t.elapsed().as_secs_f64());

        // What the diff touches, by function, and what changed.
        let csrc = csource::Source::new(&after_text);
        let touched: BTreeSet<String> = csrc
            .functions()
            .into_iter()
            .filter(|f| lines.iter().any(|l| (f.first_line..=f.last_line).contains(l)))
            .map(|f| f.name)
            .collect();
        let mut found = analyze::analyze(&before, &after, &touched);
        for f in &ignored {
            if found.replaced.remove(f).is_some() {
                eprintln!("note: {f} changed, and is left out of the patch as the fix asks (KPATCH_IGNORE_FUNCTION)");
            }
        }
        report(&found, &rel);
        compiled.push(Compiled { unit, after_text, before, after, found, touched });
    }
    let refusals: Vec<&analyze::Refusal> = compiled.iter().flat_map(|c| &c.found.refusals).collect();
    if !refusals.is_empty() {
        refusals.into_iter().for_each(refuse);
        return Err(Failure::Reported);
    }
    // A unit whose code the fix leaves as it was (a comment, a moved line) gets no section; one
    // that only adds a global function gets one, for the units that call it.
    let (changed, unchanged): (Vec<Compiled>, Vec<Compiled>) = compiled
        .into_iter()
        .partition(|c| !c.found.replaced.is_empty() || generate::new_globals(&c.found, &c.after).next().is_some());
    if changed.iter().all(|c| c.found.replaced.is_empty()) && !changed.is_empty() {
        let names: Vec<&str> = changed.iter().map(|c| c.unit.rel.as_str()).collect();
        eprintln!(
            "error[{}]: the fix only adds functions ({}), which nothing the kernel runs calls: there is nothing \
             to patch",
            kgraft_lang::from_diff_codes::E0100,
            names.join(", ")
        );
        return Err(Failure::Reported);
    }
    if changed.is_empty() {
        let names: Vec<&str> = unchanged.iter().map(|c| c.unit.rel.as_str()).collect();
        eprintln!(
            "error[{}]: the fix changes no function's code in {}: there is nothing to patch\n  = note: moved \
             lines (`__LINE__` in WARN and BUG) and comments change no code",
            kgraft_lang::from_diff_codes::E0100,
            names.join(", ")
        );
        return Err(Failure::Reported);
    }
    for c in &unchanged {
        eprintln!("note: the fix changes no code in {}: nothing of it is in the patch", c.unit.rel);
    }

    // The `.kgp`: a section per unit.
    let diff_name = args.diff.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let description = patch.subject.clone().unwrap_or_else(|| {
        let touched: Vec<&str> = changed.iter().flat_map(|c| c.touched.iter().map(String::as_str)).collect();
        format!("{} as {diff_name} changes it", touched.join(", "))
    });
    // The target's symbols in kallsyms order, to tell apart the kernel's statics that share a
    // name with other files' (the probe's, read once per kernel with its types).
    let targets: Vec<(String, String)> = changed
        .iter()
        .flat_map(|c| c.found.replaced.keys().map(|f| (c.unit.object().to_string(), f.clone())))
        .collect();
    let mut kernel_args = args.kernel.clone();
    kernel_args.kdirs = vec![kdir.path.clone()];
    let kernel = match crate::kernel_info::load(&kernel_args, &targets) {
        Ok(k) => Some(k),
        Err(e) => {
            if let Failure::Fatal(why) = e {
                eprintln!("warning: {why}");
            }
            eprintln!(
                "warning: the symbols of {} are unknown: statics whose names other files share are not told apart",
                kdir.release
            );
            None
        }
    };
    // Evidence of where a file's symbols are: its own object's names, then those its
    // directory's other files define (linked beside it).
    let evidence: Vec<(BTreeSet<String>, BTreeSet<String>)> = changed
        .iter()
        .map(|c| {
            let own: BTreeSet<String> = c.before.functions.keys().chain(c.before.data.keys()).cloned().collect();
            let dir = c.unit.rel.rsplit_once('/').map_or("", |(d, _)| d);
            let mut siblings = BTreeSet::new();
            for file in tree.c_files_in(dir).iter().filter(|f| **f != c.unit.rel) {
                if let Ok(text) = tree.read(file) {
                    let src = csource::Source::new(&text);
                    siblings.extend(src.functions().into_iter().map(|f| f.name));
                    siblings.extend(src.variables().into_iter().filter(|v| !v.is_extern).map(|v| v.name));
                }
            }
            (own, siblings)
        })
        .collect();
    let no_order = Vec::new();
    let positions: Vec<generate::Position<'_>> = changed
        .iter()
        .zip(&evidence)
        .map(|(c, (own, siblings))| {
            let order = kernel.as_ref().and_then(|k| k.objects.get(c.unit.object())).map_or(&no_order, |o| &o.kallsyms);
            Box::new(move |symbol: &str| crate::linux::sympos::anchor(order, symbol, &[own, siblings]))
                as generate::Position<'_>
        })
        .collect();
    let tree_has = |p: &str| tree.exists(p);
    let inputs: Vec<generate::Input<'_>> = changed
        .iter()
        .zip(&positions)
        .map(|(c, position)| generate::Input {
            name: &name,
            description: &description,
            diff_name: &diff_name,
            release: &kdir.release,
            version: &src_version,
            unit: &c.unit,
            text: &c.after_text,
            before: &c.before,
            after: &c.after,
            analysis: &c.found,
            tree_has: &tree_has,
            headers: &global_headers,
            position: position.as_ref(),
        })
        .collect();
    let rels: Vec<&str> = changed.iter().map(|c| c.unit.rel.as_str()).collect();
    let mut text = generate::header(&inputs[0], &rels);
    let mut refusals = Vec::new();
    for input in &inputs {
        match generate::generate(input) {
            Ok(g) => {
                if inputs.len() > 1 {
                    eprintln!("from-diff: {}:", input.unit.rel);
                }
                for c in &g.copied {
                    eprintln!("  {c:<32} copied into the patch (inlined by the kernel's compiler, or new)");
                }
                for r in &g.referenced {
                    eprintln!("  {r:<32} the running kernel's, reached by symbol");
                }
                text.push_str(&g.text);
            }
            Err(r) => refusals.extend(r),
        }
    }
    if !refusals.is_empty() {
        refusals.iter().for_each(refuse);
        return Err(Failure::Reported);
    }

    // The proof.
    let out_name = args.out.display().to_string();
    let verdicts =
        proof::prove(&text, &out_name, &inputs, &kdir.path, &tree.root, &work.0.join("proof")).map_err(bad_input)?;
    for v in &verdicts {
        eprintln!("proof: {:<32} {}", v.name, v.describe());
    }
    if !verdicts.iter().all(proof::Verdict::holds) {
        eprintln!(
            "error[{}]: the generated patch does not compile to the fixed kernel's code; {} is not written",
            kgraft_lang::from_diff_codes::E0107,
            args.out.display()
        );
        return Err(Failure::Reported);
    }
    // The proof goes with the patch, for its reviewer.
    text.push_str("\n// The proof, by `kgraftc from-diff`: each body compiled as this patch compiles it, against\n");
    text.push_str("// its function in the fixed unit as the kernel compiles it.\n");
    for v in &verdicts {
        text.push_str(&format!("//   {}: {}\n", v.name, v.describe()));
    }
    crate::build::write_if_changed(&args.out, text.as_bytes())
        .map_err(|e| Failure::io(format!("cannot write `{}`", args.out.display()), e))?;
    eprintln!("wrote {} in {:.1}s", args.out.display(), start.elapsed().as_secs_f64());
    drop(work);

    // Further: the module, the test.
    if args.build {
        let build = crate::BuildArgs {
            file: args.out.clone(),
            target: crate::Target::Linux,
            kernel: args.kernel.clone(),
            ksrc: Some(tree.root.clone()),
            out: Some(args.out.with_extension("ko")),
            engine: args.engine,
            sign_key: None,
            sign_cert: None,
        };
        crate::build_linux::run(&build, ui)?;
    }
    if let Some(script) = &args.test {
        let test = crate::guest_test::TestArgs::for_script(&args.out, &args.kernel, &tree.root, script);
        crate::guest_test::run(&test, ui)?;
    }
    Ok(())
}

/// The headers `text` includes with quotes (`#include "x.h"`).
fn quoted_includes(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix('#')?.trim_start().strip_prefix("include")?.trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// One translation unit of the fix, compiled before and after and compared.
struct Compiled {
    /// Where and how the kernel builds it.
    unit: tu::Unit,
    /// Its fixed source.
    after_text: String,
    /// Its objects before and after the fix.
    before: objdiff::Unit,
    after: objdiff::Unit,
    /// What changed.
    found: analyze::Analysis,
    /// The functions whose lines the diff touches.
    touched: BTreeSet<String>,
}

/// Prints what changed, function by function.
fn report(found: &analyze::Analysis, rel: &str) {
    eprintln!("from-diff: {rel}:");
    for (name, why) in &found.replaced {
        let why = match why {
            analyze::Why::Fix => "changed by the fix".to_string(),
            analyze::Why::Inlined => "changed: a changed function is inlined into it".to_string(),
            analyze::Why::Caller(c) => format!("calls `{c}`, which changed and cannot be patched itself"),
        };
        eprintln!("  {name:<32} replaced: {why}");
    }
    for (name, callers) in &found.through_callers {
        let kind = if objdiff::clone_origin(name).is_some() { "compiler clone" } else { "no ftrace site" };
        eprintln!("  {name:<32} changed ({kind}): replaced through {}", callers.join(", "));
    }
    for name in &found.same_code {
        eprintln!("  {name:<32} touched by the diff, same code: not replaced");
    }
    for name in &found.new_functions {
        eprintln!("  {name:<32} new with the fix");
    }
    for name in &found.new_data {
        eprintln!("  {name:<32} new data, the patch's own");
    }
    eprintln!("  ({} other functions unchanged)", found.unchanged.saturating_sub(found.same_code.len()));
}

/// A work directory under the cache, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KGRAFT_KEEP_WORK").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tempdir(cache: &Path) -> Result<TempDir, Failure> {
    let dir = cache.join("from-diff").join(format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Failure::io(format!("cannot create {}", dir.display()), e))?;
    Ok(TempDir(dir))
}
