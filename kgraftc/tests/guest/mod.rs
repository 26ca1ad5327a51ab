//! A boot of one of the qemu harnesses of `kernel-tests/`, as the tests that check them run it.
//!
//! Every harness is opt-in (`KGRAFT_QEMU=1`), takes this build's `kgraftc` as `KGRAFTC`, leaves
//! the guest's console in `WORK/console.txt`, and prints one verdict line a scenario.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// Whether the qemu harnesses run; says so when `test` is skipped.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var_os("KGRAFT_QEMU").is_some_and(|v| v == "1");
    if !on {
        eprintln!("{test}: skipped (set KGRAFT_QEMU=1 to boot a kernel under qemu)");
    }
    on
}

/// The scenarios an init script (`kernel-tests/engine-init.sh`, `nolp-init.sh`) runs, by the
/// name of their verdict line: each is one `run NAME` line there (the function
/// `scenario_NAME`), the only list of them.
pub fn init_scenarios(init: &str) -> Vec<&str> {
    init.lines().filter_map(|l| l.strip_prefix("run ")?.split_whitespace().next()).collect()
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A finished run: the harness's exit status (none when a console was read instead) and the
/// guest's console.
pub struct Run {
    pub status: Option<ExitStatus>,
    pub console: String,
}

impl Run {
    /// Runs `kernel-tests/SCRIPT` with the work directory `work` (under the test target's
    /// directory) and the environment `env`.
    pub fn harness(script: &str, work: &str, env: &[(&str, &str)]) -> Run {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(work);
        let status = Command::new("sh")
            .arg(root().join("kernel-tests").join(script))
            .arg(&work)
            .env("KGRAFTC", env!("CARGO_BIN_EXE_kgraftc"))
            .envs(env.iter().copied())
            .status()
            .unwrap_or_else(|e| panic!("kernel-tests/{script} should start: {e}"));
        Run { status: Some(status), console: std::fs::read_to_string(work.join("console.txt")).unwrap_or_default() }
    }

    /// The end of the console, which says what went wrong when a verdict is missing.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Asserts that the scenario `name` printed `KGRAFT-TEST NAME PASS`; `what` names the run.
    pub fn assert_passed(&self, name: &str, what: &str) {
        let prefix = format!("KGRAFT-TEST {name} ");
        let verdict = self.console.lines().find(|l| l.starts_with(&prefix)).unwrap_or("no verdict");
        assert!(verdict.ends_with(" PASS"), "scenario {name} ({what}): {verdict}\nconsole tail:\n{}", self.tail());
    }

    /// Asserts that the harness itself succeeded.
    pub fn assert_success(&self, what: &str) {
        if let Some(status) = self.status {
            assert!(status.success(), "{what} failed: {status}\nconsole tail:\n{}", self.tail());
        }
    }
}
