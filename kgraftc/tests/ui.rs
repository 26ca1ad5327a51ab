//! One file per diagnostic case: `tests/ui/NAME.kgp`, checked by `kgraftc check` as a user runs
//! it, output and exit status compared with the snapshot `tests/ui/snapshots/ui__check@NAME.kgp.snap`.

use std::path::Path;
use std::process::Command;

/// Runs `kgraftc` in the case's folder so diagnostics name the file as `NAME.kgp`.
fn run_case(path: &Path) -> String {
    let dir = path.parent().expect("a case lives in tests/ui");
    let name = path.file_name().expect("a case has a file name");
    let text = std::fs::read(path).expect("the case is readable");
    // A first line `// kgraftc: ARGS [-- CHECK_ARGS]` adds arguments before the subcommand,
    // and after it those that follow `--`.
    let extra: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("// kgraftc:"))
        .map(|args| args.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let split = extra.iter().position(|a| a == "--").unwrap_or(extra.len());
    let (before, after) = extra.split_at(split);
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(dir)
        .env("KGRAFT_CACHE_DIR", std::env::temp_dir().join(format!("kgraft-ui-cache-{}", std::process::id())))
        .args(["--color", "never"])
        .args(before)
        .arg("check")
        .args(after.iter().skip(1))
        .arg(name)
        .output()
        .expect("kgraftc runs");
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        output.status.code().map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn check() {
    insta::glob!("ui/*.kgp", |path| {
        insta::with_settings!({ snapshot_path => "ui/snapshots", omit_expression => true }, {
            insta::assert_snapshot!(run_case(path));
        });
    });
}

#[test]
fn every_code_has_a_case_or_a_test() {
    // The cases of this folder cover every code except E0000 (an internal error, never expected),
    // E0027 (an 8 MiB input, built in memory by `limits.rs`) and E0048 (a linked module's call
    // the target lacks, built against a real kernel in `from_diff.rs`).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/snapshots");
    let mut seen = String::new();
    for entry in std::fs::read_dir(&dir).expect("snapshots exist") {
        seen.push_str(&std::fs::read_to_string(entry.expect("entry").path()).expect("snapshot"));
    }
    let missing: Vec<&str> = kgraft_lang::CODES
        .iter()
        .map(|c| c.code)
        // E01xx are `kgraftc from-diff`'s, whose cases are in tests/from_diff.rs.
        .filter(|c| !["E0027", "E0048"].contains(c) && !c.starts_with("E01"))
        .filter(|c| !seen.contains(&format!("[{c}]")) && !seen.contains(&format!("\"{c}\"")))
        .collect();
    assert!(missing.is_empty(), "codes without a ui case: {missing:?}");
}
