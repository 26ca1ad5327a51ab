//! Operating live patches: `kgraftc kernel`, `kgraftc test`, signed modules and packages.
//!
//! `kgraftc kernel list` and `status` read a kernel made up under `KGRAFT_SYSROOT`, and every
//! refusal that comes before the kernel is asked runs here everywhere. What needs the kernel
//! target's set-up (a real module build) or a guest under qemu runs with `KGRAFT_QEMU=1`, as the
//! harness does: `kgraftc test` with a passing and a failing script, an unsigned patch under
//! `module.sig_enforce=1`, the interactive shell, signing, and the packages installed into a
//! directory. The commands of `kgraftc kernel` that change a kernel run inside the harness's
//! guest (`kernel-tests/init.sh`, scenarios 10 to 13).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kgraftc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgraftc"));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    cmd
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-ops").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn put(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
    std::fs::write(path, contents).expect("a file");
}

/// A kernel with three patches: one applied, one patching with a task left in the old universe,
/// and one of the kgraft engine patching with one task left.
fn made_up_kernel(test: &str) -> PathBuf {
    // One per test: tests run at once, and some write into theirs.
    let root = tmp(&format!("sysroot-{test}"));
    let lp = root.join("sys/kernel/livepatch");
    put(&lp.join("cmdline_banner/enabled"), "1\n");
    put(&lp.join("cmdline_banner/transition"), "0\n");
    put(&lp.join("cmdline_banner/vmlinux/patched"), "1\n");
    std::fs::create_dir_all(lp.join("cmdline_banner/vmlinux/cmdline_proc_show,1")).expect("a directory");
    put(&lp.join("nap_short/enabled"), "1\n");
    put(&lp.join("nap_short/transition"), "1\n");
    put(&lp.join("nap_short/kgraft_testmod/patched"), "0\n");
    std::fs::create_dir_all(lp.join("nap_short/kgraft_testmod/kgt_nap,0")).expect("a directory");
    std::fs::create_dir_all(lp.join("nap_short/kgraft_testmod/kgt_helper,2")).expect("a directory");
    std::fs::create_dir_all(root.join("sys/module/cmdline_banner")).expect("a directory");
    std::fs::create_dir_all(root.join("sys/module/nap_short")).expect("a directory");
    // Task 1 has moved; task 42 sleeps in kgt_nap; task 7 has no stack to show.
    put(&root.join("proc/1/task/1/patch_state"), "1\n");
    put(&root.join("proc/1/task/1/comm"), "init\n");
    put(&root.join("proc/42/task/42/patch_state"), "0\n");
    put(&root.join("proc/42/task/42/comm"), "cat\n");
    put(
        &root.join("proc/42/task/42/stack"),
        "[<0>] msleep_interruptible+0x2e/0x50\n[<0>] kgt_nap+0x12/0x20 [kgraft_testmod]\n[<0>] seq_read_iter+0x120/0x4a0\n",
    );
    put(&root.join("proc/7/task/8/patch_state"), "0\n");
    put(&root.join("proc/7/task/8/comm"), "worker\n");
    put(&root.join("proc/7/task/8/wchan"), "futex_wait_queue\n");
    std::fs::create_dir_all(root.join("sys/module/pair_v2")).expect("a directory");
    let kg = root.join("sys/kernel/kgraft/pair_v2");
    put(&kg.join("enabled"), "1\n");
    put(&kg.join("transition"), "1\n");
    put(&kg.join("functions"), "kgraft_testmod:kgt_encode\nkgraft_testmod:kgt_decode\n");
    put(&kg.join("stragglers"), "hammer (pid 51): kgt_encode [kgraft_testmod] <- kgt_pair_show [kgraft_testmod]\n");
    root
}

#[test]
fn list_shows_patches_states_and_functions() {
    let root = made_up_kernel("list_shows_patches_states_and_functions");
    let out = kgraftc().args(["kernel", "list"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["PATCH", "STATE", "ENGINE", "FUNCTIONS"]);
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["cmdline_banner", "enabled", "klp", "vmlinux:cmdline_proc_show"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["nap_short", "patching", "klp", "kgraft_testmod:kgt_helper", "(sympos", "2),", "kgraft_testmod:kgt_nap"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["pair_v2", "patching", "kgraft", "kgraft_testmod:kgt_encode,", "kgraft_testmod:kgt_decode"]
    );
}

/// `kgraftc kernel list | head -1`: a reader that has gone is no reason to panic.
#[test]
fn list_and_status_end_quietly_when_the_reader_closes_the_pipe() {
    let root = made_up_kernel("list_and_status_end_quietly_when_the_reader_closes_the_pipe");
    for command in ["list", "status"] {
        let mut child = kgraftc()
            .args(["kernel", command])
            .env("KGRAFT_SYSROOT", &root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kgraftc runs");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("kgraftc ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
    }
}

/// A name is a module's name: one that makes a path (into another patch's directory, or out
/// of sysfs) is refused, not followed.
#[test]
fn a_patch_name_that_is_a_path_is_refused() {
    let root = made_up_kernel("a_patch_name_that_is_a_path_is_refused");
    for args in [
        ["kernel", "status", "../livepatch/cmdline_banner"],
        ["kernel", "unload", "../../../../tmp"],
        ["kernel", "force", "x/../cmdline_banner"],
        ["kernel", "signal", ".."],
    ] {
        let out = kgraftc().args(args).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("is not the name of a live patch"), "{args:?}: {}", text(&out));
    }
}

#[test]
fn status_reads_the_kgraft_engine_s_own_files() {
    let root = made_up_kernel("status_reads_the_kgraft_engine_s_own_files");
    let out =
        kgraftc().args(["kernel", "status", "pair_v2"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("pair_v2: patching (kgraft engine)\n  module pair_v2: loaded\n"), "{stdout}");
    assert!(stdout.contains("  kgraft_testmod: patched\n    kgt_encode\n    kgt_decode\n"), "{stdout}");
    assert!(stdout.contains("  transition to patched: 1 tasks left\n"), "{stdout}");
    assert!(
        stdout.contains("    hammer (pid 51): kgt_encode [kgraft_testmod] <- kgt_pair_show [kgraft_testmod]\n"),
        "{stdout}"
    );
    // The livepatch core's per-task files do not count for it.
    assert!(!stdout.contains("cat (pid 42)"), "{stdout}");
    let out =
        kgraftc().args(["kernel", "signal", "pair_v2"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains("the kgraft engine sends the fake signal itself") || t.contains("needs root"), "{t}");
}

#[test]
fn force_writes_the_kgraft_engine_s_force_file() {
    let root = made_up_kernel("force_writes_the_kgraft_engine_s_force_file");
    let force = root.join("sys/kernel/kgraft/pair_v2/force");
    // Without the file (a kernel module of an older kgraft), the write fails after the warning.
    let out = kgraftc().args(["kernel", "force", "pair_v2"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc");
    let t = text(&out);
    if t.contains("needs root") {
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("WARNING: forcing the transition of pair_v2: 1 tasks are moved to the new universe"), "{t}");
    assert!(t.contains("    hammer (pid 51): kgt_encode [kgraft_testmod] <- kgt_pair_show [kgraft_testmod]\n"), "{t}");
    assert!(t.contains(&format!("cannot force pair_v2: {}", force.display())), "{t}");
    // The livepatch core's file is not the one written for a kgraft patch.
    assert!(!root.join("sys/kernel/livepatch/pair_v2").exists());
    put(&force, "");
    // The made-up transition never ends: kgraftc says so after its wait, and the file got its 1.
    let out = kgraftc().args(["kernel", "force", "pair_v2"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert_eq!(std::fs::read_to_string(&force).expect("the force file"), "1");
    assert!(t.contains("forced: pair_v2 is still in transition"), "{t}");
}

#[test]
fn status_names_the_tasks_that_hold_a_transition_up() {
    let root = made_up_kernel("status_names_the_tasks_that_hold_a_transition_up");
    let out =
        kgraftc().args(["kernel", "status", "nap_short"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("nap_short: patching\n  module nap_short: loaded\n"), "{stdout}");
    assert!(
        stdout.contains("  kgraft_testmod: not patched (the module is not loaded; it is patched when it loads)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("  transition to patched: 2 tasks left\n"), "{stdout}");
    assert!(
        stdout.contains("    cat (pid 42): msleep_interruptible <- kgt_nap [kgraft_testmod] <- seq_read_iter\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    worker (pid 7 tid 8): in futex_wait_queue\n"), "{stdout}");
    assert!(!stdout.contains("init"), "{stdout}");

    let out = kgraftc().args(["kernel", "status", "nope"]).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no live patch named nope"), "{}", text(&out));
}

#[test]
fn a_kernel_without_livepatch_is_refused() {
    let root = tmp("no-livepatch");
    for args in [&["kernel", "list"][..], &["kernel", "status"], &["kernel", "unload", "x"], &["kernel", "force", "x"]]
    {
        let out = kgraftc().args(args).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let t = text(&out);
        // Without root the root check comes first; both are environment errors.
        assert!(t.contains("has no livepatch support") || t.contains("needs root"), "{args:?}: {t}");
    }
}

/// Writes a relocatable ELF whose `.modinfo` holds `fields`.
fn fake_module(path: &Path, fields: &[&str]) {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let section = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::Data);
    let mut data = Vec::new();
    for f in fields {
        data.extend_from_slice(f.as_bytes());
        data.push(0);
    }
    obj.append_section_data(section, &data, 1);
    std::fs::write(path, obj.write().expect("an object")).expect("a file");
}

#[test]
fn load_refuses_what_is_not_a_live_patch() {
    let dir = tmp("not-a-patch");
    let root = made_up_kernel("load_refuses_what_is_not_a_live_patch");
    let out = kgraftc().args(["kernel", "load", "patches/cmdline_banner.kgp"]).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not a kernel module"), "{}", text(&out));
    let plain = dir.join("plain.ko");
    fake_module(&plain, &["name=plain", "vermagic=6.1.0-1-amd64 SMP mod_unload"]);
    let out =
        kgraftc().args(["kernel", "load"]).arg(&plain).env("KGRAFT_SYSROOT", &root).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not a live patch module"), "{}", text(&out));
}

#[test]
fn signal_and_force_want_a_transition() {
    let root = made_up_kernel("signal_and_force_want_a_transition");
    for verb in ["signal", "force"] {
        let out = kgraftc()
            .args(["kernel", verb, "cmdline_banner"])
            .env("KGRAFT_SYSROOT", &root)
            .output()
            .expect("kgraftc runs");
        assert_eq!(out.status.code(), Some(2), "{verb}");
        let t = text(&out);
        assert!(
            t.contains(&format!("cmdline_banner is not in transition; there is nothing to {verb}"))
                || t.contains("needs root"),
            "{t}"
        );
    }
}

#[test]
fn signing_is_for_the_linux_target_and_takes_both_files() {
    let out = kgraftc()
        .args([
            "build",
            "--target",
            "host",
            "patches/cmdline_banner.kgp",
            "--sign-key",
            "k.pem",
            "--sign-cert",
            "c.pem",
        ])
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("use them with --target linux"), "{}", text(&out));
    let out = kgraftc()
        .args(["build", "--target", "linux", "patches/cmdline_banner.kgp", "--sign-key", "k.pem"])
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--sign-cert"), "{}", text(&out));
}

/// `-o` naming the signing key or certificate would write the module over it (and a failed
/// signing would then delete it): refused before anything is built.
#[test]
fn an_output_that_is_the_signing_key_is_refused() {
    let dir = tmp("sign-output");
    let (key, cert) = (dir.join("signing_key.pem"), dir.join("signing_cert.pem"));
    put(&key, "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n");
    put(&cert, "-----BEGIN CERTIFICATE-----\nnot a real certificate\n-----END CERTIFICATE-----\n");
    for target in [&key, &cert] {
        let out = kgraftc()
            .args(["build", "--target", "linux", "patches/cmdline_banner.kgp", "--sign-key"])
            .arg(&key)
            .arg("--sign-cert")
            .arg(&cert)
            .arg("-o")
            .arg(target)
            .output()
            .expect("kgraftc runs");
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("names the input"), "{t}");
    }
    assert!(std::fs::read_to_string(&key).expect("the key is still there").contains("not a real key"));
    assert!(std::fs::read_to_string(&cert).expect("the certificate is still there").contains("not a real"));
}

#[test]
fn package_refuses_bad_names_and_versions_before_building() {
    let out = kgraftc()
        .args(["package", "patches/cmdline_banner.kgp", "--format", "deb", "-o", "x.deb", "--pkg-version", "v1"])
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not a package version"), "{}", text(&out));
    let out = kgraftc()
        .args(["package", "patches/cmdline_banner.kgp", "--format", "rpm", "-o", "x.rpm", "--name", "Bad_Name"])
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not a package name"), "{}", text(&out));
    let out = kgraftc().args(["test", "patches/cmdline_banner.kgp"]).output().expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2), "a script or --shell is required");
}

/// A newline in what reaches the control file would add fields of its own (`Essential: yes`);
/// `-o` naming an input would destroy it. Both refused before anything is built.
#[test]
fn package_refuses_what_would_inject_fields_or_destroy_an_input() {
    let dir = tmp("package-inject");
    let out = kgraftc()
        .args(["package", "patches/cmdline_banner.kgp", "--format", "deb", "--maintainer", "A <a@b>\nEssential: yes"])
        .arg("-o")
        .arg(dir.join("x.deb"))
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--maintainer holds the control character '\\n'"), "{}", text(&out));
    let odd = dir.join("banner\nEssential: yes.kgp");
    std::fs::copy("../patches/cmdline_banner.kgp", &odd).expect("a copy");
    let out = kgraftc()
        .args(["package", "--format", "deb", "-o"])
        .arg(dir.join("x.deb"))
        .arg(&odd)
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds a control character: rename it"), "{}", text(&out));
    let key = dir.join("key.pem");
    put(&key, "not a key\n");
    let out = kgraftc()
        .args(["package", "patches/cmdline_banner.kgp", "--format", "rpm", "--sign-key"])
        .arg(&key)
        .arg("--sign-cert")
        .arg(&key)
        .arg("-o")
        .arg(&key)
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("names the input"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&key).expect("the key is still there"), "not a key\n");
}

/// Whether the tests that need the kernel target's set-up and qemu run.
fn qemu_enabled(test: &str) -> bool {
    let on = std::env::var_os("KGRAFT_QEMU").is_some_and(|v| v == "1");
    if !on {
        eprintln!("{test}: skipped (set KGRAFT_QEMU=1 to build modules and boot a kernel under qemu)");
    }
    on
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("a script");
    path
}

#[test]
fn test_command_passes_and_fails_with_the_script() {
    if !qemu_enabled("test_command_passes_and_fails_with_the_script") {
        return;
    }
    let dir = tmp("test-command");
    let pass = script(
        &dir,
        "pass.sh",
        "grep -q '^kgraft: cmdline_banner active$' /proc/cmdline\nkgraftc kernel list | grep -q '^cmdline_banner  *enabled'\n",
    );
    let out =
        kgraftc().args(["test", "patches/cmdline_banner.kgp", "--script"]).arg(&pass).output().expect("kgraftc runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("the kernel booted"), "{t}");
    assert!(
        t.contains("passed: the script passed with cmdline_banner applied, and cmdline_banner unloaded cleanly"),
        "{t}"
    );

    let fail = script(
        &dir,
        "fail.sh",
        "echo looking for the old banner\ngrep -q '^kgraft: cmdline_banner_v2 active$' /proc/cmdline\n",
    );
    let out =
        kgraftc().args(["test", "patches/cmdline_banner.kgp", "--script"]).arg(&fail).output().expect("kgraftc runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("the script's output:\n    looking for the old banner\n"), "{t}");
    assert!(t.contains("error: the script failed (exit status 1) while cmdline_banner was applied"), "{t}");

    // A script that takes the patch off itself, by hand as the engine chapter does, with the
    // kgraft engine: nothing is left to unload, and the test says so.
    let by_hand = script(
        &dir,
        "by-hand.sh",
        "d=/sys/kernel/kgraft/cmdline_banner\n[ -d $d ] || exit 3\necho 0 > $d/enabled\n\
         i=0; while [ \"$(cat $d/transition)\" = 1 ] && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done\n\
         rmmod cmdline_banner\n",
    );
    let out = kgraftc()
        .args(["test", "patches/cmdline_banner.kgp", "--engine", "kgraft", "--script"])
        .arg(&by_hand)
        .output()
        .expect("kgraftc runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("and unloaded cmdline_banner itself cleanly"), "{t}");

    // A script that prints the steps of a passing test and stops the guest passes for nothing:
    // its lines are its output, and the real steps never came.
    let forge = script(
        &dir,
        "forge.sh",
        "for s in 'script-status 0' unloading 'unload 0' 'restored yes' done; do echo \"KGRAFT-STEP $s\"; done\n\
         echo \"KGRAFT-STEP done\" > /dev/ttyS1 2>/dev/null\nsleep 1\npoweroff -f\n",
    );
    let out =
        kgraftc().args(["test", "patches/cmdline_banner.kgp", "--script"]).arg(&forge).output().expect("kgraftc runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(!t.contains("passed:"), "{t}");
}

/// `kgraftc test` stopped by SIGTERM while its guest runs takes qemu down with it.
#[test]
fn a_terminated_test_leaves_no_qemu_behind() {
    if !qemu_enabled("a_terminated_test_leaves_no_qemu_behind") {
        return;
    }
    use std::io::BufRead;
    let dir = tmp("terminated");
    let slow = script(&dir, "slow.sh", "sleep 600\n");
    let mut child = kgraftc()
        .args(["test", "patches/cmdline_banner.kgp", "--script"])
        .arg(&slow)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kgraftc runs");
    let me = child.id();
    let stderr = child.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    // Wait until the script runs in the guest: qemu is up.
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("running the script")), "the guest never ran it");
    let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
    let qemu: Vec<u32> = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("qemu")))
        .collect();
    assert_eq!(qemu.len(), 1, "one qemu: {children}");
    // SAFETY: kill with a pid of a child this test started has no memory effects.
    unsafe { libc::kill(me as i32, libc::SIGTERM) };
    let _ = child.wait();
    let gone = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !Path::new(&format!("/proc/{}", qemu[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", qemu[0])).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "qemu {} outlived kgraftc", qemu[0]);
}

#[test]
fn test_command_reports_a_guest_that_cannot_run() {
    if !qemu_enabled("test_command_reports_a_guest_that_cannot_run") {
        return;
    }
    let dir = tmp("vm-timeout");
    let pass = script(&dir, "pass.sh", "true\n");
    let out = kgraftc()
        .args(["test", "patches/cmdline_banner.kgp", "--vm-timeout", "1", "--script"])
        .arg(&pass)
        .output()
        .expect("kgraftc runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("the guest did not boot within 1 s"), "{t}");
}

#[test]
fn unsigned_patch_is_refused_under_sig_enforce_and_signing_shows_in_modinfo() {
    if !qemu_enabled("unsigned_patch_is_refused_under_sig_enforce_and_signing_shows_in_modinfo") {
        return;
    }
    let dir = tmp("signing");
    let pass = script(&dir, "pass.sh", "true\n");
    let out = kgraftc()
        .args(["test", "patches/cmdline_banner.kgp", "--append", "module.sig_enforce=1", "--script"])
        .arg(&pass)
        .output()
        .expect("kgraftc runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("error: the kernel refused cmdline_banner: it accepts only signed modules (module.sig_enforce is on) and this one is not signed"),
        "{t}"
    );
    assert!(t.contains("Loading of unsigned module is rejected"), "the kernel log is shown: {t}");
    assert!(t.contains("the patch cmdline_banner did not load in the guest"), "{t}");

    // A throwaway key: the kernel does not trust it, but modinfo shows who signed.
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let status = Command::new("openssl")
        .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-days", "1", "-nodes", "-subj", "/CN=kgraft test key/"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (scripts/setup.sh installs it)");
    assert!(status.success());
    let ko = dir.join("signed.ko");
    let out = kgraftc()
        .args(["build", "--target", "linux", "patches/cmdline_banner.kgp", "-o"])
        .arg(&ko)
        .arg("--sign-key")
        .arg(&key)
        .arg("--sign-cert")
        .arg(&cert)
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let info = Command::new("modinfo").arg(&ko).output().expect("modinfo runs");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["signer:", "kgraft", "test", "key"]),
        "{info}"
    );
    assert!(info.lines().any(|l| l.starts_with("sig_hashalgo:") && l.ends_with("sha256")), "{info}");
    let out = kgraftc()
        .args(["build", "--target", "linux", "patches/cmdline_banner.kgp", "-o"])
        .arg(&ko)
        .arg("--sign-key")
        .arg(dir.join("missing.pem"))
        .arg("--sign-cert")
        .arg(&cert)
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read the signing key"), "{}", text(&out));
}

#[test]
fn shell_gives_a_prompt_with_the_patch_loaded() {
    if !qemu_enabled("shell_gives_a_prompt_with_the_patch_loaded") {
        return;
    }
    let mut child = kgraftc()
        .args(["test", "patches/cmdline_banner.kgp", "--shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kgraftc runs");
    let mut stdout = child.stdout.take().expect("a pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut sent = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(bytes) => seen.extend_from_slice(&bytes),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !sent && String::from_utf8_lossy(&seen).contains("leave with: poweroff -f") {
            std::thread::sleep(Duration::from_secs(1));
            let stdin = child.stdin.as_mut().expect("a pipe");
            stdin.write_all(b"head -n 1 /proc/cmdline\npoweroff -f\n").expect("the guest reads");
            sent = true;
        }
    }
    let status = child.wait().expect("kgraftc ends");
    let seen = String::from_utf8_lossy(&seen).replace('\r', "");
    assert!(sent, "no prompt:\n{seen}");
    assert!(seen.contains("kgraft: cmdline_banner is loaded"), "{seen}");
    assert!(seen.contains("\nkgraft: cmdline_banner active\n"), "{seen}");
    assert!(status.success(), "{status}\n{seen}");
}

#[test]
fn packages_install_where_they_should() {
    if !qemu_enabled("packages_install_where_they_should") {
        return;
    }
    let dir = tmp("packages");
    let deb = dir.join("banner.deb");
    let out = kgraftc()
        .args(["package", "patches/cmdline_banner.kgp", "--format", "deb", "--pkg-version", "3", "-o"])
        .arg(&deb)
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let release =
        text(&out).split("for Linux ").nth(1).and_then(|r| r.split(')').next()).expect("the release").to_owned();
    let pkg = "kgraft-patch-cmdline-banner";

    let info = Command::new("dpkg-deb").arg("-I").arg(&deb).output().expect("dpkg-deb runs");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(&format!(" Package: {pkg}\n")), "{info}");
    assert!(info.contains(" Version: 3\n"), "{info}");
    assert!(
        info.contains(&format!(" Depends: linux-image-{release} | linux-image-{release}-unsigned, kmod\n")),
        "{info}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let body = Command::new("dpkg-deb").arg("-I").arg(&deb).arg(script).output().expect("dpkg-deb runs");
        let body = String::from_utf8_lossy(&body.stdout);
        assert!(body.starts_with("#!/bin/sh\nset -e\n"), "{script}: {body}");
        assert!(body.contains("DPKG_ROOT"), "{script} leaves another root's kernel alone: {body}");
    }
    let prerm = Command::new("dpkg-deb").arg("-I").arg(&deb).arg("prerm").output().expect("dpkg-deb runs");
    assert!(String::from_utf8_lossy(&prerm.stdout).contains(&format!(
        "if [ \"$1\" = remove ] && [ -z \"${{DPKG_ROOT:-}}\" ]; then\n    /usr/lib/kgraft/{pkg} unload\n"
    )));
    let contents = Command::new("dpkg-deb").arg("-c").arg(&deb).output().expect("dpkg-deb runs");
    let contents = String::from_utf8_lossy(&contents.stdout);
    for file in [
        format!("./lib/modules/{release}/updates/kgraft/cmdline_banner.ko"),
        format!("./usr/lib/kgraft/{pkg}"),
        format!("./lib/systemd/system/{pkg}.service"),
        format!("./lib/systemd/system/multi-user.target.wants/{pkg}.service -> ../{pkg}.service"),
    ] {
        assert!(contents.contains(&file), "{file} in:\n{contents}");
    }

    // Installed into another root, its scripts run without a chroot and leave this kernel alone.
    let root = dir.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(root.join(d)).expect("a directory");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("a file");
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
            .args(args)
            .output()
            .expect("dpkg runs");
        assert!(out.status.success(), "dpkg {args:?}: {}", text(&out));
    };
    dpkg(&["-i", deb.to_str().expect("a UTF-8 path")]);
    let module = root.join(format!("lib/modules/{release}/updates/kgraft/cmdline_banner.ko"));
    assert!(module.is_file());
    let unit = std::fs::read_to_string(root.join(format!("lib/systemd/system/{pkg}.service"))).expect("the unit");
    assert!(unit.contains(&format!("ConditionKernelVersion={release}\n")), "{unit}");
    assert!(unit.contains(&format!("ExecStart=/usr/lib/kgraft/{pkg} load\n")), "{unit}");
    let helper = root.join(format!("usr/lib/kgraft/{pkg}"));
    let helper_text = std::fs::read_to_string(&helper).expect("the helper");
    assert!(helper_text.contains(&format!("NAME=cmdline_banner\nRELEASE={release}\n")), "{helper_text}");
    assert!(!root.join(format!("var/lib/kgraft/{pkg}")).exists(), "nothing was loaded for another root");
    let sh = Command::new("sh").arg("-n").arg(&helper).status().expect("sh runs");
    assert!(sh.success(), "the helper parses");
    dpkg(&["-r", pkg]);
    assert!(!module.exists() && !helper.exists());

    // rpm: the same files, with the scriptlets in rpm's terms.
    let rpm = dir.join("banner.rpm");
    let out = kgraftc()
        .args(["package", "patches/cmdline_banner.kgp", "--format", "rpm", "-o"])
        .arg(&rpm)
        .output()
        .expect("kgraftc runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let query = |args: &[&str]| {
        let out = Command::new("rpm").args(["-qp"]).args(args).arg(&rpm).output().expect("rpm runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let files = query(&["-l"]);
    assert!(files.contains(&format!("/lib/modules/{release}/updates/kgraft/cmdline_banner.ko\n")), "{files}");
    assert!(files.contains(&format!("/usr/lib/systemd/system/{pkg}.service\n")), "{files}");
    let requires = query(&["--requires"]);
    assert!(
        requires.contains(&format!("kernel-uname-r = {release}"))
            || requires.contains(&format!("/boot/vmlinuz-{release}")),
        "{requires}"
    );
    let scripts = query(&["--scripts"]);
    assert!(scripts.contains(&format!("/usr/lib/kgraft/{pkg} load")), "{scripts}");
    assert!(
        scripts.contains(&format!("if [ \"$1\" -eq 0 ] && same_root; then\n    /usr/lib/kgraft/{pkg} unload")),
        "{scripts}"
    );
    // Under `rpm --root`, the scriptlets leave the running kernel alone.
    assert!(scripts.contains(&format!("if same_root; then\n    /usr/lib/kgraft/{pkg} load")), "{scripts}");
}
