//! What a fix changes in one translation unit, and what the kernel must replace for it.
//!
//! The unit's objects before and after the fix are compared function by function. A function
//! whose code changed is replaced when the kernel can patch it: it has an ftrace site and is no
//! compiler clone. A clone (`.isra`, `.constprop`, `.part`, `.cold`) or a function without a
//! site is reached only from its callers in the unit, so they are replaced instead. A function
//! whose source the diff does not touch but whose code changed had a changed function inlined
//! into it: this is the inline closure kGraft found from debug information, found here by
//! construction.

use std::collections::{BTreeMap, BTreeSet};

use super::objdiff::{self, Unit};

/// Why a function is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The diff changes its source.
    Fix,
    /// Its source is the same, but its code changed: a changed function was inlined into it.
    Inlined,
    /// It calls a changed function the kernel cannot patch itself (a clone, or a function
    /// without an ftrace site), named here.
    Caller(String),
}

/// A refusal: the fix changes something a live patch cannot change this way.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    /// Its diagnostic code.
    pub(crate) code: &'static str,
    /// What is refused and why.
    pub(crate) message: String,
    /// What to do instead.
    pub(crate) help: String,
}

/// The comparison's outcome for one unit.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// The functions to replace, with why.
    pub(crate) replaced: BTreeMap<String, Why>,
    /// Changed functions the kernel cannot patch, and the callers replaced for them.
    pub(crate) through_callers: BTreeMap<String, Vec<String>>,
    /// Functions the diff touches whose code did not change.
    pub(crate) same_code: Vec<String>,
    /// Functions only the fixed unit has.
    pub(crate) new_functions: Vec<String>,
    /// Data only the fixed unit has.
    pub(crate) new_data: Vec<String>,
    /// How many functions are the same before and after.
    pub(crate) unchanged: usize,
    /// What cannot be patched.
    pub(crate) refusals: Vec<Refusal>,
}

/// Data gcc makes for its own purposes, which change with the code around them and belong to
/// no one's layout: once-flags, `__func__`, symbol tables and initcalls.
fn is_bookkeeping(name: &str, section: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "__UNIQUE_ID",
        "__initcall",
        "__ksymtab",
        "__kstrtab",
        "__func__",
        "CSWTCH",
        "__already_done",
        "__print_once",
        "__warned",
        "__key",
        "__compound_literal",
        "_entry",
        "__setup",
        "__param",
        "__mod_",
        "__addressable",
        "descriptor",
        "__tracepoint",
        "__event",
        "__bpf_trace",
        "__TRACE_SYSTEM",
        "_rs",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || section.starts_with(".data.once")
        || section.starts_with("__")
        || section.starts_with(".discard")
        || section.starts_with(".init.")
        || section.starts_with(".exit.")
        || section.contains("..")
}

/// Compares `before` and `after`; `touched` names the functions whose source the diff changes.
pub(crate) fn analyze(before: &Unit, after: &Unit, touched: &BTreeSet<String>) -> Analysis {
    let mut out = Analysis::default();
    let mut changed = Vec::new();
    for (name, f) in &after.functions {
        match before.functions.get(name) {
            Some(old) if objdiff::compare(old, f).is_none() => {
                out.unchanged += 1;
                if touched.contains(name) {
                    out.same_code.push(name.clone());
                }
            }
            Some(_) => changed.push(name.clone()),
            None => out.new_functions.push(name.clone()),
        }
    }
    for (name, d) in &after.data {
        if is_bookkeeping(name, &d.section) {
            if name.starts_with("__ksymtab_") && !before.data.contains_key(name) {
                let symbol = name.trim_start_matches("__ksymtab_");
                out.refusals.push(Refusal {
                    code: kgraft_lang::from_diff_codes::E0104,
                    message: format!("the fix exports a new symbol, `{symbol}`"),
                    help: "a live patch cannot add to the kernel's exported symbols; other modules cannot link \
                           against it. Keep the function unexported in the patch, or ship the change in the next \
                           kernel"
                        .into(),
                });
            }
            continue;
        }
        // A static local by its own name (`symbols.12`); else, when its number moved, by the
        // one datum of that name without its number.
        let old = before.data.get(name).or_else(|| {
            let base = objdiff::without_local_number(name);
            let mut same = before.data.iter().filter(|(n, _)| objdiff::without_local_number(n) == base);
            match (same.next(), same.next()) {
                (Some((_, d)), None) => Some(d),
                _ => None,
            }
        });
        let name = objdiff::without_local_number(name).to_string();
        match old {
            None => out.new_data.push(name),
            Some(old) => {
                if let Some(diff) = objdiff::compare_data(old, d) {
                    out.refusals.push(Refusal {
                        code: kgraft_lang::from_diff_codes::E0101,
                        message: format!("the fix changes the data `{name}` ({diff})"),
                        help: "the running kernel keeps its own copy of this data, and a live patch replaces \
                               only code: new fields belong in `shadow` data attached to the objects, and a \
                               changed initial value in a callback (`on post_patch`) that sets it"
                            .into(),
                    });
                }
            }
        }
    }
    // Close over what the kernel cannot patch itself: such a function is replaced through its
    // callers.
    let mut queue: Vec<(String, Why)> = changed
        .iter()
        .map(|n| {
            let base = objdiff::clone_origin(n).unwrap_or(n);
            (n.clone(), if touched.contains(base) { Why::Fix } else { Why::Inlined })
        })
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((name, why)) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let f = &after.functions[&name];
        if f.is_init() {
            out.refusals.push(Refusal {
                code: kgraft_lang::from_diff_codes::E0102,
                message: format!("the fix changes `{name}`, which is `__init` or `__exit` code ({})", f.section),
                help: "init code ran at boot and is gone from the running kernel: a live patch cannot run it \
                       again. Put what it should have set up in a `post_patch` callback"
                    .into(),
            });
            continue;
        }
        let clone = objdiff::clone_origin(&name).is_some();
        if !clone && f.fentry {
            out.replaced.entry(name).or_insert(why);
            continue;
        }
        let callers: Vec<String> = after.callers_of(&name).into_iter().map(str::to_string).collect();
        if callers.is_empty() || (f.global && !clone) {
            let what = if clone { "a compiler clone" } else { "a function without an ftrace site (notrace)" };
            out.refusals.push(Refusal {
                code: kgraft_lang::from_diff_codes::E0103,
                message: format!("the fix changes `{name}`, {what}, and no caller of it can be replaced instead"),
                help: "kGraft redirects a function through the NOP at its start; a function without one is \
                       replaced through its callers, and here they are outside this translation unit. Fix a \
                       traceable caller instead"
                    .into(),
            });
            continue;
        }
        out.through_callers.insert(name.clone(), callers.clone());
        for caller in callers {
            queue.push((caller, Why::Caller(name.clone())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fromdiff::objdiff::tests::compile;

    const BEFORE: &str = r#"
        extern int ext(int);
        int table[2] = { 1, 2 };
        static inline int tiny(int x) { return ext(x) + 1; }
        static __attribute__((noinline, no_instrument_function)) int quiet(int x) { return ext(x) * 7; }
        int calls_tiny(int x) { return tiny(x) * 2; }
        int calls_quiet(int x) { return quiet(x) + 3; }
        int alone(int x) { return ext(x + 9); }
    "#;

    #[test]
    fn inlined_and_untraceable_changes_reach_their_callers() {
        let after = BEFORE.replace("ext(x) + 1", "ext(x) + 2").replace("ext(x) * 7", "ext(x) * 8");
        let (Some(a), Some(b)) = (compile(BEFORE, "a"), compile(&after, "b")) else { return };
        let touched: BTreeSet<String> = ["tiny".to_string(), "quiet".to_string()].into();
        let found = analyze(&a, &b, &touched);
        assert_eq!(found.replaced.get("calls_tiny"), Some(&Why::Inlined));
        assert_eq!(found.replaced.get("calls_quiet"), Some(&Why::Caller("quiet".into())));
        assert!(!found.replaced.contains_key("alone"));
        assert!(!found.replaced.contains_key("quiet"), "quiet has no ftrace site");
        assert!(found.refusals.is_empty(), "{:?}", found.refusals);

        let data = BEFORE.replace("{ 1, 2 }", "{ 1, 3 }");
        let Some(c) = compile(&data, "c") else { return };
        let found = analyze(&a, &c, &BTreeSet::new());
        assert!(found.replaced.is_empty());
        assert_eq!(found.refusals.iter().map(|r| r.code).collect::<Vec<_>>(), ["E0101"]);
    }
}
