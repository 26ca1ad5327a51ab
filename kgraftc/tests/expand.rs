//! `kgraftc expand` of every sample in `patches/`: snapshot of the review form, and the same
//! bytes on every run.

use std::path::Path;
use std::process::Command;

fn expand(path: &Path, for_build: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgraftc"));
    cmd.current_dir(path.parent().expect("a sample lives in patches/")).arg("expand");
    if for_build {
        cmd.arg("--for-build");
    }
    let output = cmd.arg(path.file_name().expect("file name")).output().expect("kgraftc runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("expand prints UTF-8")
}

#[test]
fn samples() {
    insta::glob!("../../patches", "*.kgp", |path| {
        let text = expand(path, false);
        assert_eq!(text, expand(path, false), "expand is deterministic");
        // Every unsafe block the compiler emits carries a SAFETY comment on the line before.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("unsafe {") {
                let before = lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("//"));
                assert!(before.clone().any(|l| l.contains("// SAFETY: ")), "no SAFETY comment before line {}", i + 1);
            }
        }
        insta::with_settings!({ snapshot_path => "expand", omit_expression => true }, {
            insta::assert_snapshot!(text);
        });
    });
}

#[test]
fn build_source_keeps_bodies_verbatim() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches");
    let mut mapped = 0;
    for entry in std::fs::read_dir(&dir).expect("patches/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "kgp") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("sample");
        let build = expand(&path, true);
        let checked =
            kgraft_lang::check("sample.kgp", &source).map_err(|d| format!("{:?}", d.list)).expect("sample checks");
        let lowered = kgraft_lang::lower(&checked).map_err(|d| format!("{:?}", d.list)).expect("sample lowers");
        // `expand` prints the C file, if any, after the crate.
        assert!(build.starts_with(&lowered.build_source), "{}", path.display());
        assert_eq!(build.len() == lowered.build_source.len(), lowered.c_units.is_empty());
        // Each body's first line (the `{` and what follows) is found verbatim in the build source,
        // and maps back to the same place in the `.kgp` file.
        for (line_no, line) in source.lines().enumerate() {
            let trimmed = line.trim();
            if !(trimmed.starts_with("seq_printf(") || trimmed.starts_with("x ^") || trimmed.starts_with("_printk(")) {
                continue;
            }
            let Some(at) = lowered.build_source.find(line) else {
                // A line of a C body is in the C file instead, as it is.
                let in_c = lowered.c_units.iter().any(|c| c.text.lines().any(|l| l == line));
                assert!(in_c, "{trimmed} not verbatim in build source nor in the C file");
                continue;
            };
            let build_line = lowered.build_source[..at].matches('\n').count() + 1;
            let column = line.len() - line.trim_start().len() + 1;
            let span = lowered.map_position(build_line, column).expect("position maps");
            let expected = source.lines().take(line_no).map(|l| l.len() + 1).sum::<usize>() + column - 1;
            assert_eq!(span.start, expected, "{} line {}", path.display(), line_no + 1);
            mapped += 1;
        }
    }
    assert!(mapped >= 10, "only {mapped} body lines were mapped");
}

#[test]
fn kernel_types_from_the_fixture_kernel() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel");
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(&dir)
        .env("KGRAFT_CACHE_DIR", std::env::temp_dir().join(format!("kgraft-expand-cache-{}", std::process::id())))
        .args(["expand", "--vmlinux", "vmlinux", "types.kgp"])
        .output()
        .expect("kgraftc runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    // Every reached type is defined with its size asserted; the pointee only is opaque.
    for wanted in [
        "pub struct flags_demo {",
        "kgraft_rt::assert_layout!(\n    flags_demo, 32; tag = 1, __anon1 = 4, refs = 8, show = 16, item = 24, data = 32\n);",
        "pub fn set_level(&mut self, value: i32)",
        "pub union __kgraft_anon",
        "pub show: Option<unsafe extern \"C\" fn(*mut seq_file, *mut c_void) -> i32>",
        "pub data: [u64; 0]",
        "pub const NR_FILE_PAGES: stat_item = 5;",
        "pub fn si_meminfo(val: *mut sysinfo);",
        "kgraft_rt::opaque_types!(file);",
    ] {
        assert!(text.contains(wanted), "`{wanted}` missing from:\n{text}");
    }
    insta::with_settings!({ snapshot_path => "expand", omit_expression => true }, {
        insta::assert_snapshot!("fixture_kernel_types", text);
    });
}
