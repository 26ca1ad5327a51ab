//! A kernel booted under qemu: the initramfs it starts from, and the machine that runs it.
//!
//! kgraftc boots a kernel image in two places: once per kernel to learn its symbols
//! (`kernel_info::probe`), and in `kgraftc test` to try a patch on its target. Both write a
//! busybox initramfs here (a `newc` cpio archive, written in Rust so nothing else is needed),
//! and run qemu with software emulation: the guest's console on the first serial port and, when
//! the guest has something to hand back, a second serial port written to a file that the host
//! reads as the guest goes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Returns the first file named `tool` on `PATH`.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// Finds qemu for x86_64 guests.
pub(crate) fn qemu() -> Result<PathBuf, String> {
    which("qemu-system-x86_64").ok_or_else(|| "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".into())
}

/// Finds a busybox, which must be static: the initramfs has no C library for it.
pub(crate) fn busybox() -> Result<PathBuf, String> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "busybox is not installed (Debian: busybox-static)".into())
}

/// Returns the kernel image of `release` (`/boot/vmlinuz-RELEASE`, or beside `kdir`).
pub(crate) fn kernel_image(kdir: Option<&Path>, release: &str) -> Result<PathBuf, String> {
    let image = crate::linux::kdir::home(kdir, release).image;
    if image.is_file() {
        Ok(image)
    } else {
        Err(format!("no kernel image {} to boot (Debian: apt-get install linux-image-{release})", image.display()))
    }
}

/// A fresh directory only this user can enter, removed when dropped unless `keep_var` is set
/// in the environment (then its path is printed, for a look at what the guest did).
pub(crate) struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/kgraft-PREFIX-…`.
    pub(crate) fn new(prefix: &str, keep_var: &str) -> Result<TempDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("kgraft-{prefix}-{}-{nanos:x}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(TempDir { path, keep: std::env::var_os(keep_var).is_some() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create a directory in {}: {e}", base.display())),
            }
        }
        Err("cannot create a private temporary directory".into())
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("      kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A `newc` cpio archive, the format of an initramfs.
#[derive(Default)]
pub(crate) struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: std::collections::BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds a directory and its parents, each once.
    pub(crate) fn dir(&mut self, name: &str) {
        let mut path = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if self.dirs.insert(path.clone()) {
                let owned = path.clone();
                self.entry(&owned, 0o040755, &[]);
            }
        }
    }

    /// Adds a regular file with permissions `perm`, and its directories.
    pub(crate) fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o100000 | perm, data);
    }

    /// Adds a symbolic link `name` to `target`.
    pub(crate) fn symlink(&mut self, name: &str, target: &str) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Adds a static busybox as `bin/busybox` with `proc`, `sys`, `dev` and `tmp`; with
    /// `applets`, also a link in `bin` for each of its commands, so scripts can call them by name.
    pub(crate) fn busybox(&mut self, busybox: &Path, applets: bool) -> Result<(), String> {
        let bytes = std::fs::read(busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            self.dir(d);
        }
        self.file("bin/busybox", 0o755, &bytes);
        if applets {
            let out = Command::new(busybox)
                .arg("--list")
                .output()
                .map_err(|e| format!("cannot run {}: {e}", busybox.display()))?;
            for applet in String::from_utf8_lossy(&out.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
                self.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        Ok(())
    }

    /// Adds the host program `program` as `name`, with the shared libraries it needs (as `ldd`
    /// lists them) at their own paths, so it runs in the guest as on the host. A static program
    /// is copied alone.
    pub(crate) fn program(&mut self, name: &str, program: &Path) -> Result<(), String> {
        let bytes = std::fs::read(program).map_err(|e| format!("cannot read {}: {e}", program.display()))?;
        self.file(name, 0o755, &bytes);
        for lib in shared_libraries(program)? {
            let bytes = std::fs::read(&lib).map_err(|e| format!("cannot read {}: {e}", lib.display()))?;
            let inside = lib.to_string_lossy().trim_start_matches('/').to_owned();
            self.file(&inside, 0o755, &bytes);
        }
        Ok(())
    }

    /// Returns the archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The shared libraries `program` loads, the dynamic loader included; none for a static one.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let ldd = which("ldd").ok_or("ldd is not installed (Debian: libc-bin)")?;
    let out = Command::new(&ldd).arg(program).output().map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd says "not a dynamic executable" (and fails) for a static program.
        return if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("not a dynamic executable")
        {
            Ok(Vec::new())
        } else {
            Err(format!("ldd {} failed: {}", program.display(), String::from_utf8_lossy(&out.stderr).trim()))
        };
    }
    Ok(parse_ldd(&text))
}

/// Reads `ldd`'s lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and the loader's
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line.trim(),
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

/// Where the guest's console goes.
pub(crate) enum Console {
    /// A file the host reads afterwards.
    File(PathBuf),
    /// This terminal, for an interactive shell (qemu's monitor is on Ctrl-A C, Ctrl-A X quits).
    Terminal,
}

/// A qemu machine that boots a kernel image with an initramfs.
pub(crate) struct Machine<'a> {
    /// The kernel image.
    pub(crate) image: &'a Path,
    /// The initramfs.
    pub(crate) initrd: &'a Path,
    /// The kernel command line (the console is added).
    pub(crate) append: String,
    /// Memory, in MiB.
    pub(crate) memory_mb: u32,
    /// Virtual CPUs; more than one are run by one host thread (see `command`).
    pub(crate) cpus: u32,
    /// The first serial port.
    pub(crate) console: Console,
    /// A file for the second serial port (the guest's `/dev/ttyS1`).
    pub(crate) data: Option<PathBuf>,
}

impl Machine<'_> {
    /// Returns the qemu command. Several vCPUs run on one host thread (`thread=single`): with
    /// qemu's multi-threaded emulation the harness saw a guest lock up while the kernel rewrote
    /// a function entry under load (see `kernel-tests/run.sh`). Software emulation always: the
    /// guest hangs with KVM on the machines the project is tested on.
    pub(crate) fn command(&self, qemu: &Path) -> Command {
        let mut cmd = Command::new(qemu);
        cmd.args(["-display", "none", "-no-reboot", "-nic", "none"])
            .args(["-m", &self.memory_mb.to_string(), "-smp", &self.cpus.to_string()])
            .args(["-accel", "tcg,thread=single", "-kernel"])
            .arg(self.image)
            .arg("-initrd")
            .arg(self.initrd)
            .args(["-append", &format!("console=ttyS0 {}", self.append)])
            .arg("-serial");
        match &self.console {
            Console::File(path) => {
                cmd.arg(format!("file:{}", path.display())).arg("-monitor").arg("none");
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            }
            Console::Terminal => {
                cmd.arg("mon:stdio");
            }
        }
        if let Some(data) = &self.data {
            cmd.arg("-serial").arg(format!("file:{}", data.display()));
        }
        cmd
    }

    /// Starts the machine.
    pub(crate) fn start(&self, qemu: &Path) -> Result<Child, String> {
        // In a group of its own that dies with kgraftc: an interrupted test or probe leaves no
        // qemu behind.
        crate::process::spawn(&mut self.command(qemu)).map_err(|e| format!("cannot start {}: {e}", qemu.display()))
    }
}

/// How a machine's run ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// qemu exited (the guest powered off, or qemu failed: its status and standard error).
    Exited { success: bool, stderr: String },
    /// The time ran out and the machine was stopped.
    TimedOut,
}

/// Waits for `child` to end, calling `tick` every 100 ms; stops it after `timeout`.
pub(crate) fn wait(child: &mut Child, timeout: Duration, mut tick: impl FnMut()) -> Result<Ended, String> {
    let start = Instant::now();
    // qemu's standard error is read as it comes: a pipe left unread fills, and a chatty qemu
    // would then stall until the timeout. Only its end is kept.
    let mut reader = child.stderr.take().map(|err| std::thread::spawn(move || read_tail(err, STDERR_KEPT)));
    let mut collect = || reader.take().and_then(|t| t.join().ok()).unwrap_or_default();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                crate::process::ended();
                tick();
                return Ok(Ended::Exited { success: status.success(), stderr: collect() });
            }
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                crate::process::ended();
                tick();
                drop(collect());
                return Ok(Ended::TimedOut);
            }
            Ok(None) => {
                tick();
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
    }
}

/// How much of qemu's standard error is kept (its end).
const STDERR_KEPT: usize = 64 << 10;

/// Reads `from` to its end, keeping its last `keep` bytes.
fn read_tail(mut from: impl std::io::Read, keep: usize) -> String {
    let mut kept: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend(&buf[..n]);
        let over = kept.len().saturating_sub(keep);
        kept.drain(..over);
    }
    String::from_utf8_lossy(kept.make_contiguous()).into_owned()
}

/// Reads at most the first `max` bytes of `path`: what a guest wrote, which nothing bounds.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Returns the last `n` lines of a console file, without carriage returns (read from its last
/// MiB: a console may be huge).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek};
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(1 << 20)));
        let _ = file.take(1 << 20).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that writes more to its standard error than a pipe holds, then exits: waiting
    /// sees it exit, with the end of what it wrote.
    #[test]
    fn a_chatty_child_is_seen_to_exit() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 4000 ]; do echo \"line $i of a chatty qemu\" >&2; i=$((i+1)); done; exit 3",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let ended = wait(&mut child, Duration::from_secs(20), || {}).expect("waited");
        let Ended::Exited { success, stderr } = ended else { panic!("timed out: the pipe was never read") };
        assert!(!success);
        assert!(stderr.ends_with("line 3999 of a chatty qemu\n"), "{}", &stderr[stderr.len().saturating_sub(100)..]);
        assert!(stderr.len() <= STDERR_KEPT);
    }

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
    }

    #[test]
    fn cpio_parents_once() {
        let mut cpio = Cpio::default();
        cpio.file("a/b/c", 0o644, b"x");
        cpio.file("a/b/d", 0o644, b"y");
        cpio.symlink("a/e", "b/c");
        let bytes = cpio.finish();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("a/b\0").count(), 1);
        assert!(text.starts_with("070701"));
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
    }
}
