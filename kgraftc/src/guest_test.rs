//! `kgraftc test FILE.kgp --script SCRIPT`: a patch tried on its own kernel under qemu.
//!
//! The patch is built for the release of `--kdir`; that release's image (`/boot/vmlinuz-R`) boots
//! under qemu's software emulation with a busybox initramfs holding the module, the target
//! modules given with `--module`, the script and kgraftc itself (with the shared libraries
//! `ldd` names, so the same binary runs in the guest). The guest's `/init` loads the patch with
//! `kgraftc kernel load`, runs the script while the patch is applied, unloads the patch with
//! `kgraftc kernel unload` (unless the script took it off itself) and checks that the kernel
//! let go of it (no sysfs directory, no module). It reports each step on its second serial port, which the host reads as it goes.
//!
//! Exit status: 0 the script passed and the unload restored the kernel; 1 the patch did not
//! build or load, the script failed, or the unload did not restore the kernel; 2 the machine
//! could not run.
//!
//! With `--shell`, the same guest loads the patch and gives its shell to this terminal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::render::Ui;
use crate::{BuildArgs, Failure, Target, vm};

/// The arguments of `kgraftc test`.
#[derive(clap::Args, Debug)]
pub(crate) struct TestArgs {
    /// The `.kgp` file.
    pub(crate) file: PathBuf,
    /// The target kernel: `--kdir` names the release booted; each `--module FILE.ko` is also
    /// inserted in the guest before the patch.
    #[command(flatten)]
    pub(crate) kernel: crate::kernel_info::KernelArgs,
    /// A kernel source tree for C bodies' includes (as for `kgraftc build`).
    #[arg(long)]
    pub(crate) ksrc: Option<PathBuf>,
    /// The shell script to run in the guest while the patch is applied (busybox `sh`; it passes
    /// when it exits 0).
    #[arg(long, required_unless_present = "shell")]
    pub(crate) script: Option<PathBuf>,
    /// Gives an interactive shell in the guest, with the patch loaded, instead of a script.
    #[arg(long, conflicts_with = "script")]
    pub(crate) shell: bool,
    /// Extra kernel command-line arguments for the guest (`module.sig_enforce=1`).
    #[arg(long, value_name = "ARGS", default_value = "")]
    pub(crate) append: String,
    /// Seconds the patch's transitions may take in the guest.
    #[arg(long, default_value_t = 60)]
    pub(crate) timeout: u64,
    /// Seconds the whole guest may run (script mode).
    #[arg(long, default_value_t = 600)]
    pub(crate) vm_timeout: u64,
    /// What applies the patch in the guest: the kernel's livepatch core, or kgraft's own engine
    /// (default: the header's `engine`, else klp), as for `kgraftc build`.
    #[arg(long, value_enum)]
    pub(crate) engine: Option<crate::Engine>,
    /// Signs the module with this key (see `kgraftc build`).
    #[arg(long, requires = "sign_cert", value_name = "KEY")]
    pub(crate) sign_key: Option<PathBuf>,
    /// The certificate of `--sign-key`.
    #[arg(long, requires = "sign_key", value_name = "CERT")]
    pub(crate) sign_cert: Option<PathBuf>,
}

impl TestArgs {
    /// The arguments that test `file` with `script` and the defaults otherwise.
    pub(crate) fn for_script(
        file: &std::path::Path,
        kernel: &crate::kernel_info::KernelArgs,
        ksrc: &std::path::Path,
        script: &std::path::Path,
    ) -> TestArgs {
        TestArgs {
            file: file.to_path_buf(),
            kernel: kernel.clone(),
            ksrc: Some(ksrc.to_path_buf()),
            script: Some(script.to_path_buf()),
            shell: false,
            append: String::new(),
            timeout: 60,
            vm_timeout: 600,
            engine: None,
            sign_key: None,
            sign_cert: None,
        }
    }
}

/// The guest's `/init`. `@NAME@`, `@TIMEOUT@` and `@MODE@` are filled in.
const INIT: &str = r#"#!/bin/sh
# The init of `kgraftc test`: load the patch, run the script, unload, check, power off.
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
export PATH=/bin:/sbin HOME=/tmp KGRAFT_PATCH=@NAME@
cd /tmp
# In script mode the output goes to a file on the host: progress a line at a time.
if [ @MODE@ = shell ]; then out=/dev/console; else out=/dev/ttyS1; export TERM=dumb; fi
# The steps carry a token only this init knows (its file is gone before the script runs), so
# that nothing else the guest prints can pass for one.
read -r token < /token
rm -f /token
step() { [ @MODE@ = shell ] || echo "KGRAFT-STEP-$token $*" > $out; }
step booted
# The target modules, in the order given: a module's dependencies come before it.
for m in /m/modules/*.ko; do
    [ -e "$m" ] || continue
    if ! insmod "$m" > $out 2>&1; then
        step module-failed "${m#/m/modules/???-}"
        [ @MODE@ = shell ] || { step done; poweroff -f; }
    fi
done
step loading
kgraftc kernel load --timeout @TIMEOUT@ /m/@NAME@.ko > $out 2>&1
step load $?
if [ -d /sys/kernel/livepatch/@NAME@ ] || [ -d /sys/kernel/kgraft/@NAME@ ]; then
    if [ @MODE@ = shell ]; then
        echo
        echo "kgraft: @NAME@ is loaded (/m/@NAME@.ko). Try: kgraftc kernel status"
        echo "kgraft: leave with: poweroff -f"
        setsid cttyhack sh
        poweroff -f
    fi
    step script
    # The script's lines reach the host marked, so that none of them can pass for a step.
    if [ @MODE@ = shell ]; then
        sh /script > $out 2>&1
        echo $? > /tmp/script-status
    else
        { sh /script 2>&1; echo $? > /tmp/script-status; } | sed 's/^/: /' > $out
    fi
    step script-status "$(cat /tmp/script-status)"
    step unloading
    # A script may take the patch off itself (by hand, as the book shows): nothing to unload.
    if [ -d /sys/kernel/livepatch/@NAME@ ] || [ -d /sys/kernel/kgraft/@NAME@ ] || grep -q "^@NAME@ " /proc/modules; then
        kgraftc kernel unload --timeout @TIMEOUT@ @NAME@ > $out 2>&1
        step unload $?
    else
        step unload by-script
    fi
    left=""
    [ -d /sys/kernel/livepatch/@NAME@ ] || [ -d /sys/kernel/kgraft/@NAME@ ] && left="$left sysfs"
    grep -q "^@NAME@ " /proc/modules && left="$left module"
    step restored ${left:-yes}
elif [ @MODE@ = shell ]; then
    echo "kgraft: @NAME@ did not load; here is a shell anyway (leave with: poweroff -f)"
    setsid cttyhack sh
fi
step done
poweroff -f
"#;

/// Runs `kgraftc test`.
pub(crate) fn run(args: &TestArgs, ui: &Ui) -> Result<(), Failure> {
    let qemu = vm::qemu().map_err(Failure::Fatal)?;
    let busybox = vm::busybox().map_err(Failure::Fatal)?;
    let script = match &args.script {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| Failure::io(format!("cannot read `{}`", path.display()), e))?)
        }
        None => None,
    };
    let dir = vm::TempDir::new("test", "KGRAFT_TEST_KEEP").map_err(Failure::Fatal)?;
    let ko = dir.path().join("patch.ko");
    let build = BuildArgs {
        file: args.file.clone(),
        target: Target::Linux,
        kernel: args.kernel.clone(),
        ksrc: args.ksrc.clone(),
        out: None,
        engine: args.engine,
        sign_key: args.sign_key.clone(),
        sign_cert: args.sign_cert.clone(),
    };
    let (module, release) = crate::build_linux::build_module(build, &ko, ui)?;
    let image = vm::kernel_image(args.kernel.kdir(), &release).map_err(Failure::Fatal)?;

    let mut cpio = vm::Cpio::default();
    cpio.busybox(&busybox, true).map_err(Failure::Fatal)?;
    let me = std::env::current_exe().map_err(|e| Failure::io("cannot find kgraftc's own executable", e))?;
    let stripped = dir.path().join("kgraftc");
    cpio.program("bin/kgraftc", &strip(&me, &stripped)).map_err(Failure::Fatal)?;
    let bytes = std::fs::read(&ko).map_err(|e| Failure::io(format!("cannot read `{}`", ko.display()), e))?;
    cpio.file(&format!("m/{}.ko", module.name), 0o644, &bytes);
    for (index, m) in args.kernel.modules.iter().enumerate() {
        let bytes = std::fs::read(m).map_err(|e| Failure::io(format!("cannot read `{}`", m.display()), e))?;
        let name = m.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "module.ko".into());
        // Numbered, so that the guest inserts them in the order given.
        cpio.file(&format!("m/modules/{index:03}-{name}"), 0o644, &bytes);
    }
    cpio.file("script", 0o755, script.as_deref().unwrap_or(b"exit 0\n"));
    let token = step_token();
    cpio.file("token", 0o600, format!("{token}\n").as_bytes());
    let init = INIT
        .replace("@NAME@", &module.name)
        .replace("@TIMEOUT@", &args.timeout.to_string())
        .replace("@MODE@", if args.shell { "shell" } else { "script" });
    cpio.file("init", 0o755, init.as_bytes());
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, cpio.finish())
        .map_err(|e| Failure::io(format!("cannot write `{}`", initrd.display()), e))?;

    let append = format!("quiet panic=-1 oops=panic softlockup_panic=1 {}", args.append).trim_end().to_owned();
    if args.shell {
        return shell(&qemu, &image, &initrd, append, &release);
    }
    let console = dir.path().join("console");
    let data = dir.path().join("data");
    let machine = vm::Machine {
        image: &image,
        initrd: &initrd,
        append,
        memory_mb: 512,
        cpus: 2,
        console: vm::Console::File(console.clone()),
        data: Some(data.clone()),
    };
    eprintln!("booting {release} under qemu (software emulation, about 10-20 s)");
    let start = Instant::now();
    let mut child = machine.start(&qemu).map_err(Failure::Fatal)?;
    let mut reader = Reader { token, ..Reader::default() };
    let ended = vm::wait(&mut child, Duration::from_secs(args.vm_timeout), || reader.poll(&data, start))
        .map_err(Failure::Fatal)?;
    reader.poll(&data, start);
    verdict(&reader, ended, &module.name, &console, args.vm_timeout)
}

/// Returns `program` without its symbols (a debug build is mostly debug information), or
/// `program` itself when `strip` is not there.
fn strip(program: &Path, out: &Path) -> PathBuf {
    let ok = vm::which("strip").is_some_and(|strip| {
        std::process::Command::new(strip).arg("-o").arg(out).arg(program).status().is_ok_and(|s| s.success())
    });
    if ok { out.to_path_buf() } else { program.to_path_buf() }
}

/// Boots the guest with its console on this terminal.
fn shell(qemu: &Path, image: &Path, initrd: &Path, append: String, release: &str) -> Result<(), Failure> {
    let machine =
        vm::Machine { image, initrd, append, memory_mb: 512, cpus: 2, console: vm::Console::Terminal, data: None };
    eprintln!("booting {release} under qemu (software emulation, about 10-20 s); Ctrl-A X stops the machine");
    let status =
        machine.command(qemu).status().map_err(|e| Failure::io(format!("cannot start {}", qemu.display()), e))?;
    if status.success() { Ok(()) } else { Err(Failure::Fatal(format!("qemu failed ({status})"))) }
}

/// What the guest reported so far on its second serial port.
#[derive(Default)]
struct Reader {
    /// Bytes of the file already read.
    offset: usize,
    /// A line not yet ended.
    partial: String,
    /// The steps, with their arguments (`load 0`).
    steps: Vec<String>,
    /// Output lines by the step they followed (`loading`, `script`, `unloading`).
    output: Vec<(String, String)>,
    /// The token of this boot's step lines (`KGRAFT-STEP-TOKEN what arg`).
    token: String,
}

impl Reader {
    /// Reads what the guest wrote since the last call, printing progress and output.
    fn poll(&mut self, path: &Path, start: Instant) {
        use std::io::{Read, Seek};
        // Only what is new, and at most 1 MiB of it a time: the file grows with the guest's
        // output, which nothing bounds.
        let Ok(mut file) = std::fs::File::open(path) else { return };
        if file.seek(std::io::SeekFrom::Start(self.offset as u64)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.take(1 << 20).read_to_end(&mut bytes) else { return };
        if n == 0 {
            return;
        }
        self.partial.push_str(&String::from_utf8_lossy(&bytes).replace('\r', ""));
        self.offset += n;
        // A line without an end is kept to 64 KiB.
        if self.partial.len() > 64 << 10 && !self.partial.contains('\n') {
            let cut = self.partial.len() - (64 << 10);
            let cut = (cut..self.partial.len()).find(|&i| self.partial.is_char_boundary(i)).unwrap_or(0);
            self.partial.drain(..cut);
        }
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches('\n');
            // A line is kept to its last 64 KiB.
            let from = line.len().saturating_sub(64 << 10);
            let from = (from..=line.len()).find(|&i| line.is_char_boundary(i)).unwrap_or(0);
            self.line(&line[from..], start);
        }
    }

    fn line(&mut self, line: &str, start: Instant) {
        let secs = start.elapsed().as_secs_f64();
        let marker = format!("KGRAFT-STEP-{} ", self.token);
        if let Some(step) = line.strip_prefix(marker.as_str()) {
            self.steps.push(step.to_owned());
            let mut words = step.split_whitespace();
            let (what, arg) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let say = match what {
                "booted" => Some(format!("the kernel booted ({secs:.1} s)")),
                "module-failed" => Some(format!("could not insert the module {arg}")),
                "loading" => Some("loading the patch with `kgraftc kernel load`".to_owned()),
                "script" => Some("running the script".to_owned()),
                "script-status" => Some(format!("the script exited with {arg}")),
                "unloading" => Some("unloading the patch with `kgraftc kernel unload`".to_owned()),
                _ => None,
            };
            if let Some(say) = say {
                eprintln!("  {say}");
            }
            return;
        }
        // The script's own lines come marked (`: `): whatever they say, they are output.
        let line = line.strip_prefix(": ").unwrap_or(line);
        let section = self
            .steps
            .iter()
            .rev()
            .map(|s| s.split_whitespace().next().unwrap_or(""))
            .find(|s| matches!(*s, "loading" | "script" | "unloading" | "booted"))
            .unwrap_or("booted")
            .to_owned();
        eprintln!("    | {line}");
        let _ = std::io::stderr().flush();
        // The last lines are what a failure report shows: older ones go.
        if self.output.len() >= MAX_OUTPUT_LINES {
            self.output.drain(..MAX_OUTPUT_LINES / 2);
        }
        self.output.push((section, line.to_owned()));
    }

    /// The argument of the last step `what`.
    fn step(&self, what: &str) -> Option<&str> {
        self.steps
            .iter()
            .rev()
            .find_map(|s| s.strip_prefix(what).filter(|r| r.is_empty() || r.starts_with(' ')).map(str::trim))
    }
}

/// How many of the guest's output lines are kept for the report.
const MAX_OUTPUT_LINES: usize = 10_000;

/// A token for one boot's step lines, which the script cannot guess: 16 bytes of the kernel's
/// randomness (or, without it, of the clock and this process).
fn step_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (now ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decides the exit status from what the guest reported.
fn verdict(reader: &Reader, ended: vm::Ended, name: &str, console: &Path, vm_timeout: u64) -> Result<(), Failure> {
    let console_tail = || vm::tail(console, 30);
    if reader.step("booted").is_none() {
        let why = match &ended {
            vm::Ended::TimedOut => format!("the guest did not boot within {vm_timeout} s"),
            vm::Ended::Exited { success: false, stderr } => format!("qemu failed: {}", stderr.trim()),
            vm::Ended::Exited { .. } => "the guest stopped before its init ran".to_owned(),
        };
        return Err(Failure::Fatal(format!("{why}\nthe console ended with:\n{}", console_tail())));
    }
    let failed = |what: String| {
        eprintln!("error: {what}");
        Err(Failure::Reported)
    };
    if let Some(module) = reader.step("module-failed") {
        return failed(format!(
            "the guest could not insert the target module {module} (its output is above), so the patch was not \
             loaded: give a module's dependencies with --module before it, in the order the kernel needs them \
             (`modinfo` lists them under `depends` and `softdep`)"
        ));
    }
    if reader.step("done").is_none() {
        let why = if ended == vm::Ended::TimedOut {
            format!("the guest did not finish within {vm_timeout} s")
        } else {
            "the guest stopped before the end".to_owned()
        };
        return failed(format!("{why}; the console ended with:\n{}", console_tail()));
    }
    if reader.step("load") != Some("0") {
        return failed(format!("the patch {name} did not load in the guest (its output is above)"));
    }
    match reader.step("script-status") {
        Some("0") => {}
        Some(code) => {
            eprintln!("the script's output:");
            for (_, line) in reader.output.iter().filter(|(s, _)| s == "script") {
                eprintln!("    {line}");
            }
            return failed(format!("the script failed (exit status {code}) while {name} was applied"));
        }
        None => return failed("the script did not run".to_owned()),
    }
    let by_script = match reader.step("unload") {
        Some("0") => false,
        Some("by-script") => true,
        _ => return failed(format!("`kgraftc kernel unload {name}` failed in the guest (its output is above)")),
    };
    match reader.step("restored") {
        Some("yes") => {}
        Some(left) => return failed(format!("after the unload, the kernel still holds {name}'s {left}")),
        None => return failed("the unload was not checked".to_owned()),
    }
    if by_script {
        eprintln!("passed: the script passed with {name} applied, and unloaded {name} itself cleanly");
    } else {
        eprintln!("passed: the script passed with {name} applied, and {name} unloaded cleanly");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest's output file is read a piece at a time, and what is kept of it is bounded,
    /// however much the guest writes; step lines still count, and only with the boot's token.
    #[test]
    fn the_reader_keeps_a_bounded_tail_of_a_huge_output() {
        let dir = std::env::temp_dir().join(format!("kgraft-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let path = dir.join("data");
        let mut text = String::from("KGRAFT-STEP-t0k booted\n");
        for i in 0..30_000 {
            text.push_str(&format!("KGRAFT-STEP script-status 0 forged {i}\n"));
        }
        text.push_str(&"x".repeat(3 << 20));
        text.push_str("\nKGRAFT-STEP-t0k done\n");
        std::fs::write(&path, &text).expect("the output");
        let mut reader = Reader { token: "t0k".into(), ..Reader::default() };
        let start = Instant::now();
        for _ in 0..10 {
            reader.poll(&path, start);
        }
        assert_eq!(reader.offset, text.len(), "read to the end in pieces");
        assert_eq!(reader.steps, ["booted", "done"], "no forged step counts");
        assert!(reader.output.len() <= MAX_OUTPUT_LINES);
        assert!(reader.output.iter().all(|(_, l)| l.len() <= 64 << 10), "a line without an end is bounded");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
