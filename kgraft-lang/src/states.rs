//! System states (`state NAME (id = N, version = V);`) and the names the patch's own items take
//! in the generated crate: states and module parameters.

use std::collections::{BTreeMap, HashMap};

use crate::ast::*;
use crate::check as checks;
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, Span};

/// A state, resolved.
#[derive(Clone, Debug)]
pub(crate) struct StateInfo {
    pub(crate) id: u64,
    pub(crate) version: u32,
}

/// Returns the resolved id and version of a state, or `None` (with its diagnostics pushed).
pub(crate) fn resolve(st: &State, diags: &mut Diagnostics) -> Option<StateInfo> {
    let mut id = None;
    let mut version = Some(0u32);
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut ok = true;
    for opt in &st.options {
        let key = opt.key.name.as_str();
        let bad = |message: String, label: &str| {
            Diagnostic::error(codes::E0060, message)
                .primary(opt.span, label.to_owned())
                .note("a state takes `id = N` (N ≥ 1) and optionally `version = V` (0 by default), each once")
        };
        if let Some(prev) = seen.insert(key, opt.span) {
            diags.push(bad(format!("`{key}` is given twice"), "given again here").secondary(prev, "first given here"));
            ok = false;
            continue;
        }
        let value = opt.value.as_ref().map(|v| parse_int(&v.name));
        match (key, value) {
            ("id", Some(Some(n))) if n > 0 => id = Some(n),
            ("version", Some(Some(n))) if n <= u64::from(u32::MAX) => version = Some(n as u32),
            ("id", _) => {
                diags.push(
                    bad("a state id is an integer from 1 to 2^64 - 1".to_owned(), "expected `id = N`, N ≥ 1")
                        .help("write `id = 1`"),
                );
                ok = false;
            }
            ("version", _) => {
                diags.push(
                    bad("a state version is an integer below 2^32".to_owned(), "expected `version = V`")
                        .help("write `version = 1`"),
                );
                ok = false;
            }
            _ => {
                diags.push(
                    bad(format!("unknown state option `{key}`"), "unknown option")
                        .help("the options are `id` and `version`"),
                );
                ok = false;
            }
        }
    }
    if id.is_none() && ok {
        diags.push(
            Diagnostic::error(codes::E0060, format!("the state `{}` has no id", st.name.name))
                .primary(st.name.span, "no `id = N`")
                .note("the livepatch core knows a state by its id; patches that hand a state on declare the same id")
                .help(format!("write `state {} (id = 1, version = 1);`", st.name.name)),
        );
    }
    Some(StateInfo { id: id?, version: version? }).filter(|_| ok)
}

fn parse_int(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Checks the states and the names of states and module parameters.
///
/// `names` holds the `extern` symbols and the patch's statics.
pub(crate) fn check(file: &File, names: &BTreeMap<String, Span>, diags: &mut Diagnostics) {
    let mut ids: HashMap<u64, Span> = HashMap::new();
    let mut own: HashMap<&str, Span> = HashMap::new();
    let helpers: HashMap<&str, Span> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Helper(h) => Some((h.sig.name.name.as_str(), h.sig.name.span)),
            _ => None,
        })
        .collect();
    for item in &file.items {
        let (name, what) = match item {
            Item::State(st) => {
                if let Some(info) = resolve(st, diags)
                    && let Some(prev) = ids.insert(info.id, st.name.span)
                {
                    diags.push(
                        Diagnostic::error(codes::E0061, format!("state id {} is declared twice", info.id))
                            .primary(st.name.span, "declared again here")
                            .secondary(prev, "first declared here")
                            .note("a patch declares each system state once"),
                    );
                }
                (&st.name, "a state name")
            }
            Item::Param(p) => (&p.name, "a parameter name"),
            _ => continue,
        };
        if checks::keyword(name, what, diags) {
            continue;
        }
        let clash =
            own.get(name.name.as_str()).or_else(|| names.get(&name.name)).or_else(|| helpers.get(name.name.as_str()));
        match clash {
            Some(prev) => diags.push(
                Diagnostic::error(codes::E0062, format!("the name `{}` is already in use", name.name))
                    .primary(name.span, "declared again here")
                    .secondary(*prev, "first declared here")
                    .note("states, parameters, helpers, extern symbols and statics share one namespace in the generated crate")
                    .help("rename one of them"),
            ),
            None => {
                own.insert(&name.name, name.span);
            }
        }
    }
}
