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
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_kgraft-host")).arg("--socket").arg(&socket).spawn().expect("the host starts");
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

/// Starts the host on `socket` with the umask `umask`, and waits for its socket.
fn start_host(socket: &Path, umask: libc::mode_t) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgraft-host"));
    cmd.arg("--socket").arg(socket).stderr(std::process::Stdio::piped());
    // SAFETY: umask is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        })
    };
    let child = cmd.spawn().expect("the host starts");
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the host opens its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits for `child` at most `limit`, killing it and failing when it runs longer.
fn wait_at_most(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Runs `kgraftc host ARGS`, failing when it takes longer than `limit`.
fn host_within(tool: &Path, socket: &Path, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(tool)
        .arg("host")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kgraftc runs");
    wait_at_most(child, limit, &format!("kgraftc host {args:?}"))
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_socket_is_private_and_serves_only_its_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let tool = kgraftc();
    let dir = std::env::temp_dir().join(format!("kgraft-control-private-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.join("host.sock");
    // Under umask 000 the socket used to be anybody's.
    let child = start_host(&socket, 0);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "host.sock").collect();

    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new(&tool);
        cmd.arg("host").arg("--socket").arg(&socket).args(args);
        if is_root() {
            cmd.uid(65534).gid(65534);
        }
        cmd.output().expect("kgraftc runs")
    };
    let denied = as_nobody(&["status"]);
    // Even a socket made world-writable after the fact serves no other user.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = as_nobody(&["status"]);
    let mine = host(&tool, &socket, &["status"]);
    // Requests no client sends still get an answer.
    let raw = |request: &[u8]| {
        use std::io::{Read, Write};
        let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = conn.write_all(request);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer
    };
    let not_utf8 = raw(b"\x00\xff\n");
    let huge = raw(&[b'x'; 200_000]);
    ok(host(&tool, &socket, &["stop"]));
    assert!(wait_at_most(child, Duration::from_secs(20), "the host").status.success());
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(mode, 0o600, "the socket is private");
    assert!(leftovers.is_empty(), "the host left {leftovers:?}");
    assert!(ok(mine).contains("threads:"));
    assert_eq!(not_utf8, "error: the request is not UTF-8\n");
    assert!(huge.starts_with("error: unknown request") && huge.len() < 70_000, "{}", huge.len());
    if is_root() {
        assert_eq!(denied.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&denied.stderr).contains("cannot reach the host"));
        assert_eq!(refused.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("the host refused: permission denied"), "{stderr}");
    }
}

#[test]
fn a_socket_path_held_by_another_user_is_refused() {
    let dir = std::env::temp_dir().join(format!("kgraft-control-squat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("host.sock");
    let squatter = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Without root there is no other user: then the live socket is another host of ours.
    if is_root() {
        std::os::unix::fs::chown(&socket, Some(65534), Some(65534)).unwrap();
    }
    let child = Command::new(env!("CARGO_BIN_EXE_kgraft-host"))
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the host starts");
    let output = wait_at_most(child, Duration::from_secs(20), "a host on a squatted socket");
    drop(squatter);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let why = if is_root() { "belongs to uid 65534" } else { "another kgraft-host already serves" };
    assert!(stderr.contains(why), "{stderr}");
}

#[test]
fn a_stuck_callback_does_not_stop_the_host_from_answering() {
    let tool = kgraftc();
    let dir = std::env::temp_dir().join(format!("kgraft-control-stuck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stuck.kgp"),
        "patch stuck_pre_patch { description: \"a pre_patch that never returns\" }\n\
         extern { fn usleep(usec: c_uint) -> c_int; }\n\
         replace fn kgt_encode(x: u64) -> u64 { x }\n\
         on pre_patch { loop { usleep(20000); } }\n",
    )
    .unwrap();
    let built = Command::new(&tool)
        .args(["build", "--target", "host", "-o"])
        .arg(dir.join("stuck.so"))
        .arg(dir.join("stuck.kgp"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let banner = build(&tool, "cmdline_banner", &dir);
    let socket = dir.join("host.sock");
    let child = start_host(&socket, 0o022);
    let limit = Duration::from_secs(15);

    let stuck = host_within(&tool, &socket, &["--timeout", "2", "load", dir.join("stuck.so").to_str().unwrap()], limit);
    let status = host_within(&tool, &socket, &["status"], limit);
    let load = host_within(&tool, &socket, &["load", banner.to_str().unwrap()], limit);
    let unload = host_within(&tool, &socket, &["unload", "cmdline_banner"], limit);
    let reverse = host_within(&tool, &socket, &["reverse"], limit);
    let read = host_within(&tool, &socket, &["read", "cmdline"], limit);
    ok(host(&tool, &socket, &["stop"]));
    let host_out = wait_at_most(child, Duration::from_secs(20), "the host with a stuck callback");
    let _ = std::fs::remove_dir_all(&dir);

    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(stuck.status.code(), Some(2), "{}", err(&stuck));
    assert!(err(&stuck).contains("gave no answer within 2 s"), "{}", err(&stuck));
    let status = ok(status);
    assert!(status.contains("engine: the engine is busy: `load ") && status.contains("stuck_pre_patch"), "{status}");
    for busy in [&load, &unload, &reverse] {
        assert_eq!(busy.status.code(), Some(2), "{}", err(busy));
        assert!(err(busy).contains("the engine is busy"), "{}", err(busy));
    }
    assert!(ok(read).starts_with("BOOT_IMAGE="));
    assert!(host_out.status.success());
}
