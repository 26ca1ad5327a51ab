//! What knowing the target kernel costs, measured through `kgraftc` as a user runs it: reading a
//! kernel image the first time (cold, with and without the qemu probe), checking against the
//! cached description, and checking the 1,000-replacement patch with and without a kernel.
//!
//! Run with `cargo bench -p kgraft-lang --bench kernel`; it prints figures (medians of several
//! runs) and needs a kernel under /lib/modules with its image in /boot for the kernel rows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn generated(count: usize) -> String {
    let mut src = String::from(
        "patch generated {\n    description: \"generated for the benchmark\",\n}\n\n\
         extern {\n    fn _printk(fmt: *const c_char, ...) -> c_int;\n}\n\n\
         shadow gen_dev {\n    calls: u64 = 0,\n}\n\n",
    );
    for i in 0..count {
        src.push_str(&format!(
            "/// Replacement number {i}.\nreplace fn gen_fn_{i}(dev: *mut gen_dev, x: u64) -> u64 {{\n    \
             *shadow!(dev.calls) += 1;\n    if x > {i} {{\n        _printk(c\"big %llu\\n\".as_ptr(), x);\n    }}\n    \
             x.wrapping_mul({i}).rotate_left(3) ^ *shadow!(dev.calls)\n}}\n\n"
        ));
    }
    src
}

/// Runs kgraftc once and returns how long it took.
fn run(args: &[&str], cache: &Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(args)
        .env("KGRAFT_CACHE_DIR", cache)
        .output()
        .expect("kgraftc runs");
    let took = start.elapsed();
    // A generated patch against a real kernel has errors (its targets do not exist): exit 1 is
    // part of the measurement; anything else is not.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&out.stderr));
    took
}

fn median(args: &[&str], cache: &Path, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| run(args, cache)).collect();
    times.sort();
    times[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn installed_kdir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
        .ok()?
        .flatten()
        .map(|e| e.path().join("build"))
        .filter(|p| p.join("Makefile").is_file())
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

fn main() {
    let dir = std::env::temp_dir().join(format!("kgraft-bench-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let big = dir.join("generated.kgp");
    std::fs::write(&big, generated(1000)).expect("the generated patch");
    let big = big.to_str().expect("UTF-8");
    let small = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-tests/patches/kernel_fields.kgp");
    let small = small.to_str().expect("UTF-8");
    let warm = dir.join("cache-warm");

    println!("kgraftc check, 1,000 replacements, no kernel:      {}", ms(median(&["check", big], &warm, 9)));
    let Some(kdir) = installed_kdir() else {
        println!("no single kernel under /lib/modules: the kernel rows are skipped");
        return;
    };
    let kdir = kdir.to_str().expect("UTF-8");
    let cold = |name: &str, extra: &[&str]| {
        let cache = dir.join(name);
        let mut args = vec!["check", "--kdir", kdir];
        args.extend_from_slice(extra);
        args.push(small);
        run(&args, &cache)
    };
    println!("first read of the image, BTF only (--no-probe):    {}", ms(cold("cold-btf", &["--no-probe"])));
    println!("first read of the image, with the qemu probe:      {}", ms(cold("cold-probe", &[])));
    run(&["check", "--kdir", kdir, small], &warm);
    println!(
        "kgraftc check --kdir, cached kernel, one patch:    {}",
        ms(median(&["check", "--kdir", kdir, small], &warm, 9))
    );
    println!(
        "kgraftc check --kdir, cached kernel, 1,000 repl.:  {}",
        ms(median(&["check", "--kdir", kdir, big], &warm, 5))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
