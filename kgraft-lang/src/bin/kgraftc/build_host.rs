//! `kgraftc build --target host`: a shared object for the user-mode host.

use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// Builds the patch for the user-mode host.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let _ = (args, ui);
    Err(Failure::Fatal("`kgraftc build --target host` is not built yet".to_owned()))
}
