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

/// Builds the sample `name` with `--engine kgraft` against a fake kernel directory.
fn build_kgraft(name: &str) -> Output {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../patches/{name}.kgp"));
    Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["build", "--target", "linux", "--engine", "kgraft", "--kdir"])
        .arg(fake_kdir("engine", "6.1.0-99-amd64"))
        .arg("-o")
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("never.ko"))
        .arg(sample)
        .env("KGRAFT_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kgraft-cache"))
        .output()
        .expect("kgraftc runs")
}

#[test]
fn the_kgraft_engine_refuses_what_only_the_livepatch_core_does() {
    for (sample, what) in [
        ("console_state", "the kgraft engine does not support system states (`state` items)"),
        ("console_state_v2", "the kgraft engine does not support system states (`state` items)"),
    ] {
        let out = build_kgraft(sample);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sample}: {stderr}");
        assert!(stderr.contains(what), "{sample}: {stderr}");
        assert!(stderr.contains("build with `--engine klp`"), "{sample}: {stderr}");
        assert!(!stderr.contains("checking the kernel build directory"), "refused before any step: {stderr}");
    }
}

#[test]
fn the_header_can_ask_for_the_kgraft_engine() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-header");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let src = dir.join("second_local.kgp");
    let write = |state: bool| {
        let state = if state { "state KEPT (id = 1, version = 1);\n\n" } else { "" };
        std::fs::write(
            &src,
            format!(
                "patch second_local {{\n    description: \"the second local symbol of a name\",\n    \
                 engine: \"kgraft\",\n}}\n\n{state}#[sympos(2)]\nreplace fn kgt_local(a: u64) -> u64 {{ a }}\n"
            ),
        )
        .expect("a temporary file");
    };
    write(true);
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .args(["build", "--target", "linux", "--kdir"])
            .arg(fake_kdir("engine-header", "6.1.0-99-amd64"))
            .args(extra)
            .arg("-o")
            .arg(dir.join("never.ko"))
            .arg(&src)
            .env("KGRAFT_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kgraft-cache"))
            .output()
            .expect("kgraftc runs")
    };
    // The header's engine refuses what it cannot do (the checker says so, at the header),
    // before any step.
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kgraft's own engine does not support system states"), "{stderr}");
    assert!(!stderr.contains("checking the kernel build directory"), "{stderr}");
    // A target chosen by its symbol position is the kgraft engine's too (the engine counts the
    // symbols of a name as the livepatch core does): the build goes on to the kernel
    // directory, with either engine.
    write(false);
    for extra in [&[][..], &["--engine", "klp"][..]] {
        let out = run(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("does not support"), "{extra:?}: {stderr}");
        assert!(stderr.contains("checking the kernel build directory"), "{extra:?}: {stderr}");
    }
}
