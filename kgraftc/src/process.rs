//! Running the tools kgraftc needs (cargo, make, the C compiler, qemu) so that none outlives it.
//!
//! A tool runs in a process group of its own, with the parent-death signal set to `SIGKILL`:
//! when kgraftc is killed, even with `SIGKILL`, the tool dies with it. When kgraftc is
//! interrupted or terminated (`SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`) it kills the tool's whole
//! group, the compilers cargo started included, before dying of the same signal.
//!
//! While the tool runs, lines of its standard error that say it waits for a lock are shown at
//! once, so a build that waits is never silent.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// The process group of the tool running now, 0 when none.
static GROUP: AtomicI32 = AtomicI32::new(0);

/// Kills the running tool's group, then dies of `signal` as if no handler were set.
extern "C" fn on_signal(signal: libc::c_int) {
    let group = GROUP.load(Ordering::SeqCst);
    // SAFETY: kill, signal and raise are async-signal-safe; the group is one this process
    // created, and a group that already ended makes kill fail harmlessly.
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Installs [`on_signal`] for the signals that end a build, once.
fn install_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that does only async-signal-safe
            // work; a signal that was ignored when kgraftc started (`nohup`) stays ignored.
            unsafe {
                if libc::signal(signal, libc::SIG_IGN) != libc::SIG_IGN {
                    libc::signal(signal, on_signal as *const () as libc::sighandler_t);
                }
            }
        }
    });
}

/// Runs `cmd` to completion, with its standard input empty and its output captured, in a process
/// group of its own that dies with kgraftc (see the module's documentation).
pub(crate) fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd)?;
    let mut stdout = child.stdout.take().expect("piped above");
    let stderr = child.stderr.take().expect("piped above");
    let errors = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            if text.contains("waiting for file lock") {
                eprint!("{}", text.trim_start());
            }
            all.append(&mut line);
        }
        all
    });
    let mut out = Vec::new();
    let read = stdout.read_to_end(&mut out);
    let status = child.wait();
    ended();
    let err = errors.join().unwrap_or_default();
    read?;
    Ok(Output { status: status?, stdout: out, stderr: err })
}

/// Starts `cmd` (its standard streams as the caller set them) in a process group of its own
/// that dies with kgraftc; call [`ended`] once it has been waited for.
pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    install_handlers();
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // kgraftc died before the signal was armed: do not run orphaned.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    let child = cmd.spawn()?;
    GROUP.store(child.id() as i32, Ordering::SeqCst);
    Ok(child)
}

/// Says that the tool [`spawn`] started has been waited for: a signal no longer kills a group.
pub(crate) fn ended() {
    GROUP.store(0, Ordering::SeqCst);
}
