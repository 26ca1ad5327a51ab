//! Where the replaced functions were inlined, from a vmlinux's DWARF (`--debuginfo`).
//!
//! A replacement redirects calls that go through the function's entry. A caller into which the
//! compiler inlined the function has its own copy of the old code and keeps running it, so a
//! fix must replace such callers too: kGraft extends the list of functions by the ones that
//! inline them, found in the debug information. Every `DW_TAG_inlined_subroutine` whose
//! abstract origin names a replaced function is reported with the function that contains it.

use std::collections::{BTreeMap, BTreeSet};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// Returns, for each of `wanted` that was inlined somewhere, the functions it was inlined into.
pub(crate) fn callers(data: &[u8], wanted: &BTreeSet<String>) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let file = object::File::parse(data).map_err(|e| format!("not an ELF object: {e}"))?;
    let endian = if file.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
    let load = |id: gimli::SectionId| -> Result<Reader<'_>, String> {
        let bytes = match file.section_by_name(id.name()) {
            Some(s) => s.data().map_err(|e| format!("cannot read {}: {e}", id.name()))?,
            None => &[][..],
        };
        Ok(EndianSlice::new(bytes, endian))
    };
    let dwarf = gimli::Dwarf::load(load)?;
    if file.section_by_name(".debug_info").is_none() {
        return Err("it has no DWARF (.debug_info); give the vmlinux of the debug package".into());
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(|e| format!("corrupt DWARF: {e}"))? {
        let unit = dwarf.unit(header).map_err(|e| format!("corrupt DWARF: {e}"))?;
        let mut entries = unit.entries();
        // The enclosing functions, by depth.
        let mut stack: Vec<(isize, Option<String>)> = Vec::new();
        let mut depth = 0isize;
        while let Some((delta, entry)) = entries.next_dfs().map_err(|e| format!("corrupt DWARF: {e}"))? {
            depth += delta;
            while stack.last().is_some_and(|(d, _)| *d >= depth) {
                stack.pop();
            }
            match entry.tag() {
                gimli::DW_TAG_subprogram => {
                    let name = name_of(&dwarf, &unit, entry.offset(), 0);
                    stack.push((depth, name));
                }
                gimli::DW_TAG_inlined_subroutine => {
                    let callee = match entry.attr_value(gimli::DW_AT_abstract_origin) {
                        Ok(Some(AttributeValue::UnitRef(offset))) => name_of(&dwarf, &unit, offset, 0),
                        _ => None,
                    };
                    let caller = stack.iter().rev().find_map(|(_, n)| n.clone());
                    if let (Some(callee), Some(caller)) = (callee, caller)
                        && wanted.contains(&callee)
                        && callee != caller
                    {
                        out.entry(callee).or_default().insert(caller);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The name of a DIE, following `DW_AT_abstract_origin` and `DW_AT_specification`.
fn name_of(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    offset: UnitOffset,
    depth: u32,
) -> Option<String> {
    if depth > 8 {
        return None;
    }
    let entry = unit.entry(offset).ok()?;
    if let Ok(Some(value)) = entry.attr_value(gimli::DW_AT_name) {
        let name = dwarf.attr_string(unit, value).ok()?;
        return Some(String::from_utf8_lossy(name.slice()).into_owned());
    }
    for attr in [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification] {
        if let Ok(Some(AttributeValue::UnitRef(next))) = entry.attr_value(attr) {
            return name_of(dwarf, unit, next, depth + 1);
        }
    }
    None
}
