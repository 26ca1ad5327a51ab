//! C bodies: `replace fn f(...) -> T in C { ... }` and the `c { ... }` items they share.
//!
//! The signature of a C-bodied replacement keeps its Rust spelling (checked like any other);
//! this module spells it in C and writes the patch's C file: the `c { }` items verbatim, then
//! one C function per C body, named `__kgraft_c_<name>` so that it never clashes with the
//! kernel's own symbol. Every piece copied from the `.kgp` file is preceded by a `#line`
//! directive and indented to its original column, so gcc's line and column (counted in bytes)
//! are the `.kgp` file's own. The Rust crate declares each function `extern "C"` and hands its
//! address to the patch descriptor (see `lower_items.rs`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::ast::*;
use crate::check::{self, Target};
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, SourceFile, Span};

/// A function whose body is C: a `replace fn ... in C` or a `replace syscall ... in C`.
struct CFn<'a> {
    /// The object whose function it replaces (`vmlinux` for a system call).
    object: &'a str,
    sig: &'a Signature,
    /// Its C name.
    symbol: String,
    /// Where its item starts (`replace`).
    start: usize,
    body: &'a Fragment,
    /// Whether it is a system call's body.
    syscall: bool,
}

/// The functions of `file` whose bodies are C, in source order.
fn c_functions(file: &File) -> Vec<CFn<'_>> {
    let mut ignored = Diagnostics::default();
    let mut out: Vec<CFn<'_>> = check::targets(file)
        .into_iter()
        .filter(|t| t.func.in_c.is_some())
        .map(|t| CFn {
            object: t.object,
            sig: &t.func.sig,
            symbol: symbol(&t, check::sympos(t.func, &mut ignored)),
            start: t.func.head.start,
            body: &t.func.body,
            syscall: false,
        })
        .collect();
    for item in &file.items {
        if let Item::Syscall(sc) = item
            && sc.in_c.is_some()
        {
            out.push(CFn {
                object: "vmlinux",
                sig: &sc.sig,
                symbol: syscall_symbol(&sc.sig.name.name),
                start: sc.head.start,
                body: &sc.body,
                syscall: true,
            });
        }
    }
    out.sort_by_key(|f| f.start);
    out
}

/// The C name of the body of `replace syscall NAME ... in C`, which the entries call.
pub(crate) fn syscall_symbol(name: &str) -> String {
    format!("__kgraft_c_sys_{name}")
}

/// Checks that every C-bodied replacement's signature has a C spelling.
pub(crate) fn check(file: &File, diags: &mut Diagnostics) {
    for f in c_functions(file) {
        for p in &f.sig.params {
            if let Param::Named { ty, .. } = p
                && let Err((span, why)) = spell_fragment(ty, false)
            {
                diags.push(unspellable(span, &why));
            }
        }
        if let Some(ret) = &f.sig.ret
            && let Err((span, why)) = spell_fragment(ret, true)
        {
            diags.push(unspellable(span, &why));
        }
    }
}

fn unspellable(span: Span, why: &str) -> Diagnostic {
    Diagnostic::error(codes::E0033, "this type has no C spelling")
        .primary(span, why.to_owned())
        .note("a C body's prototype is written from its Rust signature: primitives, and raw pointers to primitives or to named types")
        .help("pass a raw pointer (`*mut T` is `struct T *`), or `*mut c_void` and cast in C")
}

/// Returns the C symbol of a C-bodied replacement.
pub(crate) fn symbol(t: &Target<'_>, sympos: u32) -> String {
    let mut name = String::from("__kgraft_c_");
    if t.object != "vmlinux" {
        name.push_str(&t.object.replace('-', "_"));
        name.push_str("__");
    }
    name.push_str(&t.func.sig.name.name);
    if sympos > 0 {
        let _ = write!(name, "__sympos{sympos}");
    }
    name
}

/// A C type and the struct names it needs declared.
struct Spelled {
    text: String,
    structs: BTreeSet<String>,
}

fn spell_fragment(frag: &Fragment, is_return: bool) -> Result<Spelled, (Span, String)> {
    // The checks report types syn does not parse; such a type is not this module's to report.
    let Ok(ty) = syn::parse_str::<syn::Type>(&frag.text) else {
        return Ok(Spelled { text: "int".to_owned(), structs: BTreeSet::new() });
    };
    let mut structs = BTreeSet::new();
    match spell(&ty, is_return, &mut structs) {
        Ok(text) => Ok(Spelled { text, structs }),
        Err((span, why)) => Err((span.map_or(frag.span, |s| check::node_span(s, frag)), why)),
    }
}

/// The C spelling of Rust's and the prelude's primitive types.
fn primitive(name: &str) -> Option<&'static str> {
    Some(match name {
        "u8" | "c_uchar" => "unsigned char",
        "i8" | "s8" | "c_schar" => "signed char",
        "c_char" => "char",
        "u16" | "c_ushort" => "unsigned short",
        "i16" | "s16" | "c_short" => "short",
        "u32" | "c_uint" | "gfp_t" => "unsigned int",
        "i32" | "s32" | "c_int" => "int",
        "u64" | "c_ulonglong" => "unsigned long long",
        "i64" | "s64" | "c_longlong" | "loff_t" => "long long",
        "usize" | "c_ulong" | "size_t" => "unsigned long",
        "isize" | "c_long" | "ssize_t" => "long",
        "u128" => "unsigned __int128",
        "i128" => "__int128",
        "bool" => "_Bool",
        "f32" => "float",
        "f64" => "double",
        _ => return None,
    })
}

type Refusal = (Option<proc_macro2::Span>, String);

fn spell(ty: &syn::Type, is_return: bool, structs: &mut BTreeSet<String>) -> Result<String, Refusal> {
    use syn::spanned::Spanned;
    match ty {
        syn::Type::Tuple(t) if t.elems.is_empty() && is_return => Ok("void".to_owned()),
        syn::Type::Paren(p) => spell(&p.elem, is_return, structs),
        syn::Type::Path(p) => {
            let name = single_name(p)
                .ok_or_else(|| (Some(p.span()), "write the type as one name, without `::` or generics".to_owned()))?;
            primitive(&name).map(str::to_owned).ok_or_else(|| {
                let why = if name == "c_void" {
                    "`c_void` is only meaningful behind a pointer".to_owned()
                } else {
                    format!("`{name}` by value: C bodies take kernel types behind a pointer")
                };
                (Some(p.span()), why)
            })
        }
        syn::Type::Ptr(ptr) => {
            let pointee = match &*ptr.elem {
                syn::Type::Ptr(_) | syn::Type::Paren(_) => spell(&ptr.elem, false, structs)?,
                syn::Type::Path(p) => {
                    let name = single_name(p).ok_or_else(|| {
                        (Some(p.span()), "write the pointee as one name, without `::` or generics".to_owned())
                    })?;
                    if let Some(c) = primitive(&name) {
                        c.to_owned()
                    } else if name == "c_void" {
                        "void".to_owned()
                    } else if name.ends_with("_t") {
                        name
                    } else {
                        structs.insert(name.clone());
                        format!("struct {name}")
                    }
                }
                other => {
                    return Err((Some(other.span()), "this pointee has no C spelling".to_owned()));
                }
            };
            Ok(match (ptr.const_token.is_some(), pointee.ends_with('*')) {
                (false, true) => format!("{pointee}*"),
                (false, false) => format!("{pointee} *"),
                (true, true) => format!("{pointee} const *"),
                (true, false) => format!("const {pointee} *"),
            })
        }
        syn::Type::Never(_) => Err((Some(ty.span()), "a C body cannot be declared not to return".to_owned())),
        syn::Type::Reference(_) => Err((Some(ty.span()), "a reference: use a raw pointer".to_owned())),
        _ => Err((Some(ty.span()), "only primitives and raw pointers have a C spelling here".to_owned())),
    }
}

fn single_name(p: &syn::TypePath) -> Option<String> {
    (p.qself.is_none()
        && p.path.leading_colon.is_none()
        && p.path.segments.len() == 1
        && p.path.segments[0].arguments.is_none())
    .then(|| p.path.segments[0].ident.to_string())
}

/// `text` as the inside of a C string literal: `\\` and `"` escaped, control characters as octal
/// escapes, everything else (non-ASCII included) as it is, since gcc prints a `#line` name back
/// byte for byte and the diagnostics are matched on the name as given.
fn c_string_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The unit (an index into `named`, the named `c` items' starts in source order, plus one; 0
/// for the C before any of them) that a piece starting at `at` belongs to.
fn unit_at(named: &[usize], at: usize) -> usize {
    named.partition_point(|&start| start <= at)
}

/// Writes the patch's C files, one per unit (see [`CItem`]); empty when the patch has no C.
///
/// Only called on checked sources, whose C signatures all have a spelling.
/// The object section `KGRAFT_SYMPOS` writes its records to (`name,N` or `name,near = "ANCHOR"`,
/// the position as `#[sympos(...)]` spells it, each NUL-terminated), which the build reads from each C object; the module's linker script
/// drops it.
pub const SYMPOS_SECTION: &str = ".discard.kgraft_sympos";

/// The C prelude's `KGRAFT_SYMPOS("name", N);` and `KGRAFT_SYMPOS_NEAR("name", "anchor");`:
/// which of the running kernel's symbols named `name` (a function or datum the C declares and
/// the kernel does not export) the C means, for names that several files' statics share: the
/// Nth in kallsyms, or the one nearest the unique `anchor` there (see [`crate::sympos`]).
const SYMPOS_MACRO: &str = "\
/* KGRAFT_SYMPOS(\"name\", N): the running kernel's `name` is the Nth of that name in kallsyms. */
#define KGRAFT_SYMPOS(name, n) KGRAFT_SYMPOS_1(__COUNTER__, name, #n)
/* KGRAFT_SYMPOS_NEAR(\"name\", \"anchor\"): it is the one nearest `anchor`, on every target. */
#define KGRAFT_SYMPOS_NEAR(name, anchor) KGRAFT_SYMPOS_1(__COUNTER__, name, \"near = \\\"\" anchor \"\\\"\")
#define KGRAFT_SYMPOS_1(id, name, what) KGRAFT_SYMPOS_2(id, name, what)
#define KGRAFT_SYMPOS_2(id, name, what) static const char __kgraft_sympos_##id[] \\
\t__attribute__((used, section(\".discard.kgraft_sympos\"))) = name \",\" what
";

pub(crate) fn c_units(source: &SourceFile, file: &File) -> Vec<CUnit> {
    let functions = c_functions(file);
    let items: Vec<&CItem> =
        file.items.iter().filter_map(|i| if let Item::C(c) = i { Some(c) } else { None }).collect();
    let params = crate::params::c_definitions(file);
    if functions.is_empty() && items.is_empty() && params.is_empty() {
        return Vec::new();
    }
    let named: Vec<usize> = items.iter().filter(|c| c.unit.is_some()).map(|c| c.keyword.start).collect();
    let names: Vec<Option<String>> = std::iter::once(None)
        .chain(items.iter().filter_map(|c| c.unit.as_ref().map(|(name, _)| Some(name.clone()))))
        .collect();
    let file_name = c_string_text(&source.name);
    // Copies `frag[from..to]` (the inside of its braces, or all of it) at its line and column.
    let verbatim = |out: &mut String, frag: &Fragment, from: usize, to: usize| {
        let at = frag.span.start + from;
        let (line, _) = source.line_col(at);
        let line_start = source.offset(line, 1);
        let _ = writeln!(out, "#line {line} \"{file_name}\"");
        out.push_str(&" ".repeat(at - line_start));
        out.push_str(&frag.text[from..to]);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    };
    // Each unit's pieces: the signatures' struct names, its `c` items, its bodies.
    let mut structs = vec![BTreeSet::new(); names.len()];
    let mut unit_items: Vec<Vec<&CItem>> = vec![Vec::new(); names.len()];
    let mut prototypes = vec![Vec::new(); names.len()];
    let mut objects: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); names.len()];
    for c in &items {
        unit_items[unit_at(&named, c.keyword.start)].push(c);
    }
    for f in &functions {
        let unit = unit_at(&named, f.start);
        objects[unit].insert(f.object);
        let sig = f.sig;
        let ret = sig.ret.as_ref().and_then(|r| spell_fragment(r, true).ok()).map_or_else(
            || "void".to_owned(),
            |s| {
                structs[unit].extend(s.structs);
                s.text
            },
        );
        let mut params = Vec::new();
        for (i, p) in sig.params.iter().enumerate() {
            let Param::Named { name, ty, .. } = p else {
                continue;
            };
            let Ok(spelled) = spell_fragment(ty, false) else {
                continue;
            };
            structs[unit].extend(spelled.structs);
            let sep = if spelled.text.ends_with('*') { "" } else { " " };
            params.push(if name.name == "_" {
                format!("{}{sep}__kgraft_unused_{i} __attribute__((unused))", spelled.text)
            } else {
                format!("{}{sep}{}", spelled.text, name.name)
            });
        }
        let params = if params.is_empty() { "void".to_owned() } else { params.join(", ") };
        let sep = if ret.ends_with('*') { "" } else { " " };
        let proto = format!("{ret}{sep}{}({params})", f.symbol);
        let (head_line, _) = source.line_col(f.start);
        prototypes[unit].push((head_line, proto, f.body));
    }
    let mut units = Vec::new();
    let mut params = Some(params);
    for (unit, name) in names.into_iter().enumerate() {
        if unit_items[unit].is_empty() && prototypes[unit].is_empty() && (unit > 0 || params.as_deref() == Some("")) {
            continue;
        }
        let mut out = format!(
            "// Written by kgraftc: the C of the patch `{}`, from {}{}.\n",
            header_name(file),
            source.name.replace(['\n', '\r'], " "),
            name.as_ref().map(|n| format!(", unit \"{}\"", n.replace(['\n', '\r'], " "))).unwrap_or_default()
        );
        // Generated text comes first: after the first `#line`, every line is the `.kgp` file's.
        // The module parameters' definitions go to the first file.
        out.push_str(SYMPOS_MACRO);
        out.push_str(&params.take().unwrap_or_default());
        if !structs[unit].is_empty() {
            out.push_str("// The kernel types the signatures name, declared in case no header does.\n");
            for s in &structs[unit] {
                let _ = writeln!(out, "struct {s};");
            }
        }
        for c in &unit_items[unit] {
            let len = c.body.text.len();
            verbatim(&mut out, &c.body, 1, len.saturating_sub(1).max(1));
        }
        for (head_line, proto, body) in &prototypes[unit] {
            let _ = writeln!(out, "#line {head_line} \"{file_name}\"");
            let _ = writeln!(out, "{proto};");
            let _ = writeln!(out, "#line {head_line} \"{file_name}\"");
            let _ = writeln!(out, "{proto}");
            verbatim(&mut out, body, 0, body.text.len());
        }
        let module = match objects[unit].iter().collect::<Vec<_>>()[..] {
            [m] if *m != "vmlinux" => Some((*m).to_owned()),
            _ => None,
        };
        units.push(CUnit { name, module, text: out });
    }
    units
}

/// The functions with a C body, in source order, each with the name of its unit's `c "NAME"`
/// item (`None` for the C before any named item).
pub(crate) fn c_bodies(file: &File) -> Vec<crate::CBody> {
    let named: Vec<(usize, &str)> = file
        .items
        .iter()
        .filter_map(
            |i| if let Item::C(c) = i { c.unit.as_ref().map(|(n, _)| (c.keyword.start, n.as_str())) } else { None },
        )
        .collect();
    let starts: Vec<usize> = named.iter().map(|(s, _)| *s).collect();
    c_functions(file)
        .into_iter()
        .map(|f| crate::CBody {
            object: f.object.to_owned(),
            name: f.sig.name.name.clone(),
            body: f.body.text.clone(),
            start: f.start,
            unit: unit_at(&starts, f.start).checked_sub(1).map(|i| named[i].1.to_owned()),
            syscall: f.syscall,
        })
        .collect()
}

/// One C file of a patch: the C before any named `c` item, or a named item's unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CUnit {
    /// The name its `c "NAME" { }` item gives; `None` for the C before any named item.
    pub name: Option<String>,
    /// The module whose functions its C bodies replace, when they all replace functions of one
    /// module (not vmlinux): the symbols its C leaves undefined are that module's first.
    pub module: Option<String>,
    /// The file's text. Its `#line` directives name the `.kgp` file as [`crate::Checked`]'s
    /// source is named, so gcc's positions are the source's own (columns in bytes).
    pub text: String,
}

fn header_name(file: &File) -> &str {
    file.items
        .iter()
        .find_map(|i| if let Item::Header(h) = i { Some(h.name.name.as_str()) } else { None })
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    const TWO_UNITS: &str = r#"patch two_units {
    description: "two files",
}

c {
#define SHARED 1
}

c "fs/proc/cmdline.c" {
static int helper(void) { return SHARED; }
}

replace fn cmdline_proc_show(m: *mut seq_file, v: *mut c_void) -> c_int in C {
    return helper();
}

c "kernel/fork.c" {
static int helper(void) { return 2; }
}

module "xfs" {
    replace fn xfs_stats_format(stats: *mut xfsstats, buf: *mut c_char) -> c_int in C {
        return helper();
    }
}
"#;

    #[test]
    fn a_system_calls_c_body_is_a_function_of_its_unit_that_each_entry_calls() {
        let source = r#"patch sys {
    description: "uname",
}

c "kernel/sys.c" {
#include <linux/utsname.h>
}

/// The fixed body.
replace syscall newuname(name: *mut new_utsname) -> c_long in C {
    return name ? 0 : -EFAULT;
}
"#;
        let checked = crate::check("sys.kgp", source).map_err(|d| format!("{:?}", d.list)).expect("checks");
        let lowered = crate::lower(&checked).map_err(|d| format!("{:?}", d.list)).expect("lowers");
        let [unit] = &lowered.c_units[..] else { panic!("one unit: {:?}", lowered.c_units) };
        assert_eq!(unit.name.as_deref(), Some("kernel/sys.c"));
        assert!(unit.text.contains("long __kgraft_c_sys_newuname(struct new_utsname *name)\n"), "{}", unit.text);
        assert!(unit.text.contains("return name ? 0 : -EFAULT;"), "{}", unit.text);
        // Each entry unpacks the registers and calls the C body.
        for entry in ["__kgraft_x64_sys_newuname", "__kgraft_ia32_sys_newuname"] {
            assert!(lowered.build_source.contains(entry), "{}", lowered.build_source);
        }
        assert!(lowered.build_source.contains("fn __kgraft_c_sys_newuname("), "{}", lowered.build_source);
        let bodies = checked.c_bodies();
        assert_eq!(bodies.len(), 1);
        assert!(bodies[0].syscall && bodies[0].name == "newuname" && bodies[0].unit.as_deref() == Some("kernel/sys.c"));
    }

    #[test]
    fn each_named_c_item_begins_a_unit_of_its_own() {
        let checked = crate::check("two.kgp", TWO_UNITS).map_err(|d| format!("{:?}", d.list)).expect("checks");
        let lowered = crate::lower(&checked).map_err(|d| format!("{:?}", d.list)).expect("lowers");
        let names: Vec<Option<&str>> = lowered.c_units.iter().map(|u| u.name.as_deref()).collect();
        assert_eq!(names, [None, Some("fs/proc/cmdline.c"), Some("kernel/fork.c")]);
        let [unnamed, cmdline, fork] = &lowered.c_units[..] else { unreachable!() };
        assert!(unnamed.text.contains("#define SHARED 1") && !unnamed.text.contains("helper"));
        assert!(cmdline.text.contains("return SHARED;") && cmdline.text.contains("__kgraft_c_cmdline_proc_show("));
        assert!(!cmdline.text.contains("xfs_stats_format"), "a body belongs to the unit above it only");
        assert!(fork.text.contains("return 2;") && fork.text.contains("__kgraft_c_xfs__xfs_stats_format("));
        // The module whose functions a unit's bodies replace: its symbols are resolved there.
        assert_eq!(lowered.c_units.iter().map(|u| u.module.as_deref()).collect::<Vec<_>>(), [None, None, Some("xfs")]);
        let units: Vec<(String, Option<String>)> = checked.c_bodies().into_iter().map(|b| (b.name, b.unit)).collect();
        assert_eq!(
            units,
            [
                ("cmdline_proc_show".to_string(), Some("fs/proc/cmdline.c".to_string())),
                ("xfs_stats_format".to_string(), Some("kernel/fork.c".to_string())),
            ]
        );
    }
}
