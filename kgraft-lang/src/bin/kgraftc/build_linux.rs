//! `kgraftc build --target linux`: a kernel module for Linux.

use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// Builds the patch as a Linux kernel module.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let _ = (args, ui);
    Err(Failure::Fatal("`kgraftc build --target linux` is not built yet".to_owned()))
}
#[path = "linux/mod.rs"]
mod linux;

use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// Builds the patch as a Linux kernel module.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let fatal = |e: linux::Error| Failure::Fatal(e.to_string().trim_start_matches("error: ").to_owned());
    let checked = crate::load(&args.file, ui)?;
    let lowered = crate::lower(&checked, ui)?;
    let mut prepared = linux::prepare(args.kdir.as_deref(), checked.kernel()).map_err(fatal)?;
    let crate_name = crate::build::crate_name(&lowered);
    let cargo = prepared.cargo_command(&crate_name, &lowered.build_source).map_err(fatal)?;
    let built = crate::build::run_cargo(cargo, &checked, &lowered, ui)?;
    let archive = built
        .files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "a"))
        .ok_or_else(|| Failure::Fatal(format!("cargo built no archive for `{crate_name}`")))?;
    prepared.finish(checked.name(), archive, &crate_name, args.out.as_deref()).map_err(fatal)?;
    Ok(())
}
