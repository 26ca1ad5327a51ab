//! `kgraftc check --ksrc`: for each static function of its file that a C body calls, whether
//! the target kernel kept it out of line (the patch references the kernel's, by symbol) or
//! inlined it everywhere (the kernel has no copy: the patch must carry one), and whether the
//! patch does what the kernel needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kgraft_lang::Checked;
use kgraft_lang::kernel::Kernel;

use super::csource::Source;
use super::ksrc::Tree;
use crate::Failure;

/// What the kernel did with one static function a body calls, and what the patch does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    /// The replaced function whose body calls it.
    pub(crate) body: String,
    /// The static function.
    pub(crate) name: String,
    /// Whether the target has a symbol of that name (kept out of line).
    pub(crate) kept: bool,
    /// Whether the patch's C defines it (a copy).
    pub(crate) copied: bool,
}

impl Finding {
    /// Whether the patch would fail at load: it declares a function the kernel has no copy of.
    pub(crate) fn is_error(&self) -> bool {
        !self.kept && !self.copied
    }

    /// The finding in words.
    pub(crate) fn describe(&self) -> &'static str {
        match (self.kept, self.copied) {
            (true, false) => "kept out of line by the kernel; the patch calls the kernel's: right",
            (true, true) => "kept out of line by the kernel; the patch calls its own copy (its own state, if any)",
            (false, true) => "inlined everywhere by the kernel; the patch carries a copy: right",
            (false, false) => "inlined everywhere by the kernel, which has no copy: copy its definition into the patch",
        }
    }
}

/// Reports on the C bodies of `checked` against `kernel`, their files read from `ksrc`;
/// returns whether every body is right.
pub(crate) fn report(checked: &Checked, kernel: &Kernel, ksrc: &Path) -> Result<bool, Failure> {
    let cache = crate::linux::cache_dir().map_err(|e| Failure::Fatal(e.to_string()))?;
    let tree = Tree::open(ksrc, &cache).map_err(Failure::Fatal)?;
    let findings = findings(checked, kernel, &tree)?;
    if findings.is_empty() {
        eprintln!("check: the C bodies call no static function of their files");
        return Ok(true);
    }
    let mut right = true;
    for (file, list) in &findings {
        eprintln!("check: the static functions of {file} that C bodies call:");
        for f in list {
            right &= !f.is_error();
            let mark = if f.is_error() { "error: " } else { "" };
            eprintln!("  {:<28} (from {}) {mark}{}", f.name, f.body, f.describe());
        }
    }
    Ok(right)
}

/// The findings, by source file.
fn findings(checked: &Checked, kernel: &Kernel, tree: &Tree) -> Result<BTreeMap<String, Vec<Finding>>, Failure> {
    let mut out: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    let patch_c = c_text(checked);
    let patch_src = Source::new(&patch_c);
    let defined: BTreeSet<String> = patch_src.functions().into_iter().map(|f| f.name).collect();
    for body in checked.c_bodies() {
        let Some(file) = body
            .unit
            .clone()
            .filter(|u| u.ends_with(".c"))
            .or_else(|| super::review::named_in_docs(&checked.source.text, body.start))
        else {
            continue;
        };
        if !tree.exists(&file) {
            continue;
        }
        let dir = file.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string());
        tree.unpack(&BTreeSet::from([dir])).map_err(Failure::Fatal)?;
        let text = tree.read(&file).map_err(Failure::Fatal)?;
        let src = Source::new(&text);
        let statics: BTreeSet<String> =
            src.functions().into_iter().filter(|f| f.is_static && f.name != body.name).map(|f| f.name).collect();
        let symbols = kernel.objects.get(&body.object).and_then(|o| o.symbols.as_ref());
        let Some(symbols) = symbols else { continue };
        let used = Source::new(&body.body).identifiers_in(0..body.body.len());
        let mut seen = BTreeSet::new();
        for name in used.into_iter().filter(|n| statics.contains(n)) {
            if !seen.insert(name.clone()) {
                continue;
            }
            let finding = Finding {
                body: body.name.clone(),
                kept: symbols.contains_key(&name),
                copied: defined.contains(&name),
                name,
            };
            out.entry(file.clone()).or_default().push(finding);
        }
    }
    Ok(out)
}

/// The text of the patch's `c { }` items, as the scanner reads C.
fn c_text(checked: &Checked) -> String {
    match kgraft_lang::lower(checked) {
        Ok(lowered) => lowered.c_units.iter().map(|u| u.text.as_str()).collect::<Vec<_>>().join("\n"),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_declared_function_the_kernel_inlined_is_an_error() {
        let f = |kept, copied| Finding { body: "b".into(), name: "h".into(), kept, copied };
        assert!(f(false, false).is_error());
        assert!(!f(true, false).is_error() && !f(false, true).is_error() && !f(true, true).is_error());
        assert!(f(false, false).describe().contains("copy its definition"));
    }
}
