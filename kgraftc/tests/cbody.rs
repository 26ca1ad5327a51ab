//! C bodies: the C file keeps every C line at its `.kgp` line and column, and gcc's mistakes
//! are reported there, with exit status 1, by the host build and (when this machine has a
//! kernel's build directory) by the Linux build.

use std::path::{Path, PathBuf};
mod kernels;

use std::process::{Command, Output};

/// A patch with two C mistakes and a warning, at known lines and columns.
const MISTAKES: &str = r#"patch c_mistakes {
    description: "A C body with mistakes",
}

c {
    #include <linux/seq_file.h>
}

replace fn cmdline_proc_show(m: *mut seq_file, _v: *mut c_void) -> c_int in C {
	int unused;
    seq_printf(m, "%s\n", no_such_name);
    return 0
}
"#;

/// Where gcc's messages about `MISTAKES` must land: (code, line, column).
const EXPECTED: &[(&str, usize, usize)] = &[("gcc -Wunused-variable", 10, 6), ("gcc", 11, 27), ("gcc", 12, 13)];

fn write_case(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cbody-{tag}"));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("c_mistakes.kgp"), MISTAKES).expect("a temporary file");
    dir
}

/// Returns the (code, line, column) of each diagnostic printed as JSON.
fn positions(out: &Output) -> Vec<(String, usize, usize)> {
    let mut found: Vec<(String, usize, usize)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|d| {
            let n = |k: &str| d[k].as_u64().unwrap_or(0) as usize;
            (d["code"].as_str().unwrap_or("").to_owned(), n("line"), n("column"))
        })
        .collect();
    found.sort_by_key(|(_, line, col)| (*line, *col));
    found
}

fn assert_mistakes(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected: Vec<(String, usize, usize)> =
        EXPECTED.iter().map(|(c, l, col)| ((*c).to_owned(), *l, *col)).collect();
    assert_eq!(positions(out), expected, "{stderr}");
}

#[test]
fn gcc_mistakes_are_reported_at_the_kgp_line_on_the_host() {
    let dir = write_case("host");
    let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(&dir)
        .args(["--message-format", "json", "build", "--target", "host", "c_mistakes.kgp", "-o", "never.so"])
        .output()
        .expect("kgraftc runs");
    assert_mistakes(&out);
    assert!(!dir.join("never.so").exists(), "nothing was built");
}

/// A patch under a directory whose name is not ASCII (and has a space and a quote): the C
/// file's `#line` names it as gcc reads C strings, so gcc's messages still land on the `.kgp`.
#[test]
fn a_c_body_under_a_non_ascii_directory_is_reported_at_its_kgp_line() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cbody-caf\u{e9} \"q\"");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("c_mistakes.kgp"), MISTAKES).expect("a temporary file");
    let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["--message-format", "json", "build", "--target", "host", "-o"])
        .arg(dir.join("never.so"))
        .arg(dir.join("c_mistakes.kgp"))
        .output()
        .expect("kgraftc runs");
    assert_mistakes(&out);
}

/// The machine's one kernel build directory, or `None` (saying the test is skipped).
fn one_kdir() -> Option<PathBuf> {
    kernels::installed("the C-body tests against the installed kernel")
}

#[test]
fn gcc_mistakes_are_reported_at_the_kgp_line_by_kbuild() {
    let Some(kdir) = one_kdir() else { return };
    let kdir = &kdir;
    let dir = write_case("linux");
    let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(&dir)
        .args(["--message-format", "json", "build", "--target", "linux", "--kdir"])
        .arg(kdir)
        .args(["c_mistakes.kgp", "-o", "never.ko"])
        .output()
        .expect("kgraftc runs");
    assert_mistakes(&out);
}

#[test]
fn the_c_file_keeps_each_line_at_its_kgp_line_and_column() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut lines_checked = 0;
    for path in [root.join("patches/c_banner.kgp"), root.join("kernel-tests/patches/meminfo_string.kgp")] {
        let source = std::fs::read_to_string(&path).expect("the sample");
        let checked = kgraft_lang::check("sample.kgp", &source).map_err(|d| format!("{:?}", d.list)).expect("checks");
        let lowered = kgraft_lang::lower(&checked).map_err(|d| format!("{:?}", d.list)).expect("lowers");
        let c: String = lowered.c_units.iter().map(|u| u.text.as_str()).collect();
        assert!(!c.is_empty(), "a C file");
        let src_lines: Vec<&str> = source.lines().collect();
        // After `#line N`, the next line is either a generated prototype (it starts in column
        // 1) or line N indented to its column, and every line up to the next `#line` is the
        // source's next line, byte for byte.
        let mut next: Option<(usize, bool)> = None;
        for line in c.lines() {
            if let Some(rest) = line.strip_prefix("#line ") {
                let (n, file) = rest.split_once(' ').expect("#line N \"FILE\"");
                assert_eq!(file, "\"sample.kgp\"");
                next = Some((n.parse::<usize>().expect("a line number") - 1, true));
                continue;
            }
            let Some((n, first)) = next else { continue };
            let original = src_lines.get(n).copied().unwrap_or("");
            if first && !line.starts_with(' ') {
                next = None; // A prototype.
                continue;
            }
            let pad = if first { line.len() - line.trim_start_matches(' ').len() } else { 0 };
            assert!(
                line.len() == original.len() && line[pad..] == original[pad..],
                "{}: C line {line:?} is not line {} of the source, {original:?}",
                path.display(),
                n + 1
            );
            lines_checked += 1;
            next = Some((n + 1, false));
        }
    }
    assert!(lines_checked > 150, "only {lines_checked} lines checked");
}

/// `kgraftc build --target linux --kdir KDIR --ksrc KSRC -o OUT patches/c_banner.kgp`.
fn build_c_banner(kdir: &Path, ksrc: &Path, out: &Path) -> Output {
    let kgp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches/c_banner.kgp");
    Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["build", "--target", "linux", "--kdir"])
        .arg(kdir)
        .arg("--ksrc")
        .arg(ksrc)
        .arg("-o")
        .arg(out)
        .arg(&kgp)
        .output()
        .expect("kgraftc runs")
}

/// A `--ksrc` path reaches kbuild's Makefile, which make expands and a shell reads: a `$(...)`
/// in it is part of the name, never a command.
#[test]
fn a_ksrc_path_is_never_run_as_a_command() {
    let Some(kdir) = one_kdir() else { return };
    let kdir = &kdir;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cbody-ksrc");
    let _ = std::fs::remove_dir_all(&dir);
    let marker = dir.join("ran");
    let ksrc = dir.join(format!("src $(touch {}) #x", marker.display()));
    std::fs::create_dir_all(ksrc.join("fs/proc")).expect("a source tree");
    std::fs::write(ksrc.join("fs/proc/internal.h"), "/* nothing */\n").expect("a header");
    let out = build_c_banner(kdir, &ksrc, &dir.join("c_banner.ko"));
    assert!(!marker.exists(), "make's shell ran the path's command");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // A path holding a quote cannot be given safely: refused, nothing run.
    let quoted = dir.join("it's");
    std::fs::create_dir_all(&quoted).expect("a directory");
    let out = build_c_banner(kdir, &quoted, &dir.join("never.ko"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds a quote or a control character"), "{stderr}");
}

/// A `--ksrc` whose Makefile gives another version than the target was built from is refused,
/// naming both, before anything is compiled.
#[test]
fn a_ksrc_of_another_version_is_refused() {
    let Some(kdir) = one_kdir() else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cbody-ksrc-version");
    let _ = std::fs::remove_dir_all(&dir);
    let ksrc = dir.join("linux-5.10.0");
    std::fs::create_dir_all(ksrc.join("fs/proc")).expect("a source tree");
    std::fs::write(ksrc.join("fs/proc/internal.h"), "/* nothing */\n").expect("a header");
    std::fs::write(ksrc.join("Makefile"), "VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 0\n").expect("a Makefile");
    let out = build_c_banner(&kdir, &ksrc, &dir.join("c_banner.ko"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is Linux 5.10.0, but the kernel of") && err.contains("was built from 6.1."), "{err}");
    assert!(!dir.join("c_banner.ko").exists());
}
