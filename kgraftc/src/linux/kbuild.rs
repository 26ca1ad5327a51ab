//! The link through the kernel's own kbuild, and the `modinfo` check of the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{CFile, Error, run, write_if_changed};

/// A C file compiled into every patch module: it asserts, against the target kernel's own
/// headers, the layouts that `kgraft-rt`'s kernel host assumes. A kernel whose livepatch
/// structures differ fails here, at build time.
const LAYOUT_C: &str = r#"// SPDX-License-Identifier: GPL-2.0-only
// Written by kgraftc: checks the livepatch layouts the Rust runtime assumes.
#include <linux/livepatch.h>
#include <linux/slab.h>
#include <linux/build_bug.h>

#define KGRAFT_LAYOUT(cond) static_assert(cond, "kgraft: livepatch layout differs: " #cond)

KGRAFT_LAYOUT(sizeof(struct klp_func) == 152);
KGRAFT_LAYOUT(offsetof(struct klp_func, old_name) == 0);
KGRAFT_LAYOUT(offsetof(struct klp_func, new_func) == 8);
KGRAFT_LAYOUT(offsetof(struct klp_func, old_sympos) == 16);
KGRAFT_LAYOUT(sizeof(struct klp_callbacks) == 40);
KGRAFT_LAYOUT(offsetof(struct klp_callbacks, pre_patch) == 0);
KGRAFT_LAYOUT(offsetof(struct klp_callbacks, post_patch) == 8);
KGRAFT_LAYOUT(offsetof(struct klp_callbacks, pre_unpatch) == 16);
KGRAFT_LAYOUT(offsetof(struct klp_callbacks, post_unpatch) == 24);
KGRAFT_LAYOUT(sizeof(struct klp_object) == 168);
KGRAFT_LAYOUT(offsetof(struct klp_object, name) == 0);
KGRAFT_LAYOUT(offsetof(struct klp_object, funcs) == 8);
KGRAFT_LAYOUT(offsetof(struct klp_object, callbacks) == 16);
KGRAFT_LAYOUT(offsetof(struct klp_object, mod) == 152);
KGRAFT_LAYOUT(offsetof(struct module, state) == 0);
KGRAFT_LAYOUT(sizeof(((struct module *)0)->state) == 4);
KGRAFT_LAYOUT(MODULE_STATE_LIVE == 0 && MODULE_STATE_COMING == 1 && MODULE_STATE_GOING == 2 && MODULE_STATE_UNFORMED == 3);
KGRAFT_LAYOUT(sizeof(struct klp_patch) == 200);
KGRAFT_LAYOUT(offsetof(struct klp_patch, mod) == 0);
KGRAFT_LAYOUT(offsetof(struct klp_patch, objs) == 8);
KGRAFT_LAYOUT(offsetof(struct klp_patch, states) == 16);
KGRAFT_LAYOUT(offsetof(struct klp_patch, replace) == 24);
KGRAFT_LAYOUT(sizeof(struct klp_state) == 24);
KGRAFT_LAYOUT(offsetof(struct klp_state, id) == 0 && sizeof(((struct klp_state *)0)->id) == 8);
KGRAFT_LAYOUT(offsetof(struct klp_state, version) == 8 && sizeof(((struct klp_state *)0)->version) == 4);
KGRAFT_LAYOUT(offsetof(struct klp_state, data) == 16);
KGRAFT_LAYOUT(sizeof(struct pt_regs) == 168);
KGRAFT_LAYOUT(offsetof(struct pt_regs, bp) == 32 && offsetof(struct pt_regs, bx) == 40);
KGRAFT_LAYOUT(offsetof(struct pt_regs, r10) == 56 && offsetof(struct pt_regs, r9) == 64 && offsetof(struct pt_regs, r8) == 72);
KGRAFT_LAYOUT(offsetof(struct pt_regs, cx) == 88 && offsetof(struct pt_regs, dx) == 96);
KGRAFT_LAYOUT(offsetof(struct pt_regs, si) == 104 && offsetof(struct pt_regs, di) == 112);
KGRAFT_LAYOUT((GFP_KERNEL | __GFP_ZERO) == 0xdc0);
KGRAFT_LAYOUT(GFP_ATOMIC == 0xa20);
"#;

/// How the kgraft engine's C half is compiled into a module.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KgraftEngine {
    /// Whether the module is marked `livepatch=Y`, so that the loader applies its vmlinux
    /// livepatch relocations (the patch uses symbols vmlinux does not export).
    pub(crate) livepatch_info: bool,
}

/// Links the module `name` from the object already written to `build_dir` (and the patch's
/// C file, compiled here) and returns the `.ko` with kbuild's standard error (gcc's warnings);
/// `unresolved` lets modpost pass symbols that become livepatch relocations.
pub(crate) fn link(
    name: &str,
    build_dir: &Path,
    kdir: &Path,
    unresolved: bool,
    c: Option<&CFile<'_>>,
    kgraft: Option<KgraftEngine>,
) -> Result<(PathBuf, String), Error> {
    let mut makefile = format!(
        "# Written by kgraftc: the patch module `{name}`.\nobj-m := {name}.o\n{name}-y := {name}_rust.o kgraft_layout.o\n"
    );
    let engine_path = build_dir.join("kgraft_engine.c");
    if let Some(engine) = kgraft {
        // The engine's own functions must not be traced: its reality check runs inside ftrace.
        makefile += &format!("{name}-y += kgraft_engine.o\nCFLAGS_REMOVE_kgraft_engine.o = $(CC_FLAGS_FTRACE)\n");
        if engine.livepatch_info {
            makefile += "CFLAGS_kgraft_engine.o := -DKGRAFT_LIVEPATCH_INFO\n";
        }
        write_if_changed(&engine_path, kgraft_rt::csrc::KERNEL_ENGINE.as_bytes())?;
    } else {
        let _ = std::fs::remove_file(&engine_path);
    }
    let c_path = build_dir.join(format!("{name}_c.c"));
    match c {
        Some(c) => {
            makefile = makefile.replace("kgraft_layout.o\n", &format!("kgraft_layout.o {name}_c.o\n"));
            // gcc's positions in the `.kgp` file: columns in bytes, one line per message.
            let mut flags = crate::cbuild::DIAGNOSTIC_FLAGS.join(" ");
            if let Some(ksrc) = c.ksrc {
                let ksrc = std::path::absolute(ksrc).unwrap_or_else(|_| ksrc.to_path_buf());
                flags += &format!(" -I{}", ksrc.display().to_string().replace('$', "$$"));
            }
            makefile += &format!("CFLAGS_{name}_c.o := {flags}\n");
            write_if_changed(&c_path, c.text.as_bytes())?;
        }
        None => {
            let _ = std::fs::remove_file(&c_path);
        }
    }
    write_if_changed(&build_dir.join("Makefile"), makefile.as_bytes())?;
    write_if_changed(&build_dir.join("kgraft_layout.c"), LAYOUT_C.as_bytes())?;
    // kbuild links a prebuilt object from `<obj>_shipped`; modpost also wants its command file.
    write_if_changed(
        &build_dir.join(format!(".{name}_rust.o.cmd")),
        format!("cmd_{name}_rust.o := prebuilt by kgraftc\n").as_bytes(),
    )?;
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(kdir).arg(format!("M={}", build_dir.display())).arg("modules");
    if unresolved {
        // Symbols the kernel does not export are not modpost's to resolve: `klp::convert`
        // turns them into livepatch relocations after the link.
        cmd.arg("KBUILD_MODPOST_WARN=1");
    }
    cmd.env_remove("MAKEFLAGS").env_remove("MFLAGS");
    let help = "kbuild needs make, gcc and the kernel's headers (Debian: apt-get install make gcc linux-headers-amd64)";
    if c.is_none() {
        run(&mut cmd, "kbuild (make modules)").map_err(|e| Error { help: Some(help.into()), ..e })?;
        return Ok((build_dir.join(format!("{name}.ko")), String::new()));
    }
    // gcc's messages in plain ASCII, as `cbuild` parses them (kbuild unexports LC_ALL).
    cmd.env("LC_ALL", "C").env("LC_CTYPE", "C").env("LC_MESSAGES", "C").env("LANG", "C");
    let out = cmd.output().map_err(|e| Error::new(format!("cannot run kbuild (make modules): {e}")).help(help))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::new(format!("kbuild (make modules) failed ({})", out.status))
            .detail(format!("{stdout}{stderr}"))
            .help(help));
    }
    Ok((build_dir.join(format!("{name}.ko")), stderr))
}

/// Checks the module's `.modinfo` with `modinfo`: name, `livepatch=Y` (with the kgraft engine,
/// only when it has livepatch relocations), GPL, the release.
pub(crate) fn verify(ko: &Path, name: &str, release: &str, kgraft: Option<KgraftEngine>) -> Result<(), Error> {
    let field = |f: &str| -> Result<String, Error> {
        let out = run(Command::new("modinfo").arg("-F").arg(f).arg(ko), "modinfo (from kmod)")?;
        Ok(out.trim().to_string())
    };
    let checks = [
        ("name", field("name")?, name.to_string()),
        // A module that applies itself with the kgraft engine is no livepatch module.
        (
            "livepatch",
            field("livepatch")?,
            if kgraft.is_some_and(|k| !k.livepatch_info) { "" } else { "Y" }.to_string(),
        ),
        ("license", field("license")?, "GPL".to_string()),
    ];
    for (what, got, want) in checks {
        if got != want {
            return Err(Error::new(format!("modinfo of {} shows {what} `{got}`, expected `{want}`", ko.display())));
        }
    }
    let vermagic = field("vermagic")?;
    if vermagic.split(' ').next() != Some(release) {
        return Err(Error::new(format!(
            "modinfo of {} shows vermagic `{vermagic}`, expected release {release}",
            ko.display()
        )));
    }
    Ok(())
}
