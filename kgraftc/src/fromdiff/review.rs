//! `kgraftc diff`: each C body of a patch as a unified diff against the target kernel's own
//! function, so a reviewer reads what the patch changes and nothing else.
//!
//! The function's file is `--source FILE.c`, or the unit its body is compiled in (the
//! `c "fs/proc/cmdline.c" { }` item above it), or the one the replacement's doc comment names
//! (`/// fs/proc/cmdline.c:7:`), or, in a source directory, the `.c` file that defines the
//! function.

use std::path::PathBuf;

use super::csource::Source;
use super::ksrc::Tree;
use crate::Failure;
use crate::render::Ui;

/// The arguments of `kgraftc diff`.
#[derive(clap::Args, Debug)]
pub(crate) struct DiffArgs {
    /// The `.kgp` file.
    pub(crate) file: PathBuf,
    /// The target kernel's source: a directory, or Debian's `linux-source-*.tar.xz`.
    #[arg(long)]
    pub(crate) ksrc: PathBuf,
    /// The file of the source tree that defines the replaced functions, when their doc comments
    /// do not name it (a path in the tree, such as `fs/proc/meminfo.c`).
    #[arg(long, value_name = "FILE.c")]
    pub(crate) source: Option<String>,
}

/// Runs `kgraftc diff`.
pub(crate) fn run(args: &DiffArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    let bodies = checked.c_bodies();
    if bodies.is_empty() {
        return Err(Failure::Fatal(format!("{} has no replacement with a C body", args.file.display())));
    }
    let cache = crate::linux::cache_dir().map_err(|e| Failure::Fatal(e.to_string()))?;
    let tree = Tree::open(&args.ksrc, &cache).map_err(Failure::Fatal)?;
    let kgp = &checked.source.text;
    let mut out = String::new();
    for c in &bodies {
        // A system call's body is its `SYSCALL_DEFINEn(NAME, ...)`, `sys_NAME` to the scanner.
        let defined = if c.syscall { format!("sys_{}", c.name) } else { c.name.clone() };
        let unit = c.unit.clone().filter(|u| u.ends_with(".c"));
        let file = match args.source.clone().or(unit).or_else(|| named_in_docs(kgp, c.start)) {
            Some(f) => f,
            // A tarball is unpacked only in part: searching it would find what happens to be.
            None => tree.is_directory().then(|| find_definition(&tree, &defined)).flatten().ok_or_else(|| {
                Failure::Fatal(format!(
                    "cannot tell which file of {} defines `{}`: give it with --source FILE.c",
                    args.ksrc.display(),
                    c.name
                ))
            })?,
        };
        if !tree.exists(&file) {
            return Err(Failure::Fatal(format!("{} has no file {file}", args.ksrc.display())));
        }
        let dir = file.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string());
        tree.unpack(&std::collections::BTreeSet::from([dir])).map_err(Failure::Fatal)?;
        let text = tree.read(&file).map_err(Failure::Fatal)?;
        let src = Source::new(&text);
        let Some(f) = src.functions().into_iter().find(|f| f.name == defined) else {
            return Err(Failure::Fatal(format!("{file} of {} defines no `{}`", args.ksrc.display(), c.name)));
        };
        let theirs = &text[f.body.start - 1..f.body.end + 1];
        let their_line = text[..f.body.start].matches('\n').count() + 1;
        let body_at = kgp[c.start..].find(&c.body).map_or(c.start, |at| c.start + at);
        let body_line = kgp[..body_at].matches('\n').count() + 1;
        let diff = unified(theirs, &c.body, their_line, body_line);
        if diff.is_empty() {
            eprintln!("{}: the body is the kernel's own {} of {file}, unchanged", args.file.display(), c.name);
            continue;
        }
        out += &format!("--- {file}\t{} (the kernel's)\n+++ {}\t{}\n{diff}", c.name, args.file.display(), c.name);
    }
    crate::output::stdout(&out)
}

/// The path a replacement's doc comment gives, as `from-diff` writes it (`/// PATH:LINE: why`),
/// looking at the comment lines just before `start`.
pub(crate) fn named_in_docs(kgp: &str, start: usize) -> Option<String> {
    let before = &kgp[..start];
    let docs =
        before.lines().rev().skip_while(|l| l.trim().is_empty()).take_while(|l| l.trim_start().starts_with("///"));
    docs.filter_map(|l| {
        let text = l.trim_start().trim_start_matches('/').trim();
        let (path, rest) = text.split_once(':')?;
        let line = rest.split(':').next()?;
        (path.ends_with(".c") && !line.is_empty() && line.chars().all(|c| c.is_ascii_digit())).then(|| path.to_string())
    })
    .last()
}

/// The `.c` file of a source directory that defines `name` (the first, in path order).
fn find_definition(tree: &Tree, name: &str) -> Option<String> {
    let mut dirs = vec![tree.root.clone()];
    // A quick filter before the scan; a system call's `sys_NAME` is written `(NAME, ...`.
    let needle = name.strip_prefix("sys_").unwrap_or(name);
    let mut found = Vec::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "c") {
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                if text.contains(needle) && Source::new(&text).functions().iter().any(|f| f.name == name) {
                    found.push(path.strip_prefix(&tree.root).ok()?.display().to_string());
                }
            }
        }
    }
    found.sort();
    found.into_iter().next()
}

/// A line of an edit script.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    Same,
    Gone,
    New,
}

/// The unified diff of `old` against `new` (three lines of context), whose first lines are
/// lines `old_at` and `new_at` of their files; empty when they are equal.
fn unified(old: &str, new: &str, old_at: usize, new_at: usize) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a == b {
        return String::new();
    }
    // The longest common subsequence, by lengths from the end.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * (m + 1) + j] = if a[i] == b[j] {
                lcs[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
            };
        }
    }
    let mut script = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            script.push((Edit::Same, i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
            // What goes is shown before what comes, as diff(1) does.
            script.push((Edit::Gone, i, j));
            i += 1;
        } else {
            script.push((Edit::New, i, j));
            j += 1;
        }
    }
    // Hunks: the changes with three lines around them, joined where they touch.
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..script.len()).filter(|&k| script[k].0 != Edit::Same).collect();
    let mut out = String::new();
    let mut k = 0;
    while k < changed.len() {
        let first = changed[k].saturating_sub(CONTEXT);
        let mut last = changed[k];
        while k + 1 < changed.len() && changed[k + 1] <= last + 2 * CONTEXT + 1 {
            k += 1;
            last = changed[k];
        }
        let last = (last + CONTEXT).min(script.len() - 1);
        let part = &script[first..=last];
        let olds = part.iter().filter(|e| e.0 != Edit::New).count();
        let news = part.iter().filter(|e| e.0 != Edit::Gone).count();
        let (_, i0, j0) = part[0];
        out += &format!("@@ -{},{olds} +{},{news} @@\n", old_at + i0, new_at + j0);
        for &(edit, i, j) in part {
            match edit {
                Edit::Same => out += &format!(" {}\n", a[i]),
                Edit::Gone => out += &format!("-{}\n", a[i]),
                Edit::New => out += &format!("+{}\n", b[j]),
            }
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_is_one_hunk_with_its_context() {
        let old = "{\n\ta();\n\tb();\n\tc();\n\td();\n\te();\n\tf();\n\tg();\n}";
        let new = "{\n\ta();\n\tb();\n\tc();\n\tD();\n\te();\n\tf();\n\tg();\n}";
        assert_eq!(
            unified(old, new, 10, 20),
            "@@ -11,7 +21,7 @@\n \ta();\n \tb();\n \tc();\n-\td();\n+\tD();\n \te();\n \tf();\n \tg();\n"
        );
        assert_eq!(unified(old, old, 1, 1), "");
        let added = unified("{\n}", "{\n\tx();\n}", 1, 1);
        assert_eq!(added, "@@ -1,2 +1,3 @@\n {\n+\tx();\n }\n");
    }

    #[test]
    fn the_file_comes_from_the_doc_comment_from_diff_writes() {
        let kgp = "/// fs/proc/cmdline.c:7: changed by the fix.\nreplace fn cmdline_proc_show() in C {}";
        let start = kgp.find("replace").expect("a replacement");
        assert_eq!(named_in_docs(kgp, start).as_deref(), Some("fs/proc/cmdline.c"));
        assert_eq!(named_in_docs("/// Something else.\nreplace", 20), None);
    }
}
