//! `kgraftc host ...`: talks to a running user-mode host.

use std::path::PathBuf;

use crate::Failure;
use crate::render::Ui;

/// The arguments of `kgraftc host`.
#[derive(clap::Args, Debug)]
pub(crate) struct HostArgs {
    #[command(subcommand)]
    pub(crate) command: HostCommand,
}

/// What to ask the host.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum HostCommand {
    /// Loads a built patch into the host.
    Load {
        /// The patch's shared object.
        patch: PathBuf,
    },
    /// Disables and unloads a patch.
    Unload {
        /// The patch name.
        name: String,
    },
    /// Lists the loaded patches and their state.
    Status,
}

/// Runs a `kgraftc host` command.
pub(crate) fn run(args: &HostArgs, ui: &Ui) -> Result<(), Failure> {
    let _ = (args, ui);
    Err(Failure::Fatal("`kgraftc host` is not built yet".to_owned()))
}
