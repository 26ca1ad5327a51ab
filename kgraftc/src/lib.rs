//! `kgraftc`: check, expand, explain and build kgraft patch sources, read target kernels, and
//! drive the user-mode host.
//!
//! This crate is the command and its build driver, the only place with IO; the language itself
//! is `kgraft-lang`, which does none. The binary calls [`main`]; tests and other crates run a
//! command line in-process with [`run_args`].
//!
//! Exit status: 0 when clean, 1 when the patch has errors, 2 for usage, I/O and environment
//! errors.

/// `eprintln!` that never panics: when standard error cannot be written (a closed pipe, a
/// full disk) there is nowhere left to say so, and the text is dropped. Defined before the
/// modules, it is the `eprintln!` they all use.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics, as [`eprintln!`].
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod build;
mod build_host;
mod build_linux;
mod cache;
mod cbuild;
mod fleet;
mod fromdiff;
mod guest_test;
mod host_ctl;
mod kernel_ctl;
mod kernel_info;
mod linux;
mod lock;
mod output;
mod package;
mod process;
mod render;
mod sign;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kgraft_lang::kernel::Kernel;
use kgraft_lang::{Checked, Lowered};

use crate::render::{Color, MessageFormat, Ui};

/// Compiles kgraft live patches.
#[derive(Parser, Debug)]
#[command(name = "kgraftc", version, about)]
struct Cli {
    /// How to print diagnostics.
    #[arg(long, global = true, value_enum, default_value = "human")]
    message_format: MessageFormat,
    /// Whether to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the language's checks on a patch source, and the kernel's with a target, without
    /// building it (rustc type-checks the bodies at build; `build --target check` does only that).
    Check {
        /// The `.kgp` file.
        file: PathBuf,
        #[command(flatten)]
        kernel: kernel_info::KernelArgs,
        /// The target's source (a directory or Debian's `linux-source-*.tar.xz`): says, for
        /// each static function of its file a C body calls, whether the target inlined it
        /// (the patch must copy it) or kept it (the patch may call the kernel's).
        #[arg(long)]
        ksrc: Option<PathBuf>,
    },
    /// Prints the Rust crate a patch source lowers to.
    Expand {
        /// The `.kgp` file.
        file: PathBuf,
        /// Prints the text given to rustc (bodies verbatim) instead of the review form.
        #[arg(long)]
        for_build: bool,
        #[command(flatten)]
        kernel: kernel_info::KernelArgs,
    },
    /// Writes the target kernel's BTF as a raw file (for `pahole -J --btf_base FILE`, which gives
    /// an out-of-tree module split BTF so its types can be used by name).
    Btf {
        #[command(flatten)]
        kernel: kernel_info::KernelArgs,
        /// Where to write it.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Explains a diagnostic code, such as E0011.
    Explain {
        /// The code.
        code: String,
    },
    /// Builds a patch for a target.
    Build(BuildArgs),
    /// Loads, unloads and lists patches in a running user-mode host.
    Host(host_ctl::HostArgs),
    /// Lists, loads, unloads and watches live patches in the running Linux kernel.
    Kernel(kernel_ctl::KernelCtlArgs),
    /// Builds a patch, boots its kernel under qemu with it loaded and runs a script there.
    Test(guest_test::TestArgs),
    /// Builds a patch into a package (deb or rpm) that loads it at install and at boot.
    Package(package::PackageArgs),
    /// Turns a kernel fix (a unified diff) into a patch source whose C bodies are the fixed
    /// functions, and proves that they compile to the fixed kernel's code.
    FromDiff(fromdiff::FromDiffArgs),
    /// Prints each C body of a patch as a unified diff against the target kernel's own function.
    Diff(fromdiff::review::DiffArgs),
}

/// Where a patch is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// A shared object for the user-mode host.
    Host,
    /// A kernel module for Linux.
    Linux,
    /// No target: type-check the lowered crate only.
    Check,
}

/// What applies a kernel patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Engine {
    /// The kernel's livepatch core (`klp_enable_patch`): `/sys/kernel/livepatch/<patch>/`.
    #[default]
    Klp,
    /// kgraft's own engine, in the module: universes, kicks and direct calls;
    /// `/sys/kernel/kgraft/<patch>/`.
    Kgraft,
}

/// The arguments of `kgraftc build`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct BuildArgs {
    /// The `.kgp` file.
    pub(crate) file: PathBuf,
    /// The target.
    #[arg(long, value_enum)]
    pub(crate) target: Target,
    /// The target kernel (Linux: `--kdir` defaults to the one under /lib/modules).
    #[command(flatten)]
    pub(crate) kernel: kernel_info::KernelArgs,
    /// A kernel source tree (Linux only): its directory is on C bodies' include path, so
    /// `#include "fs/proc/internal.h"` works.
    #[arg(long)]
    pub(crate) ksrc: Option<PathBuf>,
    /// Where to put the result (default: next to the source, or in the current directory).
    #[arg(short, long)]
    pub(crate) out: Option<PathBuf>,
    /// What applies the patch in the kernel (Linux only): the kernel's livepatch core, or
    /// kgraft's own engine built into the module (default: the header's `engine`, else klp).
    #[arg(long, value_enum)]
    pub(crate) engine: Option<Engine>,
    /// Signs the module (Linux only) with this private key, through the kernel's `sign-file`.
    #[arg(long, requires = "sign_cert", value_name = "KEY")]
    pub(crate) sign_key: Option<PathBuf>,
    /// The X.509 certificate of `--sign-key`.
    #[arg(long, requires = "sign_key", value_name = "CERT")]
    pub(crate) sign_cert: Option<PathBuf>,
}

impl BuildArgs {
    /// The files a build reads, which no output may name: the patch, and the signing key and
    /// certificate (`-o KEY` would write the module over the key, and a failed signing would
    /// then remove it).
    pub(crate) fn inputs(&self) -> Vec<&Path> {
        [Some(&self.file), self.sign_key.as_ref(), self.sign_cert.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }
}

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The patch has errors, already reported (exit status 1).
    Reported,
    /// A usage, I/O or environment error (exit status 2), with its message.
    Fatal(String),
}

impl Failure {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl std::fmt::Display, err: std::io::Error) -> Failure {
        Failure::Fatal(format!("{what}: {err}"))
    }
}

/// Reads, checks and reports a source; `Err(Failure::Reported)` when it has errors.
pub(crate) fn load(path: &Path, ui: &Ui) -> Result<Checked, Failure> {
    use std::io::Read;
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Failure::io(format!("cannot read `{name}`"), e))?;
    let mut bytes = Vec::new();
    file.take(kgraft_lang::MAX_SOURCE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::io(format!("cannot read `{name}`"), e))?;
    kgraft_lang::check_bytes(&name, &bytes).map_err(|(source, diags)| {
        ui.emit(&source, &diags.list);
        Failure::Reported
    })
}

/// Reads the target kernel named by `args` (if any) and checks the patch against it,
/// reporting every finding; `Err(Failure::Reported)` when there are errors.
pub(crate) fn check_kernel(
    checked: &Checked,
    args: &kernel_info::KernelArgs,
    ui: &Ui,
) -> Result<Option<Kernel>, Failure> {
    if !args.given() {
        return Ok(None);
    }
    let targets: Vec<(String, String)> =
        checked.targets().into_iter().map(|(object, name, _)| (object.replace('-', "_"), name)).collect();
    let kernel = kernel_info::load(args, &targets)?;
    let diags = kgraft_lang::check_against(checked, &kernel);
    if !diags.list.is_empty() {
        ui.emit(&checked.source, &diags.list);
    }
    if diags.has_errors() {
        return Err(Failure::Reported);
    }
    Ok(Some(kernel))
}

/// Says, once, that a patch checked without a target kernel keeps the kernel types it names
/// opaque and its targets unchecked.
fn note_opaque(checked: &Checked, ui: &Ui) {
    let types = checked.kernel_types();
    if types.is_empty() || ui.format != render::MessageFormat::Human {
        return;
    }
    let shown: Vec<String> = types.iter().take(4).map(|t| format!("`{t}`")).collect();
    let more = if types.len() > 4 { format!(" and {} more", types.len() - 4) } else { String::new() };
    let stay = if types.len() == 1 { "stays" } else { "stay" };
    eprintln!(
        "note: no target kernel: {}{more} {stay} opaque and the targets are not checked against a kernel\n\
         help: give --kdir DIR (or --vmlinux FILE) to check against that kernel and use its types",
        shown.join(", ")
    );
}

/// Lowers a checked source, for the kernel when one is known, reporting a compiler bug as a
/// diagnostic.
pub(crate) fn lower(checked: &Checked, kernel: Option<&Kernel>, ui: &Ui) -> Result<Lowered, Failure> {
    let lowered = match kernel {
        Some(kernel) => kgraft_lang::lower_for(checked, kernel),
        None => kgraft_lang::lower(checked),
    };
    lowered.map_err(|diags| {
        ui.emit(&checked.source, &diags.list);
        Failure::Reported
    })
}

fn run(cli: Cli) -> Result<(), Failure> {
    let ui = Ui { format: cli.message_format, color: cli.color };
    match cli.command {
        Command::Check { file, kernel, ksrc } if fleet::is_fleet(&kernel) => {
            let checked = load(&file, &ui)?;
            fleet::check(&kernel, |one| {
                let target = check_kernel(&checked, one, &ui)?;
                if let (Some(kernel), Some(ksrc)) = (&target, &ksrc)
                    && !fromdiff::statics::report(&checked, kernel, ksrc)?
                {
                    return Err(Failure::Reported);
                }
                Ok(())
            })
        }
        Command::Check { file, kernel, ksrc } => {
            let checked = load(&file, &ui)?;
            let target = check_kernel(&checked, &kernel, &ui)?;
            match (&target, &ksrc) {
                (None, Some(_)) => {
                    return Err(Failure::Fatal(
                        "--ksrc compares the C bodies with a target kernel: give it (--kdir, --vmlinux)".into(),
                    ));
                }
                (None, None) => note_opaque(&checked, &ui),
                (Some(kernel), Some(ksrc)) => {
                    if !fromdiff::statics::report(&checked, kernel, ksrc)? {
                        return Err(Failure::Reported);
                    }
                }
                (Some(_), None) => {}
            }
            Ok(())
        }
        Command::Expand { file, for_build, kernel } => {
            kernel.single("expand")?;
            let checked = load(&file, &ui)?;
            let kernel = check_kernel(&checked, &kernel, &ui)?;
            let lowered = lower(&checked, kernel.as_ref(), &ui)?;
            let text = if for_build { &lowered.build_source } else { &lowered.expanded };
            let mut text = text.clone();
            for (index, unit) in lowered.c_units.iter().enumerate() {
                text.push_str(&format!("\n{}\n{}", cbuild::separator(&lowered, index), unit.text));
            }
            output::stdout(&text)
        }
        Command::Btf { kernel, out } => {
            kernel.single("btf")?;
            let btf = kernel_info::vmlinux_btf(&kernel)?;
            std::fs::write(&out, btf).map_err(|e| Failure::io(format!("cannot write `{}`", out.display()), e))
        }
        Command::Explain { code } => match kgraft_lang::explain(&code) {
            Some(info) => output::stdout(&format!("{}: {}\n\n{}\n", info.code, info.title, info.explanation)),
            None => Err(Failure::Fatal(format!(
                "`{code}` is not a kgraftc diagnostic code (the codes run from E0001 to {}, with gaps)",
                kgraft_lang::CODES.last().map_or("E0001", |c| c.code)
            ))),
        },
        Command::Build(args) if args.sign_key.is_some() && args.target != Target::Linux => {
            Err(Failure::Fatal("--sign-key and --sign-cert sign kernel modules: use them with --target linux".into()))
        }
        Command::Build(args) => match args.target {
            Target::Host => build_host::run(&args, &ui),
            Target::Linux if fleet::is_fleet(&args.kernel) => fleet::build(&args, &ui),
            Target::Linux => build_linux::run(&args, &ui),
            Target::Check => build::check(&args, &ui),
        },
        Command::Host(args) => host_ctl::run(&args, &ui),
        Command::Kernel(args) => kernel_ctl::run(&args),
        Command::Test(args) => {
            args.kernel.single("test")?;
            guest_test::run(&args, &ui)
        }
        Command::Package(args) if fleet::is_fleet(&args.kernel) => fleet::package(&args, &ui),
        Command::Package(args) => package::run(&args, &ui),
        Command::FromDiff(args) => {
            args.kernel.single("from-diff")?;
            fromdiff::run(&args, &ui)
        }
        Command::Diff(args) => fromdiff::review::run(&args, &ui),
    }
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    ExitCode::from(finish(run(Cli::parse())))
}

/// Runs a command line (`args[0]` is the program's name) in this process and returns its exit
/// status; usage errors are printed as the command prints them.
pub fn run_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => finish(run(cli)),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() { 2 } else { 0 }
        }
    }
}

/// The exit status of a command's outcome, printing a fatal error.
fn finish(outcome: Result<(), Failure>) -> u8 {
    match outcome {
        Ok(()) => 0,
        Err(Failure::Reported) => 1,
        Err(Failure::Fatal(message)) => {
            eprintln!("error: {message}");
            2
        }
    }
}
