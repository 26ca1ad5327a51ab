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

/// Checks that every C-bodied replacement's signature has a C spelling.
pub(crate) fn check(file: &File, diags: &mut Diagnostics) {
    for t in check::targets(file) {
        if t.func.in_c.is_none() {
            continue;
        }
        for p in &t.func.sig.params {
            if let Param::Named { ty, .. } = p
                && let Err((span, why)) = spell_fragment(ty, false)
            {
                diags.push(unspellable(span, &why));
            }
        }
        if let Some(ret) = &t.func.sig.ret
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

/// Writes the patch's C file, or `None` when the patch has no C.
///
/// Only called on checked sources, whose C signatures all have a spelling.
pub(crate) fn c_source(source: &SourceFile, file: &File) -> Option<String> {
    let targets: Vec<Target<'_>> = check::targets(file).into_iter().filter(|t| t.func.in_c.is_some()).collect();
    let items: Vec<&CItem> =
        file.items.iter().filter_map(|i| if let Item::C(c) = i { Some(c) } else { None }).collect();
    let params = crate::params::c_definitions(file);
    if targets.is_empty() && items.is_empty() && params.is_empty() {
        return None;
    }
    let file_name: String = source.name.chars().flat_map(char::escape_default).collect();
    let mut out = format!(
        "// Written by kgraftc: the C of the patch `{}`, from {}.\n",
        header_name(file),
        source.name.replace(['\n', '\r'], " ")
    );
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
    let mut prototypes = Vec::new();
    let mut structs = BTreeSet::new();
    let mut ignored = Diagnostics::default();
    for t in &targets {
        let sig = &t.func.sig;
        let sympos = check::sympos(t.func, &mut ignored);
        let ret = sig.ret.as_ref().and_then(|r| spell_fragment(r, true).ok()).map_or_else(
            || "void".to_owned(),
            |s| {
                structs.extend(s.structs);
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
            structs.extend(spelled.structs);
            let sep = if spelled.text.ends_with('*') { "" } else { " " };
            params.push(if name.name == "_" {
                format!("{}{sep}__kgraft_unused_{i} __attribute__((unused))", spelled.text)
            } else {
                format!("{}{sep}{}", spelled.text, name.name)
            });
        }
        let params = if params.is_empty() { "void".to_owned() } else { params.join(", ") };
        let sep = if ret.ends_with('*') { "" } else { " " };
        let proto = format!("{ret}{sep}{}({params})", symbol(t, sympos));
        let (head_line, _) = source.line_col(t.func.head.start);
        prototypes.push((head_line, proto, &t.func.body));
    }
    // Generated text comes first: after the first `#line`, every line is the `.kgp` file's.
    out.push_str(&params);
    if !structs.is_empty() {
        out.push_str("// The kernel types the signatures name, declared in case no header does.\n");
        for s in &structs {
            let _ = writeln!(out, "struct {s};");
        }
    }
    for c in &items {
        let len = c.body.text.len();
        verbatim(&mut out, &c.body, 1, len.saturating_sub(1).max(1));
    }
    for (head_line, proto, body) in prototypes {
        let _ = writeln!(out, "#line {head_line} \"{file_name}\"");
        let _ = writeln!(out, "{proto};");
        let _ = writeln!(out, "#line {head_line} \"{file_name}\"");
        let _ = writeln!(out, "{proto}");
        verbatim(&mut out, body, 0, body.text.len());
    }
    Some(out)
}

fn header_name(file: &File) -> &str {
    file.items
        .iter()
        .find_map(|i| if let Item::Header(h) = i { Some(h.name.name.as_str()) } else { None })
        .unwrap_or("")
}
