//! The patch crate's build for the kernel: `core` from source, kernel code model, LTO.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::toolchain::Toolchain;
use super::{Error, run, write_if_changed};
use crate::build::CrateSpec;

/// The lowered crate for the kernel: a static library, optimised as one unit.
pub(crate) const KERNEL: CrateSpec = CrateSpec {
    purpose: "the Linux kernel",
    crate_type: Some("staticlib"),
    rt_feature: Some("kernel"),
    release: &[("panic", "\"abort\""), ("lto", "true"), ("codegen-units", "1"), ("opt-level", "2"), ("debug", "0")],
};

/// The lowered crate for the kernel, applied by kgraft's own engine (`--engine kgraft`).
pub(crate) const KERNEL_KGRAFT: CrateSpec = CrateSpec { rt_feature: Some("kgraft-engine"), ..KERNEL };

/// The built-in target the kernel target is derived from: freestanding x86_64, which already
/// excludes SSE, uses soft floats, the kernel code model and no red zone.
const BASE_TARGET: &str = "x86_64-unknown-none";

/// The name of the derived target (and of its directory under the target directory).
const TARGET: &str = "x86_64-kgraft-kernel";

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
    "-Zfunction-return=thunk-extern",
    "--cfg=no_fp_fmt_parse",
];

/// Writes the target specification: the compiler's own `x86_64-unknown-none`, with static
/// relocations and indirect branches through the kernel's retpoline thunks (a target feature
/// that the command line would warn about on every build).
fn target_spec(toolchain: &Toolchain, dir: &Path) -> Result<PathBuf, Error> {
    let mut cmd = Command::new(&toolchain.rustc);
    cmd.args(["-Zunstable-options", "--print", "target-spec-json", "--target", BASE_TARGET])
        .env("RUSTC_BOOTSTRAP", "1");
    let text = run(&mut cmd, "rustc --print target-spec-json")?;
    let mut spec: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("cannot read the {BASE_TARGET} target specification: {e}")))?;
    let features = spec["features"].as_str().unwrap_or_default().to_owned();
    spec["features"] = format!("{features},+retpoline-external-thunk").into();
    spec["relocation-model"] = "static".into();
    spec["position-independent-executables"] = false.into();
    spec["static-position-independent-executables"] = false.into();
    let path = dir.join(format!("{TARGET}.json"));
    let text = serde_json::to_string_pretty(&spec)
        .map_err(|e| Error::new(format!("cannot write the target specification: {e}")))?;
    write_if_changed(&path, text.as_bytes())?;
    Ok(path)
}

/// Returns whether the shared target directory already holds `core` for the kernel.
pub(crate) fn core_is_built(target_dir: &Path) -> bool {
    std::fs::read_dir(target_dir.join(TARGET).join("release/deps"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
}

/// Returns the command that builds the crate written in `crate_dir` (by
/// `build::write_crate` with [`KERNEL`]).
pub(crate) fn command(crate_dir: &Path, target_dir: &Path, toolchain: &Toolchain) -> Result<Command, Error> {
    let spec = target_spec(toolchain, target_dir.parent().unwrap_or(target_dir))?;
    let mut cmd = Command::new(&toolchain.cargo);
    cmd.current_dir(crate_dir)
        .args(["build", "--release", "-Zbuild-std=core", "-Zjson-target-spec", "--target"])
        .arg(&spec)
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
