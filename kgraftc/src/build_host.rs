//! `kgraftc build --target host`: a shared object for the user-mode host.
//!
//! The lowered crate is written to a build directory under the workspace's `target/`, built as
//! a `cdylib` against `kgraft-rt` with the `host` feature, and copied to the output path. The
//! crates of every patch share one target directory, so a second build only compiles the patch;
//! the crate's directory is locked from writing the crate to installing the output, so two
//! builds of patches of the same name do not swap their code.

use std::path::PathBuf;

use crate::build::{CrateSpec, run_cargo, workspace_root, write_crate};
use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// The lowered crate for the host: a shared object that stops the host on a panic.
const HOST: CrateSpec = CrateSpec {
    purpose: "the user-mode host",
    crate_type: Some("cdylib"),
    rt_feature: Some("host"),
    release: &[("panic", "\"abort\""), ("opt-level", "2"), ("debug", "0")],
};

/// The host executable built beside this `kgraftc`, when there is one.
pub(crate) fn default_host_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.with_file_name("kgraft-host");
    exe.is_file().then_some(exe)
}

/// Builds the patch for the user-mode host.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    // The host is the patch's kernel: its executable carries BTF, symbols and fentry sites.
    let mut target = args.kernel.clone();
    if !target.given() {
        target.vmlinux = default_host_executable();
    }
    let kernel = crate::check_kernel(&checked, &target, ui)?;
    let lowered = crate::lower(&checked, kernel.as_ref(), ui)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.so", lowered.name)));
    crate::output::refuse_input(&out, &[&args.file]).map_err(Failure::Fatal)?;
    let work = workspace_root().join("target").join("kgraft").join("host");
    let crate_dir = work.join(&lowered.name);
    let _lock = crate::lock::take(&crate_dir.join(crate::lock::FILE), &format!("`{}`", lowered.name))
        .map_err(Failure::Fatal)?;
    let manifest = write_crate(&crate_dir, &HOST, &lowered)?;
    let c_objects = crate::cbuild::compile_host(&crate_dir, &checked, &lowered, ui)?;
    crate::cbuild::link_script(&crate_dir, &c_objects)?;
    eprintln!("   Compiling {} for the user-mode host", lowered.name);
    // The host's own build settings (a target, flags for a sanitizer, another target
    // directory) are not the patch's.
    let mut cargo = crate::build::cargo();
    cargo
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(work.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    let built = run_cargo(cargo, &crate_dir, &checked, &lowered, ui)?;
    let so = built
        .files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .ok_or_else(|| Failure::Fatal(format!("cargo built no shared object for `{}`", lowered.name)))?;
    crate::output::install(so, &out, &[&args.file]).map_err(Failure::Fatal)?;
    eprintln!("    Finished {}", out.display());
    Ok(())
}
