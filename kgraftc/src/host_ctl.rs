//! `kgraftc host ...`: talks to a running user-mode host through its control socket.
//!
//! The host answers each request with lines; `progress:` lines show a transition as it goes
//! (which threads are still in the old universe, and for how long), and the last line is `ok`
//! or `error: MESSAGE`.
//!
//! The client talks only to a host run by its own user (or by root): it checks the peer
//! credentials of the socket before sending anything, so a socket another user put at the
//! path cannot answer in the host's name. Every request has a deadline (`--timeout`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Failure;
use crate::render::Ui;

/// The arguments of `kgraftc host`.
#[derive(clap::Args, Debug)]
pub(crate) struct HostArgs {
    /// The host's control socket (default: `$KGRAFT_HOST_SOCKET`, else
    /// `$TMPDIR/kgraft-host-<uid>.sock`).
    #[arg(long, global = true)]
    pub(crate) socket: Option<PathBuf>,
    /// How many seconds to wait for the host's answer before giving up.
    #[arg(long, global = true, default_value_t = 30.0)]
    pub(crate) timeout: f64,
    #[command(subcommand)]
    pub(crate) command: HostCommand,
}

/// What to ask the host.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum HostCommand {
    /// Loads a built patch into the host and waits for its transition.
    Load {
        /// The patch's shared object.
        patch: PathBuf,
    },
    /// Removes a patch and waits for its transition.
    Unload {
        /// The patch name.
        name: String,
    },
    /// Reverses the transition in progress.
    Reverse,
    /// Lists the loaded patches, the threads and the workload's counters.
    Status,
    /// Reads one of the host's text files (`cmdline` or `testmod`) through a system call.
    Read {
        /// The file.
        file: String,
    },
    /// Prints and empties the host's printk log.
    Log,
    /// Stops the host.
    Stop,
}

/// Returns the default socket path, by [`kgraft_rt::rules::HOST_SOCKET_VAR`]'s rule, which the
/// host follows too.
fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os(kgraft_rt::rules::HOST_SOCKET_VAR) {
        return PathBuf::from(p);
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    std::env::temp_dir().join(kgraft_rt::rules::host_socket_name(uid).to_string())
}

/// Returns the credentials (pid, uid) of the process at the other end of `conn`.
fn peer(conn: &UnixStream) -> std::io::Result<(libc::pid_t, libc::uid_t)> {
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

/// Refuses a request argument the one-line protocol cannot carry as it is.
fn one_line<'a>(what: &str, text: &'a str) -> Result<&'a str, Failure> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(Failure::Fatal(format!(
            "the {what} `{}` holds the control character {}, which the host's one-line protocol \
             cannot carry; rename it",
            text.escape_debug(),
            c.escape_debug()
        ))),
        None => Ok(text),
    }
}

/// Runs a `kgraftc host` command.
pub(crate) fn run(args: &HostArgs, ui: &Ui) -> Result<(), Failure> {
    let _ = ui;
    let request = match &args.command {
        HostCommand::Load { patch } => {
            let abs = std::fs::canonicalize(patch)
                .map_err(|e| Failure::io(format!("cannot find `{}`", patch.display()), e))?;
            let text = abs
                .to_str()
                .ok_or_else(|| Failure::Fatal(format!("the path `{}` is not UTF-8; rename it", abs.display())))?;
            format!("load {}", one_line("path", text)?)
        }
        HostCommand::Unload { name } => format!("unload {}", one_line("patch name", name)?),
        HostCommand::Reverse => "reverse".to_owned(),
        HostCommand::Status => "status".to_owned(),
        HostCommand::Read { file } => format!("read {}", one_line("file name", file)?),
        HostCommand::Log => "log".to_owned(),
        HostCommand::Stop => "stop".to_owned(),
    };
    let now = Instant::now();
    let (timeout, deadline) = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .and_then(|t| Some((t, now.checked_add(t)?)))
        .ok_or_else(|| {
            Failure::Fatal(format!("--timeout {} is not a number of seconds kgraftc can wait", args.timeout))
        })?;
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let mut conn = UnixStream::connect(&socket).map_err(|e| {
        Failure::Fatal(format!("cannot reach the host at `{}`: {e} (is `kgraft-host` running?)", socket.display()))
    })?;
    let (pid, uid) = peer(&conn).map_err(|e| Failure::io("cannot identify the host", e))?;
    // SAFETY: getuid cannot fail.
    let own = unsafe { libc::getuid() };
    if uid != own && uid != 0 {
        return Err(Failure::Fatal(format!(
            "`{}` is served by another user's process (pid {pid}, uid {uid}), not by a \
             kgraft-host of yours: refusing to talk to it; remove the socket or use --socket",
            socket.display()
        )));
    }
    let late = || {
        Failure::Fatal(format!(
            "the host at `{}` gave no answer within {} s: a patch's callback or replacement may be \
             stuck (`kgraftc host status` says what the engine is doing); wait longer with --timeout",
            socket.display(),
            timeout.as_secs_f64()
        ))
    };
    conn.set_write_timeout(Some(timeout)).map_err(|e| Failure::io("cannot talk to the host", e))?;
    // A host that refuses the connection answers and closes at once: its answer is read even
    // when the request could not be sent.
    let sent = writeln!(conn, "{request}");
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        conn.set_read_timeout(Some(left)).map_err(|e| Failure::io("cannot talk to the host", e))?;
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(late());
            }
            Err(e) => return Err(Failure::io("cannot read the host's answer", e)),
        }
        let text = line.trim_end_matches('\n');
        if text == "ok" {
            return Ok(());
        }
        if let Some(msg) = text.strip_prefix("error: ") {
            return Err(Failure::Fatal(format!("the host refused: {msg}")));
        }
        crate::output::stdout(&format!("{text}\n"))?;
    }
    match sent {
        Err(e) => Err(Failure::io("cannot talk to the host", e)),
        Ok(()) => Err(Failure::Fatal("the host closed the connection without an answer".to_owned())),
    }
}
