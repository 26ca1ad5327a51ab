//! kgraft's own engine in the kernel (`--engine kgraft`), end to end under qemu.
//!
//! Opt-in like `kernel_qemu`: it runs only with `KGRAFT_QEMU=1`. It drives
//! `kernel-tests/engine.sh` with this build's `kgraftc` and checks each scenario's verdict line
//! from the guest's console; the benchmark's figures (`KGRAFT-BENCH`) are printed, not judged.

use std::path::Path;
use std::process::Command;

/// The scenarios `kernel-tests/engine-init.sh` runs, by the name of their verdict line: each is
/// one `run NAME FUNCTION` line there, the only list of them.
fn scenarios(init: &str) -> Vec<&str> {
    init.lines().filter_map(|l| l.strip_prefix("run ")?.split_whitespace().next()).collect()
}

#[test]
fn kgraft_engine_under_qemu() {
    if std::env::var_os("KGRAFT_QEMU").is_none_or(|v| v != "1") {
        eprintln!("kgraft_engine_under_qemu: skipped (set KGRAFT_QEMU=1 to boot a kernel under qemu)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let init = std::fs::read_to_string(root.join("kernel-tests/engine-init.sh")).expect("engine-init.sh is readable");
    let scenarios = scenarios(&init);
    assert!(scenarios.len() >= 8, "engine-init.sh lists {} scenarios", scenarios.len());
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-tests-engine");
    let status = Command::new("sh")
        .arg(root.join("kernel-tests/engine.sh"))
        .arg(&work)
        .env("KGRAFTC", env!("CARGO_BIN_EXE_kgraftc"))
        .status()
        .expect("kernel-tests/engine.sh should start");
    let console = std::fs::read_to_string(work.join("console.txt")).unwrap_or_default();
    let lines: Vec<&str> = console.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    for line in lines.iter().filter(|l| l.starts_with("KGRAFT-BENCH") || l.starts_with("KGRAFT-PAIR")) {
        eprintln!("{line}");
    }
    for scenario in scenarios {
        let verdict =
            console.lines().find(|l| l.starts_with(&format!("KGRAFT-TEST {scenario} "))).unwrap_or("no verdict");
        assert!(verdict.ends_with(" PASS"), "scenario {scenario}: {verdict}\nconsole tail:\n{tail}");
    }
    assert!(status.success(), "kernel-tests/engine.sh failed: {status}\nconsole tail:\n{tail}");
}
