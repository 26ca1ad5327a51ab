//! `replace syscall NAME(args) -> c_long { ... }`: one body for every entry of a system call.
//!
//! On x86-64 a system call `NAME` is entered through `__x64_sys_NAME` (64-bit tasks, and x32
//! tasks for the calls x32 shares) and `__ia32_sys_NAME` (32-bit tasks, with
//! `CONFIG_IA32_EMULATION`), each taking the task's saved registers. The lowering makes the
//! body one function and each entry a replacement that unpacks the registers as the kernel's
//! `SYSCALL_DEFINE` does (see `kgraft_rt::syscall`).

use std::collections::HashMap;

use crate::ast::*;
use crate::check::{self as checks, Shadows};
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::kernel::Kernel;

/// The x86-64 entries of a system call: the ABI's name, the entry's symbol prefix and the
/// registers that carry the arguments, in order.
pub(crate) const ABIS: &[(&str, &str, &[&str])] = &[
    ("x64", "__x64_sys_", &["di", "si", "dx", "r10", "r8", "r9"]),
    ("ia32", "__ia32_sys_", &["bx", "cx", "dx", "si", "di", "bp"]),
];

/// Returns the ABIs whose entry of `name` the patch replaces: those the kernel has, or every
/// one when the target is not known.
pub(crate) fn entries(name: &str, kernel: Option<&Kernel>) -> Vec<(&'static str, String, &'static [&'static str])> {
    ABIS.iter()
        .map(|(abi, prefix, regs)| (*abi, format!("{prefix}{name}"), *regs))
        .filter(|(_, symbol, _)| kernel.is_none_or(|k| has_function(k, symbol)))
        .collect()
}

/// Whether vmlinux has the function `symbol` (by its symbols when read, else by its BTF).
fn has_function(kernel: &Kernel, symbol: &str) -> bool {
    let Some(obj) = kernel.objects.get("vmlinux") else { return false };
    match &obj.symbols {
        Some(symbols) => symbols.contains_key(symbol),
        None => obj.functions.contains_key(symbol),
    }
}

/// Checks every `replace syscall` item's shape and body.
pub(crate) fn check(file: &File, shadows: &Shadows, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, crate::diagnostic::Span> = HashMap::new();
    for item in &file.items {
        let Item::Syscall(sc) = item else { continue };
        let sig = &sc.sig;
        checks::keyword(&sig.name, "a system call name", diags);
        if let Some(prev) = seen.insert(&sig.name.name, sig.name.span) {
            diags.push(
                Diagnostic::error(codes::E0011, format!("the system call `{}` is replaced twice", sig.name.name))
                    .primary(sig.name.span, "replaced again here")
                    .secondary(prev, "first replaced here")
                    .note("one patch site can jump to one replacement")
                    .help("merge the two bodies"),
            );
        }
        let named = sig.params.iter().filter(|p| matches!(p, Param::Named { .. })).count();
        for p in &sig.params {
            if let Param::Variadic(span) = p {
                diags.push(
                    Diagnostic::error(codes::E0063, "a system call cannot take `...`")
                        .primary(*span, "variadic")
                        .note("a system call takes at most six arguments, each in a register"),
                );
            }
        }
        if named > 6 {
            diags.push(
                Diagnostic::error(codes::E0063, format!("`{}` takes {named} arguments", sig.name.name))
                    .primary(sig.name.span, "more than six arguments")
                    .note("a system call takes at most six arguments, each in a register"),
            );
        }
        if sig.ret.is_none() {
            diags.push(
                Diagnostic::error(codes::E0063, format!("the system call `{}` returns nothing", sig.name.name))
                    .primary(sc.head, "no return type")
                    .note("a system call's entry returns a `long`: the result, or a negative errno")
                    .help("add `-> c_long`"),
            );
        }
        for p in &sig.params {
            if let Param::Named { ty, .. } = p {
                checks::check_type(ty, diags);
            }
        }
        if let Some(r) = &sig.ret {
            checks::check_type(r, diags);
        }
        let params: HashMap<&str, Option<&str>> = sig
            .params
            .iter()
            .filter_map(|p| match p {
                Param::Named { name, ty, .. } => Some((name.name.as_str(), checks::pointee(&ty.text))),
                Param::Variadic(_) => None,
            })
            .collect();
        if sc.in_c.is_none() {
            checks::check_body(&sc.body, &params, shadows, diags);
        }
    }
}

/// Checks the system calls against the target: at least one entry exists.
pub(crate) fn check_against(file: &File, kernel: &Kernel, diags: &mut Diagnostics) {
    for item in &file.items {
        let Item::Syscall(sc) = item else { continue };
        let name = &sc.sig.name.name;
        if entries(name, Some(kernel)).is_empty() {
            diags.push(
                Diagnostic::error(codes::E0064, format!("{} has no system call `{name}`", kernel.release))
                    .primary(sc.sig.name.span, format!("neither `__x64_sys_{name}` nor `__ia32_sys_{name}` exists"))
                    .note(
                        "a system call is named as in `SYSCALL_DEFINE` (`getpriority`, not `sys_getpriority`); \
                           the user-mode host has no system call entries at all",
                    )
                    .help("build this patch for a Linux kernel (`--target linux`)"),
            );
        }
    }
}
