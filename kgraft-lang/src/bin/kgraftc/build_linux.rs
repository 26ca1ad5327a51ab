//! `kgraftc build --target linux`: a kernel module for Linux.

use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// Builds the patch as a Linux kernel module.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let _ = (args, ui);
    Err(Failure::Fatal("`kgraftc build --target linux` is not built yet".to_owned()))
}
