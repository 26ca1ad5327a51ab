//! One patch, many kernels: `kgraftc check`, `build` and `package` with several `--kdir`.
//!
//! Each build directory (given several times, or as a quoted glob that kgraftc expands) is a
//! target of its own: the patch is checked against it, and built into `-o DIR/RELEASE/NAME.ko`.
//! A target where the patch does not apply is an error for that target, which its row of the
//! table names; the others go on, and the exit status says whether any failed.

use std::path::{Path, PathBuf};

use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// Whether `path` holds a glob character in any component.
pub(crate) fn is_glob(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?'])
}

/// Whether `args` name several kernels.
pub(crate) fn is_fleet(args: &crate::kernel_info::KernelArgs) -> bool {
    args.kdirs.len() > 1 || args.kdirs.iter().any(|k| is_glob(k))
}

/// The build directories `kdirs` name, globs expanded (in order, each once); a glob that
/// matches nothing is an error.
pub(crate) fn expand(kdirs: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out: Vec<PathBuf> = Vec::new();
    for kdir in kdirs {
        let found = if is_glob(kdir) { glob(kdir) } else { vec![kdir.clone()] };
        if found.is_empty() {
            return Err(Failure::Fatal(format!("--kdir {} matches no kernel build directory", kdir.display())));
        }
        for k in found {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// The directories matching `pattern`, component by component, sorted; only those that hold a
/// kernel build directory's `Makefile`.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for part in pattern.components() {
        let text = part.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if !text.contains(['*', '?']) {
                next.push(base.join(part));
                continue;
            }
            let dir = if base.as_os_str().is_empty() { Path::new(".") } else { base.as_path() };
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut names: Vec<String> =
                entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect();
            names.sort();
            for name in names {
                if !name.starts_with('.') && crate::linux::kdir::glob_match(text.as_bytes(), name.as_bytes()) {
                    next.push(base.join(&name));
                }
            }
        }
        found = next;
    }
    found.retain(|p| p.join("Makefile").is_file());
    found
}

/// One target's outcome.
struct Row {
    release: String,
    kdir: PathBuf,
    outcome: Result<String, String>,
}

/// Prints the table of outcomes and returns the exit: an error when any target failed.
fn table(rows: &[Row], what: &str) -> Result<(), Failure> {
    let width = rows.iter().map(|r| r.release.len()).max().unwrap_or(7).max(7);
    let mut text = format!("{:<width$}  {}\n", "release", what);
    for r in rows {
        let cell = match &r.outcome {
            Ok(ok) => ok.clone(),
            Err(why) => format!("FAILED: {why}"),
        };
        text.push_str(&format!("{:<width$}  {cell}\n", r.release));
    }
    let failed = rows.iter().filter(|r| r.outcome.is_err()).count();
    text.push_str(&format!("{} of {} kernels: {}\n", rows.len() - failed, rows.len(), what));
    crate::output::stdout(&text)?;
    if failed > 0 {
        for r in rows.iter().filter(|r| r.outcome.is_err()) {
            eprintln!("error: the patch fails for {} ({})", r.release, r.kdir.display());
        }
        return Err(Failure::Reported);
    }
    Ok(())
}

/// Why one target failed, for its row (the details were printed as it ran).
fn reason(failure: Failure) -> String {
    match failure {
        Failure::Reported => "the errors above".into(),
        Failure::Fatal(message) => {
            eprintln!("error: {message}");
            message.lines().next().unwrap_or("").to_string()
        }
    }
}

/// The release of `kdir`, or the reason it is not a build directory.
fn release(kdir: &Path) -> Result<String, String> {
    crate::linux::kdir::find(Some(kdir)).map(|k| k.release).map_err(|e| {
        let text = e.to_string();
        eprintln!("error: {}", text.trim_start_matches("error: "));
        text.trim_start_matches("error: ").lines().next().unwrap_or("").to_string()
    })
}

/// Runs `one` for each build directory `kdirs` name (globs expanded), with its release, and
/// prints the table of outcomes, headed `what`: `one` returns the cell of its row (what it
/// wrote). A directory that is not a build directory fails its own row.
fn each_target(
    kdirs: &[PathBuf],
    what: &str,
    mut one: impl FnMut(&Path, &str) -> Result<String, Failure>,
) -> Result<(), Failure> {
    let mut rows = Vec::new();
    for kdir in expand(kdirs)? {
        let row = match release(&kdir) {
            Ok(release) => {
                eprintln!("== {release} ({})", kdir.display());
                let outcome = one(&kdir, &release).map_err(reason);
                Row { release, kdir, outcome }
            }
            Err(e) => Row { release: kdir.display().to_string(), kdir, outcome: Err(e) },
        };
        rows.push(row);
    }
    table(&rows, what)
}

/// `kgraftc check` against every kernel named, `run` checking against one.
pub(crate) fn check(
    kernel: &crate::kernel_info::KernelArgs,
    run: impl Fn(&crate::kernel_info::KernelArgs) -> Result<(), Failure>,
) -> Result<(), Failure> {
    each_target(&kernel.kdirs, "check", |kdir, _| run(&kernel.with_kdir(kdir)).map(|()| "checked".to_string()))
}

/// `kgraftc build --target linux` for every kernel named: `-o DIR` gets `DIR/RELEASE/NAME.ko`.
pub(crate) fn build(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    let name = checked.name().to_string();
    let Some(dir) = &args.out else {
        return Err(Failure::Fatal(
            "building for several kernels writes a module per release: give -o DIR (each goes to DIR/RELEASE/)".into(),
        ));
    };
    if dir.is_file() || dir.extension().is_some_and(|e| e == "ko") {
        return Err(Failure::Fatal(format!(
            "-o {} names a file: building for several kernels writes DIR/RELEASE/{name}.ko, give a directory",
            dir.display()
        )));
    }
    each_target(&args.kernel.kdirs, "module", |kdir, release| {
        let out = dir.join(release).join(format!("{name}.ko"));
        std::fs::create_dir_all(dir.join(release))
            .map_err(|e| Failure::io(format!("cannot create `{}`", dir.join(release).display()), e))?;
        let one = BuildArgs { kernel: args.kernel.with_kdir(kdir), out: Some(out.clone()), ..args.clone() };
        crate::build_linux::run(&one, ui)?;
        Ok(out.display().to_string())
    })
}

/// `kgraftc package` for every kernel named: `-o DIR` gets one package per release, named
/// `PKG-RELEASE` (a repository can hold them all; each machine installs the one of its running
/// kernel, `PKG-$(uname -r)`, and each loads only on its exact release).
pub(crate) fn package(args: &crate::package::PackageArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    let base = args.name.clone().unwrap_or_else(|| crate::package::default_name(checked.name()));
    let dir = &args.out;
    if dir.is_file() || dir.extension().is_some_and(|e| e == "deb" || e == "rpm") {
        return Err(Failure::Fatal(format!(
            "-o {} names a file: packaging for several kernels writes a package per release, give a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Failure::io(format!("cannot create `{}`", dir.display()), e))?;
    let ext = match args.format {
        crate::package::Format::Deb => "deb",
        crate::package::Format::Rpm => "rpm",
    };
    each_target(&args.kernel.kdirs, "package", |kdir, release| {
        let pkg = format!("{base}-{}", release.to_lowercase());
        let out = dir.join(format!("{pkg}_{}.{ext}", args.pkg_version));
        let one = crate::package::PackageArgs {
            kernel: args.kernel.with_kdir(kdir),
            name: Some(pkg),
            out: out.clone(),
            ..args.clone()
        };
        crate::package::run(&one, ui)?;
        Ok(out.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_to_build_directories_in_order_once() {
        let root = std::env::temp_dir().join(format!("kgraft-fleet-{}", std::process::id()));
        for r in ["6.1.0-9-rt-amd64", "6.1.0-9-amd64", "6.12.1-amd64", "notes"] {
            let build = root.join(r).join("build");
            std::fs::create_dir_all(&build).expect("a directory");
            if r != "notes" {
                std::fs::write(build.join("Makefile"), "").expect("a file");
            }
        }
        let all = expand(&[root.join("*/build")]).expect("matches");
        let names: Vec<String> = all
            .iter()
            .map(|p| p.parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["6.1.0-9-amd64", "6.1.0-9-rt-amd64", "6.12.1-amd64"]);
        let again = expand(&[root.join("6.1.*/build"), root.join("6.1.0-9-amd64/build")]).expect("matches");
        assert_eq!(again.len(), 2, "each directory once: {again:?}");
        assert!(matches!(expand(&[root.join("5.*/build")]), Err(Failure::Fatal(m)) if m.contains("matches no kernel")));
        let _ = std::fs::remove_dir_all(&root);
    }
}
