//! What turning a fix into a patch costs, through `kgraftc from-diff` as a user runs it, on the
//! fixes of `kernel-tests/fixes` against Debian's 6.1 source tarball (one file each, a system
//! call, and three files):
//!
//! - cold: an empty cache, so the 138 MB tarball is listed and the fix's directories unpacked,
//!   then both compiles, the comparison, the `.kgp` and the proof;
//! - warm: the same with the cache filled (what every later fix of the same kernel costs);
//! - warm to `.ko`: `--build` as well (the module through kbuild; the kernel's description and
//!   the compiled `core` already cached).
//!
//! Run with `cargo bench -p kgraftc --bench from_diff`; it prints figures (medians) and needs
//! the kernel headers under /lib/modules and /usr/src/linux-source-6.1.tar.xz.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `kgraftc from-diff` once with `cache` as the cache and returns how long it took.
fn from_diff(fix: &str, kdir: &Path, out: &Path, cache: &Path, build: bool) -> Duration {
    let fixes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-tests/fixes");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgraftc"));
    cmd.arg("from-diff")
        .arg(fixes.join(fix))
        .args(["--ksrc", "/usr/src/linux-source-6.1.tar.xz", "--kdir"])
        .arg(kdir)
        .arg("-o")
        .arg(out)
        .env("KGRAFT_CACHE_DIR", cache);
    if build {
        cmd.arg("--build");
    }
    let start = Instant::now();
    let done = cmd.output().expect("kgraftc runs");
    let took = start.elapsed();
    assert!(done.status.success(), "{fix}: {}", String::from_utf8_lossy(&done.stderr));
    took
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let kdir = std::fs::read_dir("/lib/modules")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("build"))
        .find(|p| p.join("Makefile").is_file());
    let (Some(kdir), true) = (kdir, Path::new("/usr/src/linux-source-6.1.tar.xz").is_file()) else {
        eprintln!("no kernel headers or no linux-source-6.1: nothing to measure");
        return;
    };
    let work = std::env::temp_dir().join(format!("kgraft-bench-from-diff-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a work directory");
    let out = work.join("fix.kgp");
    let cache = |n: usize| -> PathBuf { work.join(format!("cache-{n}")) };
    let fixes = [
        "cmdline_prefix.patch",
        "meminfo_label.diff",
        "settimeofday_tz_range.diff",
        "mm_alloc_fatal_signal.diff",
        "uname_version_mark.diff",
        "shadow_fork_serial.diff",
    ];
    println!("{:<28} {:>10} {:>10}", "fix", "cold", "warm");
    for (i, fix) in fixes.iter().enumerate() {
        let cold = from_diff(fix, &kdir, &out, &cache(i), false);
        let warm = median((0..3).map(|_| from_diff(fix, &kdir, &out, &cache(i), false)).collect());
        println!("{fix:<28} {:>9.1}s {:>9.1}s", cold.as_secs_f64(), warm.as_secs_f64());
    }
    // To the module: the first build (the "cold" column) also fills the cache with the kernel's
    // description (its probe under qemu) and the compiled `core`.
    let first = from_diff(fixes[0], &kdir, &out, &cache(0), true);
    let warm = median((0..3).map(|_| from_diff(fixes[0], &kdir, &out, &cache(0), true)).collect());
    let name = format!("{} to .ko", fixes[0]);
    println!("{name:<28} {:>9.1}s {:>9.1}s", first.as_secs_f64(), warm.as_secs_f64());
    let _ = std::fs::remove_dir_all(&work);
}
