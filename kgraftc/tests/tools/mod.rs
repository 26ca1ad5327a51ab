//! Programs the tests build beside `kgraftc`, in a target directory of their own (the test's
//! own is locked while it runs).

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Builds the user-mode host, whose executable carries the BTF of the samples' target types.
pub fn host_executable() -> PathBuf {
    let target = workspace().join("target").join("kgraft").join("tools");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "kgraft-host", "--bin", "kgraft-host", "--target-dir"])
        .arg(&target)
        .current_dir(workspace())
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the host builds");
    target.join("debug").join("kgraft-host")
}
