//! One `.kgp`, many kernels: `patches/fleet_banner.kgp` checked, built and packaged with several `--kdir`
//! for the installed 6.1 and the kernels `scripts/setup.sh kernels` unpacks under
//! `target/kernels` (6.1 PREEMPT_RT and cloud, 6.12), and, with `KGRAFT_QEMU=1`, loaded under
//! qemu on each of those with `kgraftc test`; on 6.12 and PREEMPT_RT, kgraft's own engine's
//! scenarios run too (`kernel-tests/engine.sh` with `KDIR`), and the livepatch core applies a
//! system state, BTF-typed reads and a `replace_all` patch.

use std::path::{Path, PathBuf};
use std::process::Command;

mod guest;
mod kernels;

use kernels::{release, root};

/// The installed kernel's build directory and the fleet's, when both are there.
fn kernels(test: &str) -> Option<(PathBuf, Vec<PathBuf>)> {
    Some((kernels::installed(test)?, kernels::fleet(test)?))
}

fn kgraftc(args: &[&str]) -> (Option<i32>, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_kgraftc")).args(args).current_dir(root()).output().expect("kgraftc runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_source_builds_a_module_per_release_and_a_table_says_so() {
    let Some((installed, fleet)) = kernels("one_source_builds_a_module_per_release_and_a_table_says_so") else {
        return;
    };
    let out = std::env::temp_dir().join(format!("kgraft-fleet-test-{}", std::process::id()));
    let installed_arg = installed.display().to_string();
    // The fleet by a quoted glob, which kgraftc expands, and the installed kernel by name.
    let (code, table, err) = kgraftc(&[
        "build",
        "--target",
        "linux",
        "--kdir",
        &installed_arg,
        "--kdir",
        "target/kernels/*/build",
        "patches/fleet_banner.kgp",
        "-o",
        out.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(code, Some(0), "{table}{err}");
    let all: Vec<&PathBuf> = std::iter::once(&installed).chain(&fleet).collect();
    for kdir in &all {
        let r = release(kdir);
        let ko = out.join(&r).join("fleet_banner.ko");
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{r} ")) && l.ends_with(&ko.display().to_string())),
            "no row `{r} ... {}` in\n{table}",
            ko.display()
        );
        let bytes = std::fs::read(&ko).expect("the module");
        let vermagic = format!("vermagic={r} ");
        assert!(bytes.windows(vermagic.len()).any(|w| w == vermagic.as_bytes()), "{} is for {r}", ko.display());
    }
    assert!(table.ends_with(&format!("{n} of {n} kernels: module\n", n = all.len())), "{table}");

    // kgraft's own engine too: its C is told by each target's BTF which ftrace and kallsyms
    // interfaces it has (6.12's differ from 6.1's).
    let (code, table, err) = kgraftc(&[
        "build",
        "--target",
        "linux",
        "--engine",
        "kgraft",
        "--kdir",
        "target/kernels/*/build",
        "patches/fleet_banner.kgp",
        "-o",
        out.join("kgraft").to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(code, Some(0), "{table}{err}");
    for kdir in &fleet {
        let r = release(kdir);
        assert!(out.join("kgraft").join(&r).join("fleet_banner.ko").is_file(), "{r}: {table}");
    }

    // One package per release, named by it, each depending on its own kernel and holding its
    // module under that release's tree: a repository holds them all side by side.
    let (code, table, err) = kgraftc(&[
        "package",
        "--format",
        "deb",
        "--kdir",
        "target/kernels/*/build",
        "patches/fleet_banner.kgp",
        "-o",
        out.join("debs").to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(code, Some(0), "{table}{err}");
    for kdir in &fleet {
        let r = release(kdir);
        let deb = out.join("debs").join(format!("kgraft-patch-fleet-banner-{r}_1.deb"));
        let field = |name: &str| {
            let o = Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name).output().expect("dpkg-deb runs");
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        assert_eq!(field("Package"), format!("kgraft-patch-fleet-banner-{r}"), "{table}");
        assert!(field("Depends").starts_with(&format!("linux-image-{r} ")), "{}", field("Depends"));
        let list = Command::new("dpkg-deb").arg("-c").arg(&deb).output().expect("dpkg-deb runs");
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.contains(&format!("./lib/modules/{r}/updates/kgraft/fleet_banner.ko")), "{list}");
    }

    // `check` takes the same targets; a directory that is no kernel's fails its own row.
    let (code, table, err) =
        kgraftc(&["check", "patches/fleet_banner.kgp", "--kdir", "target/kernels/*/build", "--kdir", "/nonexistent"]);
    assert_eq!(code, Some(1), "{table}{err}");
    assert_eq!(table.matches("  checked").count(), fleet.len(), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("/nonexistent ")
            && l.ends_with("FAILED: /nonexistent is not a configured kernel build directory")),
        "{table}"
    );
    // A command for one kernel says so.
    let (code, _, err) =
        kgraftc(&["test", "patches/fleet_banner.kgp", "--kdir", "target/kernels/*/build", "--script", "/bin/true"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("acts on one kernel"), "{err}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Runs `kgraftc test PATCH --engine ENGINE --kdir KDIR` with a script of the shell lines
/// `check` (written to `dir`) and asserts that the script passed with the patch applied and
/// the unload restored the kernel.
fn passes_in_guest(patch: &Path, engine: &str, kdir: &Path, check: &str, dir: &Path) {
    let name = patch.file_stem().expect("a file name").to_string_lossy();
    let script = dir.join(format!("{name}-{engine}.sh"));
    std::fs::write(&script, format!("#!/bin/sh\n{check}")).expect("the script");
    let (code, out, err) = kgraftc(&[
        "test",
        patch.to_str().expect("a UTF-8 path"),
        "--engine",
        engine,
        "--kdir",
        kdir.to_str().expect("a UTF-8 path"),
        "--script",
        script.to_str().expect("a UTF-8 path"),
    ]);
    let r = release(kdir);
    assert_eq!(code, Some(0), "{r} ({name}, {engine}): {out}{err}");
    assert!(
        err.contains(&format!("passed: the script passed with {name} applied, and {name} unloaded cleanly")),
        "{r} ({name}, {engine}): {err}"
    );
}

/// Under qemu, on each kernel of the fleet and with each engine: the module loads (through the
/// livepatch core, or kgraft's own engine), the banner names the running release, and unloading
/// restores the original.
#[test]
fn the_module_of_each_release_runs_on_its_kernel_under_qemu() {
    if !guest::enabled("the_module_of_each_release_runs_on_its_kernel_under_qemu") {
        return;
    }
    let Some(fleet) = kernels::fleet("the_module_of_each_release_runs_on_its_kernel_under_qemu") else { return };
    let dir = std::env::temp_dir().join(format!("kgraft-fleet-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let patch = root().join("patches/fleet_banner.kgp");
    for (kdir, engine) in fleet.iter().flat_map(|k| [(k, "klp"), (k, "kgraft")]) {
        // The banner names the running release, and the engine asked for is the one that
        // applied the patch.
        let sysfs = if engine == "kgraft" { "/sys/kernel/kgraft" } else { "/sys/kernel/livepatch" };
        let check = format!(
            "first=\"$(head -n 1 /proc/cmdline)\"\necho \"$first\"\n[ -d {sysfs}/fleet_banner ] && \
             [ \"$first\" = \"kgraft: fleet_banner for $(uname -r)\" ]\n"
        );
        passes_in_guest(&patch, engine, kdir, &check, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// kgraft's own engine on the fleet's other kernel lines, 6.12 and 6.1 PREEMPT_RT: every
/// scenario of `kernel-tests/engine-init.sh` (the direct call and the transition, callbacks and
/// shadow data, the consistency hammer with no mismatch, a sleeping straggler kicked, stacking,
/// a system call, module objects coming and going, the livepatch core beside it), one boot per
/// kernel, with the samples built for that kernel. The benchmark's figures are printed.
#[test]
fn the_kgraft_engine_scenarios_pass_on_6_12_and_rt_under_qemu() {
    let test = "the_kgraft_engine_scenarios_pass_on_6_12_and_rt_under_qemu";
    if !guest::enabled(test) {
        return;
    }
    let Some(fleet) = kernels::fleet(test) else { return };
    let init = std::fs::read_to_string(root().join("kernel-tests/engine-init.sh")).expect("engine-init.sh is readable");
    let scenarios = guest::init_scenarios(&init);
    let lines: Vec<PathBuf> = fleet.into_iter().filter(|k| !release(k).contains("-cloud-")).collect();
    assert_eq!(lines.len(), 2, "6.12 and 6.1-rt: {lines:?}");
    for kdir in &lines {
        let r = release(kdir);
        let run = guest::Run::harness(
            "engine.sh",
            &format!("kernel-tests-engine-{r}"),
            &[("KDIR", kdir.to_str().expect("a UTF-8 path"))],
        );
        for line in run.console.lines().filter(|l| l.starts_with("KGRAFT-BENCH") || l.starts_with("KGRAFT-PAIR")) {
            eprintln!("{r}: {line}");
        }
        for scenario in &scenarios {
            run.assert_passed(scenario, &format!("the kgraft engine on {r}"));
        }
        run.assert_success(&format!("KDIR={} kernel-tests/engine.sh", kdir.display()));
    }
}

/// The livepatch core on the fleet's other kernel lines, 6.12 and 6.1 PREEMPT_RT, beyond the
/// banner: a system state with its callbacks and a module parameter (`console_state`), kernel
/// structures read through the target's BTF types (`kernel_fields`), and a `replace_all`
/// patch (`cmdline_banner_v2`), each loaded, checked and unloaded under qemu with
/// `kgraftc test --engine klp`. The samples name the 6.1 kernels they were written for; their
/// copies leave that line out, as the harness's do.
#[test]
fn the_livepatch_core_runs_states_types_and_replace_all_on_6_12_and_rt_under_qemu() {
    let test = "the_livepatch_core_runs_states_types_and_replace_all_on_6_12_and_rt_under_qemu";
    if !guest::enabled(test) {
        return;
    }
    let Some(fleet) = kernels::fleet(test) else { return };
    let dir = std::env::temp_dir().join(format!("kgraft-fleet-klp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let cases: &[(&str, &str)] = &[
        (
            "patches/console_state.kgp",
            "[ -d /sys/kernel/livepatch/console_state ] || exit 2\n\
             dmesg | grep -q 'kgraft: console_state: saved loglevel 7, version 1' || exit 3\n\
             [ \"$(cat /sys/module/console_state/parameters/prefix)\" = kgraft ]\n",
        ),
        (
            "kernel-tests/patches/kernel_fields.kgp",
            "first=\"$(head -n 1 /proc/cmdline)\"\necho \"$first\"\n\
             [ \"$first\" = \"kgraft-fields: release=$(uname -r) mem_unit=4096 ram=yes buf=yes\" ]\n",
        ),
        (
            "patches/cmdline_banner_v2.kgp",
            "[ -d /sys/kernel/livepatch/cmdline_banner_v2 ] || exit 2\n\
             [ \"$(head -n 1 /proc/cmdline)\" = 'kgraft: cmdline_banner_v2 active' ]\n",
        ),
    ];
    for kdir in fleet.iter().filter(|k| !release(k).contains("-cloud-")) {
        for (sample, check) in cases {
            let name = sample.rsplit('/').next().expect("a file name");
            let source = std::fs::read_to_string(root().join(sample)).expect("the sample");
            let copy = dir.join(name);
            let retargeted: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("kernel: \""))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&copy, retargeted).expect("a copy");
            passes_in_guest(&copy, "klp", kdir, check, &dir);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
