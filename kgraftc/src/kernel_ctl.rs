//! `kgraftc kernel ...`: live patches on the running Linux kernel, applied by its livepatch core
//! or by kgraft's own engine (`--engine kgraft`).
//!
//! Everything is read from and written to the kernel's own interfaces, as kpatch's command does.
//! The livepatch core's patches: `/sys/kernel/livepatch/NAME/` (`enabled`, `transition`,
//! `force`, one directory per object with `patched`, one per function),
//! `/proc/PID/task/TID/patch_state` (each task's universe during a transition: 0 old, 1 new, -1
//! none in progress) and `stack` or `wchan` (where a task that holds a transition up sleeps).
//! The kgraft engine's: `/sys/kernel/kgraft/NAME/` (`enabled`, `transition`, `functions`,
//! `force`, and `stragglers`, which names the tasks behind with their stacks). Modules are
//! inserted with `finit_module(2)` and removed
//! with `delete_module(2)`, so the kernel's refusals come back as error numbers kgraftc can
//! explain, with the kernel log's new lines.
//!
//! Exit status: 0 done, 1 the kernel refused or the transition did not finish (it was reversed),
//! 2 usage or environment (no root, no livepatch support, no such patch or file).
//!
//! `KGRAFT_SYSROOT`, when set, is a directory read in place of `/` for `sys` and `proc`: the
//! tests use it to show `list` and `status` a kernel they make up.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Prints a line on standard output through [`crate::output::stdout`]: a reader that closed
/// the pipe (`kgraftc kernel list | head -1`) ends the output quietly, not with a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        crate::output::stdout(&format!("{}\n", format_args!($($arg)*)))?
    };
}

use crate::{Engine, Failure};

/// The arguments of `kgraftc kernel`.
#[derive(clap::Args, Debug)]
pub(crate) struct KernelCtlArgs {
    #[command(subcommand)]
    pub(crate) command: KernelCommand,
}

/// What to do with the running kernel's live patches.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum KernelCommand {
    /// Lists the live patches with their state and functions.
    List,
    /// Shows each live patch (or the one named) in detail, and a transition in progress with the
    /// tasks that hold it up.
    Status {
        /// A patch name.
        name: Option<String>,
    },
    /// Inserts a live patch module and waits for its transition; reverses it after `--timeout`.
    Load {
        /// The module (`NAME.ko`, from `kgraftc build --target linux`).
        module: PathBuf,
        /// Seconds to wait for the transition before reversing it and removing the module.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Disables a live patch, waits for its transition and removes its module.
    Unload {
        /// The patch name.
        name: String,
        /// Seconds to wait for the transition before reversing it (the patch then stays).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Asks the engine to send a fake signal to the tasks that hold a transition up.
    Signal {
        /// The patch in transition.
        name: String,
    },
    /// Forces a transition to finish (unsafe: see the warning it prints).
    Force {
        /// The patch in transition.
        name: String,
    },
}

/// Where the kernel's files are (`/`, or `KGRAFT_SYSROOT` for tests).
struct Sys {
    root: PathBuf,
}

impl Sys {
    fn new() -> Sys {
        Sys { root: std::env::var_os("KGRAFT_SYSROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")) }
    }

    fn livepatch(&self) -> PathBuf {
        self.root.join("sys/kernel/livepatch")
    }

    fn patch(&self, name: &str) -> PathBuf {
        self.livepatch().join(name)
    }

    fn kgraft(&self, name: &str) -> PathBuf {
        self.root.join("sys/kernel/kgraft").join(name)
    }

    /// The directory of the patch `name`, and its engine.
    fn find(&self, name: &str) -> Option<(Engine, PathBuf)> {
        if self.patch(name).is_dir() {
            Some((Engine::Klp, self.patch(name)))
        } else if self.kgraft(name).is_dir() {
            Some((Engine::Kgraft, self.kgraft(name)))
        } else {
            None
        }
    }

    /// The directory of `name`'s patch for `engine` (which may not exist).
    fn dir(&self, engine: Engine, name: &str) -> PathBuf {
        match engine {
            Engine::Klp => self.patch(name),
            Engine::Kgraft => self.kgraft(name),
        }
    }

    /// The patches the kgraft engine applies: the directories of `/sys/kernel/kgraft`.
    fn kgraft_patches(&self) -> Vec<String> {
        dir_names(&self.root.join("sys/kernel/kgraft"))
    }

    fn module(&self, name: &str) -> PathBuf {
        self.root.join("sys/module").join(name)
    }

    fn proc(&self) -> PathBuf {
        self.root.join("proc")
    }

    /// Fails unless the kernel has a livepatch core, or patches of the kgraft engine.
    fn require_livepatch(&self) -> Result<(), Failure> {
        if self.livepatch().is_dir() || !self.kgraft_patches().is_empty() {
            return Ok(());
        }
        Err(Failure::Fatal(format!(
            "this kernel has no livepatch support: {} does not exist\n\
             help: live patches need a kernel built with CONFIG_LIVEPATCH (Debian's is)",
            self.livepatch().display()
        )))
    }
}

/// Reads a sysfs file, trimmed; `None` when it cannot be read.
fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Writes a sysfs file, as `echo VALUE > PATH` does.
fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).open(path)?.write_all(value.as_bytes())
}

/// Fails unless kgraftc runs as root (the kernel wants `CAP_SYS_MODULE` and sysfs writes).
fn require_root(what: &str) -> Result<(), Failure> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return Ok(());
    }
    Err(Failure::Fatal(format!(
        "`kgraftc kernel {what}` needs root: the kernel lets only root insert and remove modules \
         and write /sys/kernel/livepatch\nhelp: run it with sudo"
    )))
}

/// One live patch as sysfs shows it.
struct PatchInfo {
    name: String,
    engine: Engine,
    enabled: bool,
    transition: bool,
    objects: Vec<ObjectInfo>,
}

/// One object (vmlinux or a module) of a live patch.
struct ObjectInfo {
    name: String,
    /// Whether its functions are redirected (`false` for a module not loaded yet).
    patched: bool,
    /// Its functions, as `NAME` or `NAME (sympos N)`.
    functions: Vec<String>,
}

fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn patch_info(sys: &Sys, name: &str) -> Option<PatchInfo> {
    let (engine, dir) = sys.find(name)?;
    let enabled = read(&dir.join("enabled"))? == "1";
    let transition = read(&dir.join("transition")).is_some_and(|t| t == "1");
    let mut objects = Vec::new();
    if engine == Engine::Kgraft {
        // `functions`: one `OBJECT:NAME` a line; the module holds each object while it lives.
        for line in read(&dir.join("functions")).unwrap_or_default().lines() {
            let Some((object, function)) = line.split_once(':') else { continue };
            match objects.iter_mut().find(|o: &&mut ObjectInfo| o.name == object) {
                Some(o) => o.functions.push(function.to_owned()),
                None => objects.push(ObjectInfo {
                    name: object.to_owned(),
                    patched: enabled,
                    functions: vec![function.to_owned()],
                }),
            }
        }
        return Some(PatchInfo { name: name.to_owned(), engine, enabled, transition, objects });
    }
    for object in dir_names(&dir) {
        let odir = dir.join(&object);
        let patched = read(&odir.join("patched")).is_some_and(|p| p == "1");
        // A function's directory is `NAME,SYMPOS`; sympos 0 and 1 both mean the only one.
        let functions = dir_names(&odir)
            .into_iter()
            .map(|f| match f.rsplit_once(',') {
                Some((n, pos)) if pos == "0" || pos == "1" => n.to_owned(),
                Some((n, pos)) => format!("{n} (sympos {pos})"),
                None => f,
            })
            .collect();
        objects.push(ObjectInfo { name: object, patched, functions });
    }
    Some(PatchInfo { name: name.to_owned(), engine, enabled, transition, objects })
}

fn patches(sys: &Sys) -> Vec<PatchInfo> {
    let mut names = dir_names(&sys.livepatch());
    names.extend(sys.kgraft_patches());
    names.iter().filter_map(|n| patch_info(sys, n)).collect()
}

fn engine_word(e: Engine) -> &'static str {
    match e {
        Engine::Klp => "klp",
        Engine::Kgraft => "kgraft",
    }
}

fn state_word(p: &PatchInfo) -> &'static str {
    match (p.enabled, p.transition) {
        (true, false) => "enabled",
        (true, true) => "patching",
        (false, true) => "unpatching",
        (false, false) => "disabled",
    }
}

/// A task that has not reached the target universe.
struct Straggler {
    pid: u32,
    tid: u32,
    comm: String,
    /// Where it sleeps: its innermost frames, or its wait channel.
    place: String,
}

/// Every task's `(pid, tid, patch_state)`.
fn tasks(sys: &Sys) -> Vec<(u32, u32, i32)> {
    let mut out = Vec::new();
    let proc = sys.proc();
    let Ok(entries) = std::fs::read_dir(&proc) else {
        return out;
    };
    for pid in entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())) {
        let Ok(threads) = std::fs::read_dir(proc.join(pid.to_string()).join("task")) else {
            continue;
        };
        for tid in threads.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())) {
            let path = proc.join(format!("{pid}/task/{tid}/patch_state"));
            if let Some(state) = read(&path).and_then(|s| s.parse::<i32>().ok()) {
                out.push((pid, tid, state));
            }
        }
    }
    out
}

/// The tasks whose universe is not `target` (1: patched, 0: unpatched).
fn stragglers(sys: &Sys, target: i32) -> Vec<(u32, u32)> {
    tasks(sys).into_iter().filter(|&(_, _, s)| s != target).map(|(p, t, _)| (p, t)).collect()
}

/// Describes a task: its name and where it sleeps.
fn describe(sys: &Sys, pid: u32, tid: u32) -> Straggler {
    let dir = sys.proc().join(format!("{pid}/task/{tid}"));
    let comm = read(&dir.join("comm")).unwrap_or_else(|| "?".into());
    let place = read(&dir.join("stack"))
        .map(|s| stack_frames(&s, FRAMES))
        .filter(|s| !s.is_empty())
        .or_else(|| read(&dir.join("wchan")).filter(|w| !w.is_empty() && w != "0").map(|w| format!("in {w}")))
        .unwrap_or_else(|| "running (no stack readable)".into());
    Straggler { pid, tid, comm, place }
}

/// How many frames of a straggler's stack are shown.
const FRAMES: usize = 4;

/// A line of the kgraft engine's `stragglers` (`comm (pid N): f1 <- f2 <- …`) with its first
/// `n` frames only.
fn first_frames(line: &str, n: usize) -> String {
    match line.split_once("): ") {
        Some((who, stack)) => {
            let frames: Vec<&str> = stack.split(" <- ").take(n).collect();
            format!("{who}): {}", frames.join(" <- "))
        }
        None => line.to_owned(),
    }
}

/// Turns `/proc/PID/stack` (`[<0>] do_nanosleep+0x6c/0x140`) into `do_nanosleep <- …`.
fn stack_frames(stack: &str, n: usize) -> String {
    let frames: Vec<String> = stack
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.split_once("] ").map_or(l, |(_, rest)| rest);
            let name = l.split('+').next()?.trim();
            let module = l.split_once('[').map(|(_, m)| m.trim_end_matches(']'));
            (!name.is_empty()).then(|| match module {
                Some(m) => format!("{name} [{m}]"),
                None => name.to_owned(),
            })
        })
        .take(n)
        .collect();
    frames.join(" <- ")
}

/// The tasks a transition waits for.
enum Behind {
    /// The livepatch core's: `(pid, tid)` of each task, described on demand.
    Klp(Vec<(u32, u32)>),
    /// The kgraft engine's `stragglers` file: one described task (or CPU) a line.
    Kgraft(Vec<String>),
}

impl Behind {
    fn len(&self) -> usize {
        match self {
            Behind::Klp(l) => l.len(),
            Behind::Kgraft(l) => l.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n`, one line each: `comm (pid N): where`.
    fn lines(&self, sys: &Sys, n: usize) -> Vec<String> {
        match self {
            Behind::Klp(l) => l
                .iter()
                .take(n)
                .map(|&(pid, tid)| {
                    let s = describe(sys, pid, tid);
                    let id =
                        if s.pid == s.tid { format!("pid {}", s.pid) } else { format!("pid {} tid {}", s.pid, s.tid) };
                    format!("{} ({id}): {}", s.comm, s.place)
                })
                .collect(),
            // `comm (pid N): frame <- frame ...`, with as many frames as the livepatch core's
            // stragglers show.
            Behind::Kgraft(l) => l.iter().take(n).map(|line| first_frames(line, FRAMES)).collect(),
        }
    }
}

/// The tasks of the patch `name` not yet in the universe `target` (true: patched).
fn behind(sys: &Sys, engine: Engine, name: &str, target: bool) -> Behind {
    match engine {
        Engine::Klp => Behind::Klp(stragglers(sys, i32::from(target))),
        Engine::Kgraft => Behind::Kgraft(
            read(&sys.kgraft(name).join("stragglers"))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    }
}

fn print_stragglers(sys: &Sys, list: &Behind) {
    const SHOWN: usize = 10;
    for line in list.lines(sys, SHOWN) {
        eprintln!("    {line}");
    }
    if list.len() > SHOWN {
        eprintln!("    … and {} more", list.len() - SHOWN);
    }
}

/// How a wait for a transition ended.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// The transition finished and the patch is still there.
    Done,
    /// The patch's directory went away (a disabled patch, freed by the core).
    Gone,
    /// The time ran out with the transition still in progress.
    TimedOut,
}

/// Waits for the transition of `name` towards `target` (true: patched), showing how many tasks
/// are left and, when it takes long, which ones.
fn wait_transition(sys: &Sys, engine: Engine, name: &str, target: bool, timeout: Duration) -> Waited {
    let start = Instant::now();
    // A terminal gets one line updated in place; a log (or `TERM=dumb`) a line now and then.
    let tty = std::io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
    let word = if target { "patched" } else { "unpatched" };
    let mut printed_count = usize::MAX;
    let mut last_print = Instant::now();
    let mut last_named = Instant::now();
    let mut shown = false;
    let finish_line = |shown: bool| {
        if tty && shown {
            eprintln!();
        }
    };
    loop {
        let dir = sys.dir(engine, name);
        match read(&dir.join("transition")) {
            None => {
                finish_line(shown);
                return Waited::Gone;
            }
            Some(t) if t == "0" => {
                finish_line(shown);
                return Waited::Done;
            }
            Some(_) => {}
        }
        let left = behind(sys, engine, name, target);
        let secs = start.elapsed().as_secs_f64();
        let line = if left.is_empty() {
            let who = if engine == Engine::Klp { "the core" } else { "the engine" };
            format!("transition to {word}: every task moved, {who} is finishing ({secs:.1} s)")
        } else {
            format!("transition to {word}: {} tasks left ({secs:.1} s)", left.len())
        };
        if tty {
            eprint!("\r\x1b[K    {line}");
            let _ = std::io::stderr().flush();
            shown = true;
        } else if (left.len() != printed_count && last_print.elapsed() >= Duration::from_millis(500))
            || last_print.elapsed() >= Duration::from_secs(5)
        {
            eprintln!("    {line}");
            printed_count = left.len();
            last_print = Instant::now();
        }
        if start.elapsed() >= timeout {
            finish_line(shown);
            eprintln!("    still in the old universe after {} s ({} tasks):", timeout.as_secs(), left.len());
            print_stragglers(sys, &left);
            return Waited::TimedOut;
        }
        if start.elapsed() >= Duration::from_secs(5)
            && last_named.elapsed() >= Duration::from_secs(5)
            && !left.is_empty()
        {
            finish_line(shown);
            shown = false;
            eprintln!("    holding the transition up:");
            print_stragglers(sys, &left);
            last_named = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the patch `name` is off: the livepatch core's directory gone (it frees a disabled
/// patch asynchronously), or the kgraft engine's reading disabled with no transition.
fn is_off(sys: &Sys, engine: Engine, name: &str) -> bool {
    match engine {
        Engine::Klp => !sys.patch(name).exists(),
        Engine::Kgraft => {
            let dir = sys.kgraft(name);
            read(&dir.join("enabled")).is_none_or(|e| e == "0")
                && read(&dir.join("transition")).is_none_or(|t| t == "0")
        }
    }
}

/// Waits until the patch is off.
fn wait_gone(sys: &Sys, engine: Engine, name: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while !is_off(sys, engine, name) {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// What a module file says about itself.
pub(crate) struct ModuleFile {
    pub(crate) name: String,
    livepatch: bool,
    /// Whether the module applies itself with the kgraft engine (`kgraft=engine`).
    pub(crate) kgraft: bool,
    pub(crate) vermagic: Option<String>,
    pub(crate) signed: bool,
}

pub(crate) fn module_file(path: &Path) -> Result<ModuleFile, Failure> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).map_err(|e| Failure::io(format!("cannot read `{}`", path.display()), e))?;
    let bad = || Failure::Fatal(format!("`{}` is not a kernel module (no .modinfo section)", path.display()));
    let file = object::File::parse(&*data).map_err(|_| bad())?;
    let section = file.section_by_name(".modinfo").ok_or_else(bad)?;
    let info = section.data().map_err(|_| bad())?;
    let field = |key: &str| {
        info.split(|&b| b == 0)
            .filter_map(|e| std::str::from_utf8(e).ok())
            .find_map(|e| e.strip_prefix(key).and_then(|v| v.strip_prefix('=')).map(str::to_owned))
    };
    let name = field("name").ok_or_else(bad)?;
    Ok(ModuleFile {
        name,
        livepatch: field("livepatch").is_some_and(|v| v == "Y"),
        kgraft: field("kgraft").is_some_and(|v| v == "engine"),
        vermagic: field("vermagic"),
        signed: data.ends_with(crate::sign::SIGNATURE_MARKER),
    })
}

/// The kernel log as `klogctl` returns it, one entry a line.
fn kernel_log() -> Vec<String> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: the buffer is valid for writes of its whole length, which is what is passed.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    if n <= 0 {
        return Vec::new();
    }
    buf.truncate(n as usize);
    String::from_utf8_lossy(&buf)
        .lines()
        .map(|l| {
            // Entries start with their level, `<6>`.
            let l = l.strip_prefix('<').and_then(|r| r.split_once('>')).map_or(l, |(_, rest)| rest);
            l.to_owned()
        })
        .collect()
}

/// The lines of `after` that `before` did not have.
fn new_lines(before: &[String], after: &[String]) -> Vec<String> {
    match before.last() {
        Some(last) => match after.iter().rposition(|l| l == last) {
            Some(i) => after[i + 1..].to_vec(),
            None => after.to_vec(),
        },
        None => after.to_vec(),
    }
}

/// Inserts the module in `path` with `finit_module(2)`.
fn finit_module(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: the descriptor is open for the whole call and the parameter string is a valid,
    // NUL-terminated C string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Removes the module `name` with `delete_module(2)`, without waiting for its users.
fn delete_module(name: &str) -> std::io::Result<()> {
    let name = std::ffi::CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `name` is a valid, NUL-terminated C string for the whole call.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Removes a module, retrying for a few seconds while the kernel still holds it.
fn remove_module(sys: &Sys, name: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match delete_module(name) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !sys.module(name).exists() => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)) => {
                if start.elapsed() >= Duration::from_secs(5) {
                    return Err(format!(
                        "the module {name} is still in use ({e}); a patch whose transition was forced \
                         keeps its module until the next boot"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("cannot remove the module {name}: {e}")),
        }
    }
}

/// Says why the kernel refused a module, from the error number.
fn explain_refusal(err: &std::io::Error, file: &ModuleFile, sys: &Sys) -> String {
    let enforced = read(&sys.root.join("sys/module/module/parameters/sig_enforce")).is_some_and(|v| v == "Y");
    match err.raw_os_error() {
        Some(libc::EKEYREJECTED) | Some(libc::ENOKEY) if !file.signed => format!(
            "the kernel refused {}: it accepts only signed modules{} and this one is not signed\n\
             help: sign it with `kgraftc build --target linux --sign-key KEY --sign-cert CERT`, \
             with a key the kernel trusts (built into the kernel, or enrolled as a machine owner key)",
            file.name,
            if enforced { " (module.sig_enforce is on)" } else { " (Secure Boot lockdown)" }
        ),
        Some(libc::EKEYREJECTED) | Some(libc::ENOKEY) => format!(
            "the kernel refused {}: its signature is not made by a key the kernel trusts{}\n\
             help: sign it with a key built into the kernel or enrolled as a machine owner key (mokutil --import CERT)",
            file.name,
            if enforced { " (module.sig_enforce is on)" } else { "" }
        ),
        Some(libc::EEXIST) => format!("a module named {} is already loaded", file.name),
        Some(libc::ENOEXEC) => {
            format!("the kernel refused {}: invalid module format (built for another kernel, or damaged)", file.name)
        }
        Some(libc::EPERM) => format!(
            "the kernel refused {}: operation not permitted (module loading may be disabled: \
             /proc/sys/kernel/modules_disabled, or a lockdown)",
            file.name
        ),
        _ => format!("the kernel refused {}: {err}", file.name),
    }
}

/// `kgraftc kernel load`.
fn load(sys: &Sys, path: &Path, timeout: Duration) -> Result<(), Failure> {
    let file = module_file(path)?;
    if !file.livepatch && !file.kgraft {
        return Err(Failure::Fatal(format!(
            "`{}` is not a live patch module (its modinfo has no `livepatch: Y` or `kgraft: engine`)\n\
             help: insert other modules with insmod or modprobe",
            path.display()
        )));
    }
    let engine = if file.kgraft { Engine::Kgraft } else { Engine::Klp };
    require_root("load")?;
    if engine == Engine::Klp {
        sys.require_livepatch()?;
    }
    if sys.patch(&file.name).exists() || sys.module(&file.name).exists() {
        return Err(Failure::Fatal(format!(
            "a module named {} is already loaded\nhelp: `kgraftc kernel unload {}` first, or give \
             the new version another patch name with `replace_all: true` to replace it atomically",
            file.name, file.name
        )));
    }
    if let (Some(vermagic), Some(release)) = (&file.vermagic, read(&sys.proc().join("sys/kernel/osrelease"))) {
        let built_for = vermagic.split_whitespace().next().unwrap_or("");
        if built_for != release {
            return Err(Failure::Fatal(format!(
                "`{}` is built for {built_for}, but the running kernel is {release}\n\
                 help: build it with --kdir /lib/modules/{release}/build",
                path.display()
            )));
        }
    }
    eprintln!("loading {} from {}", file.name, path.display());
    let before = kernel_log();
    let start = Instant::now();
    if let Err(e) = finit_module(path) {
        eprintln!("error: {}", explain_refusal(&e, &file, sys));
        let log = new_lines(&before, &kernel_log());
        if !log.is_empty() {
            eprintln!("the kernel log says:");
            for line in log.iter().rev().take(10).rev() {
                eprintln!("    {line}");
            }
        }
        return Err(Failure::Reported);
    }
    match wait_transition(sys, engine, &file.name, true, timeout) {
        Waited::Done => {
            eprintln!("{} is enabled ({:.1} s)", file.name, start.elapsed().as_secs_f64());
            Ok(())
        }
        Waited::Gone => {
            let _ = remove_module(sys, &file.name);
            eprintln!("error: the livepatch core dropped {} during its transition", file.name);
            Err(Failure::Reported)
        }
        Waited::TimedOut => {
            eprintln!("reversing the transition of {}", file.name);
            reverse_and_remove(sys, engine, &file.name, timeout)?;
            eprintln!(
                "error: {} did not take effect within {} s; the transition was reversed and the module removed\n\
                 help: the tasks above sleep inside functions the patch replaces; try again when they are idle, \
                 or with a longer --timeout (the engine wakes them with a fake signal: the livepatch core every 15 s, \
                 the kgraft engine every second)",
                file.name,
                timeout.as_secs()
            );
            Err(Failure::Reported)
        }
    }
}

/// Reverses a patching transition of `name`, waits for it and removes the module.
fn reverse_and_remove(sys: &Sys, engine: Engine, name: &str, timeout: Duration) -> Result<(), Failure> {
    write(&sys.dir(engine, name).join("enabled"), "0")
        .map_err(|e| Failure::Fatal(format!("cannot reverse the transition of {name}: {e}")))?;
    match wait_transition(sys, engine, name, false, timeout) {
        Waited::TimedOut => {
            return Err(Failure::Fatal(format!(
                "the reversal of {name} did not finish within {} s either; it goes on in the kernel \
                 (`kgraftc kernel status {name}`)",
                timeout.as_secs()
            )));
        }
        Waited::Done | Waited::Gone => {}
    }
    if !wait_gone(sys, engine, name, Duration::from_secs(10)) {
        return Err(Failure::Fatal(format!("the engine still holds {name} after its reversal")));
    }
    remove_module(sys, name).map_err(Failure::Fatal)
}

/// `kgraftc kernel unload`.
fn unload(sys: &Sys, name: &str, timeout: Duration) -> Result<(), Failure> {
    require_root("unload")?;
    sys.require_livepatch()?;
    let start = Instant::now();
    if let Some((engine, dir)) = sys.find(name) {
        let enabled = read(&dir.join("enabled")).is_some_and(|e| e == "1");
        if enabled {
            eprintln!("disabling {name}");
            write(&dir.join("enabled"), "0").map_err(|e| Failure::Fatal(format!("cannot disable {name}: {e}")))?;
        }
        if wait_transition(sys, engine, name, false, timeout) == Waited::TimedOut {
            eprintln!("reversing: {name} stays applied");
            // Writing 1 during the transition reverses it; the patch is then fully applied again.
            write(&dir.join("enabled"), "1")
                .map_err(|e| Failure::Fatal(format!("cannot reverse the transition of {name}: {e}")))?;
            if wait_transition(sys, engine, name, true, timeout) == Waited::TimedOut {
                return Err(Failure::Fatal(format!(
                    "the reversal of {name} did not finish within {} s either",
                    timeout.as_secs()
                )));
            }
            eprintln!("error: {name} could not be disabled within {} s; it is applied again", timeout.as_secs());
            return Err(Failure::Reported);
        }
        if !wait_gone(sys, engine, name, Duration::from_secs(10)) {
            return Err(Failure::Fatal(format!("the engine still holds {name} after disabling it")));
        }
    } else if !sys.module(name).exists() {
        return Err(Failure::Fatal(format!(
            "no live patch or module named {name} is loaded (see `kgraftc kernel list`)"
        )));
    }
    remove_module(sys, name).map_err(|e| {
        eprintln!("error: {e}");
        Failure::Reported
    })?;
    eprintln!("{name} is unloaded ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}

/// The patch in transition, checked against `name`.
fn in_transition(sys: &Sys, name: &str, verb: &str) -> Result<PatchInfo, Failure> {
    sys.require_livepatch()?;
    let info = patch_info(sys, name)
        .ok_or_else(|| Failure::Fatal(format!("no live patch named {name} (see `kgraftc kernel list`)")))?;
    if !info.transition {
        return Err(Failure::Fatal(format!("{name} is not in transition; there is nothing to {verb}")));
    }
    Ok(info)
}

/// `kgraftc kernel signal`.
fn signal(sys: &Sys, name: &str) -> Result<(), Failure> {
    require_root("signal")?;
    let info = in_transition(sys, name, "signal")?;
    if info.engine == Engine::Kgraft {
        return Err(Failure::Fatal(format!(
            "the kgraft engine sends the fake signal itself, every second of a transition, to the tasks \
             that hold {name} up\n\
             help: `kgraftc kernel status {name}` names them; a task that sleeps where no signal wakes it \
             holds the transition up until it leaves (`kgraftc kernel force {name}` ends it, unsafely)"
        )));
    }
    let file = sys.patch(name).join("signal");
    if !file.exists() {
        return Err(Failure::Fatal(format!(
            "this kernel has no {}: its livepatch core sends the fake signal itself, every 15 s of a transition\n\
             help: `kgraftc kernel status {name}` names the tasks that hold the transition up",
            file.display()
        )));
    }
    write(&file, "1").map_err(|e| Failure::Fatal(format!("cannot write {}: {e}", file.display())))?;
    let left = behind(sys, info.engine, name, info.enabled);
    eprintln!("signalled the {} tasks that hold {name} up", left.len());
    Ok(())
}

/// `kgraftc kernel force`.
fn force(sys: &Sys, name: &str) -> Result<(), Failure> {
    require_root("force")?;
    let info = in_transition(sys, name, "force")?;
    let left = behind(sys, info.engine, name, info.enabled);
    // Either engine keeps its reference to the module of a patch whose removal was forced, and
    // to the modules of the patches a forced `replace_all` patch replaces: they stay loaded.
    let kept = if info.enabled {
        "if it replaces other patches (replace_all), their modules stay loaded until the next boot".to_owned()
    } else {
        format!("the module of {name} stays loaded until the next boot")
    };
    eprintln!(
        "WARNING: forcing the transition of {name}: {} tasks are moved to the {} universe without \
         the check that none of them runs a function the patch changes.\n\
         WARNING: the consistency model no longer holds for them: a task may run old and new code \
         mixed, which the patch may not survive.\n\
         WARNING: {kept}.",
        left.len(),
        if info.enabled { "new" } else { "old" }
    );
    print_stragglers(sys, &left);
    let file = sys.dir(info.engine, name).join("force");
    write(&file, "1").map_err(|e| Failure::Fatal(format!("cannot force {name}: {}: {e}", file.display())))?;
    let done = wait_transition(sys, info.engine, name, info.enabled, Duration::from_secs(10));
    eprintln!(
        "forced: {name} is {}",
        match done {
            Waited::Done =>
                if info.enabled {
                    "enabled"
                } else {
                    "disabled"
                },
            Waited::Gone => "disabled",
            Waited::TimedOut => "still in transition",
        }
    );
    Ok(())
}

/// `kgraftc kernel list`.
fn list(sys: &Sys) -> Result<(), Failure> {
    sys.require_livepatch()?;
    let all = patches(sys);
    if all.is_empty() {
        say!("no live patches");
        return Ok(());
    }
    let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0).max(5);
    say!("{:width$}  {:10}  {:6}  FUNCTIONS", "PATCH", "STATE", "ENGINE");
    for p in &all {
        let functions: Vec<String> =
            p.objects.iter().flat_map(|o| o.functions.iter().map(move |f| format!("{}:{f}", o.name))).collect();
        say!("{:width$}  {:10}  {:6}  {}", p.name, state_word(p), engine_word(p.engine), functions.join(", "));
    }
    Ok(())
}

/// `kgraftc kernel status`.
fn status(sys: &Sys, name: Option<&str>) -> Result<(), Failure> {
    sys.require_livepatch()?;
    let all: Vec<PatchInfo> = match name {
        Some(n) => vec![
            patch_info(sys, n)
                .ok_or_else(|| Failure::Fatal(format!("no live patch named {n} (see `kgraftc kernel list`)")))?,
        ],
        None => patches(sys),
    };
    if all.is_empty() {
        say!("no live patches");
    }
    for p in &all {
        match p.engine {
            Engine::Klp => say!("{}: {}", p.name, state_word(p)),
            Engine::Kgraft => say!("{}: {} (kgraft engine)", p.name, state_word(p)),
        }
        let module = if sys.module(&p.name).exists() { "loaded" } else { "not loaded" };
        say!("  module {}: {module}", p.name);
        for o in &p.objects {
            let state = if o.patched {
                "patched"
            } else if o.name != "vmlinux" && !sys.module(&o.name).exists() {
                "not patched (the module is not loaded; it is patched when it loads)"
            } else {
                "not patched"
            };
            say!("  {}: {state}", o.name);
            for f in &o.functions {
                say!("    {f}");
            }
        }
        if p.transition {
            let left = behind(sys, p.engine, &p.name, p.enabled);
            say!("  transition to {}: {} tasks left", if p.enabled { "patched" } else { "unpatched" }, left.len());
            for line in left.lines(sys, 20) {
                say!("    {line}");
            }
        }
    }
    Ok(())
}

/// Whether `name` can be a module's name (and so a patch's): what the kernel allows in one,
/// and nothing that makes a path.
fn is_module_name(name: &str) -> bool {
    (1..=55).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Runs `kgraftc kernel`.
pub(crate) fn run(args: &KernelCtlArgs) -> Result<(), Failure> {
    let sys = Sys::new();
    let secs = Duration::from_secs;
    // A name becomes a sysfs path: it must be a module's name, never a path.
    let name = match &args.command {
        KernelCommand::Status { name: Some(n) }
        | KernelCommand::Unload { name: n, .. }
        | KernelCommand::Signal { name: n }
        | KernelCommand::Force { name: n } => Some(n),
        _ => None,
    };
    if let Some(n) = name.filter(|n| !is_module_name(n)) {
        return Err(Failure::Fatal(format!(
            "{n:?} is not the name of a live patch: a module's name is letters, digits, `_` and `-` (at most 55)"
        )));
    }
    match &args.command {
        KernelCommand::List => list(&sys),
        KernelCommand::Status { name } => status(&sys, name.as_deref()),
        KernelCommand::Load { module, timeout } => load(&sys, module, secs(*timeout)),
        KernelCommand::Unload { name, timeout } => unload(&sys, name, secs(*timeout)),
        KernelCommand::Signal { name } => signal(&sys, name),
        KernelCommand::Force { name } => force(&sys, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_lines() {
        let stack = "[<0>] msleep_interruptible+0x2e/0x50\n[<0>] kgt_nap+0x12/0x20 [kgraft_testmod]\n[<0>] seq_read_iter+0x120/0x4a0\n";
        assert_eq!(stack_frames(stack, 2), "msleep_interruptible <- kgt_nap [kgraft_testmod]");
    }

    #[test]
    fn kgraft_stragglers_show_as_many_frames() {
        let line = "cat (pid 7): kgt_nap [kgraft_testmod] <- kgt_nap_killable_show [kgraft_testmod] <- seq_read_iter \
                    <- seq_read <- proc_reg_read <- vfs_read";
        assert_eq!(
            first_frames(line, 4),
            "cat (pid 7): kgt_nap [kgraft_testmod] <- kgt_nap_killable_show [kgraft_testmod] <- seq_read_iter <- seq_read"
        );
        assert_eq!(first_frames("cpu 1 (interrupts)", 4), "cpu 1 (interrupts)");
        assert_eq!(first_frames("kthread (pid 2): f", 4), "kthread (pid 2): f");
    }

    #[test]
    fn log_suffix() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(new_lines(&l(&["a", "b"]), &l(&["a", "b", "c"])), l(&["c"]));
        assert_eq!(new_lines(&l(&["x"]), &l(&["a", "b"])), l(&["a", "b"]));
    }
}
