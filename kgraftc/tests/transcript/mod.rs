//! The book's transcripts (`book/src/transcripts/*.txt`), read, compared with what their
//! commands print now, and rewritten with `KGRAFT_BLESS=1`.
//!
//! A transcript is what a terminal shows: lines that start with the prompt (`$ ` on the machine,
//! `# ` in a guest) are commands, a command line ending with ` \` goes on on the next line, and
//! the lines up to the next command are what it printed, its standard output and error as they
//! came. A line `...` stands for any number of lines the book leaves out.
//!
//! Before the comparison, both sides are normalised where a run truly differs from the next, and
//! nowhere else:
//! - durations (`3.544 ms`, `in 2.8s`, `(1.0 s)`, the kernel log's `[    6.021593]`);
//! - thread and process ids (`tid 8196`, `pid 360`);
//! - addresses (`0x388030`) and the displacement bytes of a `JMP rel32` (`e9 0b 80 ff 03`), which
//!   follow where the host's text and the trampoline pool were mapped;
//! - the index of a symbol in `readelf -s`'s table (`87:`), which moves with every symbol the
//!   runtime gains or loses;
//! - counters of the host's workload, which runs at the machine's pace (pair calls, reads,
//!   kicks, traps, threads migrated so far), but not the mismatches, which must stay 0;
//! - the user id in the host's socket name (`kgraft-host-0.sock`), the ABI number of the
//!   installed Debian kernel (`6.1.0-56-amd64`) and the key id of a throwaway signing key;
//! - the progress lines of a transition, the host's (`progress: ...`) and `kgraftc kernel`'s
//!   (`transition to patched: 3 tasks left (0.6 s)`): how many there are and what they count
//!   depend on scheduling (a fast transition prints none), so each must have one of the shapes
//!   the tools print, and they are then left out of the comparison.
//!
//! Paths are not normalised but written as a reader would see them: the caller names its
//! scratch directories and what to show instead (`/tmp`, `~/kgraft`).

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

/// The transcripts of "Your first patch" and "How a live patch takes effect", in the order
/// `book_transcripts.rs` runs them, against one user-mode host.
pub const HOST: &[&str] = &[
    "first-patch-check.txt",
    "first-patch-expand.txt",
    "first-patch-build.txt",
    "first-patch-host.txt",
    "first-patch-load.txt",
    "first-patch-unload.txt",
    "how-it-works-site.txt",
    "how-it-works-pokes.txt",
    "how-it-works-load.txt",
    "how-it-works-patched.txt",
];

/// The transcripts of the Linux target that `book_transcripts.rs` runs with `KGRAFT_QEMU=1`, in
/// order: builds, signing and packages against the installed kernel, and `kgraftc test`'s guests.
pub const LINUX: &[&str] = &[
    "real-kernel-build.txt",
    "real-kernel-modinfo.txt",
    "real-kernel-shell.txt",
    "real-kernel-script.txt",
    "shipping-sig-enforce.txt",
    "shipping-sign.txt",
    "shipping-package.txt",
    "shipping-package-v2.txt",
    "real-fix-typo.txt",
];

/// The transcripts typed in a guest: the qemu harness's guest runs their commands
/// (`kernel-tests/init.sh`, `book`) and `kernel_qemu.rs` compares what it printed.
pub const HARNESS: &[&str] = &["real-kernel-status.txt", "real-kernel-unload.txt", "shipping-transition.txt"];

/// The transcripts no test produces, and why.
pub const UNVERIFIED: &[(&str, &str)] = &[(
    "shipping-install.txt",
    "`sudo dpkg -i` and `dpkg -r` of the packages on a machine that runs their kernel: the test \
     machine's own kernel is not one to patch, and the harness's guest has only busybox's dpkg, \
     whose messages are not dpkg's (the guest runs the same maintainer scripts by hand instead, \
     scenario package_scripts, and checks what they print and do)",
)];

/// One command of a transcript and what it printed.
#[derive(Clone, Debug)]
pub struct Step {
    /// The command as typed, continuation lines included (joined by newlines), without the
    /// prompt.
    pub command: String,
    /// What it printed, one entry per line; `...` elides.
    pub output: Vec<String>,
}

/// A transcript file.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// The file.
    pub path: PathBuf,
    /// `$` or `#`.
    pub prompt: char,
    /// Its commands in order.
    pub steps: Vec<Step>,
}

/// The book's transcripts directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src/transcripts")
}

impl Transcript {
    /// Reads `book/src/transcripts/NAME`.
    pub fn read(name: &str) -> Transcript {
        let path = dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Transcript::parse(path, &text)
    }

    /// Parses a transcript; its first line is a command, whose prompt the others share.
    pub fn parse(path: PathBuf, text: &str) -> Transcript {
        let prompt = text.chars().next().filter(|c| matches!(c, '$' | '#'));
        let prompt = prompt.unwrap_or_else(|| panic!("{}: a transcript starts with `$ ` or `# `", path.display()));
        let start = format!("{prompt} ");
        let mut steps: Vec<Step> = Vec::new();
        let mut continued = false;
        for line in text.lines() {
            if continued {
                let step = steps.last_mut().expect("a command");
                step.command.push('\n');
                step.command.push_str(line);
                continued = line.ends_with('\\');
            } else if let Some(command) = line.strip_prefix(&start) {
                steps.push(Step { command: command.to_string(), output: Vec::new() });
                continued = line.ends_with('\\');
            } else {
                steps.last_mut().expect("a command").output.push(line.to_string());
            }
        }
        Transcript { path, prompt, steps }
    }

    /// The file's name.
    pub fn name(&self) -> String {
        self.path.file_name().expect("a file").to_string_lossy().into_owned()
    }

    /// The text of the transcript with `outputs` in place of what it shows, keeping its
    /// elisions: the lines before a step's first `...` are taken from the start of the new
    /// output, and those after its last from the first new line that matches the line the book
    /// shows after it (or, when none does, as many lines from the end).
    pub fn blessed(&self, outputs: &[Vec<String>]) -> String {
        let mut text = String::new();
        for (step, new) in self.steps.iter().zip(outputs) {
            text += &format!("{} {}\n", self.prompt, step.command);
            let lines: Vec<String> = match step.output.iter().position(|l| l == "...") {
                None => new.clone(),
                Some(first) => {
                    let last = step.output.iter().rposition(|l| l == "...").expect("an elision");
                    let tail = step.output.len() - last - 1;
                    if first + tail > new.len() {
                        new.clone()
                    } else {
                        let anchor = step.output.get(last + 1).map(|l| normal(l));
                        let from = (first..new.len())
                            .find(|&i| anchor.as_ref().is_some_and(|a| normal(&new[i]) == *a))
                            .unwrap_or(new.len() - tail);
                        let mut lines = new[..first].to_vec();
                        lines.extend(step.output[first..=last].iter().cloned());
                        lines.extend(new[from..].iter().cloned());
                        lines
                    }
                }
            };
            for line in lines {
                text += &line;
                text.push('\n');
            }
        }
        text
    }
}

/// Whether `KGRAFT_BLESS=1` asks for the transcripts to be rewritten.
pub fn blessing() -> bool {
    std::env::var_os("KGRAFT_BLESS").is_some_and(|v| v == "1")
}

/// The text as a terminal leaves it: escape sequences removed, and a line rewritten in place
/// (`\r`, as `kgraftc kernel load` updates its progress on a terminal) shown as its last
/// version.
pub fn plain(text: &str) -> String {
    static ESCAPES: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>c78])").expect("a pattern"));
    let text = ESCAPES.replace_all(text, "").replace("\r\n", "\n");
    let lines: Vec<&str> = text.split('\n').map(|line| line.rsplit('\r').next().unwrap_or(line)).collect();
    lines.join("\n")
}

/// The normalisations of the module's documentation, in order.
static NORMAL: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"\b\d+(\.\d+)? ms\b", "N ms"),
        (r"\bin \d+(\.\d+)?s\b", "in Ns"),
        (r"\(\d+(\.\d+)? s\)", "(N s)"),
        (r"\[ *\d+\.\d+\]", "[N]"),
        (r"\b(tid|pid) \d+", "$1 N"),
        (r"\be9( [0-9a-f]{2}){4}", "e9 JMP"),
        (r"0x[0-9a-f]+", "0xADDR"),
        (r"\b\d+ pair calls\b", "N pair calls"),
        (r"\b\d+ reads\b", "N reads"),
        (r"\b\d+ kicks\b", "N kicks"),
        (r"\b\d+ trap\(s\)", "N trap(s)"),
        (r"\b\d+/(\d+) threads migrated\b", "N/$1 threads migrated"),
        (r"kgraft-host-\d+\.sock", "kgraft-host-UID.sock"),
        (r"\b6\.1\.0-\d+-amd64\b", "6.1.0-N-amd64"),
        (r"^((sig_key|signature): +)[0-9A-F:]+$", "${1}KEY"),
        (r"^ *\d+: ([0-9a-f]{16} )", "N: $1"),
    ]
    .into_iter()
    .map(|(re, to)| (Regex::new(re).expect("a pattern"), to))
    .collect()
});

/// The shapes of the progress lines of a transition.
static PROGRESS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"^(    \| )?    transition to (patched|unpatched): (every task moved, the (core|engine) is finishing|\d+ tasks left) \(\d+\.\d s\)$",
        r"^progress: (patching|unpatching) \S+: \d+/\d+ threads migrated after \d+\.\d+ ms$",
        r"^progress:   straggler \S+ \(tid \d+\)(, asleep, kicked)?: no safe point for \d+\.\d+ ms$",
    ]
    .into_iter()
    .map(|re| Regex::new(re).expect("a pattern"))
    .collect()
});

/// Normalises one line.
pub fn normal(line: &str) -> String {
    let mut line = line.trim_end().to_string();
    for (re, to) in NORMAL.iter() {
        line = re.replace_all(&line, *to).into_owned();
    }
    line
}

/// The lines compared: normalised, without progress lines (a host's `progress:` line must have
/// a known shape; the error names one that has not).
pub fn compared(lines: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in lines {
        if PROGRESS.iter().any(|re| re.is_match(line.trim_end())) {
            continue;
        }
        if line.starts_with("progress:") {
            return Err(format!("a progress line of no known shape: {line}"));
        }
        out.push(normal(line));
    }
    Ok(out)
}

/// Whether `actual` matches `expected`, where a line `...` of `expected` matches any number of
/// lines.
pub fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => (0..=actual.len()).any(|skip| matches(rest, &actual[skip..])),
        Some((first, rest)) => actual.split_first().is_some_and(|(a, more)| a == first && matches(rest, more)),
    }
}

/// Compares one step's output; returns a report of the difference.
pub fn compare(transcript: &Transcript, step: &Step, actual: &[String]) -> Result<(), String> {
    let report = |why: String| {
        format!(
            "{}: `{} {}`: {why}\n--- the book shows:\n{}\n--- the command printed:\n{}\n",
            transcript.name(),
            transcript.prompt,
            step.command,
            step.output.join("\n"),
            actual.join("\n")
        )
    };
    let expected = compared(&step.output).map_err(|e| report(format!("the book shows {e}")))?;
    let got = compared(actual).map_err(&report)?;
    if matches(&expected, &got) {
        Ok(())
    } else {
        Err(report("the output differs (see the normalisations in tests/transcript/mod.rs)".into()))
    }
}

/// Checks every step of `transcript` against `outputs` (one per step, already made plain and
/// with paths as a reader sees them), or with `KGRAFT_BLESS=1` rewrites the file with them.
/// Returns the differences.
pub fn check(transcript: &Transcript, outputs: &[Vec<String>]) -> Vec<String> {
    assert_eq!(transcript.steps.len(), outputs.len(), "{}: one output per command", transcript.name());
    let errors: Vec<String> = transcript
        .steps
        .iter()
        .zip(outputs)
        .filter_map(|(step, actual)| compare(transcript, step, actual).err())
        .collect();
    if blessing() {
        // Every transcript a run produced is rewritten, so that the book shows one run.
        std::fs::write(&transcript.path, transcript.blessed(outputs)).expect("the transcript is writable");
        return Vec::new();
    }
    errors
}

/// Splits a command's output into lines, with `substitutions` (a scratch path and what a reader
/// sees instead) applied.
pub fn lines(output: &str, substitutions: &[(String, String)]) -> Vec<String> {
    let mut text = plain(output);
    for (from, to) in substitutions {
        text = text.replace(from.as_str(), to);
    }
    text.lines().map(|l| l.trim_end().to_string()).collect()
}
