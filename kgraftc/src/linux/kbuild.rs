//! The link through the kernel's own kbuild, and the `modinfo` check of the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{CFile, Error, run, write_if_changed};

/// `path` as one word of a kbuild Makefile's flags, which make expands and a shell then reads:
/// in single quotes (the shell takes it as it is), with make's `$` and `#` escaped. `None` when
/// it holds what neither can carry safely: a single quote or a control character.
pub(crate) fn make_word(path: &str) -> Option<String> {
    if path.contains('\'') || path.chars().any(char::is_control) {
        return None;
    }
    Some(format!("'{}'", path.replace('$', "$$").replace('#', "\\#")))
}

/// [`make_word`], or the error that names the path.
pub(crate) fn make_path(path: &Path) -> Result<String, Error> {
    let text = path.display().to_string();
    make_word(&text).ok_or_else(|| {
        Error::new(format!(
            "the path {text:?} holds a quote or a control character, which kbuild's make and shell cannot be \
             given safely: use a directory without them"
        ))
    })
}

/// The C file compiled into every patch module: each fact of [`kgraft_rt::layout::FACTS`] (the
/// layouts and constants `kgraft-rt`'s kernel glue assumes) as a `static_assert` against the
/// target kernel's own headers. A kernel that disagrees fails here, at build time, and gcc's
/// message names the fact.
///
/// A module of kgraft's own engine uses none of the livepatch core's structures, and must also
/// build for a kernel without the core: for it (`kgraft`), the facts about `klp_*` structures
/// hold only where the headers define them (`CONFIG_LIVEPATCH`).
pub(crate) fn layout_c(kgraft: bool) -> String {
    layout_c_for(kgraft_rt::layout::FACTS, kgraft)
}

/// The layout file for `facts`.
fn layout_c_for(facts: &[kgraft_rt::layout::Fact], kgraft: bool) -> String {
    let mut c = String::from(
        "// SPDX-License-Identifier: GPL-2.0-only\n\
         // Written by kgraftc from kgraft_rt::layout: the kernel layouts the Rust runtime assumes.\n\
         #include <linux/livepatch.h>\n\
         #include <linux/module.h>\n\
         #include <linux/slab.h>\n\
         #include <linux/build_bug.h>\n\n",
    );
    let (core, rest): (Vec<_>, Vec<_>) = facts.iter().partition(|f| kgraft && f.to_string().contains("struct klp_"));
    let assert = |fact: &kgraft_rt::layout::Fact| {
        format!(
            "static_assert({fact}, \"kgraft: kgraft_rt::layout assumes {fact}, and these kernel headers disagree\");\n"
        )
    };
    for fact in rest {
        c += &assert(fact);
    }
    // The constants the runtime reads from the target instead of assuming them.
    for v in kgraft_rt::layout::TARGET_VALUES {
        c += &format!("const unsigned int {} = ({});\n", v.symbol, v.c);
    }
    for helper in kgraft_rt::layout::TARGET_HELPERS {
        c += helper.c;
        c.push('\n');
    }
    if !core.is_empty() {
        c += "#if IS_ENABLED(CONFIG_LIVEPATCH)\n";
        for fact in core {
            c += &assert(fact);
        }
        c += "#endif\n";
    }
    c
}

/// The kgraft engine's C half is compiled into the module: it applies the patch itself, and
/// the module is no livepatch module (no `livepatch=Y`).
#[derive(Clone, Debug)]
pub(crate) struct KgraftEngine {
    /// The C defines that tell `engine.c` what the target offers (from its BTF), e.g.
    /// `KG_DIRECT_MULTI`.
    pub(crate) defines: Vec<String>,
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
    kgraft: Option<&KgraftEngine>,
) -> Result<(PathBuf, String), Error> {
    let mut makefile = format!(
        "# Written by kgraftc: the patch module `{name}`.\nobj-m := {name}.o\n{name}-y := {name}_rust.o kgraft_layout.o\n"
    );
    let engine_path = build_dir.join("kgraft_engine.c");
    if let Some(engine) = kgraft {
        // The engine's own functions must not be traced: its reality check runs inside ftrace.
        makefile += &format!("{name}-y += kgraft_engine.o\nCFLAGS_REMOVE_kgraft_engine.o = $(CC_FLAGS_FTRACE)\n");
        if !engine.defines.is_empty() {
            let flags: Vec<String> = engine.defines.iter().map(|d| format!("-D{d}")).collect();
            makefile += &format!("CFLAGS_kgraft_engine.o := {}\n", flags.join(" "));
        }
        write_if_changed(&engine_path, kgraft_rt::csrc::KERNEL_ENGINE.as_bytes())?;
        write_if_changed(&build_dir.join(super::contract::FILE), super::contract::header().as_bytes())?;
    } else {
        let _ = std::fs::remove_file(&engine_path);
        let _ = std::fs::remove_file(build_dir.join(super::contract::FILE));
    }
    // One object per C unit; files of units a previous version of the patch had go.
    let mut c_files = Vec::new();
    if let Some(c) = c {
        // gcc's positions in the `.kgp` file: columns in bytes, one line per message.
        let mut flags = crate::cbuild::DIAGNOSTIC_FLAGS.join(" ");
        if let Some(ksrc) = c.ksrc {
            let ksrc = std::path::absolute(ksrc).unwrap_or_else(|_| ksrc.to_path_buf());
            flags += &format!(" -I{}", make_path(&ksrc)?);
        }
        let auto_conf = std::fs::read_to_string(kdir.join("include/config/auto.conf")).unwrap_or_default();
        for (index, unit) in c.units.iter().enumerate() {
            let stem = crate::cbuild::file_stem(name, index);
            // A unit named after a file of the source tree is compiled as the kernel compiles
            // that file: with its directory and its Makefile's include flags.
            let mut unit_flags = flags.clone();
            if let (Some(ksrc), Some(rel)) = (c.ksrc, unit.name.as_deref()) {
                let ksrc = std::path::absolute(ksrc).unwrap_or_else(|_| ksrc.to_path_buf());
                for flag in crate::fromdiff::tu::unit_cflags(&ksrc, &auto_conf, rel) {
                    unit_flags += &format!(" {flag}");
                }
            }
            makefile += &format!("{name}-y += {stem}.o\nCFLAGS_{stem}.o := {unit_flags}\n");
            write_if_changed(&build_dir.join(format!("{stem}.c")), unit.text.as_bytes())?;
            c_files.push(format!("{stem}.c"));
        }
    }
    crate::cbuild::remove_stale(build_dir, name, &c_files);
    write_if_changed(&build_dir.join("Makefile"), makefile.as_bytes())?;
    write_if_changed(&build_dir.join("kgraft_layout.c"), layout_c(kgraft.is_some()).as_bytes())?;
    // kbuild links a prebuilt object from `<obj>_shipped`; modpost also wants its command file.
    write_if_changed(
        &build_dir.join(format!(".{name}_rust.o.cmd")),
        format!("cmd_{name}_rust.o := prebuilt by kgraftc\n").as_bytes(),
    )?;
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(kdir).arg(format!("M={}", build_dir.display())).arg("modules");
    if unresolved {
        // Symbols the kernel does not export are not modpost's to resolve: after the link,
        // `klp::convert` turns them into livepatch relocations, or `relocs::rewrite` into the
        // kgraft engine's own table.
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
    let out = crate::process::output(&mut cmd)
        .map_err(|e| Error::new(format!("cannot run kbuild (make modules): {e}")).help(help))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::new(format!("kbuild (make modules) failed ({})", out.status))
            .detail(format!("{stdout}{stderr}"))
            .help(help));
    }
    Ok((build_dir.join(format!("{name}.ko")), stderr))
}

/// Checks the module's `.modinfo` with `modinfo`: name, `livepatch=Y` (none with the kgraft
/// engine), GPL, the release.
pub(crate) fn verify(ko: &Path, name: &str, release: &str, kgraft: Option<&KgraftEngine>) -> Result<(), Error> {
    let field = |f: &str| -> Result<String, Error> {
        let out = run(Command::new("modinfo").arg("-F").arg(f).arg(ko), "modinfo (from kmod)")?;
        Ok(out.trim().to_string())
    };
    let checks = [
        ("name", field("name")?, name.to_string()),
        // A module that applies itself with the kgraft engine is no livepatch module.
        ("livepatch", field("livepatch")?, if kgraft.is_some() { "" } else { "Y" }.to_string()),
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use kgraft_rt::layout::{FACTS, Fact};

    /// The build directory of the one kernel installed with its headers, if there is one.
    fn installed_kdir() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
            .ok()?
            .flatten()
            .map(|e| e.path().join("build"))
            .filter(|p| p.join("Makefile").is_file())
            .collect();
        if found.len() != 1 {
            assert!(std::env::var_os("CI").is_none(), "CI has exactly one kernel installed, found {found:?}");
            eprintln!("no single installed kernel with its headers: the layout file is not compiled");
            return None;
        }
        found.pop()
    }

    /// Compiles `c` as a module's only file through the kernel's kbuild; returns kbuild's
    /// output when it fails.
    fn kbuild(kdir: &Path, tag: &str, c: &str) -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("kgraft-layout-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::write(dir.join("Makefile"), "obj-m := kgraft_layout.o\n").expect("a temporary file");
        std::fs::write(dir.join("kgraft_layout.c"), c).expect("a temporary file");
        let out = Command::new("make")
            .arg("-C")
            .arg(kdir)
            .arg(format!("M={}", dir.display()))
            .arg("kgraft_layout.o")
            .env_remove("MAKEFLAGS")
            .env("LC_ALL", "C")
            .output()
            .expect("make runs");
        let _ = std::fs::remove_dir_all(&dir);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    #[test]
    fn the_installed_kernel_agrees_with_the_layout_and_a_wrong_number_fails_with_its_fact() {
        let Some(kdir) = installed_kdir() else { return };
        kbuild(&kdir, "right", &super::layout_c(false)).expect("the installed kernel has kgraft_rt::layout's layouts");

        // One number off: klp_object's `mod`, which callbacks read among the core's own fields.
        let wrong: Vec<Fact> = FACTS
            .iter()
            .map(|f| match *f {
                Fact::Offset { ty: "struct klp_object", member: "mod", value } => {
                    Fact::Offset { ty: "struct klp_object", member: "mod", value: value + 8 }
                }
                other => other,
            })
            .collect();
        assert_ne!(wrong, FACTS, "the test changed a fact");
        let out =
            kbuild(&kdir, "wrong", &super::layout_c_for(&wrong, false)).expect_err("a wrong offset fails the build");
        assert!(
            out.contains(
                "kgraft: kgraft_rt::layout assumes offsetof(struct klp_object, mod) == 160, and these kernel \
                 headers disagree"
            ),
            "{out}"
        );
        assert_eq!(out.matches("error: static assertion failed").count(), 1, "only the wrong fact: {out}");
    }
}
