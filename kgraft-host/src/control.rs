//! The control socket: how `kgraftc host load|unload|status` talks to a running host.
//!
//! One request per connection, one line: `load PATH`, `unload NAME`, `reverse`, `status`,
//! `read cmdline|testmod`, `log`, `stop`. The host answers with lines; progress lines start with
//! `progress:`, and the last line is `ok` or `error: MESSAGE`.
//!
//! The socket is private: it is bound in a new directory only this user can enter, made
//! `0600`, then renamed to its path, so no other user can connect to it even for an instant;
//! and every connection's peer credentials are checked, so only this user (or root) is served.
//! A request that needs the engine while a stuck patch callback holds it gets a "busy" answer
//! naming the request that holds it, and `status` answers without it.

use std::io::{BufRead, BufReader, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::{Direction, Engine, Progress, engine_within};
use crate::loader::Library;
use crate::threads;
use crate::workload::{Stats, read_file, take_log};

/// How long `load` and `unload` wait for the transition before giving up waiting.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a request waits for the engine while another request holds it, before answering
/// that the engine is busy.
pub const BUSY_WAIT: Duration = Duration::from_secs(2);

/// The request that holds the engine now, and since when.
static HOLDER: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// The engine, held for a request, which [`HOLDER`] names while it is held.
struct Held(MutexGuard<'static, Engine>);

impl Deref for Held {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.0
    }
}

impl DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        *HOLDER.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Takes the engine for the request `what`, or says which request holds it after
/// [`BUSY_WAIT`].
fn engine_for(what: &str) -> Result<Held, String> {
    match engine_within(BUSY_WAIT)? {
        Some(guard) => {
            *HOLDER.lock().unwrap_or_else(|e| e.into_inner()) = Some((what.to_owned(), Instant::now()));
            Ok(Held(guard))
        }
        None => Err(match &*HOLDER.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((holder, since)) => format!(
                "the engine is busy: `{holder}` has held it for {:.1} s (a patch callback may be stuck)",
                since.elapsed().as_secs_f64()
            ),
            None => "the engine is busy".to_owned(),
        }),
    }
}

/// Returns the effective user id of this process.
fn own_uid() -> libc::uid_t {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Returns the credentials (pid, uid) of the process at the other end of `conn`.
pub fn peer(conn: &UnixStream) -> std::io::Result<(libc::pid_t, libc::uid_t)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the descriptor is open.
    let r = unsafe {
        libc::getsockopt(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid))
}

/// Binds the socket at `path` privately (see the module's documentation); returns the listener
/// and the socket file's identity, to remove only that file when the host stops.
fn bind_private(path: &str) -> Result<(UnixListener, (u64, u64)), String> {
    let p = Path::new(path);
    if let Ok(meta) = std::fs::symlink_metadata(p) {
        if meta.uid() != own_uid() {
            return Err(format!(
                "{path} already exists and belongs to uid {}: another user may be squatting the \
                 host's socket; remove it or choose another path with --socket",
                meta.uid()
            ));
        }
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{path} already exists and is not a socket; remove it or choose another path with --socket"
            ));
        }
        if UnixStream::connect(p).is_ok() {
            return Err(format!("another kgraft-host already serves {path}; stop it first (`kgraftc host stop`)"));
        }
        std::fs::remove_file(p).map_err(|e| format!("removing the stale socket {path}: {e}"))?;
    }
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let private = dir.join(format!(".kgraft-host-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| format!("creating {}: {e}", private.display()))?;
    let tmp = private.join("sock");
    let bound = UnixListener::bind(&tmp).and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, p)?;
        let meta = std::fs::symlink_metadata(p)?;
        Ok((l, (meta.dev(), meta.ino())))
    });
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound.map_err(|e| format!("binding {path}: {e}"))
}

/// Returns the default socket path, by [`kgraft_rt::rules::HOST_SOCKET_VAR`]'s rule, which
/// `kgraftc host` follows too.
pub fn default_socket() -> String {
    if let Ok(p) = std::env::var(kgraft_rt::rules::HOST_SOCKET_VAR) {
        return p;
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    format!("{}/{}", std::env::temp_dir().display(), kgraft_rt::rules::host_socket_name(uid))
}

/// Serves requests until a `stop` request.
///
/// # Errors
///
/// A message when the socket cannot be bound.
pub fn serve(path: &str, stats: Arc<Stats>) -> Result<(), String> {
    let (listener, id) = bind_private(path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        match peer(&conn) {
            Ok((_, uid)) if uid == own_uid() || uid == 0 => {}
            who => {
                let who =
                    who.map_or_else(|e| format!("an unknown peer ({e})"), |(pid, uid)| format!("pid {pid}, uid {uid}"));
                eprintln!("kgraft-host: refused a connection from {who}: this host serves uid {} only", own_uid());
                let _ = writeln!(conn, "error: permission denied: this host serves uid {} only", own_uid());
                continue;
            }
        }
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
    if std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The longest request line read; a longer one is cut there.
const MAX_REQUEST: u64 = 64 << 10;

/// Answers one request.
fn handle(conn: UnixStream, stats: &Stats, stop: &AtomicBool, path: &str) -> std::io::Result<()> {
    let mut raw = Vec::new();
    BufReader::new(std::io::Read::take(&conn, MAX_REQUEST)).read_until(b'\n', &mut raw)?;
    let mut out = &conn;
    let Ok(line) = String::from_utf8(raw) else {
        return writeln!(out, "error: the request is not UTF-8");
    };
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
    let what = format!("load {path} (patch {name})");
    engine_for(&what)?.begin_apply(patch, Some(lib))?;
    follow(out, &what)
}

/// Removes a patch and waits for its transition.
fn unload(name: &str, out: &mut impl Write) -> Result<(), String> {
    let what = format!("unload {name}");
    engine_for(&what)?.begin_remove(name)?;
    follow(out, &what)
}

/// Reverses the transition in progress and waits for it.
fn reverse(out: &mut impl Write) -> Result<(), String> {
    engine_for("reverse")?.reverse()?;
    follow(out, "reverse")
}

/// Prints the transition's progress until it ends or [`WAIT`] passes; `what` is the request.
fn follow(out: &mut impl Write, what: &str) -> Result<(), String> {
    let start = Instant::now();
    let mut last_print = None::<Instant>;
    loop {
        let p = engine_for(what)?.poll()?;
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
///
/// The engine's part is replaced by a line saying who holds it when a stuck request does.
fn status(out: &mut impl Write, stats: &Stats) -> Result<(), String> {
    let (list, sites, syncs) = match engine_for("status") {
        Ok(e) => {
            let (list, sites, syncs) = (e.list(), e.sites_report(), e.syncs());
            if list.is_empty() {
                let _ = writeln!(out, "patches: none");
            }
            (list, sites, syncs)
        }
        Err(busy) => {
            let _ = writeln!(out, "engine: {busy}");
            (Vec::new(), Vec::new(), 0)
        }
    };
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
