//! Mutation and random-input property test: `check` never panics, every rejected input gets at
//! least one diagnostic with a code and a span inside the source, every accepted input lowers,
//! and any range of the lowered build source (what rustc reports on) maps back to a span of the
//! source on character boundaries.
//!
//! The command line gets the same inputs: `kgraftc check` and `expand` (into a full disk and a
//! closed pipe too) end with status 0, 1 or 2 and never panic, and `build --target check` runs
//! rustc on some and maps what it reports into the source.
//!
//! The run is deterministic (a fixed seed per case). It tries a few thousand inputs by default;
//! set `KGRAFT_FUZZ_CASES=100000` for the long run, `KGRAFT_FUZZ_CLI_CASES` and
//! `KGRAFT_FUZZ_BUILD_CASES` for more command lines and rustc runs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Pieces worth inserting: delimiters, literal openers, keywords and odd characters.
const PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    "\"",
    "'",
    "r#\"",
    "\"#",
    "/*",
    "*/",
    "//",
    "///",
    "//!",
    "...",
    ",",
    ";",
    ":",
    "=",
    "->",
    "#[sympos(2)]",
    "#[",
    "shadow!(",
    "dev.reads",
    "patch x { description: \"d\" }",
    "replace fn f(a: u64) -> u64 { a }",
    "module \"m\" {",
    "on pre_patch { 0 }",
    "extern {",
    "static ",
    "fn ",
    "shadow t { a: u64 = 0 }",
    "\0",
    "\u{feff}",
    "é",
    "\u{10FFFF}",
    "\n",
    " ",
    "\\",
    "0x",
    "true",
    "_",
    "type",
    "__kgraft",
    "\r\n",
    "\t",
    "let été = 1;",
    "\u{202E}",
    "c\"\u{202E}x\"",
    "\u{2066}",
    "module \"a-b\" {",
];

/// The samples of `patches/`: valid sources.
fn samples() -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches"))
        .expect("patches/")
        .filter_map(|e| Some(e.ok()?.path()).filter(|p| p.extension().is_some_and(|e| e == "kgp")))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read_to_string(p).expect("readable")).collect()
}

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [root.join("../patches"), root.join("tests/ui")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "kgp") {
                out.push(String::from_utf8_lossy(&std::fs::read(&p).expect("readable")).into_owned());
            }
        }
    }
    assert!(out.len() > 10, "seeds found");
    out
}

fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut s = src.to_owned();
    for _ in 0..1 + rng.below(4) {
        let a = boundary(&s, rng.below(s.len() + 1));
        let b = boundary(&s, a + rng.below(64));
        match rng.below(6) {
            0 => s.replace_range(a..b, ""),
            1 => s.insert_str(a, PIECES[rng.below(PIECES.len())]),
            2 => {
                let piece = s[a..b].to_owned();
                let at = boundary(&s, rng.below(s.len() + 1));
                s.insert_str(at, &piece);
            }
            3 => s.truncate(a),
            4 => {
                let c = char::from_u32(rng.below(0x3000) as u32).unwrap_or('?');
                s.insert(a, c);
            }
            _ => {
                let piece = PIECES[rng.below(PIECES.len())];
                s.replace_range(a..b, piece);
            }
        }
    }
    s
}

fn random(rng: &mut Rng) -> String {
    let len = rng.below(200);
    (0..len)
        .map(|_| match rng.below(3) {
            0 => PIECES[rng.below(PIECES.len())].to_owned(),
            1 => char::from_u32(rng.below(128) as u32).unwrap_or(' ').to_string(),
            _ => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x').to_string(),
        })
        .collect()
}

/// Maps random byte ranges of the build source, boundaries or not, as rustc's spans are mapped.
fn spans_map_back(rng: &mut Rng, src: &str, lowered: &kgraft_lang::Lowered) -> Result<(), String> {
    let len = lowered.build_source.len();
    // Random ranges, then every range that ends just after a multi-byte character (rustc's span
    // of a name such as `été`), whose last byte is inside that character.
    let random = (0..64).map(|_| {
        let a = rng.below(len + 1);
        (a, (a + rng.below(16)).min(len))
    });
    let wide = lowered
        .build_source
        .char_indices()
        .filter(|(_, c)| c.len_utf8() > 1)
        .map(|(i, c)| (i.saturating_sub(2), i + c.len_utf8()));
    let ranges: Vec<(usize, usize)> = random.chain(wide.take(256)).collect();
    for (a, b) in ranges {
        let line = 1 + rng.below(lowered.build_source.lines().count() + 1);
        let spans = [lowered.map_range(a, b), lowered.map_offset(a), lowered.map_position(line, 1 + rng.below(120))];
        for span in spans.into_iter().flatten() {
            if span.start > span.end
                || span.end > src.len()
                || !src.is_char_boundary(span.start)
                || !src.is_char_boundary(span.end)
            {
                return Err(format!("range {a}..{b} of the build source maps to {span:?}, not a span of the source"));
            }
        }
    }
    Ok(())
}

fn property(rng: &mut Rng, src: &str) -> Result<bool, String> {
    match kgraft_lang::check("fuzz.kgp", src) {
        Ok(checked) => {
            let lowered =
                kgraft_lang::lower(&checked).map_err(|d| format!("accepted but did not lower: {:?}", d.list))?;
            spans_map_back(rng, src, &lowered)?;
            Ok(true)
        }
        Err(diags) => {
            if diags.list.is_empty() {
                return Err("rejected without a diagnostic".to_owned());
            }
            for d in &diags.list {
                let code_ok =
                    d.code.len() == 5 && d.code.starts_with('E') && d.code[1..].bytes().all(|b| b.is_ascii_digit());
                if !code_ok || d.code == "E0000" {
                    return Err(format!("bad code {}", d.code));
                }
                let Some(span) = d.primary_span() else { return Err(format!("{} has no primary span", d.code)) };
                if span.start > span.end || span.end > src.len() {
                    return Err(format!("{} span {span:?} outside the source of {} bytes", d.code, src.len()));
                }
                if kgraft_lang::explain(&d.code).is_none() {
                    return Err(format!("{} is not in the catalogue", d.code));
                }
            }
            Ok(false)
        }
    }
}

#[test]
fn check_never_panics_and_always_explains() {
    let cases: usize = std::env::var("KGRAFT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let seeds = seeds();
    let samples = samples();
    let mut accepted = 0;
    for case in 0..cases {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case as u64).wrapping_mul(0x1000_0000_01b3) | 1);
        let input = match case % 10 {
            9 => random(&mut rng),
            8 => gentle(&mut rng, &samples[case % samples.len()]),
            _ => mutate(&mut rng, &seeds[case % seeds.len()]),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property(&mut rng, &input)));
        match outcome {
            Ok(Ok(ok)) => accepted += usize::from(ok),
            Ok(Err(why)) => panic!("case {case}: {why}\ninput: {input:?}"),
            Err(_) => panic!("case {case}: check panicked\ninput: {input:?}"),
        }
    }
    // The mutations keep a share of valid sources, so lowering is exercised as well.
    assert!(accepted > cases / 50, "only {accepted} of {cases} inputs were accepted");
    eprintln!("{cases} inputs, {accepted} accepted");
}

/// Edits that often leave a source valid, with characters whose spans are easy to get wrong.
const GENTLE: &[&str] = &[" ", "\n", "let été = 1; ", "let _x = \"\u{202E}é\"; ", "// é\u{202E}\n", "\u{feff}"];

/// Inserts one of the [`GENTLE`] edits into `src`.
fn gentle(rng: &mut Rng, src: &str) -> String {
    let mut input = src.to_owned();
    let at = boundary(&input, rng.below(input.len() + 1));
    input.insert_str(at, GENTLE[rng.below(GENTLE.len())]);
    input
}

/// Runs `kgraftc ARGS` in `dir` with standard output `stdout`; fails on a panic or a status
/// other than 0, 1 or 2. Returns the status and the standard output when it was captured.
fn run_cli(dir: &Path, args: &[&str], stdout: Stdio, case: usize, input: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kgraft-check"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("kgraftc runs");
    let mut out = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    let output = child.wait_with_output().expect("kgraftc ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().unwrap_or(-1);
    assert!(
        (0..=2).contains(&code) && !stderr.contains("panicked"),
        "case {case}: kgraftc {args:?} ended with {}:\n{stderr}\ninput: {input:?}",
        output.status
    );
    (code, out)
}

/// Checks that every JSON diagnostic of `out` has a span inside `input`.
fn json_spans_inside(out: &str, input: &str, case: usize) {
    let lines = input.split_inclusive('\n').count().max(1);
    for line in out.lines() {
        let d: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("case {case}: `{line}` is not JSON: {e}"));
        let at = d["line"].as_u64().unwrap_or(0) as usize;
        assert!((1..=lines + 1).contains(&at), "case {case}: line {at} of a {lines}-line source: {line}");
    }
}

#[test]
fn the_command_line_never_panics() {
    let cases: usize = std::env::var("KGRAFT_FUZZ_CLI_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let builds: usize = std::env::var("KGRAFT_FUZZ_BUILD_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let seeds = seeds();
    let samples = samples();
    let (mut accepted, mut built) = (0, 0);
    for case in 0..cases.max(builds) {
        let mut rng = Rng(0x51f1_5eed_0bad_cafe ^ (case as u64).wrapping_mul(0x1000_0000_01b3) | 1);
        let input = match case % 4 {
            3 => mutate(&mut rng, &seeds[case % seeds.len()]),
            // One gentle edit of a sample, so that a share of the inputs gets as far as rustc.
            _ => gentle(&mut rng, &samples[case % samples.len()]),
        };
        std::fs::write(dir.join("fuzz.kgp"), &input).expect("writable");
        let full = || Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full"));
        let (code, _) = run_cli(&dir, &["check", "fuzz.kgp"], Stdio::null(), case, &input);
        let (_, json) = run_cli(&dir, &["--message-format", "json", "check", "fuzz.kgp"], Stdio::piped(), case, &input);
        json_spans_inside(&json, &input, case);
        if code != 0 {
            continue;
        }
        accepted += 1;
        let (code, _) = run_cli(&dir, &["expand", "fuzz.kgp"], full(), case, &input);
        assert_eq!(code, 2, "case {case}: writing to a full disk is an I/O error");
        run_cli(&dir, &["expand", "--for-build", "fuzz.kgp"], Stdio::null(), case, &input);
        if built < builds {
            built += 1;
            let args = ["--message-format", "json", "build", "--target", "check", "-o", "crate", "fuzz.kgp"];
            let (code, json) = run_cli(&dir, &args, Stdio::piped(), case, &input);
            assert!(code < 2, "case {case}: the build failed without a diagnostic\ninput: {input:?}");
            json_spans_inside(&json, &input, case);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(accepted > 0, "no input got past check");
    eprintln!("{cases} command lines, {accepted} accepted, {built} built with rustc");
}
