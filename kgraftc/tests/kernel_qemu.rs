//! The Linux kernel target end to end: every sample built into a module and proved under qemu.
//!
//! Opt-in: it runs only with `KGRAFT_QEMU=1`, on a machine with the packages listed in
//! `kernel-tests/setup-notes.md` (CI sets it). It drives `kernel-tests/run.sh` with this build's
//! `kgraftc` and checks each scenario's verdict line from the guest's console.

use std::path::Path;
use std::process::Command;

/// The scenarios `kernel-tests/init.sh` runs, by the name of their verdict line.
const SCENARIOS: &[&str] = &[
    "cmdline_banner",
    "shadow_callbacks",
    "atomic_replace",
    "module_late",
    "consistency",
    "broken_extern",
    "c_banner",
    "meminfo_string",
    "kernel_fields",
    "shadow_samples",
    "object_callbacks",
    "take_all_off",
    "kgraftc_kernel",
    "straggler_timeout",
    "kgraftc_force",
    "package_scripts",
    "system_states",
    "syscall",
    "module_extern",
];

#[test]
fn kernel_under_qemu() {
    if std::env::var_os("KGRAFT_QEMU").is_none_or(|v| v != "1") {
        eprintln!("kernel_under_qemu: skipped (set KGRAFT_QEMU=1 to boot a kernel under qemu)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-tests");
    let status = Command::new("sh")
        .arg(root.join("kernel-tests/run.sh"))
        .arg(&work)
        .env("KGRAFTC", env!("CARGO_BIN_EXE_kgraftc"))
        .status()
        .expect("kernel-tests/run.sh should start");
    let console = std::fs::read_to_string(work.join("console.txt")).unwrap_or_default();
    // The end of the guest's console says what went wrong when a verdict is missing.
    let lines: Vec<&str> = console.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    for scenario in SCENARIOS {
        let verdict =
            console.lines().find(|l| l.starts_with(&format!("KGRAFT-TEST {scenario} "))).unwrap_or("no verdict");
        assert!(verdict.ends_with(" PASS"), "scenario {scenario}: {verdict}\nconsole tail:\n{tail}");
    }
    assert!(status.success(), "kernel-tests/run.sh failed: {status}\nconsole tail:\n{tail}");
}
