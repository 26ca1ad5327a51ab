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
use std::path::Path;
use std::time::Duration;

use kgraft_lang::kernel::Symbol;

use crate::vm;

/// The guest's `/init`: vmlinux's symbols with their kinds, in kallsyms order, then the
/// traceable functions.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec > /dev/ttyS0 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t tracefs tracefs /sys/kernel/tracing
out=/dev/ttyS1
echo KGRAFT-PROBE-SYMBOLS > $out
/bin/busybox awk 'NF == 3 { print $2, $3 }' /proc/kallsyms > $out
echo KGRAFT-PROBE-TRACEABLE > $out
/bin/busybox awk 'NF == 1 { print $1 }' /sys/kernel/tracing/available_filter_functions > $out
echo KGRAFT-PROBE-END > $out
/bin/busybox poweroff -f
"#;

/// How long the guest may take.
const TIMEOUT: Duration = Duration::from_secs(240);

/// What the probe read: the text symbols with their fentry sites, and every symbol's name in
/// kallsyms order.
pub(crate) type Probed = (BTreeMap<String, Symbol>, Vec<String>);

/// Boots `image` and returns what it says of its symbols.
pub(crate) fn probe(image: &Path, release: &str) -> Result<Probed, String> {
    let qemu = vm::qemu()?;
    let busybox = vm::busybox()?;
    let dir = vm::TempDir::new("probe", "KGRAFT_PROBE_KEEP")?;
    boot(&qemu, &busybox, image, release, dir.path())
}

fn boot(qemu: &Path, busybox: &Path, image: &Path, release: &str, dir: &Path) -> Result<Probed, String> {
    let mut cpio = vm::Cpio::default();
    cpio.busybox(busybox, false)?;
    cpio.file("init", 0o755, INIT.as_bytes());
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, cpio.finish()).map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
    let dump = dir.join("dump");
    let console = dir.join("console");
    eprintln!("   Probing {release} under qemu for its symbols and fentry sites (once per kernel, about 20 s)");
    let machine = vm::Machine {
        image,
        initrd: &initrd,
        append: "quiet panic=-1".into(),
        memory_mb: 512,
        cpus: 1,
        console: vm::Console::File(console.clone()),
        data: Some(dump.clone()),
    };
    let mut child = machine.start(qemu)?;
    if vm::wait(&mut child, TIMEOUT, || {})? == vm::Ended::TimedOut {
        return Err(format!("the kernel did not finish within {} s under qemu", TIMEOUT.as_secs()));
    }
    // The lists of a kernel's symbols are a few MiB; more is not a probe's output.
    let text = vm::read_bounded(&dump, MAX_DUMP).map_err(|e| format!("the probe printed nothing ({e})"))?;
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    parse(&text)
        .ok_or_else(|| format!("the probe's output is incomplete; the console ended with:\n{}", vm::tail(&console, 8)))
}

/// The most of the probe's output read (its symbol lists: about 5 MiB for Debian's 6.1).
const MAX_DUMP: u64 = 128 << 20;

/// Reads the probe's two lists; `None` unless both are complete.
fn parse(text: &str) -> Option<Probed> {
    let symbols = text.split("KGRAFT-PROBE-SYMBOLS\n").nth(1)?;
    let (symbols, rest) = symbols.split_once("KGRAFT-PROBE-TRACEABLE\n")?;
    let (traceable, _) = rest.split_once("KGRAFT-PROBE-END")?;
    let mut out: BTreeMap<String, Symbol> = BTreeMap::new();
    let mut order = Vec::new();
    for line in symbols.lines() {
        let Some((kind, name)) = line.split_once(' ') else { continue };
        if matches!(kind, "t" | "T") {
            out.entry(name.to_owned()).or_default().count += 1;
        }
        order.push(name.to_owned());
    }
    if out.len() < 1000 {
        return None;
    }
    for name in traceable.lines() {
        if let Some(s) = out.get_mut(name) {
            s.traceable += 1;
        }
    }
    Some((out, order))
}
