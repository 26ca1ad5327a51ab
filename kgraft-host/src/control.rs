//! The control socket: how `kgraftc host load|unload|status` talks to a running host.
//!
//! One request per connection, one line: `load PATH`, `unload NAME`, `reverse`, `status`,
//! `read cmdline|testmod`, `log`, `stop`. The host answers with lines; progress lines start with
//! `progress:`, and the last line is `ok` or `error: MESSAGE`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::engine::{Direction, Progress, engine};
use crate::loader::Library;
use crate::threads;
use crate::workload::{Stats, read_file, take_log};

/// How long `load` and `unload` wait for the transition before giving up waiting.
pub const WAIT: Duration = Duration::from_secs(10);

/// Returns the default socket path: `$KGRAFT_HOST_SOCKET`, else one per user in the temporary
/// directory.
pub fn default_socket() -> String {
    if let Ok(p) = std::env::var("KGRAFT_HOST_SOCKET") {
        return p;
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    format!("{}/kgraft-host-{uid}.sock", std::env::temp_dir().display())
}

/// Serves requests until a `stop` request.
///
/// # Errors
///
/// A message when the socket cannot be bound.
pub fn serve(path: &str, stats: Arc<Stats>) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("binding {path}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (stats, stop2, path2) = (stats.clone(), stop.clone(), path.to_owned());
        std::thread::spawn(move || {
            let _ = handle(conn, &stats, &stop2, &path2);
        });
        // Give a `stop` request the chance to be seen before the next accept blocks.
        std::thread::sleep(Duration::from_millis(1));
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Answers one request.
fn handle(conn: UnixStream, stats: &Stats, stop: &AtomicBool, path: &str) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let mut out = &conn;
    let line = line.trim();
    let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
    let result = match cmd {
        "load" => load(arg, &mut out),
        "unload" => unload(arg, &mut out),
        "reverse" => reverse(&mut out),
        "status" => status(&mut out, stats),
        "read" => match read_file(arg) {
            Some(text) => out.write_all(text.as_bytes()).map_err(|e| e.to_string()),
            None => Err(format!("no such file `{arg}` (known: cmdline, testmod)")),
        },
        "log" => out.write_all(take_log().as_bytes()).map_err(|e| e.to_string()),
        "stop" => {
            stop.store(true, Ordering::Release);
            // Wake the accept loop.
            let _ = UnixStream::connect(path);
            Ok(())
        }
        _ => Err(format!("unknown request `{cmd}`")),
    };
    match result {
        Ok(()) => writeln!(out, "ok"),
        Err(e) => writeln!(out, "error: {e}"),
    }
}

/// Loads a patch and waits for its transition.
fn load(path: &str, out: &mut impl Write) -> Result<(), String> {
    let (lib, patch) = Library::open(path)?;
    let name = patch.name.to_string_lossy().into_owned();
    let _ = writeln!(out, "loading {name} from {path}");
    engine()?.begin_apply(patch, Some(lib))?;
    follow(out)
}

/// Removes a patch and waits for its transition.
fn unload(name: &str, out: &mut impl Write) -> Result<(), String> {
    engine()?.begin_remove(name)?;
    follow(out)
}

/// Reverses the transition in progress and waits for it.
fn reverse(out: &mut impl Write) -> Result<(), String> {
    engine()?.reverse()?;
    follow(out)
}

/// Prints the transition's progress until it ends or [`WAIT`] passes.
fn follow(out: &mut impl Write) -> Result<(), String> {
    let start = Instant::now();
    let mut last_print = None::<Instant>;
    loop {
        let p = engine()?.poll()?;
        match p {
            Progress::Idle => return Ok(()),
            Progress::Done { patch, direction, elapsed } => {
                let verb = if direction == Direction::Patch { "patched" } else { "unpatched" };
                let _ = writeln!(
                    out,
                    "transition: {patch} {verb}: every thread has migrated, the sites jump straight to the code ({:.3} ms)",
                    elapsed.as_secs_f64() * 1e3
                );
                return Ok(());
            }
            Progress::Waiting { patch, direction, elapsed, threads, stragglers } => {
                let due = last_print.is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
                if due {
                    last_print = Some(Instant::now());
                    let verb = if direction == Direction::Patch { "patching" } else { "unpatching" };
                    let _ = writeln!(
                        out,
                        "progress: {verb} {patch}: {}/{threads} threads migrated after {:.3} ms",
                        threads - stragglers.len(),
                        elapsed.as_secs_f64() * 1e3
                    );
                    for s in stragglers.iter().take(8) {
                        let _ = writeln!(
                            out,
                            "progress:   straggler {} (tid {}){}: no safe point for {:.1} ms",
                            s.name,
                            s.tid,
                            if s.asleep { ", asleep, kicked" } else { "" },
                            s.since_safe_point.as_secs_f64() * 1e3
                        );
                    }
                }
                if start.elapsed() > WAIT {
                    return Err(format!(
                        "the transition of {patch} is still waiting for {} thread(s) after {} s; \
                         it goes on in the background (`kgraftc host reverse` backs it out)",
                        stragglers.len(),
                        WAIT.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Prints the applied patches and the workload's counters.
fn status(out: &mut impl Write, stats: &Stats) -> Result<(), String> {
    let e = engine()?;
    let list = e.list();
    let sites = e.sites_report();
    let syncs = e.syncs();
    drop(e);
    if list.is_empty() {
        let _ = writeln!(out, "patches: none");
    }
    for (name, in_transition) in list {
        let _ = writeln!(out, "patch {name}: {}", if in_transition { "in transition" } else { "enabled" });
    }
    for site in sites {
        let _ = writeln!(out, "site {site}");
    }
    let _ = writeln!(
        out,
        "pokes: {syncs} core syncs so far; {} trap(s): a thread hit an INT3 mid-poke and was sent on",
        crate::text::TRAPS.load(Ordering::Relaxed)
    );
    let reg = threads::registry().lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(out, "threads: {} registered, goal universe {}", reg.len(), threads::GOAL.get());
    drop(reg);
    let _ = writeln!(
        out,
        "workload: {} pair calls, {} mismatched, {} reads, {} kicks",
        stats.pairs.load(Ordering::Relaxed),
        stats.mismatches.load(Ordering::Relaxed),
        stats.reads.load(Ordering::Relaxed),
        stats.kicks.load(Ordering::Relaxed)
    );
    Ok(())
}
