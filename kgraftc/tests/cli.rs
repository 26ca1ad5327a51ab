//! `kgraftc`'s exit statuses and `explain`.

use std::process::Command;

fn kgraftc(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("kgraftc runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn clean_sample_exits_0() {
    let (code, out, err) = kgraftc(&["check", "../patches/shadow_counter.kgp"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_empty(), "{out}");
    // Without a target kernel, the one thing said is that its types stay opaque.
    assert!(err.starts_with("note: no target kernel: `kgt_dev`, `seq_file` stay opaque"), "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    let (code, out, err) = kgraftc(&["--message-format", "json", "check", "../patches/shadow_counter.kgp"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_empty() && err.is_empty(), "JSON output stays silent: {out}{err}");
}

#[test]
fn errors_exit_1() {
    let (code, _, err) = kgraftc(&["--color", "never", "check", "tests/ui/two_headers.kgp"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("error[E0003]"), "{err}");
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let (code, _, err) = kgraftc(&["check", "tests/ui/no_such_file.kgp"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read `tests/ui/no_such_file.kgp`"), "{err}");
    let (code, _, _) = kgraftc(&["check"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = kgraftc(&["--message-format", "xml", "check", "x.kgp"]);
    assert_eq!(code, Some(2));
}

#[test]
fn explain_prints_every_code() {
    for info in kgraft_lang::CODES {
        let (code, out, _) = kgraftc(&["explain", info.code]);
        assert_eq!(code, Some(0), "{}", info.code);
        assert!(out.starts_with(&format!("{}: {}\n\n", info.code, info.title)), "{out}");
        assert!(out.len() > 80, "{} has a long explanation", info.code);
    }
    let (code, out, _) = kgraftc(&["explain", "e11"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("E0011: "));
    let (code, _, err) = kgraftc(&["explain", "E9999"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a kgraftc diagnostic code"), "{err}");
}
