//! One translation unit, compiled as the target kernel compiles it, before and after the fix.
//!
//! The unit is compiled alone through the kernel's own kbuild (`make -C KDIR M=DIR file.o`),
//! with the target's configuration and flags, plus `-ffunction-sections -fdata-sections` so
//! every function and datum has a section of its own. What the kernel's Makefile of the unit's
//! directory adds is kept: the object the unit is linked into (its `KBUILD_MODNAME`, and
//! `-DMODULE` when that object is a module) and the directory's compiler flags. The unit's own
//! directory is on the include path, so its local headers are found, and `__FILE__` is the
//! unit's path in the tree, as in the kernel's build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a unit's code lives in the running kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Home {
    /// Built into vmlinux.
    Vmlinux,
    /// Built into the module of this name (as the kernel spells it, `_` for `-`).
    Module(String),
    /// Not built in this configuration: the option that would build it is not set.
    NotBuilt(String),
}

/// A translation unit of the kernel and how kbuild builds it.
#[derive(Clone, Debug)]
pub(crate) struct Unit {
    /// Its path in the source tree (`fs/proc/cmdline.c`).
    pub(crate) rel: String,
    /// Its directory (`fs/proc`).
    pub(crate) dir: String,
    /// Its name without `.c` (`cmdline`).
    pub(crate) stem: String,
    /// The object it is linked into, when that is not its own (`proc` for `proc-y += cmdline.o`).
    pub(crate) composite: Option<String>,
    /// vmlinux or a module.
    pub(crate) home: Home,
    /// The lines of the directory's Makefile that set its compiler flags.
    flags: Vec<String>,
}

impl Unit {
    /// The name kbuild gives its `KBUILD_MODNAME`.
    pub(crate) fn modname(&self) -> String {
        self.composite.clone().unwrap_or_else(|| self.stem.clone()).replace('-', "_")
    }

    /// What the patch language's lowering puts before a replaced function's name to name its C
    /// body (`__kgraft_c_` in vmlinux, `__kgraft_c_MODULE__` in a module).
    pub(crate) fn c_body_prefix(&self) -> String {
        match &self.home {
            Home::Module(m) => format!("__kgraft_c_{m}__"),
            _ => "__kgraft_c_".to_string(),
        }
    }

    /// The object name the patch language uses for it.
    pub(crate) fn object(&self) -> &str {
        match &self.home {
            Home::Vmlinux => "vmlinux",
            Home::Module(m) | Home::NotBuilt(m) => m,
        }
    }
}

/// The logical lines of a Makefile: continuations joined, comments dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        if let Some(stripped) = line.strip_suffix('\\') {
            cur.push_str(stripped);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits `lhs op rhs` of a Makefile assignment.
fn assignment(line: &str) -> Option<(&str, &str)> {
    let at = line.find('=')?;
    let lhs = line[..at].trim_end_matches([':', '+', '?']).trim();
    (!lhs.is_empty() && !lhs.contains(' ')).then(|| (lhs, line[at + 1..].trim()))
}

/// The config option of `obj-$(CONFIG_X)` (None for `obj-y`), when `lhs` is an `obj-` list.
fn obj_option(lhs: &str) -> Option<Option<&str>> {
    let rest = lhs.strip_prefix("obj-").or_else(|| lhs.strip_prefix("lib-"))?;
    match rest {
        "y" => Some(None),
        _ => rest.strip_prefix("$(").and_then(|r| r.strip_suffix(')')).map(Some),
    }
}

/// Describes the unit `rel` from its directory's Makefile and the kernel's configuration.
pub(crate) fn describe(makefile: Option<&str>, auto_conf: &str, rel: &str) -> Unit {
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    let stem = file.trim_end_matches(".c").to_string();
    let object = format!("{stem}.o");
    let lines = makefile.map(logical_lines).unwrap_or_default();
    let lists: Vec<(&str, Vec<&str>)> =
        lines.iter().filter_map(|l| assignment(l)).map(|(lhs, rhs)| (lhs, rhs.split_whitespace().collect())).collect();
    let config = |option: Option<&str>| match option {
        None => Some('y'),
        Some(opt) => auto_conf.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k == opt).then(|| v.chars().next()).flatten()
        }),
    };
    // The list naming the unit's object: `obj-...` directly, or a composite's `NAME-y`.
    let mut composite = None;
    let mut option = None;
    for (lhs, words) in &lists {
        if !words.contains(&object.as_str()) {
            continue;
        }
        if let Some(opt) = obj_option(lhs) {
            option = Some(opt);
            break;
        }
        let name = lhs.rsplit_once('-').map_or(*lhs, |(n, _)| n);
        if name != "ccflags" && name != "subdir" && !name.is_empty() {
            composite = Some(name.to_string());
            let parent = format!("{name}.o");
            option = lists
                .iter()
                .find(|(l, w)| obj_option(l).is_some() && w.contains(&parent.as_str()))
                .and_then(|(l, _)| obj_option(l));
            break;
        }
    }
    let home = match (option, option.and_then(config)) {
        (_, Some('m')) => Home::Module(composite.clone().unwrap_or_else(|| stem.clone()).replace('-', "_")),
        (Some(Some(opt)), None) => Home::NotBuilt(opt.to_string()),
        _ => Home::Vmlinux,
    };
    let flags = lines
        .iter()
        .filter(|l| {
            assignment(l).is_some_and(|(lhs, _)| {
                lhs.starts_with("ccflags-")
                    || lhs == format!("CFLAGS_{object}")
                    || lhs == format!("CFLAGS_REMOVE_{object}")
            })
        })
        .cloned()
        .collect();
    Unit { rel: rel.to_string(), dir: dir.to_string(), stem, composite, home, flags }
}

/// `text` of a Makefile with kbuild's `$(src)` and `$(obj)` as `here` (the unit's directory) and
/// `$(srctree)` as `root`, both already quoted for the Makefile.
fn at_paths(text: &str, here: &str, root: &str) -> String {
    text.replace("$(srctree)/$(src)", here).replace("$(src)", here).replace("$(obj)", here).replace("$(srctree)", root)
}

/// The flags a patch's C unit named `rel` (a `.c` file of the source tree at `src_root`) needs
/// to find what its file's own includes find: the file's directory, and the `-I`, `-D` and
/// `-include` flags its Makefile gives it (`ccflags-y`, `ccflags-$(CONFIG_X)` of a set option,
/// `CFLAGS_FILE.o`), with kbuild's `$(src)` and `$(srctree)` made paths of the tree. Empty when
/// the tree has no such file.
pub(crate) fn unit_cflags(src_root: &Path, auto_conf: &str, rel: &str) -> Vec<String> {
    if !rel.ends_with(".c") || rel.split('/').any(|part| part == "..") || !src_root.join(rel).is_file() {
        return Vec::new();
    }
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
    // Quoted for the Makefile the flags go into (a path it cannot carry gives no flags).
    let (Some(here), Some(root)) = (
        crate::linux::kbuild::make_word(&src_root.join(dir).display().to_string()),
        crate::linux::kbuild::make_word(&src_root.display().to_string()),
    ) else {
        return Vec::new();
    };
    let makefile = std::fs::read_to_string(src_root.join(dir).join("Makefile")).ok();
    let unit = describe(makefile.as_deref(), auto_conf, rel);
    let set = |option: &str| {
        auto_conf.lines().any(|l| l.split_once('=').is_some_and(|(k, v)| k == option && (v == "y" || v == "m")))
    };
    let mut flags = vec![format!("-I{here}")];
    for line in &unit.flags {
        let Some((lhs, rhs)) = assignment(line) else { continue };
        let applies = match lhs.strip_prefix("ccflags-") {
            Some("y") => true,
            Some(rest) => rest.strip_prefix("$(").and_then(|r| r.strip_suffix(')')).is_some_and(set),
            None => lhs.starts_with("CFLAGS_") && !lhs.starts_with("CFLAGS_REMOVE_"),
        };
        if !applies {
            continue;
        }
        // Split first: a quoted path may hold spaces.
        let words: Vec<String> = rhs.split_whitespace().map(|w| at_paths(w, &here, &root)).collect();
        let mut words = words.iter().map(String::as_str);
        while let Some(word) = words.next() {
            match word {
                "-I" | "-include" => {
                    if let Some(arg) = words.next() {
                        flags.push(if word == "-I" { format!("-I{arg}") } else { format!("-include {arg}") });
                    }
                }
                w if (w.starts_with("-I") || w.starts_with("-D")) && !w.contains("$(") && !w.contains("$$(") => {
                    flags.push(w.to_owned())
                }
                _ => {}
            }
        }
    }
    flags
}

/// Compiles `text` as the unit through kbuild in `work` (a directory of its own), `first`
/// (headers of the kernel's include directories, by path, with their text) read before it, with
/// `headers` (name, text) beside it, which take the place of the directory's headers of those
/// names; returns the object.
pub(crate) fn compile(
    unit: &Unit,
    src_root: &Path,
    kdir: &Path,
    work: &Path,
    text: &str,
    headers: &[(String, String)],
    first: &[(String, String)],
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let src_dir = src_root.join(&unit.dir);
    let mut kbuild = format!("# Written by kgraftc from-diff: {} as the kernel builds it.\n", unit.rel);
    let object = format!("{}.o", unit.stem);
    let list = if matches!(unit.home, Home::Module(_)) { "obj-m" } else { "obj-y" };
    match &unit.composite {
        Some(c) => kbuild += &format!("{list} := {c}.o\n{c}-y := {object}\n"),
        None => kbuild += &format!("{list} := {object}\n"),
    }
    let quote = |p: &Path| crate::linux::kbuild::make_path(p).map_err(|e| e.to_string());
    let (here, root, work_q) = (quote(&src_dir)?, quote(src_root)?, quote(work)?);
    for line in &unit.flags {
        kbuild += &at_paths(line, &here, &root);
        kbuild.push('\n');
    }
    // `-I ROOT/include/trace`: a unit that defines its tracepoints has `define_trace.h` include
    // `TRACE_INCLUDE_PATH`, a path relative to include/trace of the tree, not of the headers.
    let dir = crate::linux::kbuild::make_word(&unit.dir)
        .ok_or_else(|| format!("{:?} is not a path kbuild can take", unit.dir))?;
    kbuild += &format!(
        "ccflags-y += -I{work_q} -I{here} -I{root}/include/trace -ffunction-sections -fdata-sections \
         -fmacro-prefix-map={work_q}/={dir}/\n"
    );
    // Headers of the kernel's include directories, as the fix changes them: read first.
    for (rel, text) in first {
        let path = work.join("first").join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        write(&path, text)?;
        kbuild += &format!("ccflags-y += -include {}\n", quote(&path)?);
    }
    write(&work.join("Kbuild"), &kbuild)?;
    write(&work.join(format!("{}.c", unit.stem)), text)?;
    for (name, text) in headers {
        write(&work.join(name), text)?;
    }
    make_object(kdir, work, &object).map_err(|e| format!("kbuild could not compile {}:\n{e}", unit.rel))?;
    Ok(work.join(object))
}

/// Builds the object `object` of the kbuild directory `work` with the kernel's `make`; the
/// error is kbuild's output.
pub(crate) fn make_object(kdir: &Path, work: &Path, object: &str) -> Result<(), String> {
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(kdir)
        .arg(format!("M={}", work.display()))
        .arg(object)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env("LC_ALL", "C");
    let out = crate::process::output(&mut make)
        .map_err(|e| format!("cannot run make: {e} (Debian: apt-get install make gcc)"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAKEFILE: &str = "\
# SPDX
obj-y   += proc.o
proc-y\t+= cmdline.o \\
\t   consoles.o
obj-$(CONFIG_TEST_FOO) += test_foo.o
obj-$(CONFIG_BAR) += bar-drv.o
bar-drv-objs := bar_main.o
CFLAGS_cmdline.o := -DX=1
ccflags-y += -I$(src)
";

    #[test]
    fn a_unit_is_placed_by_its_makefile_and_the_configuration() {
        let conf = "CONFIG_TEST_FOO=m\nCONFIG_BAR=m\n";
        let u = describe(Some(MAKEFILE), conf, "fs/proc/cmdline.c");
        assert_eq!((u.composite.as_deref(), &u.home, u.modname()), (Some("proc"), &Home::Vmlinux, "proc".into()));
        assert_eq!(u.flags, vec!["CFLAGS_cmdline.o := -DX=1".to_string(), "ccflags-y += -I$(src)".into()]);
        let u = describe(Some(MAKEFILE), conf, "fs/proc/consoles.c");
        assert_eq!(u.composite.as_deref(), Some("proc"));
        let u = describe(Some(MAKEFILE), conf, "fs/proc/test_foo.c");
        assert_eq!((u.composite, u.home), (None, Home::Module("test_foo".into())));
        let u = describe(Some(MAKEFILE), conf, "fs/proc/bar_main.c");
        assert_eq!(u.home, Home::Module("bar_drv".into()));
        let u = describe(Some(MAKEFILE), "", "fs/proc/test_foo.c");
        assert_eq!(u.home, Home::NotBuilt("CONFIG_TEST_FOO".into()), "an option that is not set: not built");
    }

    #[test]
    fn a_patch_unit_gets_the_include_flags_its_makefile_gives_its_file() {
        let root = std::env::temp_dir().join(format!("kgraft-unit-cflags-{}", std::process::id()));
        let dir = root.join("fs/xfs");
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::write(
            dir.join("Makefile"),
            "ccflags-y += -I $(srctree)/$(src)/libxfs -Wno-foo\nccflags-$(CONFIG_XFS_DEBUG) += -DDEBUG=1\n\
             ccflags-$(CONFIG_NOPE) += -DNOPE\nCFLAGS_xfs_stats.o := -DSTATS\nCFLAGS_other.o := -DOTHER\n\
             obj-$(CONFIG_XFS_FS) += xfs.o\nxfs-y += xfs_stats.o\n",
        )
        .expect("a Makefile");
        std::fs::write(dir.join("xfs_stats.c"), "").expect("a unit");
        let flags = unit_cflags(&root, "CONFIG_XFS_FS=m\nCONFIG_XFS_DEBUG=y\n", "fs/xfs/xfs_stats.c");
        let here = format!("'{}'", dir.display());
        assert_eq!(flags, vec![format!("-I{here}"), format!("-I{here}/libxfs"), "-DDEBUG=1".into(), "-DSTATS".into()]);
        assert!(unit_cflags(&root, "", "fs/xfs/missing.c").is_empty(), "a file the tree lacks: no flags");
        assert!(unit_cflags(&root, "", "fs/xfs/../xfs/xfs_stats.c").is_empty(), "no way out of the tree");
        std::fs::remove_dir_all(&root).expect("cleaned up");
    }
}
