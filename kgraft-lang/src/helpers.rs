//! Top-level helper functions (`fn NAME(...) -> T { ... }`) and the refusal of `static mut`.
//!
//! A helper is lowered to an `unsafe fn` of the generated crate (see `lower_items.rs`); the
//! checks here make sure it can be: a name of its own, no `...`, a body that is a Rust block.

use std::collections::{BTreeMap, HashMap};

use crate::ast::*;
use crate::check::{self, Shadows};
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, Span};

/// Checks every helper function and refuses every `static mut`.
///
/// `names` holds the `extern` symbols and the patch's statics, with where they are declared.
pub(crate) fn check(file: &File, names: &BTreeMap<String, Span>, shadows: &Shadows, diags: &mut Diagnostics) {
    // The Rust names of replacements with a Rust body: the name of the function replaced.
    let mut replaced: HashMap<&str, Span> = HashMap::new();
    for t in check::targets(file) {
        if t.func.in_c.is_none() && t.func.attrs.is_empty() && t.object == "vmlinux" {
            replaced.entry(t.func.sig.name.name.as_str()).or_insert(t.func.sig.name.span);
        }
    }
    let mut helpers: HashMap<&str, Span> = HashMap::new();
    for item in &file.items {
        match item {
            Item::StaticMut(g) => static_mut(g, diags),
            Item::Helper(h) => {
                let name = &h.sig.name;
                check::keyword(name, "a function name", diags);
                let clash = names
                    .get(&name.name)
                    .map(|s| (*s, "declared here as an `extern` symbol or a `static`"))
                    .or_else(|| {
                        replaced.get(name.name.as_str()).map(|s| (*s, "the replacement of this function has that name"))
                    })
                    .or_else(|| helpers.get(name.name.as_str()).map(|s| (*s, "first defined here")));
                match clash {
                    Some((prev, what)) => diags.push(
                        Diagnostic::error(codes::E0035, format!("the helper `{}` has a name already in use", name.name))
                            .primary(name.span, "this helper")
                            .secondary(prev, what)
                            .note("helpers, extern symbols, statics and Rust replacements share one namespace in the generated crate")
                            .help("rename the helper"),
                    ),
                    None => {
                        helpers.insert(&name.name, name.span);
                    }
                }
                for p in &h.sig.params {
                    match p {
                        Param::Variadic(span) => diags.push(
                            Diagnostic::error(codes::E0035, format!("the helper `{}` is variadic", name.name))
                                .primary(*span, "a helper cannot take `...`")
                                .note("Rust functions other than foreign declarations cannot take a C variable argument list")
                                .help("take the values as ordinary parameters, or write the helper in a `c { }` item"),
                        ),
                        Param::Named { name, ty, .. } => {
                            if name.name != "_" {
                                check::keyword(name, "a parameter name", diags);
                            }
                            check::check_type(ty, diags);
                        }
                    }
                }
                if let Some(ret) = &h.sig.ret {
                    check::check_type(ret, diags);
                }
                let params: HashMap<&str, Option<&str>> = h
                    .sig
                    .params
                    .iter()
                    .filter_map(|p| match p {
                        Param::Named { name, ty, .. } => Some((name.name.as_str(), check::pointee(&ty.text))),
                        Param::Variadic(_) => None,
                    })
                    .collect();
                check::check_body(&h.body, &params, shadows, diags);
            }
            _ => {}
        }
    }
}

fn static_mut(g: &Global, diags: &mut Diagnostics) {
    diags.push(
        Diagnostic::error(codes::E0034, format!("`static mut {}`: a patch's data cannot be `static mut`", g.name.name))
            .primary(g.name.span, "every CPU running the patched code would share this, unsynchronised")
            .note("patched functions run on every CPU at once; a `static mut` would be written by several of them with nothing to order the writes")
            .help(format!(
                "use an atomic, which needs no `mut` (`static {}: core::sync::atomic::AtomicU64 = ...`), or a kernel lock around the data",
                g.name.name
            )),
    );
}
