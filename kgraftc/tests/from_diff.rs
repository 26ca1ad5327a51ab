//! `kgraftc from-diff` on the fixes of `kernel-tests/fixes`, against Debian's 6.1 headers and
//! its `linux-source-6.1` tarball: each generates a `.kgp` whose replacements are proved to be
//! the fixed kernel's code, and each bad input is an error with nothing written. The qemu
//! harness (`kernel-tests/run.sh`, scenario `from_diff`) loads the generated patches.

use std::path::{Path, PathBuf};
mod kernels;

use std::process::Command;

/// The installed kernel's build directory and Debian's source tarball, when both are here (CI
/// has them: `scripts/setup.sh all`).
fn target() -> Option<(PathBuf, PathBuf)> {
    let tarball = PathBuf::from("/usr/src/linux-source-6.1.tar.xz");
    let kdir = kernels::installed("from-diff")?;
    if !tarball.is_file() {
        assert!(std::env::var_os("CI").is_none(), "CI has linux-source-6.1");
        eprintln!("no linux-source-6.1: from-diff is not run");
        return None;
    }
    Some((kdir, tarball))
}

/// Runs `kgraftc from-diff FIX` with `out` as `-o`; returns the exit status and standard error.
fn from_diff(fix: &Path, ksrc: &Path, kdir: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .arg("from-diff")
        .arg(fix)
        .arg("--ksrc")
        .arg(ksrc)
        .arg("--kdir")
        .arg(kdir)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("kgraftc runs");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn fixes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-tests/fixes")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kgraft-from-diff-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[test]
fn each_fix_becomes_a_patch_whose_bodies_are_the_fixed_code() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("ok");
    // (fix, the function replaced, lines the .kgp must hold)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "cmdline_prefix.patch",
            "cmdline_proc_show",
            &[
                "description: \"proc: mark /proc/cmdline of a fixed kernel with fixed=1\"",
                "\tseq_puts(m, \"fixed=1 \");",
            ],
        ),
        (
            "cmdline_new_function.diff",
            "cmdline_proc_show",
            &["static noinline void show_fix_banner(struct seq_file *m)"],
        ),
        (
            "meminfo_label.diff",
            "meminfo_proc_show",
            &[
                "static void show_val_kb(struct seq_file *m, const char *s, unsigned long num)",
                "#include \"fs/proc/internal.h\"",
                "extern void arch_report_meminfo(struct seq_file *m);",
                "\tshow_val_kb(m, \"MemTotalFixed:  \", i.totalram);",
            ],
        ),
        ("meminfo_counter.diff", "meminfo_proc_show", &["static unsigned long meminfo_reads;"]),
        // A quoted include outside the unit's directory; two read-only static locals, copied
        // (written ones are the kernel's: `firsttime` below).
        (
            "netfilter_null_flow.diff",
            "__nf_ip6_route",
            &[
                "#include \"net/bridge/br_private.h\"",
                "\tstatic const struct ipv6_pinfo fake_pinfo;",
                "\tstatic const struct inet_sock fake_sk = {",
            ],
        ),
        // kernel/fork.c: data reached through a macro of the file, conditionals, tracepoints.
        (
            "mm_alloc_fatal_signal.diff",
            "mm_alloc",
            &[
                "extern struct kmem_cache *mm_cachep; /* the running kernel's */",
                "/* #define CREATE_TRACE_POINTS: the running kernel's tracepoints are used */",
                "#ifdef CONFIG_USER_NS\nextern int unprivileged_userns_clone;\n#else",
            ],
        ),
        // The definition's attributes reach the C body, or its code would differ.
        (
            "cmdline_no_sibling_call.diff",
            "cmdline_proc_show",
            &["int __attribute__((optimize(\"-fno-optimize-sibling-calls\"))) __kgraft_c_cmdline_proc_show("],
        ),
        (
            "settimeofday_tz_range.diff",
            "do_sys_settimeofday64",
            &["extern int firsttime __asm__(\"firsttime.", "extern struct timezone sys_tz;"],
        ),
    ];
    let release = regex::Regex::new(r"6\.1\.0-\d+-amd64|Linux 6\.1\.\d+").expect("a regex");
    for (fix, function, lines) in cases {
        let out = dir.join(fix.split('.').next().unwrap_or("fix").to_string() + ".kgp");
        let (code, err) = from_diff(&fixes().join(fix), &tarball, &kdir, &out, &[]);
        assert_eq!(code, Some(0), "{fix}: {err}");
        assert!(err.contains(&format!("  {function:<32} replaced: changed by the fix")), "{fix}: {err}");
        assert!(err.contains(&format!("proof: {function:<32} same code as the fixed")), "{fix}: {err}");
        let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
        assert!(kgp.contains(&format!("replace fn {function}(")), "{fix}: {kgp}");
        for line in *lines {
            assert!(kgp.contains(line), "{fix}: no `{line}` in\n{kgp}");
        }
        // Only the changed function is replaced.
        assert_eq!(kgp.matches("replace fn ").count(), 1, "{fix}: {kgp}");
        // The book shows one generated patch: it is what from-diff writes today (releases
        // aside, which move). KGRAFT_BLESS=1 rewrites it.
        let shown = fixes().join("generated").join(out.file_name().expect("a name"));
        if shown.exists() {
            if std::env::var_os("KGRAFT_BLESS").is_some() {
                std::fs::write(&shown, &kgp).expect("bless");
            }
            let norm = |t: &str| release.replace_all(t, "RELEASE").into_owned();
            let want = std::fs::read_to_string(&shown).expect("the book's copy");
            assert_eq!(norm(&kgp), norm(&want), "{} is stale: KGRAFT_BLESS=1 rewrites it", shown.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names other files use too, in the target's kallsyms: the replaced `mode_show` (four in
/// Debian's 6.1) gets `#[sympos(near = ...)]`, the kernel's `sig_enforce` (two) a
/// `KGRAFT_SYMPOS_NEAR`, each the fixed file's by the symbols around it (`sig_enforce`'s by its
/// directory's, as signing.c has no other data), named by its nearest unique neighbour so that
/// the build finds it in each target's own kallsyms. `type_show`, which the kernel keeps out of line but inlined into
/// `mode_show`, is copied so that the patch's code is the kernel's.
#[test]
fn names_other_files_share_are_bound_by_position() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("sympos");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "reboot_mode_type.diff",
            "mode_show",
            &[
                "/// Other files have a `mode_show` too: this file's is the one nearest `force_show` in \
                 kallsyms\n/// (the 1st in ",
                "#[sympos(near = \"force_show\")]\nreplace fn mode_show(",
                "static ssize_t type_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)\n{",
            ],
        ),
        (
            "module_sig_reason.diff",
            "module_sig_check",
            &[
                "extern bool sig_enforce; /* the running kernel's */",
                "KGRAFT_SYMPOS_NEAR(\"sig_enforce\", \"",
                "/* other files have a `sig_enforce` too: this file's is the one nearest `",
            ],
        ),
    ];
    for (fix, function, lines) in cases {
        let out = dir.join(fix.replace(".diff", ".kgp"));
        let (code, err) = from_diff(&fixes().join(fix), &tarball, &kdir, &out, &["--build"]);
        assert_eq!(code, Some(0), "{fix}: {err}");
        assert!(err.contains(&format!("proof: {function:<32} same code as the fixed")), "{fix}: {err}");
        let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
        for line in *lines {
            assert!(kgp.contains(line), "{fix}: no `{line}` in\n{kgp}");
        }
        // The module's livepatch symbols carry the positions.
        let ko = std::fs::read(out.with_extension("ko")).expect("the module is built");
        let want: &[u8] = if *function == "mode_show" { b"mode_show" } else { b".klp.sym.vmlinux.sig_enforce,1\0" };
        assert!(ko.windows(want.len()).any(|w| w == want), "{fix}: no {} in the module", String::from_utf8_lossy(want));
        // The same `.kgp` for the fleet: the 6.1 flavours built from the same source find the
        // positions in their own kallsyms; 6.12 is not the release the fix was generated for.
        let Some(fleet) = kernels::fleet("from-diff on the fleet") else { continue };
        let fleet_out = dir.join(format!("fleet-{function}"));
        let mut build = Command::new(env!("CARGO_BIN_EXE_kgraftc"));
        // The source as from-diff read it, for the C's includes of the kernel's own headers.
        build.args(["build", "--target", "linux", "--ksrc"]).arg(&tarball);
        for kdir in &fleet {
            build.arg("--kdir").arg(kdir);
        }
        let output = build.arg(&out).arg("-o").arg(&fleet_out).output().expect("kgraftc runs");
        let table = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "6.12 fails, the others build:\n{table}{err}");
        for kdir in &fleet {
            let release = kernels::release(kdir);
            let ko = fleet_out.join(&release).join(out.with_extension("ko").file_name().expect("a name"));
            if release.starts_with("6.1.0-") {
                let ko = std::fs::read(&ko)
                    .unwrap_or_else(|e| panic!("{fix}: no module for {release} ({e}):\n{table}{err}"));
                assert!(
                    ko.windows(want.len()).any(|w| w == want),
                    "{fix}: no {} for {release}",
                    String::from_utf8_lossy(want)
                );
            } else {
                assert!(!ko.exists(), "{fix}: {release} is not the fix's release");
                let row = table.lines().find(|l| l.starts_with(&release)).unwrap_or_default();
                assert!(
                    row.contains("6.1.0-57-*") || err.contains("\"6.1.0-57-*\""),
                    "{fix}: {release}:\n{table}{err}"
                );
            }
        }
    }
    // Without its position the build refuses the name, before anything is loaded.
    let bare = dir.join("bare.kgp");
    let text = "patch bare {\n    description: \"sig_enforce without a position\",\n}\n\nc {\n#include \
                <linux/types.h>\nextern bool sig_enforce;\n}\n\nreplace fn is_module_sig_enforced() -> bool in C {\n\
                \treturn sig_enforce;\n}\n";
    std::fs::write(&bare, text).expect("a .kgp");
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["build", "--target", "linux", "--kdir"])
        .arg(&kdir)
        .arg(&bare)
        .arg("-o")
        .arg(dir.join("bare.ko"))
        .output()
        .expect("kgraftc runs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "the patch's fault: {err}");
    assert!(err.contains("`sig_enforce` names 2 symbols of vmlinux"), "{err}");
    assert!(!dir.join("bare.ko").exists(), "nothing is written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fix inside a `SYSCALL_DEFINE` body becomes one `replace syscall ... in C`, proved through
/// the call's entries.
#[test]
fn a_fix_to_a_system_call_becomes_a_replace_syscall_proved_through_its_entries() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("syscall");
    // The second fix is written for kpatch-build: its header, KPATCH_SYSCALL_DEFINE1 and
    // KPATCH_PRINTK, read as the kernel's own macros.
    for (fix, line) in [
        ("uname_version_mark", "\tstrlcat(tmp.version, \" +uname-fix\", sizeof(tmp.version));"),
        ("uname_kpatch_style", "\tprintk(\"newuname: kpatch-style fix\\n\");"),
    ] {
        let out = dir.join(format!("{fix}.kgp"));
        let (code, err) = from_diff(&fixes().join(format!("{fix}.diff")), &tarball, &kdir, &out, &[]);
        assert_eq!(code, Some(0), "{err}");
        for entry in ["__x64_sys_newuname", "__ia32_sys_newuname", "__do_sys_newuname"] {
            assert!(err.contains(&format!("proof: {entry:<32} same code as the fixed kernel/sys.c")), "{err}");
        }
        let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
        assert!(kgp.contains("replace syscall newuname(name: *mut new_utsname) -> c_long in C {"), "{kgp}");
        assert!(kgp.contains(line), "{kgp}");
        assert_eq!(kgp.matches("replace ").count(), 1, "one replacement for both entries:\n{kgp}");
        assert!(!kgp.contains("SYSCALL_DEFINE1(newuname"), "the kernel's entries are not redefined:\n{kgp}");
        assert!(!kgp.contains("KPATCH") && !kgp.contains("kpatch-syscall.h"), "{kgp}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fix to a header of the kernel's include directories: the units to patch are the fix's own
/// `.c` files, or those named with `--tu`; each reads the fixed header before its includes, in
/// the patch as in the proof.
#[test]
fn a_header_fix_patches_the_units_that_read_it() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("header");
    // A static inline function of include/linux/utsname.h: with no unit named, an error.
    let fix = fixes().join("utsname_exiting_task.diff");
    let out = dir.join("utsname_exiting_task.kgp");
    let (code, err) = from_diff(&fix, &tarball, &kdir, &out, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the fix changes the header include/linux/utsname.h, which translation units all over"),
        "{err}"
    );
    assert!(err.contains("name the units to patch with --tu FILE.c"), "{err}");
    assert!(!out.exists());
    // Named: each function of theirs that inlines it is replaced (the system calls of
    // kernel/sys.c as `replace syscall`), and proved.
    let (code, err) = from_diff(&fix, &tarball, &kdir, &out, &["--tu", "fs/proc/version.c", "--tu", "kernel/sys.c"]);
    assert_eq!(code, Some(0), "{err}");
    for f in ["version_proc_show", "__x64_sys_newuname", "__x64_sys_sethostname", "__do_sys_newuname"] {
        assert!(err.contains(&format!("proof: {f:<32} same code as the fixed")), "{err}");
    }
    let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
    assert_eq!(kgp.matches("// include/linux/utsname.h as the fix changes it").count(), 2, "{kgp}");
    assert!(kgp.contains("\treturn ns ? &ns->uts_ns->name : &init_uts_ns.name;"), "{kgp}");
    assert!(kgp.contains("replace fn version_proc_show(") && kgp.contains("replace syscall newuname("), "{kgp}");
    // A header helper the fix adds and its own .c file calls: no --tu needed.
    let out = dir.join("version_header_helper.kgp");
    let (code, err) = from_diff(&fixes().join("version_header_helper.diff"), &tarball, &kdir, &out, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("note: the fix changes the header include/linux/seq_file.h"), "{err}");
    assert!(err.contains("proof: version_proc_show                same code as the fixed fs/proc/version.c"), "{err}");
    let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
    assert!(kgp.contains("static inline void seq_put_fix_mark(struct seq_file *m, const char *fix)"), "{kgp}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fix of a module's function: the replacement is in a `module` block, and the module's own
/// statics the body calls are resolved in that module, not in vmlinux.
#[test]
fn a_fix_of_a_modules_function_resolves_its_statics_in_that_module() {
    let Some((kdir, tarball)) = target() else { return };
    let release = kdir.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let xfs = PathBuf::from(format!("/lib/modules/{}/kernel/fs/xfs/xfs.ko", release.unwrap_or_default()));
    if !xfs.is_file() {
        assert!(std::env::var_os("CI").is_none(), "CI installs the kernel's modules");
        return;
    }
    let dir = scratch("module");
    let out = dir.join("xfs_stats_mark.kgp");
    let xfs_arg = xfs.display().to_string();
    let (code, err) =
        from_diff(&fixes().join("xfs_stats_mark.diff"), &tarball, &kdir, &out, &["--module", &xfs_arg, "--build"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("from-diff: compiling fs/xfs/xfs_stats.c before and after the fix (xfs)"), "{err}");
    assert!(err.contains("proof: xfs_stats_format                 same code as the fixed fs/xfs/xfs_stats.c"), "{err}");
    let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
    assert!(kgp.contains("module \"xfs\" {\n"), "{kgp}");
    // counter_val, a static of xfs the kernel kept out of line: a relocation against xfs.
    let sections = Command::new("readelf").arg("-SW").arg(out.with_extension("ko")).output().expect("readelf runs");
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(sections.contains(".klp.rela.xfs..text"), "{sections}");
    let symbols = Command::new("readelf").arg("-sW").arg(out.with_extension("ko")).output().expect("readelf runs");
    assert!(String::from_utf8_lossy(&symbols.stdout).contains(".klp.sym.xfs.counter_val,0"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fix of three files (a shadow variable allocated in kernel/fork.c, shown in fs/proc/array.c,
/// freed in kernel/exit.c) is one patch with a C unit per file, each proved, each reviewable.
#[test]
fn a_fix_of_three_files_is_one_patch_with_a_unit_per_file() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("units");
    let out = dir.join("shadow_fork_serial.kgp");
    let (code, err) = from_diff(&fixes().join("shadow_fork_serial.diff"), &tarball, &kdir, &out, &[]);
    assert_eq!(code, Some(0), "{err}");
    let kgp = std::fs::read_to_string(&out).expect("the .kgp is written");
    // The units, in the diff's order, each followed by its replacements.
    let at = |needle: &str| kgp.find(needle).unwrap_or_else(|| panic!("no `{needle}` in\n{kgp}"));
    let order = [
        at("\nc \"fs/proc/array.c\" {"),
        at("replace fn proc_pid_status("),
        at("\nc \"kernel/exit.c\" {"),
        at("replace fn do_exit("),
        at("\nc \"kernel/fork.c\" {"),
        at("replace fn kernel_clone("),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{kgp}");
    assert_eq!(kgp.matches("replace fn ").count(), 3, "{kgp}");
    // The counter the fix adds is the patch's own; what the kernel writes is the kernel's.
    assert!(kgp.contains("\tstatic atomic_t forks_seen = ATOMIC_INIT(0);"), "{kgp}");
    assert!(err.contains("  do_exit                          replaced: changed by the fix"), "{err}");
    assert!(
        err.contains("  proc_pid_status                  replaced: changed: a changed function is inlined"),
        "{err}"
    );
    for f in ["do_exit", "kernel_clone"] {
        assert!(err.contains(&format!("proof: {f:<32} same code as the fixed")), "{err}");
    }
    // The proof goes with the patch.
    assert!(kgp.contains("//   kernel_clone: same code as the fixed kernel/fork.c"), "{kgp}");
    // kgraftc diff finds each body's file by its unit.
    let review = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .arg("diff")
        .arg(&out)
        .arg("--ksrc")
        .arg(&tarball)
        .output()
        .expect("kgraftc runs");
    let text = String::from_utf8_lossy(&review.stdout);
    assert_eq!(review.status.code(), Some(0), "{}", String::from_utf8_lossy(&review.stderr));
    for head in ["--- kernel/exit.c\tdo_exit (the kernel's)", "--- kernel/fork.c\tkernel_clone (the kernel's)"] {
        assert!(text.contains(head), "no `{head}` in\n{text}");
    }
    assert!(text.contains("\n+\tklp_shadow_free(tsk, 0x4b47, NULL);\n"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_cannot_or_need_not_be_patched_is_an_error_and_nothing_is_written() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("bad");
    let out = dir.join("out.kgp");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("a temporary file");
        p
    };
    let cmdline = std::fs::read_to_string(fixes().join("cmdline_prefix.patch")).expect("the fix");
    let cases: Vec<(PathBuf, &str)> = vec![
        (fixes().join("blank_line.diff"), "error[E0100]: the fix changes no function's code in kernel/time/time.c"),
        // A module's unit (kvm), whose messages name their line (`__FILE__:__LINE__`).
        (
            fixes().join("kvm_comment_line.diff"),
            "error[E0100]: the fix changes no function's code in arch/x86/kvm/x86.c",
        ),
        (fixes().join("already_applied.diff"), "the fix is already in kernel/time/time.c of Linux 6.1."),
        (
            write("stale.diff", &cmdline.replace(" \tseq_puts(m, saved_command_line);", " \tseq_puts(m, other_line);")),
            "does not apply",
        ),
        // A header the kernel's source does not have.
        (
            write(
                "unknown_header.diff",
                &cmdline.replace("@@ -6,6 +6,7 @@", "@@ -6,6 +6,8 @@").replace(
                    "+\tseq_puts(m, \"fixed=1 \");",
                    "+#include \"fix-helpers.h\"\n+\tseq_puts(m, \"fixed=1 \");",
                ),
            ),
            "include \"fix-helpers.h\", which the kernel source does not have",
        ),
        // kpatch's callback macros, which mean nothing in a C file of a kgraft patch.
        (
            write(
                "kpatch_callback.diff",
                &cmdline.replace("@@ -6,6 +6,7 @@", "@@ -6,6 +6,8 @@").replace(
                    "+\tseq_puts(m, \"fixed=1 \");",
                    "+\tseq_puts(m, \"fixed=1 \");\n+KPATCH_PRE_PATCH_CALLBACK(pre);",
                ),
            ),
            "uses kpatch's `KPATCH_PRE_PATCH_CALLBACK`, which has no meaning in a kgraft patch: write the callback \
             as `on pre_patch(obj) { ... }`",
        ),
        (
            write(
                "binary.diff",
                "diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c\nindex 1..2 100644\nGIT binary patch\nliteral 1\n",
            ),
            "binary",
        ),
        (
            write(
                "rename.diff",
                "diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline2.c\nsimilarity index 100%\nrename from \
                 fs/proc/cmdline.c\nrename to fs/proc/cmdline2.c\n",
            ),
            "rename",
        ),
        (write("empty.diff", "just words\n"), "changes no file"),
    ];
    for (fix, want) in &cases {
        let (code, err) = from_diff(fix, &tarball, &kdir, &out, &[]);
        assert_eq!(code, Some(1), "{}: {err}", fix.display());
        assert!(err.contains(want), "{}: expected `{want}` in: {err}", fix.display());
        assert!(!out.exists(), "{}: nothing is written", fix.display());
    }

    // A source tree of another version than the kernel's.
    let tree = dir.join("linux-6.1.1");
    std::fs::create_dir_all(tree.join("fs/proc")).expect("a tree");
    std::fs::create_dir_all(tree.join("kernel")).expect("a tree");
    std::fs::write(tree.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 1\nEXTRAVERSION =\n").expect("tree");
    std::fs::write(tree.join("kernel/fork.c"), "").expect("tree");
    let cmdline_c = "#include <linux/seq_file.h>\n\nstatic int cmdline_proc_show(struct seq_file *m, void *v)\n{\n\
                     \tseq_puts(m, saved_command_line);\n\tseq_putc(m, '\\n');\n\treturn 0;\n}\n";
    std::fs::write(tree.join("fs/proc/cmdline.c"), cmdline_c).expect("tree");
    let (code, err) = from_diff(&fixes().join("cmdline_prefix.patch"), &tree, &kdir, &out, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the source is Linux 6.1.1, but 6.1.0-"), "{err}");
    assert!(!out.exists());

    // No compiler: the source's own unit cannot be built.
    let output = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["from-diff", "--ksrc"])
        .arg(&tarball)
        .arg("--kdir")
        .arg(&kdir)
        .arg("-o")
        .arg(&out)
        .arg(fixes().join("cmdline_prefix.patch"))
        .env("PATH", dir.join("no-such-bin"))
        .output()
        .expect("kgraftc runs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot run make"), "{err}");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kgraftc_diff_shows_a_c_body_against_the_kernels_function() {
    let Some((_, tarball)) = target() else { return };
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .arg("diff")
            .args(args)
            .arg("--ksrc")
            .arg(&tarball)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .output()
            .expect("kgraftc runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A generated patch names its file: the diff is the fix, and the static local's declaration.
    let (code, out, err) = run(&["kernel-tests/fixes/generated/settimeofday_tz_range.kgp"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("--- kernel/time/time.c\tdo_sys_settimeofday64 (the kernel's)\n"), "{out}");
    assert!(out.contains("\n-\t\tif (tz->tz_minuteswest > 15*60 || tz->tz_minuteswest < -15*60)\n"), "{out}");
    assert!(out.contains("\n+\t\tif (tz->tz_minuteswest > 14*60 || tz->tz_minuteswest < -14*60)\n"), "{out}");
    assert!(out.contains("\n-\tstatic int firsttime = 1;\n+\textern int firsttime __asm__(\"firsttime."), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count(), 2, "{out}");
    // A hand-written patch, with the file named.
    let (code, out, err) = run(&["kernel-tests/patches/meminfo_string.kgp", "--source", "fs/proc/meminfo.c"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("\n-\tshow_val_kb(m, \"MemTotal:       \", i.totalram);\n+\tshow_val_kb(m, \"MemTOTAL:"),
        "{out}"
    );
    // ... and without it, from a tarball, the file cannot be told.
    let (code, _, err) = run(&["kernel-tests/patches/meminfo_string.kgp"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("give it with --source FILE.c"), "{err}");

    // In a source directory, the file that defines the function is found.
    let tree = scratch("diff-tree");
    std::fs::create_dir_all(tree.join("fs/proc")).expect("a tree");
    std::fs::create_dir_all(tree.join("kernel")).expect("a tree");
    std::fs::write(tree.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 1\n").expect("tree");
    std::fs::write(tree.join("kernel/fork.c"), "int nr_threads;\n").expect("tree");
    let cmdline = "static int cmdline_proc_show(struct seq_file *m, void *v)\n{\n\tseq_puts(m, saved_command_line);\n\
                   \tseq_putc(m, '\\n');\n\treturn 0;\n}\n";
    std::fs::write(tree.join("fs/proc/cmdline.c"), cmdline).expect("tree");
    let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["diff", "patches/c_banner.kgp", "--ksrc"])
        .arg(&tree)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("kgraftc runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("--- fs/proc/cmdline.c\tcmdline_proc_show (the kernel's)\n"), "{text}");
    assert!(text.contains("\n-\tseq_puts(m, saved_command_line);\n"), "{text}");
    let _ = std::fs::remove_dir_all(&tree);
}

#[test]
fn a_static_helper_declared_instead_of_copied_is_refused_at_build() {
    let Some((kdir, tarball)) = target() else { return };
    let dir = scratch("helper");
    let kgp = dir.join("meminfo_label.kgp");
    let (code, err) = from_diff(&fixes().join("meminfo_label.diff"), &tarball, &kdir, &kgp, &[]);
    assert_eq!(code, Some(0), "{err}");
    // The helper the kernel inlined everywhere, declared as if the kernel had it.
    let text = std::fs::read_to_string(&kgp).expect("the .kgp");
    let start = text.find("static void show_val_kb(").expect("show_val_kb is copied");
    let end = start + text[start..].find("\n}\n").expect("its end") + 3;
    let declared = format!(
        "{}void show_val_kb(struct seq_file *m, const char *s, unsigned long num);\n{}",
        &text[..start],
        &text[end..]
    );
    let bad = dir.join("declared.kgp");
    std::fs::write(&bad, declared).expect("a temporary file");
    // fs/proc/internal.h, which the patch includes, from the tarball, which the build unpacks
    // as far as the C needs.
    let ksrc = &tarball;
    // Builds `kgp` into `kgp.ko`; returns the exit status and standard error.
    let build = |kgp: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .args(["build", "--target", "linux", "--kdir"])
            .arg(&kdir)
            .arg("--ksrc")
            .arg(ksrc)
            .arg("-o")
            .arg(kgp.with_extension("ko"))
            .arg(kgp)
            .output()
            .expect("kgraftc runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = build(&bad);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error[E0048]: `show_val_kb` is not a function of 6.1.0-"), "{err}");
    // At the name's first use in the `.kgp`: its declaration in the `c` item.
    let line = declared_line(&std::fs::read_to_string(&bad).expect("the .kgp"), "void show_val_kb(");
    assert!(err.contains(&format!("declared.kgp:{line}:")), "line {line}: {err}");
    assert!(err.contains("copy its definition"), "{err}");
    assert!(!dir.join("declared.ko").exists());
    // A misspelt kernel function (declared and called so) gets the kernel's own name.
    let misspelt = dir.join("misspelt.kgp");
    assert!(text.contains("arch_report_meminfo(m);"), "{text}");
    std::fs::write(&misspelt, text.replace("arch_report_meminfo", "arch_report_memnfo")).expect("a temporary file");
    let (code, err) = build(&misspelt);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error[E0048]: `arch_report_memnfo` is not a function of"), "{err}");
    assert!(err.contains("did you mean `arch_report_meminfo`?"), "{err}");
    // `kgraftc check --ksrc` says so before any build, and what the generated patch does right.
    let check = |kgp: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .arg("check")
            .arg(kgp)
            .arg("--kdir")
            .arg(&kdir)
            .arg("--ksrc")
            .arg(&tarball)
            .output()
            .expect("kgraftc runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(&bad);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("check: the static functions of fs/proc/meminfo.c that C bodies call:"), "{err}");
    assert!(
        err.contains("show_val_kb                  (from meminfo_proc_show) error: inlined everywhere by the kernel"),
        "{err}"
    );
    let (code, err) = check(&kgp);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("the patch carries a copy: right"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 1-based line of `text`'s first line that contains `needle`.
fn declared_line(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("the line") + 1
}
