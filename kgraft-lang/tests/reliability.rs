//! `kgraftc` against a careless user and a hostile one: no code run from a directory it did not
//! make, no output written onto an input or into a crate it did not make, no panic on odd text
//! or a closed output, no wait without an end or a word, no silent wrong build.
//!
//! Each test is the regression test of one fault of issue 12 and fails on the code before its
//! fix. The ones that need another user run as root, as the test suite does in CI.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Returns a new, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reliability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A `kgraftc` command run in `dir`, with `check` builds sharing the compile tests' target.
fn kgraftc(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgraftc"));
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", workspace().join("target").join("kgraft-check"))
        .args(["--color", "never"]);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a run ended with `code` and did not panic; returns its standard error.
fn ended(output: &Output, code: i32) -> String {
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "kgraftc panicked:\n{stderr}");
    assert_eq!(output.status.code(), Some(code), "stdout:\n{}\nstderr:\n{stderr}", text(&output.stdout));
    stderr
}

/// Waits for `child` at most `limit`; kills it and fails when it runs longer.
fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
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

/// A patch named `name` whose replacement prints `mark`.
fn source(name: &str, mark: &str) -> String {
    format!(
        "patch {name} {{ description: \"d\" }}\n\
         extern {{ fn seq_printf(m: *mut seq_file, fmt: *const c_char, ...); }}\n\
         replace fn cmdline_proc_show(m: *mut seq_file, _v: *mut c_void) -> c_int {{\n    \
             seq_printf(m, c\"{mark}\\n\".as_ptr());\n    0\n}}\n"
    )
}

/// Whether `haystack` holds `needle`.
fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the process `pid` is gone (or a zombie nobody reaped).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

/// Reads a process id a fake tool wrote into `path`, waiting for it.
fn read_pid(path: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()) {
            return pid;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{} was written", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a fake `cargo` into `dir` that records its pid and its child's, then sleeps.
fn fake_cargo(dir: &Path) -> PathBuf {
    let script = dir.join("fake-cargo");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{d}/cargo.pid'\nsleep 300 &\necho $! > '{d}/child.pid'\nwait\n",
            d = dir.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[test]
fn check_builds_never_use_a_predictable_temporary_directory_or_a_planted_build_script() {
    let dir = scratch("check-tmp");
    let marker = dir.join("planted-build-script-ran");
    let build_rs = format!("fn main() {{ std::fs::write({:?}, \"ran\").unwrap(); }}\n", marker.display().to_string());
    // Another user's directory at the path the check target used to write to.
    let squat = dir.join("kgraftc-check-cmdline_banner");
    std::fs::create_dir_all(&squat).unwrap();
    std::fs::write(squat.join("build.rs"), &build_rs).unwrap();
    let output = kgraftc(&dir)
        .env("TMPDIR", &dir)
        .args(["build", "--target", "check"])
        .arg(workspace().join("patches/cmdline_banner.kgp"))
        .output()
        .unwrap();
    ended(&output, 0);
    assert!(!marker.exists(), "the planted build script ran");
    assert!(!squat.join("Cargo.toml").exists(), "kgraftc wrote into the planted directory");

    // A build script slipped into a directory kgraftc made is not run either.
    let made = dir.join("made");
    let run = || {
        kgraftc(&dir)
            .args(["build", "--target", "check", "--out"])
            .arg(&made)
            .arg(workspace().join("patches/cmdline_banner.kgp"))
            .output()
            .unwrap()
    };
    ended(&run(), 0);
    std::fs::write(made.join("build.rs"), &build_rs).unwrap();
    ended(&run(), 0);
    assert!(!marker.exists(), "a build script in the crate directory ran");
}

#[test]
fn check_out_refuses_a_directory_kgraftc_did_not_make() {
    let dir = scratch("check-out");
    let own = dir.join("mycrate");
    std::fs::create_dir_all(own.join("src")).unwrap();
    std::fs::write(own.join("Cargo.toml"), "[package]\nname = \"mine\"\n").unwrap();
    std::fs::write(own.join("src/lib.rs"), "// mine\n").unwrap();
    std::fs::copy(workspace().join("patches/cmdline_banner.kgp"), own.join("x.kgp")).unwrap();
    let output = kgraftc(&own).args(["build", "--target", "check", "-o", ".", "x.kgp"]).output().unwrap();
    let stderr = ended(&output, 2);
    assert!(stderr.contains("holds no crate written by kgraftc"), "{stderr}");
    assert_eq!(std::fs::read_to_string(own.join("Cargo.toml")).unwrap(), "[package]\nname = \"mine\"\n");
    assert_eq!(std::fs::read_to_string(own.join("src/lib.rs")).unwrap(), "// mine\n");
}

#[test]
fn an_output_never_replaces_its_source() {
    let dir = scratch("out-source");
    let kgp = dir.join("x.kgp");
    std::fs::copy(workspace().join("patches/cmdline_banner.kgp"), &kgp).unwrap();
    let before = std::fs::read(&kgp).unwrap();
    std::os::unix::fs::symlink(&kgp, dir.join("link.so")).unwrap();
    for (target, out) in [("host", "x.kgp"), ("host", "link.so"), ("linux", "x.kgp"), ("check", "x.kgp")] {
        let output = kgraftc(&dir).args(["build", "--target", target, "x.kgp", "-o", out]).output().unwrap();
        let stderr = ended(&output, 2);
        assert!(
            stderr.contains("names the input")
                || stderr.contains("holds no crate")
                || stderr.contains("not a directory"),
            "{target} -o {out}: {stderr}"
        );
        assert_eq!(std::fs::read(&kgp).unwrap(), before, "{target} -o {out} changed the source");
    }
}

#[test]
fn host_builds_of_one_name_at_once_keep_their_own_code_and_outputs_are_replaced_whole() {
    let dir = scratch("same-name");
    std::fs::write(dir.join("a.kgp"), source("rel_same_name", "rel-mark-a")).unwrap();
    std::fs::write(dir.join("b.kgp"), source("rel_same_name", "rel-mark-b")).unwrap();
    let build = |name: &str| {
        kgraftc(&dir)
            .args(["build", "--target", "host"])
            .arg(format!("{name}.kgp"))
            .arg("-o")
            .arg(format!("{name}.so"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..2 {
        let (a, b) = (build("a"), build("b"));
        ended(&a.wait_with_output().unwrap(), 0);
        ended(&b.wait_with_output().unwrap(), 0);
        let (a, b) = (std::fs::read(dir.join("a.so")).unwrap(), std::fs::read(dir.join("b.so")).unwrap());
        assert!(holds(&a, "rel-mark-a") && !holds(&a, "rel-mark-b"), "round {round}: a.so holds b's code");
        assert!(holds(&b, "rel-mark-b") && !holds(&b, "rel-mark-a"), "round {round}: b.so holds a's code");
    }

    // A reader of the old output (a host that mapped it) keeps it whole across a rebuild.
    let old = std::fs::File::open(dir.join("a.so")).unwrap();
    let (ino, len) = (old.metadata().unwrap().ino(), old.metadata().unwrap().len());
    ended(&build("a").wait_with_output().unwrap(), 0);
    assert_ne!(std::fs::metadata(dir.join("a.so")).unwrap().ino(), ino, "the rebuild wrote into the old file");
    let mut bytes = Vec::new();
    (&old).read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, len);
    // A link is followed to the file it names; a device is written into, never replaced.
    std::os::unix::fs::symlink(dir.join("a.so"), dir.join("link.so")).unwrap();
    ended(&kgraftc(&dir).args(["build", "--target", "host", "a.kgp", "-o", "link.so"]).output().unwrap(), 0);
    assert!(std::fs::symlink_metadata(dir.join("link.so")).unwrap().file_type().is_symlink());
    ended(&kgraftc(&dir).args(["build", "--target", "host", "a.kgp", "-o", "/dev/null"]).output().unwrap(), 0);
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&std::fs::metadata("/dev/null").unwrap().file_type()));
    assert!(
        std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".kgraftc-")),
        "no temporary file is left"
    );
}

#[test]
fn rustc_spans_that_end_inside_a_non_ascii_character_map_back() {
    let dir = scratch("non-ascii");
    let unused = "patch rel_accent { description: \"d\" }\n\
                  replace fn cmdline_proc_show(_m: *mut seq_file, _v: *mut c_void) -> c_int {\n    \
                  let été = 1;\n    0\n}\n";
    std::fs::write(dir.join("accent.kgp"), unused).unwrap();
    let output = kgraftc(&dir).args(["build", "--target", "check", "-o", "accent", "accent.kgp"]).output().unwrap();
    let stderr = ended(&output, 0);
    assert!(stderr.contains("unused variable: `été`") && stderr.contains("accent.kgp:3:9"), "{stderr}");

    // Trojan source: a right-to-left override inside a literal, which rustc refuses.
    let trojan = "patch rel_trojan { description: \"d\" }\n\
                  extern { fn seq_printf(m: *mut seq_file, fmt: *const c_char, ...); }\n\
                  replace fn cmdline_proc_show(m: *mut seq_file, _v: *mut c_void) -> c_int {\n    \
                  seq_printf(m, c\"user\u{202E}nimda\u{202C}\".as_ptr());\n    0\n}\n";
    std::fs::write(dir.join("trojan.kgp"), trojan).unwrap();
    let output = kgraftc(&dir).args(["build", "--target", "check", "-o", "trojan", "trojan.kgp"]).output().unwrap();
    let stderr = ended(&output, 1);
    assert!(stderr.contains("trojan.kgp:4:"), "{stderr}");
    let output = kgraftc(&dir)
        .args(["--message-format", "json", "build", "--target", "check", "-o", "trojan", "trojan.kgp"])
        .output()
        .unwrap();
    ended(&output, 1);
    for line in text(&output.stdout).lines() {
        let d: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(d["line"], 4, "{line}");
    }
}

#[test]
fn a_closed_or_full_standard_output_is_not_a_panic() {
    let dir = scratch("stdout");
    // An expansion far larger than a pipe's buffer.
    let mut big = String::from("patch rel_big { description: \"d\" }\n");
    for i in 0..400 {
        big += &format!("replace fn rel_big_{i}(a: u64, b: u64) -> u64 {{ a.wrapping_mul(b).rotate_left(7) ^ {i} }}\n");
    }
    std::fs::write(dir.join("big.kgp"), &big).unwrap();
    let mut child =
        kgraftc(&dir).args(["expand", "big.kgp"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // `| head -1`: one line read, then the pipe closed.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!first.is_empty());
    let stderr = ended(&output, 0);
    assert!(stderr.is_empty(), "{stderr}");

    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let two_headers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/two_headers.kgp");
    let two_headers = two_headers.to_str().unwrap();
    for args in [&["expand", "big.kgp"][..], &["explain", "E0001"], &["--message-format", "json", "check", two_headers]]
    {
        let output = kgraftc(&dir).args(args).stdout(full()).output().unwrap();
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot write to standard output"), "{args:?}: {stderr}");
    }
    // Standard error full: progress and diagnostics are dropped, the status is kept.
    let output = kgraftc(&dir)
        .args(["build", "--target", "linux", "--kdir", "/nonexistent", "big.kgp"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_kernel_glob_of_many_stars_is_matched_at_once() {
    let dir = scratch("glob");
    let kdir = dir.join("kdir");
    std::fs::create_dir_all(kdir.join("include/generated")).unwrap();
    std::fs::write(kdir.join("include/generated/utsrelease.h"), "#define UTS_RELEASE \"6.1.0-48-amd64\"\n").unwrap();
    std::fs::write(
        dir.join("stars.kgp"),
        format!(
            "patch rel_stars {{ description: \"d\", kernel: \"{}x\" }}\n\
             replace fn cmdline_proc_show(_m: *mut seq_file, _v: *mut c_void) -> c_int {{ 0 }}\n",
            "*".repeat(40)
        ),
    )
    .unwrap();
    let child = kgraftc(&dir)
        .args(["build", "--target", "linux", "--kdir"])
        .arg(&kdir)
        .arg("stars.kgp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_at_most(child, Duration::from_secs(10), "the glob match");
    let stderr = ended(&output, 2);
    assert!(stderr.contains("the patch is for kernels"), "{stderr}");
}

#[test]
fn a_module_named_with_a_dash_targets_the_kernels_spelling() {
    let dir = scratch("dash");
    std::fs::write(
        dir.join("dash.kgp"),
        "patch rel_dash { description: \"d\" }\nmodule \"kgraft-testmod\" {\n    replace fn kgt_encode(x: u64) -> u64 { x }\n}\n",
    )
    .unwrap();
    for args in [&["expand", "dash.kgp"][..], &["expand", "--for-build", "dash.kgp"]] {
        let output = kgraftc(&dir).args(args).output().unwrap();
        ended(&output, 0);
        let out = text(&output.stdout);
        assert!(out.contains("object = \"kgraft_testmod\""), "{out}");
        assert!(!out.contains("\"kgraft-testmod\""), "{out}");
    }
}

/// A stand-in for the host at `socket`: accepts connections and hands each to `answer`.
fn fake_host(socket: &Path, answer: impl Fn(std::os::unix::net::UnixStream) + Send + 'static) {
    let listener = UnixListener::bind(socket).expect("bind");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            answer(conn);
        }
    });
}

#[test]
fn a_host_request_that_gets_no_answer_times_out() {
    let dir = scratch("timeout");
    let socket = dir.join("host.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    fake_host(&socket, move |conn| {
        // Reads the request, then never answers (a stuck callback), keeping the connection.
        let mut line = String::new();
        let _ = BufReader::new(&conn).read_line(&mut line);
        let _ = tx.send(conn);
    });
    let child = kgraftc(&dir)
        .args(["host", "--socket"])
        .arg(&socket)
        .args(["--timeout", "1", "status"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_at_most(child, Duration::from_secs(10), "kgraftc host status");
    let stderr = ended(&output, 2);
    assert!(stderr.contains("gave no answer within 1 s"), "{stderr}");
    for bad in ["0", "-1", "NaN", "1e19"] {
        let output = kgraftc(&dir)
            .args(["host", "--socket"])
            .arg(&socket)
            .arg(format!("--timeout={bad}"))
            .arg("status")
            .output()
            .unwrap();
        let stderr = ended(&output, 2);
        assert!(stderr.contains("is not a number of seconds kgraftc can wait"), "{stderr}");
    }
    drop(rx);
}

#[test]
fn a_control_character_in_a_host_request_is_refused() {
    let dir = scratch("newline");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a\nb.so"), "").unwrap();
    let socket = dir.join("host.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    fake_host(&socket, move |mut conn| {
        let mut line = String::new();
        let _ = BufReader::new(&conn).read_line(&mut line);
        let _ = tx.send(line);
        let _ = conn.write_all(b"ok\n");
    });
    for args in [&["load", "a\nb.so"][..], &["unload", "x\nstop"], &["read", "cmdline\r"]] {
        let output = kgraftc(&dir).args(["host", "--socket"]).arg(&socket).args(args).output().unwrap();
        let stderr = ended(&output, 2);
        assert!(stderr.contains("one-line protocol"), "{args:?}: {stderr}");
    }
    assert!(rx.try_recv().is_err(), "a request reached the host");
}

#[test]
fn the_client_talks_only_to_a_host_of_its_own_user() {
    // Without root there is no other user to be: the stand-in then runs as this user, and
    // the client must talk to it.
    let other = is_root();
    let dir = scratch("squatter");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.join("host.sock");
    let path = std::ffi::CString::new(socket.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain socket calls on a new descriptor; the address is a valid sockaddr_un.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
            *d = *s as libc::c_char;
        }
        assert_eq!(libc::bind(fd, (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_un>() as u32), 0);
        fd
    };
    // The squatter: another user listens there and answers "ok" to everything.
    // SAFETY: the child calls only async-signal-safe functions and ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if other && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) || libc::listen(fd, 8) != 0 {
                libc::_exit(1);
            }
            loop {
                let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
                if c >= 0 {
                    // The request first, as a host reads it, then the answer.
                    let mut request = [0u8; 256];
                    libc::read(c, request.as_mut_ptr().cast(), request.len());
                    libc::write(c, b"ok\n".as_ptr().cast(), 3);
                    libc::close(c);
                }
            }
        }
    }
    // SAFETY: the parent's copy of the descriptor is closed once.
    unsafe { libc::close(fd) };
    std::thread::sleep(Duration::from_millis(200));
    let output = kgraftc(&dir).args(["host", "--socket"]).arg(&socket).args(["stop"]).output().unwrap();
    // SAFETY: `pid` is the child forked above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    if other {
        let stderr = ended(&output, 2);
        assert!(stderr.contains("another user's process") && stderr.contains("uid 65534"), "{stderr}");
    } else {
        ended(&output, 0);
    }
}

#[test]
fn a_killed_build_leaves_no_tool_running_and_a_waiting_build_says_for_whom() {
    let dir = scratch("orphans");
    std::fs::copy(workspace().join("patches/cmdline_banner.kgp"), dir.join("x.kgp")).unwrap();
    let cargo = fake_cargo(&dir);
    let start = |d: &str| {
        kgraftc(&dir)
            .env("CARGO", &cargo)
            .args(["build", "--target", "check", "-o", d, "x.kgp"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let _ = std::fs::remove_file(dir.join("cargo.pid"));
        let _ = std::fs::remove_file(dir.join("child.pid"));
        let mut first = start("crate");
        let (tool, grandchild) = (read_pid(&dir.join("cargo.pid")), read_pid(&dir.join("child.pid")));

        if signal == libc::SIGTERM {
            // A second build of the same crate waits, and says for whom.
            let mut second = start("crate");
            let err = BufReader::new(second.stderr.take().unwrap());
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in err.lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            let said = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) if line.contains("waiting for") => break Some(line),
                    Ok(_) => {}
                    Err(_) => break None,
                }
            };
            let _ = second.kill();
            let _ = second.wait();
            let said = said.expect("the second build says that it waits");
            assert!(said.contains(&format!("kgraftc (pid {})", first.id())), "{said}");
        }

        // SAFETY: `first` is a child of this test.
        unsafe { libc::kill(first.id() as i32, signal) };
        let _ = first.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut watched = vec![tool];
        if signal == libc::SIGTERM {
            // The whole group goes, the compilers cargo started included.
            watched.push(grandchild);
        }
        while !watched.iter().all(|&p| gone(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in [tool, grandchild] {
            // SAFETY: these are the fake tool's processes, started by this test.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        assert!(watched.iter().all(|&p| gone(p)), "after signal {signal}, the build's tools outlived kgraftc");
    }
}
