//! The lowered crate of every sample type-checks against the workspace's `kgraft-rt` and
//! `kgraft-macros`, and rustc's errors in a body are reported at the `.kgp` line they come from.
//!
//! These run `kgraftc build --target check`, which runs `cargo check`; the dependencies are
//! built once into the workspace's `target/kgraft-check`. One builds for the host too, which
//! shares that mapping of rustc's messages.

mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tools::{host_executable, workspace};

fn build_check(file: &Path, out: &Path, json: bool) -> Output {
    build_check_against(file, out, json, None)
}

fn build_check_against(file: &Path, out: &Path, json: bool, vmlinux: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgraftc"));
    cmd.current_dir(file.parent().expect("dir"))
        .env("CARGO_TARGET_DIR", workspace().join("target").join("kgraft-check"))
        .args(["--color", "never"]);
    if json {
        cmd.args(["--message-format", "json"]);
    }
    cmd.args(["build", "--target", "check"]);
    if let Some(vmlinux) = vmlinux {
        cmd.arg("--vmlinux").arg(vmlinux);
    }
    cmd.arg("--out").arg(out).arg(file.file_name().expect("name")).output().expect("kgraftc runs")
}

fn scratch(name: &str) -> PathBuf {
    workspace().join("target").join("kgraft-check").join("crates").join(name)
}

#[test]
fn every_sample_type_checks() {
    let dir = workspace().join("patches");
    let mut samples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("patches/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "kgp"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 6, "the six shared samples are in patches/");
    // Checked against the user-mode host, whose types (from its BTF) the samples use by name.
    let host = host_executable();
    for sample in samples {
        let name = sample.file_stem().expect("stem").to_string_lossy().into_owned();
        let output = build_check_against(&sample, &scratch(&name), false, Some(&host));
        assert!(output.status.success(), "{name} does not type-check:\n{}", String::from_utf8_lossy(&output.stderr));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("warning"), "{name} has warnings:\n{stderr}");
    }
}

#[test]
fn rustc_errors_point_into_the_kgp_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build/type_error.kgp");
    let output = build_check(&file, &scratch("type_error"), false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[rustc E0308]: mismatched types"), "{stderr}");
    assert!(stderr.contains("type_error.kgp:10:23"), "{stderr}");
    assert!(stderr.contains("10 │     let banner: u64 = \"not a number\";"), "{stderr}");

    let output = build_check(&file, &scratch("type_error_json"), true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().expect("one diagnostic")).expect("JSON");
    assert_eq!(first["code"], "rustc E0308");
    assert_eq!(first["file"], "type_error.kgp");
    assert_eq!((first["line"].as_u64(), first["column"].as_u64()), (Some(10), Some(23)));
    assert_eq!((first["end_line"].as_u64(), first["end_column"].as_u64()), (Some(10), Some(37)));
}

#[test]
fn rustc_warnings_are_mapped_too() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build/warning.kgp");
    let output = build_check(&file, &scratch("warning"), false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("warning[rustc unused_variables]: unused variable: `unused_value`"), "{stderr}");
    assert!(stderr.contains("warning.kgp:4:9"), "{stderr}");
}

#[test]
fn a_host_build_maps_rustc_errors_and_warnings_the_same_way() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build");
    let out = workspace().join("target").join("kgraft-check").join("host-builds");
    std::fs::create_dir_all(&out).expect("a scratch directory");
    let build = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .current_dir(&dir)
            .args(["--color", "never", "build", "--target", "host", "-o"])
            .arg(out.join(format!("{name}.so")))
            .arg(format!("{name}.kgp"))
            .output()
            .expect("kgraftc runs")
    };

    let output = build("type_error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[rustc E0308]: mismatched types"), "{stderr}");
    assert!(stderr.contains("type_error.kgp:10:23"), "{stderr}");
    assert!(stderr.contains("^^^^^^^^^^^^^^ expected `u64`, found `&str`"), "the whole span: {stderr}");
    assert_eq!(stderr.matches("aborting due to").count(), 1, "one summary, kgraftc's: {stderr}");

    let output = build("warning");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("warning[rustc unused_variables]: unused variable: `unused_value`"), "{stderr}");
    assert!(stderr.contains("warning.kgp:4:9"), "{stderr}");
    assert!(out.join("warning.so").exists(), "{stderr}");
}

#[test]
fn kernel_types_type_check_with_their_layouts() {
    // The generated definitions assert every size and offset at compile time, so this fails if
    // a layout is not the kernel's.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel/types.kgp");
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(file.parent().expect("dir"))
        .env("CARGO_TARGET_DIR", workspace().join("target").join("kgraft-check"))
        .env("KGRAFT_CACHE_DIR", std::env::temp_dir().join(format!("kgraft-compile-cache-{}", std::process::id())))
        .args(["--color", "never", "build", "--target", "check", "--vmlinux", "vmlinux", "--out"])
        .arg(scratch("fixture_types"))
        .arg("types.kgp")
        .output()
        .expect("kgraftc runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn rustc_messages_about_signatures_and_statics_land_on_their_own_tokens() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build/own_tokens.kgp");
    let output = build_check(&file, &scratch("own_tokens"), false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("warning[rustc unused_variables]: unused variable: `v`"), "{stderr}");
    assert!(stderr.contains("own_tokens.kgp:8:30"), "the parameter's own line and column: {stderr}");
    assert!(stderr.contains("error[rustc E0080]"), "{stderr}");
    assert!(stderr.contains("own_tokens.kgp:6:21"), "the initializer's own column: {stderr}");
    assert!(stderr.contains("warning[rustc unused_variables]: unused variable: `unused`"), "{stderr}");
    assert!(stderr.contains("own_tokens.kgp:14:18"), "a helper's parameter: {stderr}");
    assert!(stderr.contains("own_tokens.kgp:16:17"), "a shadow field's initial value: {stderr}");
    assert!(stderr.contains("own_tokens.kgp:19:24"), "an extern static's type: {stderr}");
}
