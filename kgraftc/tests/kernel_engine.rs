//! kgraft's own engine in the kernel (`--engine kgraft`), end to end under qemu.
//!
//! Opt-in like `kernel_qemu`: it runs only with `KGRAFT_QEMU=1`. It drives
//! `kernel-tests/engine.sh` with this build's `kgraftc` and checks each scenario's verdict line
//! from the guest's console; the benchmark's figures (`KGRAFT-BENCH`) are printed, not judged.
//! Then it runs the main harness again with every sample built for the kgraft engine
//! (`ENGINE=kgraft kernel-tests/run.sh`) and checks every scenario of `kernel-tests/scenarios`
//! not marked `klp-only`. The two boots run one after the other: timing-sensitive scenarios
//! would suffer from a second emulated machine beside them.

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
    let _one_guest_at_a_time = GUEST.lock().unwrap_or_else(|e| e.into_inner());
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

/// The scenarios of `kernel-tests/scenarios` that run with the kgraft engine: every listed one
/// not marked `klp-only`.
fn main_scenarios_for_kgraft(list: &str) -> Vec<&str> {
    list.lines()
        .filter(|l| !l.split_whitespace().any(|w| w == "klp-only"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !name.starts_with('#'))
        .collect()
}

#[test]
fn main_scenarios_with_the_kgraft_engine_under_qemu() {
    if std::env::var_os("KGRAFT_QEMU").is_none_or(|v| v != "1") {
        eprintln!("main_scenarios_with_the_kgraft_engine_under_qemu: skipped (set KGRAFT_QEMU=1)");
        return;
    }
    // After the engine's own boot: the test harness may run the two tests at once.
    let _one_guest_at_a_time = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let list = std::fs::read_to_string(root.join("kernel-tests/scenarios")).expect("the scenario list is readable");
    let scenarios = main_scenarios_for_kgraft(&list);
    assert!(scenarios.len() >= 10, "only {} scenarios run with the kgraft engine", scenarios.len());
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-tests-kgraft");
    let status = Command::new("sh")
        .arg(root.join("kernel-tests/run.sh"))
        .arg(&work)
        .env("KGRAFTC", env!("CARGO_BIN_EXE_kgraftc"))
        .env("ENGINE", "kgraft")
        .status()
        .expect("kernel-tests/run.sh should start");
    let console = std::fs::read_to_string(work.join("console.txt")).unwrap_or_default();
    let lines: Vec<&str> = console.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    for scenario in scenarios {
        let verdict =
            console.lines().find(|l| l.starts_with(&format!("KGRAFT-TEST {scenario} "))).unwrap_or("no verdict");
        assert!(verdict.ends_with(" PASS"), "scenario {scenario} (kgraft engine): {verdict}\nconsole tail:\n{tail}");
    }
    assert!(status.success(), "ENGINE=kgraft kernel-tests/run.sh failed: {status}\nconsole tail:\n{tail}");
}

/// One emulated machine at a time.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());
