//! Writes the `.kgp`'s section of one translation unit: a `c "FILE" { }` item with what the
//! bodies need from their file, then a `replace fn ... in C` per replaced function, whose body is
//! the fixed source of that function. The patch language compiles each section as a C file of
//! its own, as the kernel compiles each file.
//!
//! What a body needs from its file is decided by the objects: a static function the kernel's
//! compiler kept out of line is the running kernel's and is declared `extern` (it is reached by
//! its symbol); one it inlined everywhere, or one the fix adds, is copied. The file's data the
//! kernel has is declared `extern` too, bound to the running kernel's own storage, and a static
//! local of a replaced function is declared by its symbol (`fake_sk.1`), so the patch and the
//! kernel share it. The file's includes, macros and types come along as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::analyze::{Analysis, Refusal, Why};
use super::csource::{Function, Source, Variable};
use super::objdiff::{self, Unit};
use super::tu;

/// What the `.kgp` of one unit is made from.
pub(crate) struct Input<'a> {
    /// The patch's name.
    pub(crate) name: &'a str,
    /// Its description (the commit's subject).
    pub(crate) description: &'a str,
    /// The fix's file name, for the header comment.
    pub(crate) diff_name: &'a str,
    /// The target release, and the source's version.
    pub(crate) release: &'a str,
    pub(crate) version: &'a str,
    /// The unit.
    pub(crate) unit: &'a tu::Unit,
    /// Its fixed source.
    pub(crate) text: &'a str,
    /// Its objects before and after the fix.
    pub(crate) before: &'a Unit,
    pub(crate) after: &'a Unit,
    /// What changed.
    pub(crate) analysis: &'a Analysis,
    /// Whether the source tree has this file (for rewriting a local `#include "x.h"`).
    pub(crate) tree_has: &'a dyn Fn(&str) -> bool,
    /// Headers of the kernel's include directories as the fix changes them (path, text): the
    /// unit reads them before its own includes.
    pub(crate) headers: &'a [(String, String)],
    /// The position of a kernel symbol of this unit among the symbols of its name in the
    /// target's kallsyms (0: the only one) and the unique symbol nearest to it that finds it
    /// on every target, or why it cannot be told.
    pub(crate) position: &'a dyn Fn(&str) -> Found,
}

/// Where a kernel symbol is among those of its name: its position in the kallsyms read (0:
/// the only one) and its nearest unique neighbour, or why it cannot be told.
pub(crate) type Found = Result<(u32, Option<String>), String>;

/// A unit's answer to where a kernel symbol is among those of its name (see [`Input::position`]).
pub(crate) type Position<'a> = Box<dyn Fn(&str) -> Found + 'a>;

/// What was generated, for the report.
pub(crate) struct Generated {
    /// The unit's section of the `.kgp`.
    pub(crate) text: String,
    /// The functions copied into the patch (inlined by the kernel, or new).
    pub(crate) copied: Vec<String>,
    /// The kernel's own functions and data the patch refers to by symbol.
    pub(crate) referenced: Vec<String>,
}

/// Words that make a definition local or inline, dropped when it is declared `extern`.
const LOCAL_WORDS: &[&str] =
    &["static", "inline", "__inline", "__inline__", "__always_inline", "noinline", "__noinline", "__weak"];

/// Statements at file scope that register or export something (and every `*_initcall`): the
/// kernel did it at boot.
const REGISTRATIONS: &[&str] = &[
    "EXPORT_SYMBOL",
    "EXPORT_TRACEPOINT",
    "module_init",
    "module_exit",
    "__setup",
    "early_param",
    "MODULE_",
    "core_param",
    "module_param",
    "ALLOW_ERROR_INJECTION",
    "NOKPROBE_SYMBOL",
    "__initcall",
];

/// Writes the unit's section of the `.kgp` (after [`header`] and the other units'), or says
/// why it cannot.
pub(crate) fn generate(input: &Input<'_>) -> Result<Generated, Vec<Refusal>> {
    let src = Source::new(input.text);
    let functions = src.functions();
    let by_name: BTreeMap<&str, &Function> = functions.iter().map(|f| (f.name.as_str(), f)).collect();
    let variables: Vec<Variable> = src.variables().into_iter().filter(|v| !v.is_extern).collect();
    let mut refusals = Vec::new();

    // The replaced functions, in the file's order.
    let mut replaced: Vec<(&Function, &Why)> = Vec::new();
    for (name, why) in &input.analysis.replaced {
        match by_name.get(name.as_str()) {
            Some(f) if f.macro_form.is_none() => replaced.push((f, why)),
            // A system call's entry: the `SYSCALL_DEFINE` it comes from, replaced once as
            // `replace syscall` (which replaces every entry the kernel has).
            None if let Some(f) = syscall_source(name, &by_name) => {
                if !replaced.iter().any(|(g, _)| g.range == f.range) {
                    replaced.push((f, why));
                }
            }
            found => {
                let how = match found.and_then(|f| f.macro_form.as_ref()) {
                    Some((mac, _)) => format!("it is defined through `{mac}`"),
                    None => "no definition of it is in the file (a macro makes it)".to_string(),
                };
                refusals.push(Refusal {
                    code: kgraft_lang::from_diff_codes::E0105,
                    message: format!("`{name}` changes, but {how}: its source cannot be copied as a C body"),
                    help: "write this replacement by hand (a system call: `replace syscall`), or fix a function \
                           the macro calls"
                        .into(),
                });
            }
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    replaced.sort_by_key(|(f, _)| f.range.start);

    // What the bodies need, closed over the copied helpers.
    let mut copied: BTreeSet<&str> = BTreeSet::new();
    let mut extern_fns: BTreeSet<&str> = BTreeSet::new();
    let mut extern_vars: BTreeSet<&str> = BTreeSet::new();
    let mut own_vars: BTreeSet<&str> = BTreeSet::new();
    let replaced_names: BTreeSet<&str> = replaced.iter().map(|(f, _)| f.name.as_str()).collect();
    let work: Vec<&Function> = replaced.iter().map(|(f, _)| *f).collect();
    let kernel_has_fn =
        |name: &str| input.before.functions.contains_key(name) && input.after.functions.contains_key(name);
    let kernel_has_var = |name: &str| input.before.data.contains_key(name);
    let macros = FileMacros::of(&top_level_items(&src, &functions, input.text));
    let mut macro_extern: BTreeSet<&str> = BTreeSet::new();
    let mut macro_own: BTreeSet<&str> = BTreeSet::new();
    let mut expanded: BTreeSet<&str> = BTreeSet::new();
    // The identifiers still to look at: those of the bodies, of what is copied, and of the
    // file's macros they use.
    let mut ids: Vec<String> = work.iter().flat_map(|f| src.identifiers_in(f.range.clone())).collect();
    // What the replaced functions' fixed code calls and reads by symbol (their `.cold` parts
    // included): a static function of the file the kernel keeps out of line, but which the
    // fixed code does not call, was inlined there; it is copied, so that the patch's compiler
    // inlines it as the kernel's did.
    let compiled: BTreeSet<&str> = input
        .analysis
        .replaced
        .keys()
        .chain(input.analysis.through_callers.keys())
        .map(|n| objdiff::clone_origin(n).unwrap_or(n))
        .collect();
    let compiled_code: Vec<&objdiff::Function> = input
        .after
        .functions
        .iter()
        .filter(|(n, _)| compiled.contains(objdiff::clone_origin(n).unwrap_or(n)))
        .map(|(_, f)| f)
        .collect();
    let called_after: BTreeSet<&str> =
        compiled_code.iter().flat_map(|f| f.references()).map(|r| objdiff::clone_origin(r).unwrap_or(r)).collect();
    let direct: BTreeSet<String> = ids.iter().cloned().collect();
    let inlined_here = |g: &Function| {
        !compiled_code.is_empty()
            && g.is_static
            && !g.is_inline
            && direct.contains(&g.name)
            && !called_after.contains(g.name.as_str())
    };
    // A global function the fix adds is for the other units (they declare and call it): it is
    // the patch's own, whether or not this unit's bodies use it.
    for name in new_globals(input.analysis, input.after) {
        if let Some(f) = by_name.get(name) {
            copied.insert(f.name.as_str());
            ids.extend(src.identifiers_in(f.range.clone()));
        }
    }
    while let Some(id) = ids.pop() {
        if let Some(g) = by_name.get(id.as_str()) {
            let name = g.name.as_str();
            if copied.contains(name) || extern_fns.contains(name) || replaced_names.contains(name) {
                continue;
            }
            if kernel_has_fn(name) && g.macro_form.is_none() && !inlined_here(g) {
                extern_fns.insert(name);
            } else {
                copied.insert(name);
                // Every definition of the name: one per branch of a conditional.
                for h in functions.iter().filter(|h| h.name == name) {
                    ids.extend(src.identifiers_in(h.range.clone()));
                }
            }
        } else if let Some(v) = variables.iter().find(|v| v.name == id) {
            let name = v.name.as_str();
            // Read-only data is as good copied (and an `extern` array of no size has no
            // `ARRAY_SIZE`); what is written is the kernel's, shared.
            if kernel_has_var(name) && !is_read_only(&v.declarator, name) {
                extern_vars.insert(name);
            } else {
                own_vars.insert(name);
            }
        } else if let Some((name, words)) = macros.defines.get_key_value(id.as_str()) {
            if expanded.insert(name.as_str()) {
                ids.extend(words.iter().cloned());
            }
        } else if let Some(name) = macros.data.keys().find(|n| **n == id) {
            if kernel_has_var(name) {
                macro_extern.insert(name.as_str());
            } else {
                macro_own.insert(name.as_str());
            }
        }
    }

    let mut kgp = String::new();
    // The unit's `c "FILE" { }` item.
    let _ = writeln!(kgp, "\nc {} {{", quote(&input.unit.rel));
    let modname = input.unit.modname();
    match &input.unit.home {
        tu::Home::Module(m) => {
            let _ = writeln!(kgp, "// {} is compiled into the module `{m}`.", input.unit.rel);
        }
        _ => {
            let _ = writeln!(kgp, "// {} is compiled into vmlinux (object `{modname}`), not a module.", input.unit.rel);
            kgp.push_str("#undef MODULE\n");
        }
    }
    let _ = writeln!(kgp, "#undef KBUILD_MODNAME\n#define KBUILD_MODNAME \"{modname}\"\n");
    for (path, text) in input.headers {
        let _ = writeln!(
            kgp,
            "// {path} as the fix changes it, read before the file's own includes (its include guard\n\
             // keeps the kernel's copy out).\n{}\n// The end of {path}.\n",
            text.trim_end()
        );
    }
    let needs = Needs { copied, extern_fns, extern_vars, own_vars, macro_extern, macro_own };
    let _ = writeln!(
        kgp,
        "// {} in its order, so its conditionals enclose what they did: its includes, macros and\n\
         // types; the running kernel's own functions and data that the bodies use, declared `extern`\n\
         // (reached by symbol); what the kernel's compiler inlined, and what the fix adds, copied.",
        input.unit.rel
    );
    kgp.push_str(&c_item(&src, &functions, &needs, input));
    kgp.push_str(&attributes(&replaced, input));
    let c_end = kgp.len();
    kgp.push_str("}\n");

    // One replacement per function.
    let module = match &input.unit.home {
        tu::Home::Module(m) => Some(m.as_str()),
        _ => None,
    };
    if let Some(m) = module {
        let _ = writeln!(kgp, "\nmodule {} {{", quote(m));
    }
    for (f, why) in &replaced {
        let line = f.first_line;
        let reason = match why {
            Why::Fix => "changed by the fix".to_string(),
            Why::Inlined => "unchanged in the source, but a function the fix changes is inlined into it".to_string(),
            Why::Caller(callee) => {
                format!("calls `{callee}`, which the fix changes and the kernel cannot patch itself")
            }
        };
        if let Some((_, call)) = &f.macro_form {
            let entries: Vec<String> = input
                .analysis
                .replaced
                .keys()
                .filter(|n| syscall_of_entry(n) == Some(call.as_str()))
                .map(|n| format!("`{n}`"))
                .collect();
            let _ = writeln!(
                kgp,
                "\n/// {}:{line}: the system call `{call}` (its entries {}): {reason}.",
                input.unit.rel,
                entries.join(", ")
            );
            let sig = match signature(f) {
                Ok(sig) => sig,
                Err(why) => {
                    refusals.push(Refusal {
                        code: kgraft_lang::from_diff_codes::E0106,
                        message: format!(
                            "the arguments of the system call `{call}` cannot be written in the patch language: {why}"
                        ),
                        help: "write this replacement by hand".into(),
                    });
                    continue;
                }
            };
            let _ = write!(kgp, "replace syscall {call}{sig} in C {{");
            kgp.push_str(&with_kernel_statics(&src, f, input, &input.text[f.body.clone()]));
            kgp.push_str("}\n");
            continue;
        }
        let _ = writeln!(kgp, "\n/// {}:{line}: {reason}.", input.unit.rel);
        let sig = match signature(f) {
            Ok(sig) => sig,
            Err(why) => {
                refusals.push(Refusal {
                    code: kgraft_lang::from_diff_codes::E0106,
                    message: format!("the prototype of `{}` cannot be written in the patch language: {why}", f.name),
                    help: "write this replacement by hand".into(),
                });
                continue;
            }
        };
        match (input.position)(&f.name) {
            Ok((n, Some(anchor))) => {
                let _ = writeln!(
                    kgp,
                    "/// Other files have a `{}` too: this file's is the one nearest `{anchor}` in kallsyms\n\
                     /// (the {} in {}).\n#[sympos(near = \"{anchor}\")]",
                    f.name,
                    ordinal(n),
                    input.release
                );
            }
            Ok(_) => {}
            Err(why) => refusals.push(Refusal {
                code: kgraft_lang::from_diff_codes::E0108,
                message: format!("cannot tell which `{}` of the kernel is {}'s: {why}", f.name, input.unit.rel),
                help: "write the replacement by hand with `#[sympos(near = \"NEIGHBOUR\")]` or `#[sympos(N)]`".into(),
            }),
        }
        let _ = write!(kgp, "replace fn {}{sig} in C {{", f.name);
        let body = with_kernel_statics(&src, f, input, &input.text[f.body.clone()]);
        kgp.push_str(&body);
        kgp.push_str("}\n");
    }
    if module.is_some() {
        kgp.push_str("}\n");
    }
    // The kernel's symbols whose names other files' statics share, bound by position.
    let mut kernel_symbols: BTreeSet<String> =
        needs.extern_fns.iter().chain(&needs.extern_vars).chain(&needs.macro_extern).map(|s| s.to_string()).collect();
    kernel_symbols.extend(asm_labels(&kgp));
    let mut positions = String::new();
    for symbol in &kernel_symbols {
        match (input.position)(symbol) {
            Ok((n, Some(anchor))) => {
                let _ = writeln!(
                    positions,
                    "KGRAFT_SYMPOS_NEAR(\"{symbol}\", \"{anchor}\"); /* other files have a `{symbol}` too: this \
                     file's is the one nearest `{anchor}` (the {} in {}) */",
                    ordinal(n),
                    input.release
                );
            }
            Ok(_) => {}
            Err(why) => refusals.push(Refusal {
                code: kgraft_lang::from_diff_codes::E0108,
                message: format!("cannot tell which kernel symbol {} needs: {why}", input.unit.rel),
                help:
                    "write the patch by hand and say which symbol with `KGRAFT_SYMPOS_NEAR(\"NAME\", \"NEIGHBOUR\");`"
                        .into(),
            }),
        }
    }
    if !positions.is_empty() {
        kgp.insert_str(
            c_end,
            &format!(
                "// Names of the kernel's that other files use too, told apart by position in kallsyms.\n{positions}"
            ),
        );
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(Generated {
        text: kgp,
        copied: needs.copied.iter().map(|s| s.to_string()).collect(),
        referenced: needs.extern_fns.iter().chain(&needs.extern_vars).map(|s| s.to_string()).collect(),
    })
}

/// The symbols `__asm__("NAME")` labels name in `text` (the kernel's static locals).
fn asm_labels(text: &str) -> Vec<String> {
    text.match_indices("__asm__(\"")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// `1st`, `2nd`, `3rd`, `4th`, ...
/// The kernels a patch generated on `release` is for: that release's ABI in every flavour
/// (`6.1.0-57-amd64` gives `6.1.0-57-*`, which the `-rt-amd64` and `-cloud-amd64` kernels built
/// from the same source match; `6.12.118+deb12-amd64` gives `6.12.118+deb12-*`). The flavour is
/// the architecture after the last `-` and any purely alphabetic parts before it.
pub(crate) fn release_glob(release: &str) -> String {
    let mut parts: Vec<&str> = release.split('-').collect();
    if parts.len() < 2 {
        return release.to_owned();
    }
    parts.pop();
    while parts.len() > 1 && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_alphabetic())) {
        parts.pop();
    }
    format!("{}-*", parts.join("-"))
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The global functions the fix adds to the unit (not the compiler's `.cold` parts).
pub(crate) fn new_globals<'a>(analysis: &'a Analysis, after: &'a Unit) -> impl Iterator<Item = &'a str> {
    analysis
        .new_functions
        .iter()
        .filter(|n| after.functions.get(n.as_str()).is_some_and(|f| f.global))
        .map(String::as_str)
}

/// The `SYSCALL_DEFINE` definition of the system call whose entry is `symbol`
/// (`__x64_sys_NAME`, `__ia32_sys_NAME`), if the file has it.
fn syscall_source<'a>(symbol: &str, by_name: &BTreeMap<&str, &'a Function>) -> Option<&'a Function> {
    let f = by_name.get(format!("sys_{}", syscall_of_entry(symbol)?).as_str())?;
    f.macro_form.as_ref().is_some_and(|(m, _)| m.starts_with("SYSCALL_DEFINE")).then_some(*f)
}

/// The system call whose entry is `symbol` (`__x64_sys_NAME`, `__ia32_sys_NAME`).
fn syscall_of_entry(symbol: &str) -> Option<&str> {
    symbol.strip_prefix("__x64_sys_").or_else(|| symbol.strip_prefix("__ia32_sys_"))
}

/// The `.kgp`'s head: what it is, where it comes from, the `patch` header. `units` are the
/// translation units whose sections follow.
pub(crate) fn header(input: &Input<'_>, units: &[&str]) -> String {
    let mut kgp = String::new();
    let subject = input.description;
    let _ = writeln!(kgp, "//! {subject}");
    let _ = writeln!(kgp, "//!");
    let _ = writeln!(
        kgp,
        "//! Generated by `kgraftc from-diff` from {} for {} (Linux {}): {} as the kernel compiles {},",
        input.diff_name,
        input.release,
        input.version,
        units.join(", "),
        if units.len() == 1 { "it" } else { "them" }
    );
    let _ = writeln!(
        kgp,
        "//! compared before and after the fix function by function. Each body below is the fixed source"
    );
    let _ = writeln!(
        kgp,
        "//! of its function, compiled with the `c \"FILE\"` item above it as its own unit; `kgraftc diff`"
    );
    let _ = writeln!(kgp, "//! shows each against the kernel's own.\n");
    let _ = writeln!(kgp, "patch {} {{", input.name);
    let _ = writeln!(kgp, "    description: {},", quote(subject));
    let _ = writeln!(kgp, "    kernel: {},", quote(&release_glob(input.release)));
    kgp.push_str("}\n");
    kgp
}

/// Declarations that give the C bodies the attributes their functions' definitions carry
/// (`__attribute__((optimize(...)))`, `noinline`, `__cold`): the body's function is named as the
/// patch language names it, and gcc merges a declaration's attributes into the definition.
fn attributes(replaced: &[(&Function, &Why)], input: &Input<'_>) -> String {
    const CODEGEN: &[&str] = &["noinline", "__noinline", "__cold", "__noclone", "__attribute_const__"];
    let mut out = String::new();
    for (f, _) in replaced {
        if f.macro_form.is_some() {
            continue;
        }
        let keep = f
            .markers
            .iter()
            .any(|m| CODEGEN.contains(&m.as_str()) || (m.starts_with("__attribute__") && !m.contains("weak")));
        let Some(at) = f.declaration.find(&format!("{}(", f.name)) else { continue };
        if !keep {
            continue;
        }
        let c_name = format!("{}{}", input.unit.c_body_prefix(), f.name);
        let decl = format!("{}{c_name}{}", &f.declaration[..at], &f.declaration[at + f.name.len()..]);
        if out.is_empty() {
            out.push_str("\n// The attributes of the replaced functions' definitions, for their C bodies.\n");
        }
        let _ = writeln!(out, "{};", without_local_words(&decl));
    }
    out
}

/// `text` (a function's, or its body's) with each of its static locals that the running kernel
/// has declared by the kernel's symbol instead, so the patch shares the kernel's storage.
fn with_kernel_statics(src: &Source<'_>, f: &Function, input: &Input<'_>, text: &str) -> String {
    let base = if text.len() == f.body.len() { f.body.start } else { f.doc_start };
    let mut out = text.to_string();
    let mut locals = src.static_locals(f);
    locals.sort_by_key(|v| std::cmp::Reverse(v.range.start));
    // `static int a, b;` gives two names of one declaration: it is rewritten once, for the first.
    locals.dedup_by_key(|v| v.range.start);
    for v in locals {
        // Read-only data is the same in the patch's copy (and the fix's, if it changed it).
        if is_read_only(&v.declarator, &v.name) {
            continue;
        }
        // The kernel's symbol: the one of this name that the function's old code refers to.
        let symbol = input
            .before
            .functions
            .get(&f.name)
            .into_iter()
            .flat_map(|old| old.references())
            .chain(input.before.data.keys().map(String::as_str))
            .find(|s| objdiff::without_local_number(s) == v.name && s.contains('.'))
            .map(str::to_string);
        let Some(symbol) = symbol else { continue };
        let (Some(start), Some(end)) = (v.range.start.checked_sub(base), v.range.end.checked_sub(base)) else {
            continue;
        };
        if end > out.len() {
            continue;
        }
        let decl = format!("extern {} __asm__(\"{symbol}\"); /* the running kernel's `static` */", v.declarator.trim());
        out.replace_range(start..end, &decl);
    }
    out
}

/// Whether `declarator` (`const struct s { ... } name[]`, `const char *name`) declares `name`
/// itself `const`: a `const` at the top level before it and no pointer in between, or a
/// `* const` last.
fn is_read_only(declarator: &str, name: &str) -> bool {
    // The text before the name, without what braces enclose (a struct's members).
    let mut head = String::new();
    let mut depth = 0usize;
    let end = declarator.rfind(name).unwrap_or(declarator.len());
    for ch in declarator[..end].chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => head.push(ch),
            _ => {}
        }
    }
    let words = |s: &str| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == "const");
    match head.rfind('*') {
        Some(star) => words(&head[star + 1..]),
        None => words(&head),
    }
}

/// What the bodies need from their file, by name.
struct Needs<'a> {
    /// Functions copied into the patch: inlined by the kernel's compiler, or new.
    copied: BTreeSet<&'a str>,
    /// The running kernel's functions, declared `extern`.
    extern_fns: BTreeSet<&'a str>,
    /// The running kernel's data, declared `extern`.
    extern_vars: BTreeSet<&'a str>,
    /// Data the kernel does not have: the patch's own.
    own_vars: BTreeSet<&'a str>,
    /// Data defined through a macro (`DEFINE_MUTEX(m)`): the kernel's, declared `extern`...
    macro_extern: BTreeSet<&'a str>,
    /// ... or the patch's own.
    macro_own: BTreeSet<&'a str>,
}

/// What the file defines through the preprocessor and through definition macros.
struct FileMacros {
    /// Each `#define NAME`, with the identifiers of its replacement text.
    defines: BTreeMap<String, Vec<String>>,
    /// Each datum defined through a macro (`static DEFINE_SPINLOCK(lock);`), with its `extern`
    /// declaration.
    data: BTreeMap<String, String>,
}

impl FileMacros {
    fn of(items: &[String]) -> FileMacros {
        let mut out = FileMacros { defines: BTreeMap::new(), data: BTreeMap::new() };
        for item in items {
            let item = item.trim();
            if let Some(rest) = item.strip_prefix('#').map(str::trim_start).and_then(|r| r.strip_prefix("define")) {
                let mut words = rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty());
                if let Some(name) = words.next() {
                    let body = words.filter(|w| !w.starts_with(|c: char| c.is_ascii_digit())).map(str::to_string);
                    out.defines.entry(name.to_string()).or_default().extend(body);
                }
            } else if let Some((name, decl)) = macro_datum(item) {
                out.data.insert(name, decl);
            }
        }
        out
    }
}

/// The name and `extern` declaration of a datum a definition macro defines:
/// `static DEFINE_PER_CPU(struct vm_struct *, cached_stacks[N]);` is `cached_stacks`, declared
/// `DECLARE_PER_CPU(struct vm_struct *, cached_stacks[N]);`.
fn macro_datum(item: &str) -> Option<(String, String)> {
    const TYPED: &[(&str, &str)] = &[
        ("DEFINE_MUTEX", "struct mutex"),
        ("DEFINE_SPINLOCK", "spinlock_t"),
        ("DEFINE_RAW_SPINLOCK", "raw_spinlock_t"),
        ("DEFINE_RWLOCK", "rwlock_t"),
        ("DEFINE_SEQLOCK", "seqlock_t"),
        ("LIST_HEAD", "struct list_head"),
        ("HLIST_HEAD", "struct hlist_head"),
        ("DEFINE_IDR", "struct idr"),
        ("DEFINE_IDA", "struct ida"),
        ("DEFINE_XARRAY", "struct xarray"),
        ("DEFINE_XARRAY_ALLOC", "struct xarray"),
        ("DECLARE_WAIT_QUEUE_HEAD", "wait_queue_head_t"),
        ("DEFINE_RATELIMIT_STATE", "struct ratelimit_state"),
        ("DECLARE_RWSEM", "struct rw_semaphore"),
        ("DEFINE_STATIC_SRCU", "struct srcu_struct"),
        ("DEFINE_SRCU", "struct srcu_struct"),
        ("DEFINE_PERCPU_RWSEM", "struct percpu_rw_semaphore"),
        ("DEFINE_STATIC_PERCPU_RWSEM", "struct percpu_rw_semaphore"),
    ];
    let item = item.trim().strip_suffix(';')?.trim_end();
    let rest = item.strip_prefix("static").filter(|r| r.starts_with(char::is_whitespace)).unwrap_or(item).trim();
    let (mac, args) = rest.split_once('(')?;
    let mac = mac.trim();
    let args = args.strip_suffix(')')?;
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in args.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(args[start..].trim());
    let ident = |p: &str| p.split('[').next().unwrap_or("").trim().to_string();
    if mac.starts_with("DEFINE_PER_CPU") {
        let name = ident(parts.last()?);
        return Some((name, format!("{}({args});", mac.replacen("DEFINE_", "DECLARE_", 1))));
    }
    let name = ident(parts.first()?);
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let decl = match mac {
        "DEFINE_STATIC_KEY_FALSE" | "DEFINE_STATIC_KEY_TRUE" => {
            format!("{}({name});", mac.replacen("DEFINE_", "DECLARE_", 1))
        }
        "DEFINE_HASHTABLE" => format!("extern struct hlist_head {name}[1 << ({})];", parts.get(1)?),
        _ => format!("extern {} {name};", TYPED.iter().find(|(m, _)| *m == mac)?.1),
    };
    Some((name, decl))
}

/// The items at file scope outside the functions and data: preprocessor lines and statements.
fn top_level_items(src: &Source<'_>, functions: &[Function], text: &str) -> Vec<String> {
    let mut cut: Vec<std::ops::Range<usize>> = functions.iter().map(|f| f.doc_start..f.range.end).collect();
    cut.extend(src.variables().into_iter().map(|v| v.range));
    cut.sort_by_key(|r| r.start);
    let mut out = Vec::new();
    let mut at = 0;
    for r in cut.iter().chain(std::iter::once(&(text.len()..text.len()))) {
        if r.start > at {
            out.extend(items(&text[at..r.start]));
        }
        at = at.max(r.end);
    }
    out
}

/// The file, item by item in its order: preprocessor lines, type definitions and prototypes
/// kept; the functions and data the bodies need copied or declared `extern`; the rest (other
/// functions and data, registrations) left out.
fn c_item(src: &Source<'_>, functions: &[Function], needs: &Needs<'_>, input: &Input<'_>) -> String {
    enum Def<'a> {
        Function(&'a Function),
        Data(Vec<Variable>),
    }
    let text = input.text;
    let mut defs: Vec<(std::ops::Range<usize>, Def<'_>)> =
        functions.iter().map(|f| (f.doc_start..f.range.end, Def::Function(f))).collect();
    // `static int a, b;` names two variables in one declaration.
    let mut data: BTreeMap<usize, Vec<Variable>> = BTreeMap::new();
    for v in src.variables() {
        data.entry(v.range.start).or_default().push(v);
    }
    defs.extend(data.into_values().map(|vs| (vs[0].range.clone(), Def::Data(vs))));
    defs.sort_by_key(|(r, _)| r.start);
    let mut out = String::new();
    let mut at = 0;
    for (range, def) in &defs {
        if range.start < at {
            continue;
        }
        keep_items(&text[at..range.start], needs, input, &mut out);
        at = range.end;
        match def {
            Def::Function(f) if needs.copied.contains(f.name.as_str()) => {
                out.push('\n');
                out.push_str(&with_kernel_statics(src, f, input, &text[f.doc_start..f.range.end]));
                out.push('\n');
            }
            Def::Function(f) if needs.extern_fns.contains(f.name.as_str()) => {
                let _ = writeln!(out, "extern {}; /* the running kernel's */", without_local_words(&f.declaration));
            }
            // A definition left out keeps its conditionals: a header written in branches
            // (`#ifdef CONFIG_CLONE_BACKWARDS` ... `#endif` before the `{`) opens or closes them.
            Def::Function(f) => out.push_str(&conditionals(&text[f.range.clone()])),
            Def::Data(vs) => {
                // A declaration (`extern int x;`) is kept as it is; a definition the patch
                // needs is its own or the kernel's.
                if vs.iter().all(|v| v.is_extern) || vs.iter().any(|v| needs.own_vars.contains(v.name.as_str())) {
                    out.push_str(&text[range.clone()]);
                    out.push('\n');
                } else {
                    for v in vs.iter().filter(|v| needs.extern_vars.contains(v.name.as_str())) {
                        let _ = writeln!(out, "extern {}; /* the running kernel's */", v.declarator.trim());
                    }
                }
            }
        }
    }
    keep_items(&text[at..], needs, input, &mut out);
    without_empty_conditionals(&out)
}

/// Whether `line` is a conditional directive (`#if`, `#ifdef`, `#ifndef`, `#elif`, `#else`,
/// `#endif`); the word, if so.
fn conditional(line: &str) -> Option<&str> {
    let word = line.trim_start().strip_prefix('#')?.trim_start();
    let word = word.split(|c: char| !c.is_ascii_alphabetic()).next()?;
    matches!(word, "if" | "ifdef" | "ifndef" | "elif" | "else" | "endif").then_some(word)
}

/// The conditional directives of `text`, one per line.
fn conditionals(text: &str) -> String {
    text.lines().filter(|l| conditional(l).is_some()).map(|l| format!("{}\n", l.trim())).collect()
}

/// `text` without conditionals that enclose nothing (`#ifdef X`, `#else`, `#endif` alone).
fn without_empty_conditionals(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    loop {
        let mut found = None;
        for (i, line) in lines.iter().enumerate() {
            if !matches!(conditional(line), Some("if" | "ifdef" | "ifndef")) {
                continue;
            }
            let branches =
                lines[i + 1..].iter().take_while(|l| matches!(conditional(l), Some("elif" | "else"))).count();
            if lines.get(i + 1 + branches).is_some_and(|l| conditional(l) == Some("endif")) {
                found = Some(i..i + branches + 2);
                break;
            }
        }
        match found {
            Some(r) => {
                lines.drain(r);
            }
            None => break,
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Appends what `gap` (text between definitions) holds that the bodies may need: preprocessor
/// lines, type definitions, prototypes (a static one only of a function the patch copies, or
/// declared `extern` for one it takes from the kernel).
fn keep_items(gap: &str, needs: &Needs<'_>, input: &Input<'_>, out: &mut String) {
    for item in items(gap) {
        let item = item.trim();
        if item.starts_with('#') {
            // The kernel defines the file's tracepoints; the patch uses them.
            if item.split_whitespace().collect::<Vec<_>>() == ["#define", "CREATE_TRACE_POINTS"] {
                out.push_str("/* #define CREATE_TRACE_POINTS: the running kernel's tracepoints are used */\n");
                continue;
            }
            out.push_str(&rewrite_include(item, input));
            out.push('\n');
            continue;
        }
        if let Some((name, decl)) = macro_datum(item) {
            if needs.macro_own.contains(name.as_str()) {
                out.push_str(item);
                out.push('\n');
            } else if needs.macro_extern.contains(name.as_str()) {
                let _ = writeln!(out, "{decl} /* the running kernel's */");
            }
            continue;
        }
        let first = item.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("");
        if REGISTRATIONS.iter().any(|r| first.starts_with(r) || first.ends_with("initcall")) {
            continue;
        }
        let words: Vec<&str> = item.split_whitespace().collect();
        let is_type = matches!(words.first(), Some(&("struct" | "union" | "enum" | "typedef")))
            && !item.contains('=')
            && (item.ends_with("};") || !item.contains('{'));
        let is_prototype = item.contains('(') && item.ends_with(';') && !item.contains('=');
        if is_type || (is_prototype && !words.contains(&"static")) {
            out.push_str(item);
            out.push('\n');
        } else if is_prototype {
            // The name declared: the last word before the parameter list.
            let head = item.split('(').next().unwrap_or("");
            let name = head.rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).find(|w| !w.is_empty());
            match name {
                Some(n) if needs.copied.contains(n) => {
                    out.push_str(item);
                    out.push('\n');
                }
                Some(n) if needs.extern_fns.contains(n) => {
                    let _ = writeln!(out, "extern {}", without_local_words(item));
                }
                _ => {}
            }
        }
    }
}

/// `#include "x.h"` of the unit's directory becomes `#include "DIR/x.h"`, which the module's
/// build finds through `--ksrc`.
fn rewrite_include(line: &str, input: &Input<'_>) -> String {
    match super::ksrc::quoted_include(&input.unit.dir, line) {
        Some(path) if (input.tree_has)(&path) => format!("#include \"{path}\""),
        _ => line.to_string(),
    }
}

/// Splits text at file scope into items: preprocessor lines, and statements ending in `;` at
/// brace depth 0 (comments dropped).
fn items(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        // A directive is an item of its own, even in the middle of a statement (a header
        // written in `#ifdef` branches).
        if line_start && c == b'#' {
            let mut end = i;
            while end < b.len() && !(b[end] == b'\n' && (end == 0 || b[end - 1] != b'\\')) {
                end += 1;
            }
            out.push(text[i..end].to_string());
            cur.clear();
            i = end;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            cur.push(' ');
            continue;
        }
        if c == b'"' || c == b'\'' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            cur.push_str(text.get(start..i).unwrap_or(""));
            continue;
        }
        line_start = c == b'\n' || (line_start && c.is_ascii_whitespace());
        match c {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ => {}
        }
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        cur.push_str(&text[i..i + ch_len]);
        i += ch_len;
        if c == b';' && depth <= 0 {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// `decl` without the words that make it local or inline.
fn without_local_words(decl: &str) -> String {
    // A weak declaration of an undefined symbol would resolve to nothing.
    let decl = decl.replace("__attribute__((weak))", "").replace("__attribute__((__weak__))", "");
    decl.split_whitespace().filter(|w| !LOCAL_WORDS.contains(w)).collect::<Vec<_>>().join(" ")
}

/// A string literal of the patch language.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The replacement's signature in the patch language, from the C prototype.
fn signature(f: &Function) -> Result<String, String> {
    let mut params = Vec::new();
    for (i, (ty, name)) in f.params.iter().enumerate() {
        if ty == "..." {
            return Err("it is variadic".into());
        }
        let name = if name.is_empty() { format!("_arg{i}") } else { name.clone() };
        params.push(format!("{name}: {}", rust_type(ty)?));
    }
    let ret = f.return_type.trim();
    let ret = if ret == "void" { String::new() } else { format!(" -> {}", rust_type(ret)?) };
    Ok(format!("({}){ret}", params.join(", ")))
}

/// The patch language's spelling of a C type, as C bodies take them: primitives by value,
/// everything else behind a pointer.
pub(crate) fn rust_type(c: &str) -> Result<String, String> {
    const QUALIFIERS: &[&str] = &[
        "const",
        "volatile",
        "__user",
        "__rcu",
        "__iomem",
        "__force",
        "restrict",
        "__restrict",
        "__percpu",
        "register",
    ];
    let stars = c.matches('*').count();
    let text = c.replace('*', " ");
    let words: Vec<&str> = text.split_whitespace().filter(|w| !QUALIFIERS.contains(w)).collect();
    if c.contains('(') || c.contains('[') {
        return Ok("*mut c_void".into());
    }
    let pointee_const = c.split('*').next().is_some_and(|b| b.split_whitespace().any(|w| w == "const"));
    let base = match words.as_slice() {
        ["void"] => "c_void".to_string(),
        ["char"] => "c_char".into(),
        ["signed", "char"] | ["s8"] | ["__s8"] => "i8".into(),
        ["unsigned", "char"] | ["u8"] | ["__u8"] => "u8".into(),
        ["short"] | ["short", "int"] | ["signed", "short"] | ["s16"] | ["__s16"] => "i16".into(),
        ["unsigned", "short"] | ["unsigned", "short", "int"] | ["u16"] | ["__u16"] | ["umode_t"] => "u16".into(),
        ["int"] | ["signed"] | ["signed", "int"] | ["s32"] | ["__s32"] | ["pid_t"] | ["uid_t"] | ["gid_t"] => {
            "c_int".into()
        }
        ["unsigned"] | ["unsigned", "int"] | ["u32"] | ["__u32"] | ["gfp_t"] | ["fmode_t"] | ["dev_t"] => {
            "c_uint".into()
        }
        ["long"] | ["long", "int"] | ["signed", "long"] | ["ssize_t"] | ["time64_t"] => "c_long".into(),
        ["unsigned", "long"] | ["unsigned", "long", "int"] | ["size_t"] | ["sector_t"] | ["pgoff_t"] => {
            "c_ulong".into()
        }
        ["long", "long"] | ["s64"] | ["__s64"] | ["loff_t"] | ["ktime_t"] => "i64".into(),
        ["unsigned", "long", "long"] | ["u64"] | ["__u64"] => "u64".into(),
        ["bool"] | ["_Bool"] => "bool".into(),
        ["struct" | "union", name] if stars > 0 => (*name).to_string(),
        ["enum", _] if stars == 0 => "c_int".into(),
        ["enum", _] => "c_void".into(),
        [name] if stars > 0 => (*name).to_string(),
        _ => return Err(format!("`{c}` by value")),
    };
    if stars == 0 {
        if base == "c_void" {
            return Err("a `void` parameter".into());
        }
        return Ok(base);
    }
    let mut out = base;
    for level in 0..stars {
        let kw = if level == 0 && pointee_const { "*const" } else { "*mut" };
        out = format!("{kw} {out}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_patch_is_for_its_release_in_every_flavour() {
        assert_eq!(release_glob("6.1.0-57-amd64"), "6.1.0-57-*");
        assert_eq!(release_glob("6.1.0-57-rt-amd64"), "6.1.0-57-*");
        assert_eq!(release_glob("6.1.0-57-cloud-amd64"), "6.1.0-57-*");
        assert_eq!(release_glob("6.12.118+deb12-amd64"), "6.12.118+deb12-*");
        assert_eq!(release_glob("6.8.0"), "6.8.0");
        for flavour in ["6.1.0-57-amd64", "6.1.0-57-rt-amd64", "6.1.0-57-cloud-amd64"] {
            assert!(crate::linux::kdir::glob_match(release_glob(flavour).as_bytes(), b"6.1.0-57-rt-amd64"));
        }
        assert!(!crate::linux::kdir::glob_match(release_glob("6.1.0-57-amd64").as_bytes(), b"6.1.0-56-amd64"));
    }

    #[test]
    fn only_data_that_is_itself_const_is_read_only() {
        assert!(is_read_only("const struct e { char *desc; int n; } table[]", "table"));
        assert!(is_read_only("const int limits[4]", "limits"));
        assert!(is_read_only("const char * const names[]", "names"));
        assert!(!is_read_only("const char *last", "last"), "a pointer to const data is itself writable");
        assert!(!is_read_only("int counter", "counter"));
        assert!(!is_read_only("struct e { const char *desc; } seen", "seen"));
    }

    #[test]
    fn c_types_are_spelled_as_the_patch_language_takes_them() {
        assert_eq!(rust_type("struct seq_file *").as_deref(), Ok("*mut seq_file"));
        assert_eq!(rust_type("const char __user *").as_deref(), Ok("*const c_char"));
        assert_eq!(rust_type("void *").as_deref(), Ok("*mut c_void"));
        assert_eq!(rust_type("unsigned long").as_deref(), Ok("c_ulong"));
        assert_eq!(rust_type("loff_t *").as_deref(), Ok("*mut i64"));
        assert_eq!(rust_type("char **").as_deref(), Ok("*mut *mut c_char"));
        assert!(rust_type("struct timespec64").is_err());
    }

    #[test]
    fn definition_macros_are_declared_extern_by_their_kind() {
        let d = |item: &str| macro_datum(item).map(|(n, decl)| format!("{n}: {decl}"));
        assert_eq!(
            d("static DEFINE_PER_CPU(struct vm_struct *, cached_stacks[NR_CACHED_STACKS]);").as_deref(),
            Some("cached_stacks: DECLARE_PER_CPU(struct vm_struct *, cached_stacks[NR_CACHED_STACKS]);")
        );
        assert_eq!(d("static DEFINE_SPINLOCK(lock);").as_deref(), Some("lock: extern spinlock_t lock;"));
        assert_eq!(d("DEFINE_MUTEX(m);").as_deref(), Some("m: extern struct mutex m;"));
        assert_eq!(
            d("static DEFINE_HASHTABLE(tbl, 7);").as_deref(),
            Some("tbl: extern struct hlist_head tbl[1 << (7)];")
        );
        assert_eq!(d("EXPORT_SYMBOL(foo);"), None);
        assert_eq!(d("static DEFINE_NOTHING_KNOWN(x);"), None);
    }

    #[test]
    fn conditionals_that_enclose_nothing_go_and_others_stay() {
        let text = "#ifdef A\n#else\n#endif\n#ifdef B\n#ifdef C\n#endif\n#endif\n#ifdef D\nint x;\n#endif\n";
        assert_eq!(without_empty_conditionals(text), "#ifdef D\nint x;\n#endif\n");
        // A header written in branches keeps its directives when the definition is left out.
        let header = "SYSCALL_DEFINE1(a, int, x)\n#else\nSYSCALL_DEFINE1(a, long, x)\n#endif\n{\n#ifdef E\n#endif\n}";
        assert_eq!(conditionals(header), "#else\n#endif\n#ifdef E\n#endif\n");
    }

    #[test]
    fn file_scope_items_are_split_and_comments_dropped() {
        let got = items("#include <a.h>\n/* { */ struct x { int a; };\nEXPORT_SYMBOL(f);\n#define X(a) \\\n  (a)\n");
        let got: Vec<&str> = got.iter().map(|s| s.trim()).collect();
        assert_eq!(got, ["#include <a.h>", "struct x { int a; };", "EXPORT_SYMBOL(f);", "#define X(a) \\\n  (a)"]);
    }
}
