//! The patch crate's build for the kernel: `core` from source, kernel code model, LTO.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::toolchain::Toolchain;
use super::{Error, write_if_changed};

/// The target: freestanding x86_64, whose built-in settings already exclude SSE and use
/// soft floats.
const TARGET: &str = "x86_64-unknown-none";

/// The code generation flags the kernel needs: its code model, no red zone (interrupts run on
/// the same stack), static relocations (the module loader rejects GOT relocations), frame
/// pointers for the unwinder, direct calls instead of PLT stubs, and the kernel's retpoline
/// and return thunks for indirect branches and returns.
const RUSTFLAGS: &[&str] = &[
    "-Cpanic=abort",
    "-Ccode-model=kernel",
    "-Crelocation-model=static",
    "-Cno-redzone=yes",
    "-Cforce-frame-pointers=yes",
    "-Zplt=yes",
    "--cfg=no_fp_fmt_parse",
];

/// Returns the directory of the kgraft crates the patch crate depends on.
fn source_dir() -> PathBuf {
    match std::env::var_os("KGRAFT_SOURCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// Returns whether the shared target directory already holds `core` for the kernel.
pub(crate) fn core_is_built(target_dir: &Path) -> bool {
    std::fs::read_dir(target_dir.join(TARGET).join("release/deps"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
}

/// Writes the crate `name` with `lib_rs` into `crate_dir` and returns the command that builds
/// it; only changed files are written, so an unchanged patch is not recompiled.
pub(crate) fn command(
    name: &str,
    lib_rs: &str,
    crate_dir: &Path,
    target_dir: &Path,
    toolchain: &Toolchain,
) -> Result<Command, Error> {
    let src = source_dir();
    let manifest = format!(
        r#"# Written by kgraftc: the patch `{name}` lowered for the Linux kernel.
[package]
name = "{name}"
version = "0.0.0"
edition = "2024"
publish = false

[lib]
path = "src/lib.rs"
crate-type = ["staticlib"]

[dependencies]
kgraft-rt = {{ path = "{rt}", features = ["kernel"] }}
kgraft-macros = {{ path = "{macros}" }}

[profile.release]
panic = "abort"
lto = true
codegen-units = 1
opt-level = 2
debug = 0

[workspace]
"#,
        rt = src.join("kgraft-rt").display(),
        macros = src.join("kgraft-macros").display(),
    );
    write_if_changed(&crate_dir.join("Cargo.toml"), manifest.as_bytes())?;
    write_if_changed(&crate_dir.join("src/lib.rs"), lib_rs.as_bytes())?;
    // Start from the workspace's lock file, so that the build uses the versions the workspace
    // was tested with and needs no registry access when they are cached.
    let lock = crate_dir.join("Cargo.lock");
    if !lock.exists() {
        if let Ok(text) = std::fs::read(src.join("Cargo.lock")) {
            write_if_changed(&lock, &text)?;
        }
    }

    let mut cmd = Command::new(&toolchain.cargo);
    cmd.current_dir(crate_dir)
        .args(["build", "--release", "-Zbuild-std=core", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .env("RUSTC", &toolchain.rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\x1f"))
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTUP_TOOLCHAIN");
    Ok(cmd)
}
