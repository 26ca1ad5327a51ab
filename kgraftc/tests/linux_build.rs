//! `kgraftc build --target linux` refuses, before compiling anything, what cannot work.
//!
//! These run everywhere: they use a fake kernel build directory that holds only the release.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Makes a kernel build directory that names `release` and nothing else.
fn fake_kdir(tag: &str, release: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-kdir-{tag}"));
    std::fs::create_dir_all(dir.join("include/generated")).expect("a temporary directory");
    std::fs::write(dir.join("include/generated/utsrelease.h"), format!("#define UTS_RELEASE \"{release}\"\n"))
        .expect("a temporary file");
    dir
}

fn build(kdir: &Path, rustc: &str) -> Output {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches/cmdline_banner.kgp");
    Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["build", "--target", "linux", "--kdir"])
        .arg(kdir)
        .arg("-o")
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("never.ko"))
        .arg(sample)
        .env("KGRAFT_KERNEL_RUSTC", rustc)
        .env("KGRAFT_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kgraft-cache"))
        .output()
        .expect("kgraftc runs")
}

#[test]
fn refuses_a_kernel_outside_the_glob() {
    let out = build(&fake_kdir("old", "5.10.0-30-amd64"), "/usr/bin/rustc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "the patch is for kernels \"6.1.0-*-amd64\", but the kernel build directory is for 5.10.0-30-amd64"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("compiling the patch crate"), "nothing is compiled: {stderr}");
}

#[test]
fn explains_a_missing_kernel_compiler() {
    let out = build(&fake_kdir("match", "6.1.0-99-amd64"), "/nonexistent/rustc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no Rust compiler for kernel code at /nonexistent/rustc"), "{stderr}");
    assert!(stderr.contains("apt-get install rustc-web rust-web-src"), "{stderr}");
}

#[test]
fn refuses_a_directory_that_is_not_a_kernel_build() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-kdir");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let out = build(&dir, "/usr/bin/rustc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a configured kernel build directory"), "{stderr}");
}

#[test]
fn the_kgraft_engine_refuses_nothing_the_livepatch_core_builds() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-header");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let src = dir.join("second_local.kgp");
    // A system state and a target chosen by its symbol position: both the engine's too (it
    // checks states among its patches and counts the symbols of a name as the core does).
    std::fs::write(
        &src,
        "patch second_local {\n    description: \"the second local symbol of a name\",\n    \
         engine: \"kgraft\",\n}\n\nstate KEPT (id = 1, version = 1);\n\n\
         #[sympos(2)]\nreplace fn kgt_local(a: u64) -> u64 { a }\n",
    )
    .expect("a temporary file");
    // The header's engine, and the livepatch core asked for on the command line: the build goes
    // on to the kernel directory (which this fake one fails) with either.
    for extra in [&[][..], &["--engine", "klp"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .args(["build", "--target", "linux", "--kdir"])
            .arg(fake_kdir("engine-header", "6.1.0-99-amd64"))
            .args(extra)
            .arg("-o")
            .arg(dir.join("never.ko"))
            .arg(&src)
            .env("KGRAFT_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kgraft-cache"))
            .output()
            .expect("kgraftc runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(!stderr.contains("does not support"), "{extra:?}: {stderr}");
        assert!(stderr.contains("checking the kernel build directory"), "{extra:?}: {stderr}");
    }
}
