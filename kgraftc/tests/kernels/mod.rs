//! The kernels the integration tests build for: the machine's installed kernel (its build
//! directory under `/lib/modules`) and the fleet `scripts/setup.sh kernels` unpacks under
//! `target/kernels/RELEASE/build`. CI has both; elsewhere a test without them says so and
//! returns.

#![allow(dead_code)] // each test crate uses part of it

use std::path::{Path, PathBuf};

/// The workspace's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The configured kernel build directories found one level below `dir` (`DIR/*/build`).
fn build_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("build"))
        .filter(|p| p.join("Makefile").is_file() && p.join("Module.symvers").is_file())
        .collect();
    found.sort();
    found
}

/// The installed kernel's build directory, when the machine has exactly one; `None` says why
/// on standard error (`test` names the caller). CI has one.
pub fn installed(test: &str) -> Option<PathBuf> {
    match <[PathBuf; 1]>::try_from(build_dirs(Path::new("/lib/modules"))) {
        Ok([kdir]) => Some(kdir),
        Err(found) => {
            assert!(std::env::var_os("CI").is_none(), "CI has exactly one kernel installed, found {found:?}");
            eprintln!("{test}: not run, as this machine has not exactly one kernel build directory under /lib/modules");
            None
        }
    }
}

/// The fleet's build directories under `target/kernels` (6.1 PREEMPT_RT and cloud, 6.12),
/// when all three are there; `None` says why on standard error. CI has them.
pub fn fleet(test: &str) -> Option<Vec<PathBuf>> {
    let fleet = build_dirs(&root().join("target/kernels"));
    if fleet.len() < 3 {
        assert!(std::env::var_os("CI").is_none(), "CI has the fleet's kernels: scripts/setup.sh all");
        eprintln!("{test}: not run, as the fleet is not under target/kernels (scripts/setup.sh kernels)");
        return None;
    }
    Some(fleet)
}

/// The release `kdir` builds for, as its `utsrelease.h` says.
pub fn release(kdir: &Path) -> String {
    let text = std::fs::read_to_string(kdir.join("include/generated/utsrelease.h")).expect("utsrelease.h");
    text.split('"').nth(1).expect("UTS_RELEASE").to_string()
}
