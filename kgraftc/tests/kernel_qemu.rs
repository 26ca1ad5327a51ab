//! The Linux kernel target end to end: every sample built into a module and proved under qemu.
//!
//! Opt-in: it runs only with `KGRAFT_QEMU=1`, on a machine with the packages listed in
//! `kernel-tests/setup-notes.md` (CI sets it). It drives `kernel-tests/run.sh` with this build's
//! `kgraftc` and checks each scenario's verdict line from the guest's console, and the book's
//! transcripts that the guest typed ([`transcript::HARNESS`]) against what it printed
//! (`KGRAFT_BLESS=1` rewrites them).

mod transcript;

use std::path::Path;
use std::process::Command;

/// The scenarios the guest runs, by the name of their verdict line: the first word of each line
/// of `kernel-tests/scenarios` that is neither blank nor a `#` comment (as `init.sh` reads it).
fn scenarios() -> Vec<String> {
    let list = include_str!("../../kernel-tests/scenarios");
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !name.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Runs everywhere, without qemu: every listed scenario has its function in `init.sh`, and every
/// scenario function there is listed, so a typo shows before a guest boots.
#[test]
fn the_scenario_list_and_init_sh_agree() {
    let init = include_str!("../../kernel-tests/init.sh");
    let defined: Vec<&str> =
        init.lines().filter_map(|line| line.strip_prefix("scenario_")?.strip_suffix("() {")).collect();
    let listed = scenarios();
    assert!(!listed.is_empty(), "kernel-tests/scenarios lists no scenario");
    for name in &listed {
        assert!(
            defined.contains(&name.as_str()),
            "kernel-tests/scenarios lists {name}, init.sh has no scenario_{name}"
        );
        assert_eq!(
            listed.iter().filter(|n| *n == name).count(),
            1,
            "{name} is listed twice: verdicts need one name each"
        );
    }
    for name in defined {
        assert!(
            listed.iter().any(|n| n == name),
            "init.sh defines scenario_{name}, kernel-tests/scenarios does not list it"
        );
    }
}

#[test]
fn kernel_under_qemu() {
    if std::env::var_os("KGRAFT_QEMU").is_none_or(|v| v != "1") {
        eprintln!("kernel_under_qemu: skipped (set KGRAFT_QEMU=1 to boot a kernel under qemu)");
        return;
    }
    // `KGRAFT_QEMU_CONSOLE=FILE` checks the console of a run made by hand
    // (`kernel-tests/run.sh WORK_DIR` leaves it in `WORK_DIR/console.txt`) instead of booting.
    let (status, console) = match std::env::var_os("KGRAFT_QEMU_CONSOLE") {
        Some(file) => (None, std::fs::read_to_string(&file).expect("the console file of a harness run")),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-tests");
            let status = Command::new("sh")
                .arg(root.join("kernel-tests/run.sh"))
                .arg(&work)
                .env("KGRAFTC", env!("CARGO_BIN_EXE_kgraftc"))
                .status()
                .expect("kernel-tests/run.sh should start");
            (Some(status), std::fs::read_to_string(work.join("console.txt")).unwrap_or_default())
        }
    };
    // The end of the guest's console says what went wrong when a verdict is missing.
    let lines: Vec<&str> = console.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    for scenario in scenarios() {
        let verdict =
            console.lines().find(|l| l.starts_with(&format!("KGRAFT-TEST {scenario} "))).unwrap_or("no verdict");
        assert!(verdict.ends_with(" PASS"), "scenario {scenario}: {verdict}\nconsole tail:\n{tail}");
    }
    let errors: Vec<String> = transcript::HARNESS.iter().flat_map(|name| book_transcript(&console, name)).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    if let Some(status) = status {
        assert!(status.success(), "kernel-tests/run.sh failed: {status}\nconsole tail:\n{tail}");
    }
}

/// Compares the book's transcript `name` with what the guest printed running its commands
/// (`KGRAFT-BOOK-CMD NAME COMMAND` and `KGRAFT-BOOK NAME LINE`); returns the differences.
fn book_transcript(console: &str, name: &str) -> Vec<String> {
    let t = transcript::Transcript::read(name);
    let (cmd, out) = (format!("KGRAFT-BOOK-CMD {name} "), format!("KGRAFT-BOOK {name}"));
    let mut outputs: Vec<Vec<String>> = Vec::new();
    for line in console.lines() {
        if line.starts_with(&cmd) {
            outputs.push(Vec::new());
        } else if let (Some(rest), Some(current)) = (line.strip_prefix(&out), outputs.last_mut()) {
            let text = rest.strip_prefix(' ').unwrap_or(rest);
            current.extend(transcript::lines(text, &[]));
            if text.is_empty() {
                current.push(String::new());
            }
        }
    }
    if outputs.len() != t.steps.len() {
        return vec![format!("{name}: the guest ran {} of its {} commands", outputs.len(), t.steps.len())];
    }
    transcript::check(&t, &outputs)
}
