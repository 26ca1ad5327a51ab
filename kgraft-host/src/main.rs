//! `kgraft-host`: runs the user-mode host under load and serves its control socket.

use std::process::ExitCode;

use kgraft_host::{control, engine, workload};

/// The usage message.
const USAGE: &str = "usage: kgraft-host [--socket PATH] [--workers N] [--sleepers N] [--kthreads N]";

fn main() -> ExitCode {
    let mut socket = control::default_socket();
    let mut config = workload::Config { workers: 2, sleepers: 2, kthreads: 1 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            args.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{what} needs a number"))
        };
        let r = match a.as_str() {
            "--socket" => args.next().map(|v| socket = v).ok_or_else(|| "--socket needs a path".to_string()),
            "--workers" => num("--workers").map(|n| config.workers = n),
            "--sleepers" => num("--sleepers").map(|n| config.sleepers = n),
            "--kthreads" => num("--kthreads").map(|n| config.kthreads = n),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => Err(format!("unknown argument `{a}`")),
        };
        if let Err(e) = r {
            eprintln!("kgraft-host: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = engine::engine() {
        eprintln!("kgraft-host: {e}");
        return ExitCode::FAILURE;
    }
    let load = workload::Workload::start(config);
    eprintln!(
        "kgraft-host: {} workers, {} sleepers, {} kernel threads; control socket {socket}",
        config.workers, config.sleepers, config.kthreads
    );
    let result = control::serve(&socket, load.stats.clone());
    load.stop();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kgraft-host: {e}");
            ExitCode::FAILURE
        }
    }
}
