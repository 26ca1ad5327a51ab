//! The target kernel's source: a directory, or Debian's `linux-source-*.tar.xz` of which only
//! the directories the work needs are unpacked, once, into the cache.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel source tree whose files can be read by their path in the tree.
pub(crate) struct Tree {
    /// Where the tree's files are (for a tarball: the directory it is unpacked into).
    pub(crate) root: PathBuf,
    /// For a tarball: every file it holds (paths in the tree), and what was unpacked.
    tarball: Option<Tarball>,
}

struct Tarball {
    file: PathBuf,
    /// The top directory of its entries (`linux-source-6.1`).
    top: String,
    files: BTreeSet<String>,
}

impl Tree {
    /// Opens `path`: a source directory (it has a top-level `Makefile` and `kernel/`), or a
    /// `.tar.xz` of one, listed (and later unpacked) under `cache`.
    pub(crate) fn open(path: &Path, cache: &Path) -> Result<Tree, String> {
        if path.is_dir() {
            if !path.join("Makefile").is_file() || !path.join("kernel").is_dir() {
                return Err(format!(
                    "{} is not a kernel source tree (no Makefile and kernel/ at its top)",
                    path.display()
                ));
            }
            let root = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(Tree { root, tarball: None });
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !path.is_file() || !name.ends_with(".tar.xz") {
            return Err(format!(
                "{} is neither a kernel source directory nor a .tar.xz of one (Debian: /usr/src/linux-source-6.1.tar.xz \
                 from the package linux-source-6.1)",
                path.display()
            ));
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stamp =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        let key = format!("{}-{}-{stamp}", name.trim_end_matches(".tar.xz"), meta.len());
        let dir = cache.join("ksrc").join(key);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Two runs at once list and unpack one after the other.
        let _lock = crate::lock::take(&dir.join("lock"), &format!("on the source cache `{}`", dir.display()))?;
        let listing = dir.join("files");
        let text = match std::fs::read_to_string(&listing) {
            Ok(text) => text,
            Err(_) => {
                eprintln!("from-diff: listing {} (once; cached)", path.display());
                let out = crate::process::output(Command::new("tar").arg("-tJf").arg(path))
                    .map_err(|e| format!("cannot run tar (and xz) to read {}: {e}", path.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "tar cannot list {}: {}",
                        path.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let tmp = dir.join("files.tmp");
                std::fs::write(&tmp, &text)
                    .and_then(|()| std::fs::rename(&tmp, &listing))
                    .map_err(|e| e.to_string())?;
                text
            }
        };
        let top = text.lines().next().and_then(|l| l.split('/').next()).unwrap_or("").to_string();
        if top.is_empty() || top.contains("..") {
            return Err(format!("{} holds no source tree", path.display()));
        }
        let prefix = format!("{top}/");
        let files = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|l| !l.is_empty() && !l.ends_with('/'))
            .map(str::to_string)
            .collect();
        let tree =
            Tree { root: dir.join("tree").join(&top), tarball: Some(Tarball { file: path.to_path_buf(), top, files }) };
        if !tree.exists("Makefile") || !tree.exists("kernel/fork.c") {
            return Err(format!("{} holds no kernel source tree", path.display()));
        }
        Ok(tree)
    }

    /// Whether the tree is a directory given as such (not a tarball unpacked in part).
    pub(crate) fn is_directory(&self) -> bool {
        self.tarball.is_none()
    }

    /// Whether the tree has the file `rel`.
    pub(crate) fn exists(&self, rel: &str) -> bool {
        match &self.tarball {
            Some(t) => t.files.contains(rel),
            None => !rel.split('/').any(|c| c == "..") && self.root.join(rel).is_file(),
        }
    }

    /// The `.c` files of the directory `dir` (a path in the tree), not of its subdirectories.
    pub(crate) fn c_files_in(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        match &self.tarball {
            Some(t) => t
                .files
                .range(prefix.clone()..)
                .take_while(|f| f.starts_with(&prefix))
                .filter(|f| f.ends_with(".c") && !f[prefix.len()..].contains('/'))
                .cloned()
                .collect(),
            None => {
                let mut found: Vec<String> = std::fs::read_dir(self.root.join(dir))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.ends_with(".c"))
                    .map(|n| format!("{prefix}{n}"))
                    .collect();
                found.sort();
                found
            }
        }
    }

    /// Makes the directories `dirs` (paths in the tree, with their subdirectories) and the top
    /// `Makefile` readable under `root`: for a tarball, unpacks those not unpacked before.
    pub(crate) fn unpack(&self, dirs: &BTreeSet<String>) -> Result<(), String> {
        let Some(t) = &self.tarball else { return Ok(()) };
        let base = self.root.parent().ok_or("no cache directory")?;
        let marker = |d: &str| base.join(format!(".unpacked-{}", d.replace('/', "+")));
        let _lock = crate::lock::take(&base.join("lock"), &format!("on the source cache `{}`", base.display()))?;
        let missing: Vec<&String> = dirs.iter().filter(|d| !marker(d).exists()).collect();
        if missing.is_empty() && self.root.join("Makefile").is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        eprintln!(
            "from-diff: unpacking {} of {} (cached for next time)",
            missing.iter().map(|d| format!("{d}/")).collect::<Vec<_>>().join(", "),
            t.file.display()
        );
        // A directory's name extracts it with everything under it.
        let mut cmd = Command::new("tar");
        cmd.arg("-xJf").arg(&t.file).arg("-C").arg(base).arg(format!("{}/Makefile", t.top));
        // Only the outermost directories: tar counts a member for the first name that matches
        // it, and calls a name under another "not found".
        for d in missing.iter().filter(|d| !covered_by_another(d, &missing)) {
            cmd.arg(format!("{}/{d}", t.top));
        }
        let out = crate::process::output(&mut cmd)
            .map_err(|e| format!("cannot run tar to unpack {}: {e}", t.file.display()))?;
        if !out.status.success() {
            return Err(format!(
                "tar cannot unpack {}: {}",
                t.file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for d in missing {
            std::fs::write(marker(d), "").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Reads the file `rel` of the tree (unpacked first, for a tarball).
    pub(crate) fn read(&self, rel: &str) -> Result<String, String> {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("`{rel}` is not a path inside the source tree"));
        }
        let path = self.root.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {rel} of the kernel source: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{rel} of the kernel source is not UTF-8 text"))
    }

    /// The version its top `Makefile` gives (`6.1.192`).
    pub(crate) fn version(&self) -> Result<String, String> {
        let text = self.read("Makefile")?;
        makefile_version(&text).ok_or_else(|| "the source's Makefile names no VERSION, PATCHLEVEL and SUBLEVEL".into())
    }
}

/// The path in the tree that the directive `line` (`#include "../x/y.h"`) of a file in `dir`
/// names, when it is a quoted include.
pub(crate) fn quoted_include(dir: &str, line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("include")?;
    let name = rest.trim().strip_prefix('"')?.split('"').next()?;
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for piece in name.split('/') {
        match piece {
            ".." => {
                parts.pop()?;
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl Tree {
    /// The source of `path` (a directory or a tarball, see [`Tree::open`]) made ready for a
    /// build of the C `units` against `kdir`: it must be the version `kdir` was built from,
    /// and for a tarball each unit's own directory and the headers its C includes by a quoted
    /// path (`#include "kernel/module/internal.h"`, from the tree's top) are unpacked.
    pub(crate) fn for_units(
        path: &Path,
        cache: &Path,
        kdir: &Path,
        units: &[(Option<&str>, &str)],
    ) -> Result<Tree, String> {
        // A directory is taken as the include path it is (it may hold only the headers the C
        // needs); its version is checked where its Makefile gives one.
        let tree = if path.is_dir() {
            let root = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Tree { root, tarball: None }
        } else {
            Tree::open(path, cache)?
        };
        tree.unpack(&BTreeSet::new())?;
        let version = match tree.version() {
            Ok(version) => version,
            Err(_) if tree.is_directory() => return Ok(tree),
            Err(e) => return Err(e),
        };
        if let Some(built) = kdir_version(kdir).filter(|v| *v != version) {
            return Err(format!(
                "the source {} is Linux {version}, but the kernel of {} was built from {built}",
                path.display(),
                kdir.display()
            ));
        }
        if tree.is_directory() {
            return Ok(tree);
        }
        for (name, text) in units {
            let mut files: Vec<String> =
                text.lines().filter_map(|l| quoted_include("", l)).filter(|p| tree.exists(p)).collect();
            files.extend(name.filter(|n| tree.exists(n)).map(str::to_string));
            let dirs: BTreeSet<String> =
                files.iter().filter_map(|p| p.rsplit_once('/').map(|(d, _)| d.to_string())).collect();
            tree.unpack(&dirs)?;
            for file in &files {
                tree.unpack_includes(file)?;
            }
        }
        Ok(tree)
    }

    /// Unpacks the directories of the headers that `rel` includes by a quoted path outside its
    /// own directory (`#include "../bridge/br_private.h"`), and theirs in turn.
    pub(crate) fn unpack_includes(&self, rel: &str) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        let mut files = vec![rel.to_string()];
        while let Some(file) = files.pop() {
            if !seen.insert(file.clone()) || seen.len() > 64 {
                continue;
            }
            let Ok(text) = self.read(&file) else { continue };
            let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
            let found: Vec<String> =
                text.lines().filter_map(|l| quoted_include(dir, l)).filter(|p| self.exists(p)).collect();
            let dirs: BTreeSet<String> =
                found.iter().filter_map(|p| p.rsplit_once('/').map(|(d, _)| d.to_string())).collect();
            self.unpack(&dirs)?;
            files.extend(found);
        }
        Ok(())
    }
}

/// The `VERSION.PATCHLEVEL.SUBLEVEL` a kernel `Makefile` sets.
pub(crate) fn makefile_version(text: &str) -> Option<String> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key)
                .then(|| v.trim().to_string())
                .filter(|v| v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty())
        })
    };
    Some(format!("{}.{}.{}", get("VERSION")?, get("PATCHLEVEL")?, get("SUBLEVEL")?))
}

/// The upstream version a kernel build directory was built from: Debian's
/// `include/generated/package.h` (`Debian 6.1.192-3`), else the `Makefile` its own includes.
pub(crate) fn kdir_version(kdir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(kdir.join("include/generated/package.h")) {
        let word = text.split(|c: char| c == '"' || c.is_whitespace()).find(|w| {
            let mut parts = w.split(['.', '-']);
            parts.next().is_some_and(|p| p.parse::<u32>().is_ok()) && w.matches('.').count() >= 2
        });
        if let Some(word) = word {
            let upstream: Vec<&str> = word.split('-').next()?.split('.').take(3).collect();
            return Some(upstream.join("."));
        }
    }
    let text = std::fs::read_to_string(kdir.join("Makefile")).ok()?;
    if let Some(v) = makefile_version(&text) {
        return Some(v);
    }
    // Debian's build directory includes the common headers' Makefile.
    let included = text.lines().find_map(|l| l.trim().strip_prefix("include "))?.trim().to_string();
    makefile_version(&std::fs::read_to_string(included).ok()?)
}

/// Whether one of `dirs` other than `dir` contains it (`drivers/input` contains
/// `drivers/input/misc`).
fn covered_by_another(dir: &str, dirs: &[&String]) -> bool {
    dirs.iter().any(|d| dir.len() > d.len() && dir.starts_with(d.as_str()) && dir.as_bytes()[d.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_under_another_is_unpacked_with_it() {
        let (input, misc, inputs) =
            ("drivers/input".to_string(), "drivers/input/misc".to_string(), "drivers/inputs".to_string());
        let all = [&input, &misc, &inputs];
        assert!(covered_by_another(&misc, &all));
        assert!(!covered_by_another(&input, &all));
        assert!(!covered_by_another(&inputs, &all), "a sibling whose name starts alike is not under it");
    }

    #[test]
    fn quoted_includes_are_paths_in_the_tree() {
        assert_eq!(
            quoted_include("net/ipv6", "#include \"../bridge/br_private.h\"").as_deref(),
            Some("net/bridge/br_private.h")
        );
        assert_eq!(
            quoted_include("fs/proc", "# include \"internal.h\" /* x */").as_deref(),
            Some("fs/proc/internal.h")
        );
        assert_eq!(quoted_include("fs/proc", "#include <linux/fs.h>"), None);
        assert_eq!(quoted_include("fs", "#include \"../../x.h\""), None);
    }

    #[test]
    fn versions_come_from_the_makefile_and_debian_package_header() {
        let make = "# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\nNAME = Curry Ramen\n";
        assert_eq!(makefile_version(make).as_deref(), Some("6.1.192"));
        assert_eq!(makefile_version("VERSION = 6\n"), None);
        let dir = std::env::temp_dir().join(format!("kgraft-kdirver-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("include/generated")).expect("temp dir");
        std::fs::write(dir.join("include/generated/package.h"), "#define LINUX_PACKAGE_ID \" Debian 6.1.190-1\"\n")
            .expect("temp file");
        assert_eq!(kdir_version(&dir).as_deref(), Some("6.1.190"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
