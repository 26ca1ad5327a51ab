//! Kernel symbols that share a name, told apart by position, for each target.
//!
//! A static of one file often has the name of another file's (`mode_show`, `lock`,
//! `firsttime.0`). The livepatch core and the kgraft engine take the symbol's position among
//! those of its name in kallsyms order (counted from 1; 0 when the name is unique). A number
//! holds for the one kernel it was counted on: another flavour or release can order the same
//! names differently. So a patch may name the occurrence by a neighbour instead,
//! `#[sympos(near = "reboot_mode_store")]` or `KGRAFT_SYMPOS_NEAR("mode_show", "reboot_mode_store");`:
//! the occurrence nearest in kallsyms to a symbol whose name is unique, which the build turns
//! into a number for each target. kallsyms is sorted by address, and the linker keeps an
//! object file's text, and its data, together: a file's static lies beside the file's other
//! symbols on every kernel built from that file.

use crate::ast::{File, Item, Replace};
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::kernel::Kernel;

/// How a patch says which of several same-named kernel symbols it means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    /// The Nth in kallsyms order, counted from 1.
    Index(u32),
    /// The one nearest in kallsyms to this symbol, whose name must be unique.
    Near(String),
}

/// The position, counted from 1, of the occurrence of `name` in `order` (an object's kallsyms)
/// nearest to `anchor`; 0 when `name` occurs at most once (the load reports a missing one).
/// An error says why no occurrence is the nearest: the anchor is missing or not unique, or two
/// occurrences are as near.
pub fn nearest(order: &[String], name: &str, anchor: &str) -> Result<u32, String> {
    let at: Vec<usize> = order.iter().enumerate().filter(|(_, n)| *n == name).map(|(i, _)| i).collect();
    if at.len() < 2 {
        return Ok(0);
    }
    let anchors: Vec<usize> = order.iter().enumerate().filter(|(_, n)| *n == anchor).map(|(i, _)| i).collect();
    let [a] = anchors[..] else {
        return Err(format!(
            "`{name}` is in kallsyms {} times, and the symbol that tells them apart, `{anchor}`, is there {} times, \
             not once",
            at.len(),
            anchors.len()
        ));
    };
    let distance = |i: usize| i.abs_diff(a);
    let best = at.iter().map(|&i| distance(i)).min().unwrap_or(0);
    let nearest: Vec<usize> = (0..at.len()).filter(|&k| distance(at[k]) == best).collect();
    match nearest[..] {
        [k] => Ok(u32::try_from(k + 1).unwrap_or(u32::MAX)),
        _ => Err(format!("two of the {} `{name}` in kallsyms are as near to `{anchor}`", at.len())),
    }
}

/// Parses the argument of `#[sympos(...)]` or the second of `KGRAFT_SYMPOS`: a positive number,
/// or `near = "NAME"`.
pub fn parse(text: &str) -> Option<Position> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("near") {
        let name = rest.trim_start().strip_prefix('=')?.trim().strip_prefix('"')?.strip_suffix('"')?;
        let symbol = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$';
        return (!name.is_empty() && name.chars().all(symbol)).then(|| Position::Near(name.to_owned()));
    }
    text.parse::<u32>().ok().filter(|n| *n > 0).map(Position::Index)
}

impl std::fmt::Display for Position {
    /// As the patch writes it: `2` or `near = "NAME"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Index(n) => write!(f, "{n}"),
            Position::Near(anchor) => write!(f, "near = \"{anchor}\""),
        }
    }
}

/// Writes each `#[sympos(near = "NAME")]` of `file` as the number it means in `kernel` (the
/// attribute goes when the name is unique there), so that what follows sees positions only;
/// pushes an error for each that cannot be bound.
pub(crate) fn bind(file: &mut File, kernel: &Kernel, diags: &mut Diagnostics) {
    let mut bind_one = |object: &str, r: &mut Replace| {
        let object = object.replace('-', "_");
        let Some(at) = r.attrs.iter().position(|a| a.name.name == "sympos") else { return };
        let Some(Position::Near(anchor)) = r.attrs[at].arg.as_ref().and_then(|a| parse(&a.text)) else { return };
        let name = &r.sig.name.name;
        let order = kernel.objects.get(&object).map(|o| o.kallsyms.as_slice()).unwrap_or_default();
        let found = if order.is_empty() {
            Err(format!("the symbols of {object} in {} were not read, so no neighbour can be found", kernel.release))
        } else {
            nearest(order, name, &anchor)
        };
        match found {
            Ok(0) => {
                r.attrs.remove(at);
            }
            Ok(n) => {
                if let Some(arg) = r.attrs[at].arg.as_mut() {
                    arg.text = n.to_string();
                }
            }
            Err(why) => diags.push(
                Diagnostic::error(codes::E0043, format!("no `{name}` of {object} is the one nearest `{anchor}`"))
                    .primary(r.attrs[at].span, "the position is not found in this kernel")
                    .note(format!("in {}: {why}", kernel.release))
                    .help("name another neighbour that is unique in kallsyms, or give the position as a number"),
            ),
        }
    };
    for item in &mut file.items {
        match item {
            Item::Replace(r) => bind_one("vmlinux", r),
            Item::Module(m) => {
                let name = m.name.clone();
                m.fns.iter_mut().for_each(|r| bind_one(&name, r));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_occurrence_nearest_the_anchor_is_chosen_whatever_its_rank() {
        let one = order("a_show mode_show a_store x y z b_store mode_show b_show");
        assert_eq!(nearest(&one, "mode_show", "b_store"), Ok(2));
        assert_eq!(nearest(&one, "mode_show", "a_store"), Ok(1));
        // Another flavour links one more file with a `mode_show` first: the number moves,
        // the neighbour does not.
        let other = order("c_show mode_show c_x q a_show mode_show a_store x y z b_store mode_show b_show");
        assert_eq!(nearest(&other, "mode_show", "b_store"), Ok(3));
        assert_eq!(nearest(&other, "a_show", "b_store"), Ok(0), "a unique name needs no position");
    }

    #[test]
    fn a_missing_repeated_or_equidistant_anchor_is_an_error() {
        let o = order("lock x anchor y lock z w");
        let e = nearest(&o, "lock", "anchor").unwrap_err();
        assert!(e.contains("as near to `anchor`"), "{e}");
        let e = nearest(&o, "lock", "gone").unwrap_err();
        assert!(e.contains("`gone`, is there 0 times"), "{e}");
        let e = nearest(&order("lock x lock x"), "lock", "x").unwrap_err();
        assert!(e.contains("there 2 times"), "{e}");
    }

    #[test]
    fn positions_parse_as_written_and_print_back() {
        assert_eq!(parse(" 2 "), Some(Position::Index(2)));
        assert_eq!(parse("near = \"reboot_mode_store\""), Some(Position::Near("reboot_mode_store".into())));
        assert_eq!(parse("near=\"firsttime.0\""), Some(Position::Near("firsttime.0".into())));
        for bad in ["0", "-1", "near", "near = x", "near = \"\"", "near = \"a b\"", "near = \"a\\\"\"", "1+1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        for p in [Position::Index(3), Position::Near("a_store".into())] {
            assert_eq!(parse(&p.to_string()), Some(p));
        }
    }
}
