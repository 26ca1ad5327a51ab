//! Every sample in `patches/` is built with `kgraftc build --target host`, loaded into the
//! host as a shared object, changes the behaviour, and is removed with the behaviour restored.
//!
//! The test is the host itself: this test binary links the host's C "kernel" and exports its
//! symbols, so the patches resolve `seq_printf`, `saved_command_line` and `klp_shadow_*` here.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use kgraft_host::engine::{Engine, Progress};
use kgraft_host::ffi;
use kgraft_host::loader::Library;
use kgraft_host::threads::{register, syscall};
use kgraft_host::workload::{Config, Workload, read_file, take_log};

/// Loads a built patch and waits for the transition.
fn load(e: &mut Engine, path: &Path) {
    let (lib, patch) = Library::open(path.to_str().unwrap()).expect("the patch loads");
    e.begin_apply(patch, Some(lib)).expect("the patch applies");
    let p = e.wait(Duration::from_secs(20), |_| {}).unwrap();
    assert!(matches!(p, Progress::Done { .. }), "{p:?}");
}

/// Returns the host's printk log since the last call.
fn log() -> String {
    take_log()
}

/// Calls the pair's halves through system calls.
fn pair_keys() -> (u64, u64) {
    // SAFETY: plain integer functions.
    syscall(|| unsafe { (ffi::kgt_encode(0), ffi::kgt_decode(0)) })
}

#[test]
fn every_sample_builds_loads_and_unloads() {
    let _s = serial();
    let out = std::env::temp_dir().join(format!("kgraft-samples-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut samples: Vec<String> = std::fs::read_dir(root().join("patches"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".kgp").map(str::to_owned))
        .collect();
    samples.sort();
    let sos: Vec<(String, PathBuf)> = samples.iter().map(|s| (s.clone(), build(s, &out))).collect();
    let so = |name: &str| sos.iter().find(|(s, _)| s == name).map(|(_, p)| p.clone()).expect("sample exists");

    let load_threads = Workload::start(Config { workers: 2, sleepers: 1, kthreads: 1 });
    let _me = register("test-main");
    let boot = read_file("cmdline").unwrap();
    let mut checked = Vec::new();
    let mut e = eng();
    log();

    // The cmdline banner, then its v2 replacing it atomically.
    load(&mut e, &so("cmdline_banner"));
    assert_eq!(read_file("cmdline").unwrap(), format!("kgraft: cmdline_banner active\n{boot}"));
    load(&mut e, &so("cmdline_banner_v2"));
    assert_eq!(read_file("cmdline").unwrap(), format!("kgraft: cmdline_banner_v2 active\n{boot}"));
    let names: Vec<String> = e.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["cmdline_banner_v2"], "replace_all took cmdline_banner's place");
    remove(&mut e, "cmdline_banner_v2");
    assert_eq!(read_file("cmdline").unwrap(), boot);
    checked.extend(["cmdline_banner", "cmdline_banner_v2"]);

    // The banner again, from a C body, with Rust callbacks calling a helper function.
    load(&mut e, &so("c_banner"));
    assert_eq!(read_file("cmdline").unwrap(), format!("kgraft: c_banner active (C)\n{boot}"));
    assert_eq!(log(), "kgraft: c_banner post_patch\n");
    remove(&mut e, "c_banner");
    assert_eq!(log(), "kgraft: c_banner post_unpatch\n");
    assert_eq!(read_file("cmdline").unwrap(), boot);
    checked.push("c_banner");

    // The fleet's banner, whose C names the release it was built for (the host has none).
    load(&mut e, &so("fleet_banner"));
    assert_eq!(read_file("cmdline").unwrap(), format!("kgraft: fleet_banner for the user-mode host\n{boot}"));
    remove(&mut e, "fleet_banner");
    assert_eq!(read_file("cmdline").unwrap(), boot);
    checked.push("fleet_banner");

    // The pair, whole and in halves.
    for (name, keys) in [
        ("pair_v2", (NEW_KEY, NEW_KEY)),
        ("pair_encode_only", (NEW_KEY, OLD_KEY)),
        ("pair_decode_only", (OLD_KEY, NEW_KEY)),
    ] {
        load(&mut e, &so(name));
        assert_eq!(pair_keys(), keys, "{name}");
        remove(&mut e, name);
        assert_eq!(pair_keys(), (OLD_KEY, OLD_KEY), "{name} removed");
        checked.push(name);
    }

    // Shadow data and callbacks in the built-in module.
    load(&mut e, &so("shadow_counter"));
    assert_eq!(log(), "kgraft: shadow_counter pre_patch\nkgraft: shadow_counter post_patch\n");
    // The workload's threads read the device too, so the count only ever grows between reads.
    let reads = || {
        let text = read_file("testmod").unwrap();
        text.strip_prefix("kgt kgt0 v2 reads=")
            .and_then(|r| r.trim_end().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("unexpected text {text:?}"))
    };
    let n = reads();
    let m = reads();
    assert!(m > n, "the shadow counter grows: {n} then {m}");
    remove(&mut e, "shadow_counter");
    assert_eq!(log(), "kgraft: shadow_counter pre_unpatch\nkgraft: shadow_counter post_unpatch\n");
    assert_eq!(read_file("testmod").unwrap(), "kgt kgt0 v1\n");
    checked.push("shadow_counter");

    // Callbacks per object and nothing replaced: vmlinux first, then the module, as the kernel
    // orders them; the module is built in, so always live.
    load(&mut e, &so("object_callbacks"));
    let live = "kgraft_testmod -> [MODULE_STATE_LIVE] Normal state";
    assert_eq!(
        log(),
        format!(
            "kgraft: object_callbacks pre_patch: vmlinux\nkgraft: object_callbacks pre_patch: {live}\n\
             kgraft: object_callbacks post_patch: {live}\n"
        )
    );
    assert_eq!(read_file("testmod").unwrap(), "kgt kgt0 v1\n", "nothing is replaced");
    remove(&mut e, "object_callbacks");
    assert_eq!(
        log(),
        format!(
            "kgraft: object_callbacks pre_unpatch: {live}\nkgraft: object_callbacks post_unpatch: vmlinux\n\
             kgraft: object_callbacks post_unpatch: {live}\n"
        )
    );
    checked.push("object_callbacks");

    // An empty replace_all patch takes the loaded patches off, and nothing stays patched.
    load(&mut e, &so("cmdline_banner"));
    load(&mut e, &so("pair_v2"));
    load(&mut e, &so("take_all_off"));
    let names: Vec<String> = e.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["take_all_off"], "take_all_off replaced both");
    assert_eq!(read_file("cmdline").unwrap(), boot);
    assert_eq!(pair_keys(), (OLD_KEY, OLD_KEY));
    remove(&mut e, "take_all_off");
    assert!(e.list().is_empty());
    checked.push("take_all_off");

    // System states: v2 replaces console_state and takes its state's data over; console_state
    // cannot come back over v2, which would lower the state's version. The parameter keeps its
    // default in the host.
    load(&mut e, &so("console_state"));
    assert_eq!(log(), "kgraft: console_state: saved loglevel 7, version 1\n");
    load(&mut e, &so("console_state_v2"));
    assert_eq!(log(), "console_state_v2: took over loglevel 7 from version 1\n");
    let names: Vec<String> = e.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["console_state_v2"]);
    let (lib, patch) = Library::open(so("console_state").to_str().unwrap()).expect("the patch opens");
    let refused = e.begin_apply(patch, Some(lib)).expect_err("a lower version is refused");
    assert!(refused.contains("would lower it to 1"), "{refused}");
    assert_eq!(log(), "", "a refused patch runs no callback");
    remove(&mut e, "console_state_v2");
    assert_eq!(log(), "console_state_v2: restored loglevel 7\n");
    load(&mut e, &so("console_state_v2"));
    assert_eq!(log(), "console_state_v2: saved loglevel 4\n", "no earlier state to take over");
    remove(&mut e, "console_state_v2");
    log();
    checked.extend(["console_state", "console_state_v2"]);

    drop(e);
    let mismatches = load_threads.stats.mismatches.load(std::sync::atomic::Ordering::Relaxed);
    load_threads.stop();
    // The halves, applied one after the other, mismatch by design; the workers must have seen it.
    assert!(mismatches > 0, "pair_encode_only alone breaks the pair");
    let mut all: Vec<&str> = samples.iter().map(String::as_str).collect();
    all.sort();
    checked.sort();
    assert_eq!(checked, all, "every sample in patches/ was loaded (add a check for a new one)");
    let _ = std::fs::remove_dir_all(&out);
}
