//! The kernel checks against the installed Debian kernel: its BTF read from the compressed image,
//! its modules, and what a patch gets wrong about it. Bad targets are refused with exit status 2.
//!
//! The tests against the real kernel need a kernel under /lib/modules with its image in /boot
//! (`scripts/setup.sh all` installs one); without one they say so and pass, except in CI
//! (`CI` set), where the kernel is always installed and its absence is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The kernel build directory of the installed kernel, if there is exactly one with its image.
fn installed_kdir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("build/Makefile").is_file())
        .filter(|p| {
            p.file_name().is_some_and(|r| Path::new("/boot").join(format!("vmlinuz-{}", r.to_string_lossy())).is_file())
        })
        .map(|p| p.join("build"))
        .collect();
    if found.len() != 1 {
        assert!(std::env::var_os("CI").is_none(), "CI has exactly one kernel installed, found {found:?}");
        eprintln!("no single installed kernel with its image: the real-kernel checks are skipped");
        return None;
    }
    found.pop()
}

fn kgraftc(args: &[&str], src: &str, name: &str) -> Output {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-checks");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join(name), src).expect("a temporary file");
    Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .current_dir(&dir)
        .env("KGRAFT_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kgraft-cache"))
        .args(["--color", "never"])
        .args(args)
        .arg(name)
        .output()
        .expect("kgraftc runs")
}

#[test]
fn the_installed_kernel_refuses_what_the_patch_gets_wrong() {
    let Some(kdir) = installed_kdir() else { return };
    let kdir = kdir.to_str().expect("UTF-8 path");
    let src = r#"
patch wrong { description: "Everything wrong about 6.1" }
extern { fn seq_printf(m: *mut seq_file, fmt: *const c_char, ...) -> c_int; }
replace fn cmdline_proc_show(m: *mut file, v: *mut c_void, extra: u64) -> c_int { 0 }
replace fn do_syscall_64(regs: *mut pt_regs, nr: c_int) {}
replace fn meminfo_proc_shw(m: *mut seq_file, v: *mut c_void) -> c_int { 0 }
replace fn xfrm_hash_resize(w: *mut work_struct) {}
#[sympos(3)]
replace fn x2apic_send_IPI_mask_allbutself(mask: *const cpumask, vector: c_int) {}
module "no_such_module_here" { replace fn f() {} }
"#;
    let out = kgraftc(&["check", "--kdir", kdir], src, "wrong.kgp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for wanted in [
        "error[E0044]: the extern `seq_printf` returns nothing (`void`) in the kernel",
        "void seq_printf(struct seq_file *m, const char *f, ...)",
        "error[E0044]: `cmdline_proc_show` in vmlinux takes 2 parameters; this signature has 3",
        "int cmdline_proc_show(struct seq_file *m, void *v)",
        // `noinstr`: in the BTF, but without an fentry site, as the kernel itself says when
        // kgraftc boots it once to read its symbols.
        "error[E0042]: `do_syscall_64` in vmlinux cannot be patched",
        "error[E0041]: vmlinux of ",
        "has no function `meminfo_proc_shw` to patch",
        "did you mean `meminfo_proc_show`?",
        "error[E0043]: vmlinux has 2 functions named `xfrm_hash_resize`",
        "error[E0043]: `#[sympos(3)]` is out of range",
        "error[E0040]: ",
        "has no module `no_such_module_here`",
    ] {
        assert!(stderr.contains(wanted), "`{wanted}` missing:\n{stderr}");
    }
}

#[test]
fn kernel_types_build_against_the_installed_kernel() {
    let Some(kdir) = installed_kdir() else { return };
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-tests/patches/kernel_fields.kgp");
    let src = std::fs::read_to_string(sample).expect("the sample");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-fields-check");
    let output = kgraftc(
        &["build", "--target", "check", "--kdir", kdir.to_str().expect("UTF-8"), "-o", out.to_str().expect("UTF-8")],
        &src,
        "kernel_fields.kgp",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let expanded = kgraftc(&["expand", "--kdir", kdir.to_str().expect("UTF-8")], &src, "kernel_fields.kgp");
    let text = String::from_utf8_lossy(&expanded.stdout);
    // The 6.1 layouts, asserted in the generated crate that just type-checked.
    assert!(text.contains("pub struct sysinfo {"), "{text}");
    assert!(text.contains("kgraft_rt::assert_layout!(\n    sysinfo, 112;"), "{text}");
    assert!(text.contains("pub fn si_meminfo(val: *mut sysinfo);"), "{text}");
}

#[test]
fn bad_targets_are_environment_errors() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = "patch p { description: \"x\" }\nreplace fn f() {}\n";
    // Not an image at all.
    let junk = dir.join("junk-vmlinux");
    std::fs::write(&junk, b"this is not a kernel").expect("a temporary file");
    let out = kgraftc(&["check", "--vmlinux", junk.to_str().expect("UTF-8")], src, "p.kgp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("junk-vmlinux") && stderr.contains("not an x86 bzImage"), "{stderr}");
    // An ELF without BTF.
    let out = kgraftc(&["check", "--vmlinux", env!("CARGO_BIN_EXE_kgraftc")], src, "p.kgp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no .BTF section"), "{stderr}");
    // A truncated bzImage: the fixture's header, cut short.
    if let Some(kdir) = installed_kdir() {
        let release = std::fs::read_to_string(kdir.join("include/generated/utsrelease.h")).expect("utsrelease.h");
        let release = release.split('"').nth(1).expect("a release").to_owned();
        let image = std::fs::read(format!("/boot/vmlinuz-{release}")).expect("the image");
        let cut = dir.join("cut-vmlinuz");
        std::fs::write(&cut, &image[..image.len() / 3]).expect("a temporary file");
        let out = kgraftc(&["check", "--vmlinux", cut.to_str().expect("UTF-8")], src, "p.kgp");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cut-vmlinuz"), "{stderr}");
        // The image of one release with the build directory of another.
        let fake = dir.join("fake-kdir-other/include/generated");
        std::fs::create_dir_all(&fake).expect("a temporary directory");
        std::fs::write(fake.join("utsrelease.h"), "#define UTS_RELEASE \"6.1.0-1-amd64\"\n").expect("a file");
        let out = kgraftc(
            &[
                "check",
                "--kdir",
                dir.join("fake-kdir-other").to_str().expect("UTF-8"),
                "--vmlinux",
                &format!("/boot/vmlinuz-{release}"),
            ],
            src,
            "p.kgp",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("is the kernel {release}, but --kdir is for 6.1.0-1-amd64")), "{stderr}");
    }
}

/// Copies the kernel build directory `from` to `to`, with every symbolic link made absolute (the
/// headers' links are relative to where the package put them).
fn copy_kdir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a temporary directory");
    for entry in std::fs::read_dir(from).expect("the kernel build directory").flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("a file type");
        if kind.is_symlink() {
            let target = std::fs::canonicalize(&src).expect("a link that resolves");
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst).expect("a link");
        } else if kind.is_dir() {
            copy_kdir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("a copy");
        }
    }
}

/// Rewrites `file` with `edit` applied to each line.
fn edit_lines(file: &Path, edit: impl Fn(&str) -> Option<String>) {
    let text = std::fs::read_to_string(file).expect("a config file");
    let out: String = text.lines().filter_map(&edit).map(|l| l + "\n").collect();
    assert_ne!(text, out, "{} did not change", file.display());
    std::fs::write(file, out).expect("the config file rewritten");
}

#[test]
fn a_kgraft_engine_module_builds_for_a_kernel_without_the_livepatch_core() {
    let Some(kdir) = installed_kdir() else { return };
    // The installed headers as a kernel configured without CONFIG_LIVEPATCH would have them:
    // `struct klp_*` and the core's functions are gone from the headers.
    let nolp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kdir-without-livepatch");
    let _ = std::fs::remove_dir_all(&nolp);
    copy_kdir(&std::fs::canonicalize(&kdir).expect("the kernel build directory"), &nolp);
    edit_lines(&nolp.join("include/generated/autoconf.h"), |l| {
        (l != "#define CONFIG_LIVEPATCH 1").then(|| l.to_owned())
    });
    edit_lines(&nolp.join("include/config/auto.conf"), |l| (l != "CONFIG_LIVEPATCH=y").then(|| l.to_owned()));
    edit_lines(&nolp.join(".config"), |l| {
        Some(if l == "CONFIG_LIVEPATCH=y" { "# CONFIG_LIVEPATCH is not set".to_owned() } else { l.to_owned() })
    });

    // Shadow data, callbacks and a vmlinux function: what a module could take from the core.
    let src = r#"
patch no_core {
    description: "A patch that needs nothing of the livepatch core",
    engine: "kgraft",
}
extern { fn seq_printf(m: *mut seq_file, fmt: *const c_char, ...); }
shadow seq_file { shows: u64 = 0, }
replace fn cmdline_proc_show(m: *mut seq_file, _v: *mut c_void) -> c_int {
    *shadow!(m.shows) += 1;
    seq_printf(m, c"kgraft %llu\n".as_ptr(), *shadow!(m.shows));
    0
}
on post_unpatch { shadow_free_all!(seq_file.shows); }
"#;
    let nolp_arg = nolp.to_str().expect("UTF-8 path");
    let out = kgraftc(&["build", "--target", "linux", "--kdir", nolp_arg, "-o", "no_core.ko"], src, "no_core.kgp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let ko = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-checks/no_core.ko");
    let data = std::fs::read(&ko).expect("the module");
    let file = object::File::parse(&*data).expect("an ELF module");
    use object::{Object, ObjectSection, ObjectSymbol};
    let from_core: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .filter(|n| n.starts_with("klp_"))
        .collect();
    assert!(from_core.is_empty(), "the module calls the livepatch core: {from_core:?}");
    let modinfo = file.section_by_name(".modinfo").and_then(|s| s.data().ok()).expect("a .modinfo section");
    let tags: Vec<&[u8]> = modinfo.split(|b| *b == 0).collect();
    assert!(tags.contains(&&b"kgraft=engine"[..]), "{:?}", String::from_utf8_lossy(modinfo));
    assert!(!tags.iter().any(|t| t.starts_with(b"livepatch=")), "{:?}", String::from_utf8_lossy(modinfo));
}
