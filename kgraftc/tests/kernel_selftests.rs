//! Upstream's livepatch selftests (Linux 6.1) with every livepatch test module written as `.kgp`.
//!
//! The qemu run is opt-in, as `kernel_qemu.rs` is: it runs only with `KGRAFT_QEMU=1`, on a
//! machine with the packages listed in `kernel-tests/setup-notes.md` (CI sets it). It drives
//! `kernel-tests/selftests.sh` with this build's `kgraftc`, which runs the six scripts unchanged
//! in the guest, and checks that every case passed and that the port of the sample
//! livepatch-callbacks-demo logged what the C sample logs. The language's checks of the ports
//! run always.

mod guest;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The scripts of tools/testing/selftests/livepatch and how many cases (`start_test`) each has.
const SCRIPTS: &[(&str, usize)] = &[
    ("test-livepatch.sh", 3),
    ("test-callbacks.sh", 11),
    ("test-shadow-vars.sh", 1),
    ("test-state.sh", 4),
    ("test-ftrace.sh", 1),
    ("test-sysfs.sh", 2),
];

/// The ports: upstream's livepatch test modules, and the callbacks sample.
fn ports() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-tests");
    let dir = root.join("selftests");
    let mut list: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("kernel-tests/selftests exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "kgp"))
        .collect();
    list.sort();
    list.push(root.join("samples/livepatch_callbacks_demo.kgp"));
    list
}

#[test]
fn every_port_passes_the_language_checks() {
    let ports = ports();
    assert_eq!(ports.len(), 8, "seven test modules and the sample: {ports:?}");
    for path in ports {
        let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .args(["--color", "never", "check"])
            .arg(&path)
            .output()
            .expect("kgraftc should start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        assert!(!stderr.contains("warning"), "{}: {stderr}", path.display());
    }
}

#[test]
fn upstream_selftests_under_qemu() {
    if !guest::enabled("upstream_selftests_under_qemu") {
        return;
    }
    let run = guest::Run::harness("selftests.sh", "kernel-selftests", &[]);
    let (console, tail) = (&run.console, run.tail());
    let mut passed = 0;
    for (script, cases) in SCRIPTS {
        let prefix = format!("KGRAFT-ST-CASE {script} ");
        let seen: Vec<&str> = console.lines().filter(|l| l.starts_with(&prefix)).collect();
        let ok = seen.iter().filter(|l| l[prefix.len()..].starts_with("PASS ")).count();
        eprintln!("{script}: {ok} of {cases} cases passed");
        for line in seen.iter().filter(|l| !l[prefix.len()..].starts_with("PASS ")) {
            eprintln!("  {line}");
        }
        passed += ok;
        let rc =
            console.lines().find_map(|l| l.strip_prefix(&format!("KGRAFT-ST-SCRIPT {script} rc="))).unwrap_or("none");
        assert!(
            ok == *cases && rc == "0",
            "{script}: {ok} of {cases} cases passed, exit status {rc}\nconsole tail:\n{tail}"
        );
    }
    let total: usize = SCRIPTS.iter().map(|(_, n)| n).sum();
    eprintln!("upstream livepatch selftests: {passed} of {total} cases passed");
    let demo = console.lines().find(|l| l.starts_with("KGRAFT-DEMO ")).unwrap_or("no verdict");
    assert_eq!(demo, "KGRAFT-DEMO same", "livepatch-callbacks-demo\nconsole tail:\n{tail}");
    run.assert_success("kernel-tests/selftests.sh");
}
