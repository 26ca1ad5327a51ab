//! `kgraftc host ...`: talks to a running user-mode host through its control socket.
//!
//! The host answers each request with lines; `progress:` lines show a transition as it goes
//! (which threads are still in the old universe, and for how long), and the last line is `ok`
//! or `error: MESSAGE`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::Failure;
use crate::render::Ui;

/// The arguments of `kgraftc host`.
#[derive(clap::Args, Debug)]
pub(crate) struct HostArgs {
    /// The host's control socket (default: `$KGRAFT_HOST_SOCKET`, else
    /// `$TMPDIR/kgraft-host-<uid>.sock`).
    #[arg(long, global = true)]
    pub(crate) socket: Option<PathBuf>,
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

/// Returns the default socket path, the same rule as the host's.
fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("KGRAFT_HOST_SOCKET") {
        return PathBuf::from(p);
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    std::env::temp_dir().join(format!("kgraft-host-{uid}.sock"))
}

/// Runs a `kgraftc host` command.
pub(crate) fn run(args: &HostArgs, ui: &Ui) -> Result<(), Failure> {
    let _ = ui;
    let request = match &args.command {
        HostCommand::Load { patch } => {
            let abs = std::fs::canonicalize(patch)
                .map_err(|e| Failure::io(format!("cannot find `{}`", patch.display()), e))?;
            format!("load {}", abs.display())
        }
        HostCommand::Unload { name } => format!("unload {name}"),
        HostCommand::Reverse => "reverse".to_owned(),
        HostCommand::Status => "status".to_owned(),
        HostCommand::Read { file } => format!("read {file}"),
        HostCommand::Log => "log".to_owned(),
        HostCommand::Stop => "stop".to_owned(),
    };
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let mut conn = UnixStream::connect(&socket).map_err(|e| {
        Failure::Fatal(format!(
            "cannot reach the host at `{}`: {e} (is `kgraft-host` running?)",
            socket.display()
        ))
    })?;
    writeln!(conn, "{request}").map_err(|e| Failure::io("cannot talk to the host", e))?;
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|e| Failure::io("cannot read the host's answer", e))?;
        if line == "ok" {
            return Ok(());
        }
        if let Some(msg) = line.strip_prefix("error: ") {
            return Err(Failure::Fatal(format!("the host refused: {msg}")));
        }
        let _ = writeln!(stdout, "{line}");
    }
    Err(Failure::Fatal("the host closed the connection without an answer".to_owned()))
}
