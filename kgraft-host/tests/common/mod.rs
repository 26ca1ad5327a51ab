//! Helpers shared by the host's tests: hand-built patches and a lock that serialises tests.

#![allow(dead_code)]

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kgraft_host::engine::{Engine, Progress, engine};
use kgraft_rt::{Callbacks, Func, Patch};

/// Serialises the tests of one binary: they share the host's text and engine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of the pair's new version.
pub const NEW_KEY: u64 = 0x0123_4567_89ab_cdef;
/// The key of the pair's old version.
pub const OLD_KEY: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// The new encoder.
pub unsafe extern "C" fn encode_v2(x: u64) -> u64 {
    x ^ NEW_KEY
}

/// The new decoder.
pub unsafe extern "C" fn decode_v2(y: u64) -> u64 {
    y ^ NEW_KEY
}

/// A target in the built-in module.
pub const fn func(name: &'static CStr, new_fn: *const ()) -> Func {
    Func { name, object: Some(c"kgraft_testmod"), sympos: 0, new_fn, direct: std::ptr::null() }
}

/// A patch with no shadows and no callbacks.
pub const fn patch(name: &'static CStr, funcs: &'static [Func], replace_all: bool) -> Patch {
    Patch {
        name,
        description: c"a test patch",
        kernel: None,
        replace_all,
        replace_all_param: None,
        funcs,
        shadows: &[],
        callbacks: Callbacks::NONE,
        objects: &[],
        states: &[],
    }
}

/// Both halves of the pair, new key.
pub static PAIR_FUNCS: [Func; 2] =
    [func(c"kgt_encode", encode_v2 as *const ()), func(c"kgt_decode", decode_v2 as *const ())];
/// The pair patch.
pub static PAIR: Patch = patch(c"pair_v2", &PAIR_FUNCS, false);
/// Only the encoder.
pub static ENC_FUNCS: [Func; 1] = [func(c"kgt_encode", encode_v2 as *const ())];
/// The encoder-only patch.
pub static ENC_ONLY: Patch = patch(c"pair_encode_only", &ENC_FUNCS, false);
/// Only the decoder.
pub static DEC_FUNCS: [Func; 1] = [func(c"kgt_decode", decode_v2 as *const ())];
/// The decoder-only patch.
pub static DEC_ONLY: Patch = patch(c"pair_decode_only", &DEC_FUNCS, false);

/// Applies a patch and waits for its transition to end.
pub fn apply(e: &mut Engine, p: &'static Patch) {
    e.begin_apply(p, None).expect("the patch applies");
    finish(e);
}

/// Removes a patch and waits for its transition to end.
pub fn remove(e: &mut Engine, name: &str) {
    e.begin_remove(name).expect("the patch is removed");
    finish(e);
}

/// Waits for the transition in progress to end.
pub fn finish(e: &mut Engine) {
    match e.wait(Duration::from_secs(20), |_| {}).expect("the transition completes") {
        Progress::Done { .. } | Progress::Idle => {}
        p => panic!("the transition did not end: {p:?}"),
    }
}

/// Returns the engine, which must set up.
pub fn eng() -> std::sync::MutexGuard<'static, Engine> {
    engine().expect("the host engine sets up")
}

/// Returns the workspace's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the `kgraftc` binary in a target directory of its own (the test's own is locked while
/// it runs), for the tests that drive `kgraftc host` and read what it prints.
pub fn kgraftc() -> PathBuf {
    let target = root().join("target").join("kgraft").join("tools");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "kgraftc", "--bin", "kgraftc", "--target-dir"])
        .arg(&target)
        .current_dir(root())
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "kgraftc builds");
    target.join("debug").join("kgraftc")
}

/// Builds a sample for the host with kgraftc's build driver, run in this process, and returns
/// the shared object.
///
/// The patch is checked against, and takes its types from, this test executable: it links the
/// host's C "kernel" (with its BTF) and is the host the patch is loaded into.
pub fn build(sample: &str, out_dir: &Path) -> PathBuf {
    let out = out_dir.join(format!("{sample}.so"));
    let me = std::env::current_exe().expect("the test knows its executable");
    let source = root().join("patches").join(format!("{sample}.kgp"));
    let status = kgraftc::run_args([
        "kgraftc".as_ref(),
        "build".as_ref(),
        "--target".as_ref(),
        "host".as_ref(),
        "--vmlinux".as_ref(),
        me.as_os_str(),
        source.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(status, 0, "{sample} builds (kgraftc's messages are above)");
    out
}
