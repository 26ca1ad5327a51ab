//! Module parameters (`param NAME: T = default;`): a `module_param` of the patch module, read
//! by Rust bodies as a static and by C bodies by its name.
//!
//! The parameter is defined in the patch's C file, where the kernel's `module_param` macro
//! builds its `struct kernel_param` and `.modinfo` entries; the C variable carries the symbol
//! `__kgraft_param_NAME`, which the Rust crate declares `extern`.

use std::fmt::Write as _;

use crate::ast::*;
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics};

/// The Rust spellings a parameter may have, with the C type and `module_param`'s type name.
const TYPES: &[(&[&str], &str, &str)] = &[
    (&["bool"], "bool", "bool"),
    (&["c_int", "i32", "s32"], "int", "int"),
    (&["c_uint", "u32"], "unsigned int", "uint"),
    (&["c_long", "i64", "s64", "isize", "ssize_t"], "long", "long"),
    (&["c_ulong", "u64", "usize", "size_t"], "unsigned long", "ulong"),
    (&["c_short", "i16", "s16"], "short", "short"),
    (&["c_ushort", "u16"], "unsigned short", "ushort"),
    (&["c_uchar", "u8"], "unsigned char", "byte"),
    (&["*const c_char", "*mut c_char"], "char *", "charp"),
];

/// Returns the C type and the `module_param` type of a Rust type's text.
fn kind(ty: &str) -> Option<(&'static str, &'static str)> {
    let norm: String = ty.split_whitespace().collect::<Vec<_>>().join(" ").replace("* ", "*");
    TYPES.iter().find(|(rust, ..)| rust.contains(&norm.as_str())).map(|(_, c, k)| (*c, *k))
}

/// Returns the default value as C text, or a reason it is not one.
fn c_default(p: &ModParam, kind: &str) -> Result<String, &'static str> {
    let expr: syn::Expr = syn::parse_str(&p.default.text).map_err(|_| "not a literal")?;
    let (neg, lit) = match &expr {
        syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => match &*u.expr {
            syn::Expr::Lit(l) => (true, &l.lit),
            _ => return Err("not a literal"),
        },
        syn::Expr::Lit(l) => (false, &l.lit),
        _ => return Err("not a literal"),
    };
    match (kind, lit) {
        ("bool", syn::Lit::Bool(b)) if !neg => Ok(if b.value { "1" } else { "0" }.to_owned()),
        ("charp", syn::Lit::Str(s)) if !neg => {
            let mut out = String::from("\"");
            for b in s.value().bytes() {
                match b {
                    b'"' | b'\\' => {
                        out.push('\\');
                        out.push(b as char);
                    }
                    0 => return Err("a string with a NUL character"),
                    0x20..=0x7e => out.push(b as char),
                    _ => {
                        let _ = write!(out, "\\{b:03o}");
                    }
                }
            }
            out.push('"');
            Ok(out)
        }
        ("bool" | "charp", _) => Err("not a literal of the parameter's type"),
        (_, syn::Lit::Int(i)) if i.suffix().is_empty() => {
            let v: u64 = i.base10_parse().map_err(|_| "out of range")?;
            let (min, max): (i128, i128) = match kind {
                "int" => (i32::MIN.into(), i32::MAX.into()),
                "uint" => (0, u32::MAX.into()),
                "long" => (i64::MIN.into(), i64::MAX.into()),
                "ulong" => (0, u64::MAX.into()),
                "short" => (i16::MIN.into(), i16::MAX.into()),
                "ushort" => (0, u16::MAX.into()),
                _ => (0, u8::MAX.into()),
            };
            let value = if neg { -i128::from(v) } else { i128::from(v) };
            if value < min || value > max {
                return Err("out of the parameter type's range");
            }
            Ok(match kind {
                "ulong" => format!("{value}UL"),
                "long" if value == i128::from(i64::MIN) => "(-9223372036854775807L - 1)".to_owned(),
                "long" => format!("{value}L"),
                "uint" => format!("{value}U"),
                _ => value.to_string(),
            })
        }
        _ => Err("not an integer literal without a suffix"),
    }
}

/// Checks every parameter's type and default.
pub(crate) fn check(file: &File, diags: &mut Diagnostics) {
    for item in &file.items {
        let Item::Param(p) = item else { continue };
        let Some((_, k)) = kind(&p.ty.text) else {
            diags.push(
                Diagnostic::error(codes::E0065, format!("the parameter `{}` has a type a module parameter cannot have", p.name.name))
                    .primary(p.ty.span, "not a parameter type")
                    .note("a module parameter is an integer (`c_int`, `c_uint`, `c_long`, `c_ulong`, `i16`, `u16`, `u8` and their aliases), `bool`, or a string (`*const c_char`)")
                    .help("use one of these types"),
            );
            continue;
        };
        if let Err(why) = c_default(p, k) {
            let example = match k {
                "bool" => "`false`",
                "charp" => "`\"text\"`",
                _ => "`0` or `-1`",
            };
            diags.push(
                Diagnostic::error(codes::E0066, format!("the default of `{}` is {why}", p.name.name))
                    .primary(p.default.span, "expected a literal")
                    .note("the default is compiled into the module as C, so it is a literal of the parameter's type")
                    .help(format!("write a literal such as {example}")),
            );
        }
    }
}

/// Returns the C that defines the parameters, or an empty string when there are none.
///
/// Only called on checked sources.
pub(crate) fn c_definitions(file: &File) -> String {
    let mut out = String::new();
    for item in &file.items {
        let Item::Param(p) = item else { continue };
        let Some((c_ty, k)) = kind(&p.ty.text) else { continue };
        let Ok(default) = c_default(p, k) else { continue };
        if out.is_empty() {
            out.push_str("// The patch's module parameters.\n#include <linux/moduleparam.h>\n");
        }
        let name = &p.name.name;
        let sep = if c_ty.ends_with('*') { "" } else { " " };
        let _ = writeln!(out, "{c_ty}{sep}{name} __asm__(\"__kgraft_param_{name}\") = {default};");
        let _ = writeln!(out, "module_param({name}, {k}, 0644);");
        let desc: String = p.docs.iter().map(|d| d.text.trim()).collect::<Vec<_>>().join(" ");
        if !desc.is_empty() {
            let desc: String = desc
                .chars()
                .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
                .filter(|c| !c.is_control())
                .collect();
            let _ = writeln!(out, "MODULE_PARM_DESC({name}, \"{desc}\");");
        }
    }
    out
}

/// Checks `replace_all: NAME`: `NAME` is a parameter of the patch, of type `bool` or an integer.
pub(crate) fn check_replace_all(file: &File, header: &crate::check::HeaderInfo, diags: &mut Diagnostics) {
    let Some(name) = &header.replace_param else { return };
    let param = file.items.iter().find_map(|i| match i {
        Item::Param(p) if p.name.name == name.name => Some(p),
        _ => None,
    });
    let why = match param.map(|p| kind(&p.ty.text)) {
        None => format!("the patch has no parameter `{}`", name.name),
        Some(Some((_, "charp"))) => format!("`{}` is a string", name.name),
        // A parameter of a type E0065 refuses is reported there.
        Some(_) => return,
    };
    let mut d = Diagnostic::error(
        codes::E0070,
        format!("`replace_all: {}` needs a `bool` or integer parameter, and {why}", name.name),
    )
    .primary(name.span, "not a `bool` or integer parameter of this patch")
    .note("`replace_all: NAME` replaces every loaded patch when the parameter `NAME` is true or not zero at load")
    .help(format!("declare it, as `param {}: c_int = 0;`, or write `true` or `false`", name.name));
    if let Some(p) = param {
        d = d.secondary(p.ty.span, "declared as a string here");
    }
    diags.push(d);
}
