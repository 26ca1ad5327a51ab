//! The host program and `kgraftc host` end to end: a patch built by `kgraftc`, loaded and
//! unloaded through the control socket while the host runs its workload.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{build, kgraftc};

/// Runs `kgraftc host ARGS` against the socket.
fn host(tool: &Path, socket: &Path, args: &[&str]) -> Output {
    Command::new(tool).arg("host").arg("--socket").arg(socket).args(args).output().expect("kgraftc runs")
}

/// Returns the standard output of a command that must succeed.
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn load_and_unload_through_the_control_socket() {
    let tool = kgraftc();
    let dir = std::env::temp_dir().join(format!("kgraft-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = build(&tool, "cmdline_banner", &dir);
    let socket = dir.join("host.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kgraft-host"))
        .arg("--socket")
        .arg(&socket)
        .spawn()
        .expect("the host starts");
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the host opens its socket");
        std::thread::sleep(Duration::from_millis(20));
    }

    let boot = ok(host(&tool, &socket, &["read", "cmdline"]));
    assert!(boot.starts_with("BOOT_IMAGE="), "{boot}");
    let loaded = ok(host(&tool, &socket, &["load", so.to_str().unwrap()]));
    assert!(loaded.contains("transition: cmdline_banner patched"), "{loaded}");
    assert_eq!(ok(host(&tool, &socket, &["read", "cmdline"])), format!("kgraft: cmdline_banner active\n{boot}"));
    assert!(ok(host(&tool, &socket, &["status"])).contains("patch cmdline_banner: enabled"));

    let again = host(&tool, &socket, &["load", so.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "a second load is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already applied"));

    let unloaded = ok(host(&tool, &socket, &["unload", "cmdline_banner"]));
    assert!(unloaded.contains("transition: cmdline_banner unpatched"), "{unloaded}");
    assert_eq!(ok(host(&tool, &socket, &["read", "cmdline"])), boot);
    let status = ok(host(&tool, &socket, &["status"]));
    assert!(status.contains("patches: none") && status.contains(" 0 mismatched"), "{status}");

    ok(host(&tool, &socket, &["stop"]));
    let code = child.wait().unwrap();
    assert!(code.success(), "the host stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
