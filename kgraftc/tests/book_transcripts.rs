//! Every transcript in the book is the output of its own commands, so it cannot drift.
//!
//! The book's `console` blocks include files of `book/src/transcripts/`; this test runs their
//! commands as a reader would, in a scratch copy of the reader's working directory
//! (`target/release/kgraftc` and `kgraft-host` are this build's, `patches/` the workspace's),
//! and compares what they print with the file, after the normalisations that
//! `tests/transcript/mod.rs` lists. `KGRAFT_BLESS=1` rewrites the files instead.
//!
//! - The user-mode host's transcripts ([`transcript::HOST`]) run everywhere, against one host
//!   started as the book starts it. The book's `cargo build` is not run: the test builds the same
//!   binaries itself (unoptimised).
//! - The Linux target's ([`transcript::LINUX`]) run with `KGRAFT_QEMU=1`: builds against the
//!   installed kernel (after one build that warms the caches, as the book's timings assume),
//!   `kgraftc test` guests (`--shell` gets `poweroff -f` at its first prompt), signing with a
//!   fresh key, packages, a C body's gcc error (with `~/ksrc` holding the kernel source's
//!   `fs/proc` headers). A file a transcript shows with `cat FILE` is written from it first.
//! - Those typed in a guest are run by the qemu harness (`kernel_qemu.rs`); the ones no test can
//!   run are listed with the reason in [`transcript::UNVERIFIED`].

mod tools;
mod transcript;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use tools::{host_executable, workspace};

use transcript::{Step, Transcript};

/// Links (or copies) `from` to `to`.
fn place(from: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).expect("a copy of the binary");
    }
}

/// A reader's terminal: a home directory, a working directory like the workspace's in it, a
/// temporary directory, and what runs in the background.
struct Session {
    /// `HOME` (shown as `~`).
    home: PathBuf,
    /// Where commands run (shown as `~/kgraft`).
    cwd: PathBuf,
    /// `TMPDIR` (shown as `/tmp`).
    tmp: PathBuf,
    /// Scratch paths and what the book shows instead.
    subs: Vec<(String, String)>,
    /// The host started by a transcript, with its output's lines.
    host: Option<(Child, Receiver<String>)>,
}

impl Session {
    fn new(name: &str) -> Session {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("book").join(name);
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let cwd = home.join("kgraft");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(cwd.join("target/release")).expect("a scratch directory");
        std::fs::create_dir_all(&tmp).expect("a scratch directory");
        for dir in ["patches", "kernel-tests"] {
            std::os::unix::fs::symlink(workspace().join(dir), cwd.join(dir)).expect("a link to the workspace");
        }
        place(Path::new(env!("CARGO_BIN_EXE_kgraftc")), &cwd.join("target/release/kgraftc"));
        let subs = vec![(tmp.display().to_string(), "/tmp".to_string()), (home.display().to_string(), "~".to_string())];
        Session { home, cwd, tmp, subs, host: None }
    }

    /// A command run by `sh` as the reader's shell would, its standard output and error in one
    /// pipe, so they interleave as on a terminal. The Rust toolchain and kgraftc's caches stay
    /// where the test's own are: only `~` in a command is the session's.
    fn shell(&self, command: &str) -> Command {
        let path =
            format!("{}:{}", self.cwd.join("target/release").display(), std::env::var("PATH").unwrap_or_default());
        let real_home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
        let kept = |var: &str, default: &str| std::env::var_os(var).unwrap_or_else(|| real_home.join(default).into());
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("CARGO_HOME", kept("CARGO_HOME", ".cargo"))
            .env("RUSTUP_HOME", kept("RUSTUP_HOME", ".rustup"))
            .env("KGRAFT_CACHE_DIR", kept("KGRAFT_CACHE_DIR", ".cache/kgraft"))
            .env("TMPDIR", &self.tmp)
            .env("PATH", path)
            .env_remove("KGRAFT_HOST_SOCKET");
        cmd
    }

    /// Unpacks the headers of `fs/proc` from Debian's kernel source into `~/ksrc`, where "Fixing
    /// a real bug" unpacks the whole tree (as for the qemu harness, the test needs no more).
    fn unpack_kernel_source(&self) {
        let tarball = std::fs::read_dir("/usr/src")
            .expect("/usr/src")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-source-6.1.tar")))
            .expect("/usr/src/linux-source-6.1.tar.* (apt-get install linux-source-6.1)");
        let ksrc = self.home.join("ksrc");
        std::fs::create_dir_all(&ksrc).expect("a directory");
        let status = Command::new("tar")
            .arg("xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&ksrc)
            .args(["--wildcards", "linux-source-6.1/fs/proc/*.h"])
            .status()
            .expect("tar runs");
        assert!(status.success(), "the headers unpack from {}", tarball.display());
    }

    /// Starts `cmd` with one pipe for its output; returns the child and a channel of chunks.
    fn spawn(mut cmd: Command, stdin: bool) -> (Child, Receiver<Vec<u8>>) {
        let (mut reader, writer) = std::io::pipe().expect("a pipe");
        cmd.stdout(writer.try_clone().expect("a pipe")).stderr(writer);
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let child = cmd.spawn().expect("the command starts");
        drop(cmd);
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Runs one step and returns what it printed, as the book would show it.
    fn run(&mut self, transcript: &Transcript, step: &Step) -> Vec<String> {
        let command = step.command.as_str();
        if command.starts_with("cargo ") {
            assert!(
                step.output.is_empty(),
                "{}: the book's cargo build is not run, so it shows nothing",
                transcript.name()
            );
            return Vec::new();
        }
        if let Some(file) = command.strip_prefix("cat ").filter(|f| !self.cwd.join(f).exists()) {
            let mut text = step.output.join("\n");
            text.push('\n');
            std::fs::write(self.cwd.join(file), text).expect("a file the transcript shows");
        }
        if command.split_whitespace().next().is_some_and(|p| p.ends_with("kgraft-host")) {
            return self.start_host(command, step.output.len());
        }
        let (mut child, rx) = Session::spawn(self.shell(command), command.contains(" --shell"));
        let mut seen = Vec::new();
        let mut typed = false;
        let start = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(bytes) => seen.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // A guest's shell: the book stops at its first prompt, and so does the test.
            if let Some(stdin) = child.stdin.as_mut().filter(|_| !typed) {
                let text = transcript::plain(&String::from_utf8_lossy(&seen));
                if text.contains("leave with: poweroff -f") && text.trim_end().ends_with('#') {
                    std::thread::sleep(Duration::from_millis(500));
                    stdin.write_all(b"poweroff -f\n").expect("the guest reads");
                    typed = true;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(900), "{}: `{command}` did not end", transcript.name());
        }
        let _ = child.wait();
        let mut text = String::from_utf8_lossy(&seen).into_owned();
        if typed {
            // Only what came before the first prompt.
            let plain = transcript::plain(&text);
            let end = plain.find("leave with: poweroff -f").and_then(|i| plain[i..].find('#').map(|j| i + j + 1));
            text = plain[..end.unwrap_or(plain.len())].to_string();
        }
        transcript::lines(&text, &self.subs)
    }

    /// Starts the host as the book does, in the background, and returns its first `n` lines.
    fn start_host(&mut self, command: &str, n: usize) -> Vec<String> {
        assert!(self.host.is_none(), "one host per session");
        let (child, chunks) = Session::spawn(self.shell(&format!("exec {command}")), false);
        // Its output, a line at a time.
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            while let Ok(chunk) = chunks.recv() {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if tx.send(String::from_utf8_lossy(&line[..end]).into_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        let mut out = Vec::new();
        while out.len() < n {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        // The socket is there once the host has said so; wait for it all the same.
        let start = Instant::now();
        let socket = |e: std::fs::DirEntry| e.file_name().to_string_lossy().ends_with(".sock");
        while !std::fs::read_dir(&self.tmp).expect("the temporary directory").flatten().any(socket) {
            assert!(start.elapsed() < Duration::from_secs(30), "the host opens its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.host = Some((child, rx));
        transcript::lines(&out.join("\n"), &self.subs)
    }

    /// Runs every transcript of `names` in order; returns the differences.
    fn run_all(&mut self, names: &[&str]) -> Vec<String> {
        let mut errors = Vec::new();
        for name in names {
            let t = Transcript::read(name);
            let outputs: Vec<Vec<String>> = t.steps.iter().map(|step| self.run(&t, step)).collect();
            errors.extend(transcript::check(&t, &outputs));
        }
        errors
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.host.take() {
            let _ = self.shell("target/release/kgraftc host stop").output();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_host_transcripts_are_what_the_commands_print() {
    let mut session = Session::new("host");
    place(&host_executable(), &session.cwd.join("target/release/kgraft-host"));
    let errors = session.run_all(transcript::HOST);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_linux_transcripts_are_what_the_commands_print() {
    if std::env::var_os("KGRAFT_QEMU").is_none_or(|v| v != "1") {
        eprintln!("the Linux target's transcripts: skipped (set KGRAFT_QEMU=1 to build modules and boot guests)");
        return;
    }
    let mut session = Session::new("linux");
    // The book's timings and messages are those of a build whose caches are warm.
    let warm = session.shell("kgraftc build --target linux patches/cmdline_banner.kgp -o warm.ko").output();
    assert!(warm.is_ok_and(|o| o.status.success()), "a first build for the installed kernel");
    session.unpack_kernel_source();
    let errors = session.run_all(transcript::LINUX);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Every `console` block of the book includes one transcript, and every transcript is produced
/// by one of the tests or named, with the reason, as unverified.
#[test]
fn every_transcript_is_included_once_and_produced_by_a_test() {
    let src = workspace().join("book/src");
    let mut included = Vec::new();
    for entry in std::fs::read_dir(&src).expect("book/src") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a chapter");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim_start() != "```console" {
                continue;
            }
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim_start() != "```").collect();
            let file = match body.as_slice() {
                [one] => one.trim().strip_prefix("{{#include transcripts/").and_then(|f| f.strip_suffix("}}")),
                _ => None,
            };
            let file = file.unwrap_or_else(|| {
                panic!(
                    "{}: a console block is one line `{{{{#include transcripts/NAME.txt}}}}`: {body:?}",
                    path.display()
                )
            });
            included.push(file.to_string());
        }
    }
    let lists: Vec<&str> = transcript::HOST
        .iter()
        .chain(transcript::LINUX)
        .chain(transcript::HARNESS)
        .copied()
        .chain(transcript::UNVERIFIED.iter().map(|(f, _)| *f))
        .collect();
    for entry in std::fs::read_dir(transcript::dir()).expect("book/src/transcripts") {
        let name = entry.expect("an entry").file_name().to_string_lossy().into_owned();
        assert_eq!(included.iter().filter(|f| **f == name).count(), 1, "{name} is included once in the book");
        assert_eq!(lists.iter().filter(|f| **f == name).count(), 1, "{name} is in one list of tests/transcript/mod.rs");
        let _ = Transcript::read(&name);
    }
    for name in included.iter().map(String::as_str).chain(lists.iter().copied()) {
        assert!(transcript::dir().join(name).is_file(), "book/src/transcripts/{name} exists");
    }
}

#[test]
fn elisions_match_any_lines_and_normalisation_keeps_what_matters() {
    let v = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(transcript::matches(&v("a\n...\nd"), &v("a\nb\nc\nd")));
    assert!(transcript::matches(&v("...\nd"), &v("d")));
    assert!(!transcript::matches(&v("a\n...\nd"), &v("a\nb")));
    let normal = transcript::normal;
    assert_eq!(normal("(12.540 ms) tid 8196 at 0x2b6570: e9 0b a3 ff 03"), "(N ms) tid N at 0xADDR: e9 JMP");
    assert_eq!(
        normal("workload: 19 pair calls, 0 mismatched, 11 reads, 4 kicks"),
        normal("workload: 7 pair calls, 0 mismatched, 2 reads, 1 kicks")
    );
    assert_ne!(normal("0 mismatched"), normal("1 mismatched"));
    assert_ne!(normal("0f 1f 44 00 00"), normal("e9 0b a3 ff 03"), "the NOP is not normalised away");
}
