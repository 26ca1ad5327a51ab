//! Asking the kernel itself what it has: boot the release's image under qemu and read its
//! `/proc/kallsyms` and its list of traceable functions.
//!
//! A distribution kernel's image has no symbol table, and its BTF describes every function,
//! traceable or not (Debian 6.1's holds `do_syscall_64`, which is `noinstr`). Which functions
//! exist as symbols, how many local functions share a name, and which ones start with an fentry
//! site are known to the running kernel only, so kgraftc boots it once (software emulation, a
//! busybox initramfs written here, about twenty seconds) and keeps what it printed in the cache
//! with the rest of the kernel's description.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kgraft_lang::kernel::Symbol;

/// The guest's `/init`: the text symbols of vmlinux, in kallsyms order, then the traceable ones.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec > /dev/ttyS0 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t tracefs tracefs /sys/kernel/tracing
out=/dev/ttyS1
echo KGRAFT-PROBE-SYMBOLS > $out
/bin/busybox awk '($2 == "t" || $2 == "T") && NF == 3 { print $3 }' /proc/kallsyms > $out
echo KGRAFT-PROBE-TRACEABLE > $out
/bin/busybox awk 'NF == 1 { print $1 }' /sys/kernel/tracing/available_filter_functions > $out
echo KGRAFT-PROBE-END > $out
/bin/busybox poweroff -f
"#;

/// How long the guest may take.
const TIMEOUT: Duration = Duration::from_secs(240);

/// Boots `image` and returns its text symbols with their fentry sites.
pub(crate) fn probe(image: &Path, release: &str) -> Result<BTreeMap<String, Symbol>, String> {
    let qemu = which("qemu-system-x86_64").ok_or("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("busybox is not installed (Debian: busybox-static)")?;
    let dir = private_dir()?;
    let result = boot(&qemu, &busybox, image, release, &dir);
    if std::env::var_os("KGRAFT_PROBE_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("      kept {}", dir.display());
    }
    result
}

fn boot(
    qemu: &Path,
    busybox: &Path,
    image: &Path,
    release: &str,
    dir: &Path,
) -> Result<BTreeMap<String, Symbol>, String> {
    let busybox_bytes = std::fs::read(busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
    let mut cpio = Cpio::default();
    for d in ["bin", "proc", "sys", "dev"] {
        cpio.dir(d);
    }
    cpio.file("bin/busybox", 0o755, &busybox_bytes);
    cpio.file("init", 0o755, INIT.as_bytes());
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, cpio.finish()).map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
    let dump = dir.join("dump");
    let console = dir.join("console");
    eprintln!("   Probing {release} under qemu for its symbols and fentry sites (once per kernel, about 20 s)");
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-display", "none", "-no-reboot", "-m", "512", "-smp", "1", "-nic", "none", "-kernel"])
        .arg(image)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", dump.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the kernel did not finish within {} s under qemu", TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
    }
    let text = std::fs::read(&dump).map_err(|e| format!("the probe printed nothing ({e})"))?;
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    parse(&text).ok_or_else(|| {
        let tail = std::fs::read_to_string(&console).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(8).collect();
        format!(
            "the probe's output is incomplete; the console ended with:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

/// Reads the probe's two lists; `None` unless both are complete.
fn parse(text: &str) -> Option<BTreeMap<String, Symbol>> {
    let symbols = text.split("KGRAFT-PROBE-SYMBOLS\n").nth(1)?;
    let (symbols, rest) = symbols.split_once("KGRAFT-PROBE-TRACEABLE\n")?;
    let (traceable, _) = rest.split_once("KGRAFT-PROBE-END")?;
    let mut out: BTreeMap<String, Symbol> = BTreeMap::new();
    for name in symbols.lines().filter(|l| !l.is_empty()) {
        out.entry(name.to_owned()).or_default().count += 1;
    }
    if out.len() < 1000 {
        return None;
    }
    for name in traceable.lines() {
        if let Some(s) = out.get_mut(name) {
            s.traceable += 1;
        }
    }
    Some(out)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// A fresh directory only this user can enter.
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = base.join(format!("kgraft-probe-{}-{nanos:x}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a directory in {}: {e}", base.display())),
        }
    }
    Err("cannot create a private temporary directory".into())
}

/// A `newc` cpio archive, the format of an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
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

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        let mut out = self.out;
        out.flush().ok();
        out
    }
}
