//! kgraft's own relocation table: how a module of the kgraft engine reaches the symbols the
//! kernel does not export, without the livepatch core.
//!
//! The module loader resolves only exported symbols. For the others, the linked module is
//! rewritten here: every relocation against such a symbol leaves its `.rela.*` section and
//! becomes a record of the section `.kgraft.relocs`, which the engine's C half (`engine.c`)
//! reads and applies itself at run time: vmlinux's records while the patch module initialises,
//! before any function is hooked, and a module's records whenever that module comes (or at once,
//! if it is loaded already). The undefined symbols are then dropped from the symbol table, so
//! the loader never sees them.
//!
//! The section is defined by `engine.c` with its head only (`struct kg_relocs_head`, count 0);
//! this rewrite checks that head and writes the whole section. The format is defined once, in
//! `kgraft_rt::contract` (`RelocsHead`, `Reloc`, the types applied), which the C side gets as
//! the generated `kgraft_contract.h`. Version 1, little-endian, all of it allocated data of the
//! module:
//!
//! ```text
//! head (16 bytes)        u32 magic "KGRL" (0x4c52474b), u16 version (1), u16 record size (48),
//!                        u32 count, u32 reserved (0)
//! record (48 bytes) * count
//!   +0  u64 place        the address to write; an R_X86_64_64 relocation against the section
//!                        symbol of the place's section, addend the offset there
//!   +8  u64 name         the symbol's name, a C string of this section (R_X86_64_64)
//!   +16 u64 object       "vmlinux" or the module's name, a C string of this section (R_X86_64_64)
//!   +24 i64 addend       the removed relocation's addend
//!   +32 u32 type         its ELF relocation type: R_X86_64_64, PC32, PLT32, 32, 32S or PC64
//!   +36 u32 sympos       0: the only symbol of the name (an ambiguous name is refused); N: the
//!                        Nth, in kallsyms order (`KGRAFT_SYMPOS` in the patch's C)
//!   +40 u32 flags        bit 0: the place is writable data, written directly (otherwise
//!                        through text_poke_copy: text and read-only data)
//!   +44 u32 reserved (0)
//! strings                NUL-terminated, each once
//! ```
//!
//! The loader fills the three address fields through the ordinary relocations of
//! `.rela.kgraft.relocs` before the module runs, so the engine reads plain pointers.

use std::collections::BTreeMap;
use std::path::Path;

use object::build::Id;
use object::build::elf::{Builder, Relocation, SectionData, SectionId, SymbolId};
use object::elf;

use super::Error;

use kgraft_rt::contract::{self, Reloc, RelocsHead};

/// The section the engine reads.
pub(crate) const SECTION: &str = contract::RELOCS_SECTION;
/// `"KGRL"`, little-endian.
pub(crate) const MAGIC: u32 = contract::RELOCS_MAGIC;
/// The format's version, which `engine.c`'s `KG_RELOCS_VERSION` equals (both from the contract).
pub(crate) const VERSION: u16 = contract::RELOCS_VERSION;
/// The size of the head.
pub(crate) const HEAD_SIZE: usize = std::mem::size_of::<RelocsHead>();
/// The size of one record.
pub(crate) const RECORD_SIZE: usize = std::mem::size_of::<Reloc>();
/// Record flag: the place is in writable data.
pub(crate) const FLAG_WRITABLE: u32 = contract::RELOC_WRITABLE;

/// Whether the engine applies relocations of type `r_type`.
fn applied(r_type: u32) -> bool {
    contract::RELOC_TYPES.iter().any(|(t, _, _)| *t == r_type)
}

/// What the rewrite did, for the build's progress line and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Records written, per object (`vmlinux` or a module), in first-use order.
    pub(crate) per_object: Vec<(String, usize)>,
    /// Relocations in sections the kernel does not load (debugging information), dropped.
    pub(crate) dropped: usize,
}

/// Whether relocations of a section named `name` may be applied by the engine, after the
/// loader has laid the module out. Sections the loader or the kernel interprets before the
/// patch module's init runs (jump tables, alternatives, static calls, per-CPU data copied at
/// load, ...) would see the unresolved value, and are refused.
fn place_allowed(name: &str) -> bool {
    if name.starts_with(".data..percpu") {
        return false;
    }
    [
        ".text",
        ".rodata",
        ".data",
        ".bss",
        ".init.text",
        ".init.rodata",
        ".init.data",
        ".exit.text",
        ".exit.data",
        ".ref.text",
        ".noinstr.text",
    ]
    .iter()
    .any(|p| name == *p || name.starts_with(&format!("{p}.")))
}

/// Whether the place's section is data the engine may write directly: writable, and not made
/// read-only after the module's init (the module loader's `.data..ro_after_init` and
/// `__jump_table`), since a module's records are applied whenever it comes.
fn writable(name: &str, flags: u64) -> bool {
    flags & u64::from(elf::SHF_WRITE) != 0 && !name.starts_with(".data..ro_after_init") && name != "__jump_table"
}

/// Copies the module `ko` to `out`, moving every relocation against one of the `unexported`
/// symbols into the engine's table: against the module `module_symbols` names for a symbol,
/// else vmlinux.
pub(crate) fn rewrite(
    ko: &Path,
    out: &Path,
    unexported: &[String],
    module_symbols: &[(String, String)],
    positions: &BTreeMap<String, u32>,
) -> Result<Summary, Error> {
    let data = std::fs::read(ko).map_err(|e| Error::new(format!("cannot read {}: {e}", ko.display())))?;
    let (bytes, summary) = rewrite_bytes(&data, unexported, module_symbols, positions)
        .map_err(|e| Error { message: format!("{}: {}", ko.display(), e.message), ..e })?;
    std::fs::write(out, &bytes).map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    Ok(summary)
}

/// One record, before it is written.
struct Record {
    /// The section of the place, and the offset there.
    section: SectionId,
    offset: u64,
    r_type: u32,
    addend: i64,
    name: String,
    object: String,
    flags: u32,
    sympos: u32,
}

/// The rewrite of [`rewrite`], on the module's bytes.
fn rewrite_bytes(
    data: &[u8],
    unexported: &[String],
    module_symbols: &[(String, String)],
    positions: &BTreeMap<String, u32>,
) -> Result<(Vec<u8>, Summary), Error> {
    let bad = |e: object::build::Error| Error::new(format!("cannot rewrite the module: {e}"));
    let mut b = Builder::read(data).map_err(bad)?;

    let table = b.sections.iter().find(|s| &*s.name == SECTION.as_bytes()).map(|s| s.id()).ok_or_else(|| {
        Error::new(format!("the module has no `{SECTION}` section: the kgraft engine is not linked in"))
    })?;
    check_head(&b.sections.get(table).data)?;
    let symtab = b
        .sections
        .iter()
        .find(|s| matches!(s.data, SectionData::Symbol))
        .map(|s| s.id())
        .ok_or_else(|| Error::new("the module has no symbol table"))?;

    // The undefined symbols to take out of the loader's sight, with their object.
    let object_of =
        |name: &str| module_symbols.iter().find(|(s, _)| s == name).map_or("vmlinux".to_owned(), |(_, o)| o.clone());
    // Keyed by the symbol's index (the builder's ids are not ordered).
    let mut moved_syms: BTreeMap<usize, (SymbolId, String, String)> = BTreeMap::new();
    for sym in b.symbols.iter() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        if sym.section.is_none() && sym.st_shndx == elf::SHN_UNDEF && unexported.contains(&name) {
            let object = object_of(&name);
            moved_syms.insert(sym.id().index(), (sym.id(), name, object));
        }
    }
    let mut summary = Summary::default();
    if moved_syms.is_empty() {
        return Ok((data.to_vec(), summary));
    }

    // The name and flags of every section, read before the relocation sections change.
    let sections: BTreeMap<usize, (String, u64)> = b
        .sections
        .iter()
        .map(|s| (s.id().index(), (String::from_utf8_lossy(&s.name).into_owned(), s.sh_flags)))
        .collect();
    let mut records = Vec::new();
    for section in b.sections.iter_mut() {
        let rela_name = String::from_utf8_lossy(&section.name).into_owned();
        let target = section.sh_info_section;
        let SectionData::Relocation(relocs) = &mut section.data else { continue };
        let (moved, keep): (Vec<_>, Vec<_>) =
            relocs.drain(..).partition(|r| r.symbol.is_some_and(|s| moved_syms.contains_key(&s.index())));
        *relocs = keep;
        if moved.is_empty() {
            continue;
        }
        let Some(target) = target else {
            return Err(Error::new(format!("relocation section {rela_name} has no target section")));
        };
        let (target_name, target_flags) = &sections[&target.index()];
        if target_flags & u64::from(elf::SHF_ALLOC) == 0 {
            // The kernel never loads this section (debugging information): nothing reads it.
            summary.dropped += moved.len();
            continue;
        }
        for r in moved {
            let (_, name, object) = &moved_syms[&r.symbol.expect("partitioned on the symbol").index()];
            if !place_allowed(target_name) {
                return Err(Error::new(format!(
                    "`{name}` is referenced from section `{target_name}`, which the kernel reads before the kgraft engine \
                     can resolve the symbol"
                ))
                .help("build with `--engine klp`: the module loader applies livepatch relocations before that"));
            }
            if object != "vmlinux" && target_name.starts_with(".init") {
                return Err(Error::new(format!(
                    "`{name}` of module {object} is referenced from `{target_name}`, which is freed after the patch \
                     module's init, before that module may load"
                )));
            }
            if !applied(r.r_type) {
                return Err(Error::new(format!(
                    "the relocation of type {} against `{name}` in `{target_name}` is not one the kgraft engine applies",
                    r.r_type
                )));
            }
            records.push(Record {
                section: target,
                offset: r.r_offset,
                r_type: r.r_type,
                addend: r.r_addend,
                name: name.clone(),
                object: object.clone(),
                flags: if writable(target_name, *target_flags) { FLAG_WRITABLE } else { 0 },
                sympos: positions.get(name).copied().unwrap_or(0),
            });
        }
    }
    for r in &records {
        match summary.per_object.iter_mut().find(|(o, _)| *o == r.object) {
            Some((_, n)) => *n += 1,
            None => summary.per_object.push((r.object.clone(), 1)),
        }
    }

    // The table: head, records, strings.
    let count = u32::try_from(records.len()).map_err(|_| Error::new("too many relocations for the kgraft table"))?;
    let mut strings: Vec<u8> = Vec::new();
    let mut string_at: BTreeMap<String, u64> = BTreeMap::new();
    let strings_start = (HEAD_SIZE + RECORD_SIZE * records.len()) as u64;
    let mut intern = |s: &str| -> u64 {
        *string_at.entry(s.to_owned()).or_insert_with(|| {
            let at = strings_start + strings.len() as u64;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        })
    };
    let mut bytes = head(count);
    let mut table_relocs = Vec::new();
    let mut section_syms: BTreeMap<usize, SymbolId> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let at = (HEAD_SIZE + RECORD_SIZE * i) as u64;
        let place_sym = section_symbol(&mut b, &mut section_syms, r.section);
        let table_sym = section_symbol(&mut b, &mut section_syms, table);
        let name_at = intern(&r.name);
        let object_at = intern(&r.object);
        let fields = [
            (std::mem::offset_of!(Reloc, place), place_sym, r.offset),
            (std::mem::offset_of!(Reloc, name), table_sym, name_at),
            (std::mem::offset_of!(Reloc, object), table_sym, object_at),
        ];
        for (field, symbol, addend) in fields {
            table_relocs.push(Relocation {
                r_offset: at + field as u64,
                symbol: Some(symbol),
                r_type: elf::R_X86_64_64,
                r_addend: addend as i64,
            });
        }
        bytes.extend_from_slice(&record(r.addend, r.r_type, r.sympos, r.flags));
    }
    bytes.extend_from_slice(&strings);
    {
        let section = b.sections.get_mut(table);
        section.data = SectionData::Data(bytes.into());
        section.sh_addralign = section.sh_addralign.max(8);
    }
    let existing = b
        .sections
        .iter()
        .find(|s| matches!(s.data, SectionData::Relocation(_)) && s.sh_info_section == Some(table))
        .map(|s| s.id());
    match existing {
        Some(id) => {
            if let SectionData::Relocation(relocs) = &mut b.sections.get_mut(id).data {
                relocs.extend(table_relocs);
            }
        }
        None => {
            let section = b.sections.add();
            section.name = format!(".rela{SECTION}").into_bytes().into();
            section.sh_type = elf::SHT_RELA;
            section.sh_flags = u64::from(elf::SHF_INFO_LINK);
            section.sh_link_section = Some(symtab);
            section.sh_info_section = Some(table);
            section.sh_addralign = 8;
            section.sh_entsize = 24;
            section.data = SectionData::Relocation(table_relocs);
        }
    }
    // No relocation uses them any more: the loader must not try to resolve them.
    for (id, _, _) in moved_syms.values() {
        b.symbols.get_mut(*id).delete = true;
    }

    let mut buf = Vec::new();
    b.write(&mut buf).map_err(bad)?;
    Ok((buf, summary))
}

/// The head of a table of `count` records.
fn head(count: u32) -> Vec<u8> {
    let mut h = vec![0; HEAD_SIZE];
    put(&mut h, std::mem::offset_of!(RelocsHead, magic), &MAGIC.to_le_bytes());
    put(&mut h, std::mem::offset_of!(RelocsHead, version), &VERSION.to_le_bytes());
    put(&mut h, std::mem::offset_of!(RelocsHead, record_size), &(RECORD_SIZE as u16).to_le_bytes());
    put(&mut h, std::mem::offset_of!(RelocsHead, count), &count.to_le_bytes());
    h
}

/// Writes `value` at `at` in `buf`.
fn put(buf: &mut [u8], at: usize, value: &[u8]) {
    buf[at..at + value.len()].copy_from_slice(value);
}

/// One record's bytes, the three address fields 0 (the loader fills them through the
/// table's relocations).
fn record(addend: i64, r_type: u32, sympos: u32, flags: u32) -> Vec<u8> {
    let mut b = vec![0; RECORD_SIZE];
    put(&mut b, std::mem::offset_of!(Reloc, addend), &addend.to_le_bytes());
    put(&mut b, std::mem::offset_of!(Reloc, r_type), &r_type.to_le_bytes());
    put(&mut b, std::mem::offset_of!(Reloc, sympos), &sympos.to_le_bytes());
    put(&mut b, std::mem::offset_of!(Reloc, flags), &flags.to_le_bytes());
    b
}

/// Checks that the section holds the engine's empty head, in this format's version.
fn check_head(data: &SectionData<'_>) -> Result<(), Error> {
    let SectionData::Data(bytes) = data else {
        return Err(Error::new(format!("`{SECTION}` holds no data")));
    };
    if **bytes != *head(0) {
        let version = bytes.get(4..6).map_or(0, |v| u16::from_le_bytes([v[0], v[1]]));
        return Err(Error::new(format!(
            "`{SECTION}` is not the kgraft engine's empty table of version {VERSION} (found {} bytes, version {version})",
            bytes.len()
        ))
        .help("the engine's C half and kgraftc come from different versions of kgraft"));
    }
    Ok(())
}

/// The section symbol of `section`, added when the module has none.
fn section_symbol(b: &mut Builder<'_>, cache: &mut BTreeMap<usize, SymbolId>, section: SectionId) -> SymbolId {
    if let Some(id) = cache.get(&section.index()) {
        return *id;
    }
    let id =
        match b.symbols.iter().find(|s| s.section == Some(section) && s.st_info & 0xf == elf::STT_SECTION && !s.delete)
        {
            Some(s) => s.id(),
            None => {
                let s = b.symbols.add();
                s.section = Some(section);
                s.st_info = (elf::STB_LOCAL << 4) | elf::STT_SECTION;
                s.id()
            }
        };
    cache.insert(section.index(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testobj;
    use object::read::elf::{ElfFile64, Sym};
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

    /// An object with the engine's empty table, and calls and loads against three symbols.
    fn module() -> Vec<u8> {
        let text = [0xe8, 0, 0, 0, 0, 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0xc3];
        testobj::build_with(
            &text,
            &[
                (1, elf::R_X86_64_PLT32, "seq_printf"),
                (8, elf::R_X86_64_PC32, "saved_command_line"),
                (15, elf::R_X86_64_PC32, "kgt_the_dev"),
            ],
            &[(SECTION, &head(0)), (".data", &[0; 8])],
            &[(".data", 0, elf::R_X86_64_64, "saved_command_line")],
        )
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
    }

    #[test]
    fn moves_unexported_references_into_the_engines_table() {
        let unexported = ["saved_command_line".to_owned(), "kgt_the_dev".to_owned()];
        let module_symbols = [("kgt_the_dev".to_owned(), "kgraft_testmod".to_owned())];
        let (out, summary) =
            rewrite_bytes(&module(), &unexported, &module_symbols, &BTreeMap::from([("kgt_the_dev".to_owned(), 2)]))
                .expect("rewrites");
        assert_eq!(summary.dropped, 0);
        assert_eq!(summary.per_object, [("vmlinux".to_owned(), 2), ("kgraft_testmod".to_owned(), 1)]);

        let file = ElfFile64::<object::Endianness>::parse(&*out).expect("a valid object");
        // The loader sees no undefined symbol but the exported one.
        let undefined: Vec<&str> = file
            .symbols()
            .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
            .filter_map(|s| s.name().ok())
            .collect();
        assert_eq!(undefined, ["seq_printf"]);
        for s in file.symbols() {
            assert_ne!(s.elf_symbol().st_shndx(file.endian()), 0xff20, "no livepatch symbol");
        }
        assert!(file.sections().all(|s| !s.name().unwrap_or("").starts_with(".klp")), "no livepatch section");

        // Only the relocation against the exported symbol stays in .text; .data has none left.
        let text = file.section_by_name(".text").expect("text");
        let kept: Vec<_> = text.relocations().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, 1);
        assert_eq!(file.section_by_name(".data").expect("data").relocations().count(), 0);

        // The table: head, three records, the strings.
        let table = file.section_by_name(SECTION).expect("the table");
        let bytes = table.data().expect("its bytes");
        assert_eq!(u32_at(bytes, 0), MAGIC);
        assert_eq!(u32_at(bytes, 4), u32::from(VERSION) | ((RECORD_SIZE as u32) << 16));
        assert_eq!(u32_at(bytes, 8), 3);
        let strings = &bytes[HEAD_SIZE + 3 * RECORD_SIZE..];
        assert_eq!(strings, b"saved_command_line\0vmlinux\0kgt_the_dev\0kgraft_testmod\0".as_slice());

        // Each record's three addresses are relocations the loader applies.
        let target_name = |t: RelocationTarget| match t {
            RelocationTarget::Symbol(i) => {
                let s = file.symbol_by_index(i).expect("a symbol");
                s.section_index().and_then(|i| file.section_by_index(i).ok()).map(|s| s.name().unwrap_or("").to_owned())
            }
            _ => None,
        };
        let mut table_relocs: Vec<(u64, u32, String, i64)> = table
            .relocations()
            .map(|(at, r)| {
                let object::RelocationFlags::Elf { r_type } = r.flags() else { panic!("ELF relocations") };
                (at, r_type, target_name(r.target()).expect("a section symbol"), r.addend())
            })
            .collect();
        table_relocs.sort();
        let s = (HEAD_SIZE + 3 * RECORD_SIZE) as i64;
        let r0 = HEAD_SIZE as u64;
        let r1 = r0 + RECORD_SIZE as u64;
        let r2 = r1 + RECORD_SIZE as u64;
        let t = |at: u64, sec: &str, addend: i64| (at, elf::R_X86_64_64, sec.to_owned(), addend);
        assert_eq!(
            table_relocs,
            [
                t(r0, ".text", 8),
                t(r0 + 8, SECTION, s),
                t(r0 + 16, SECTION, s + 19),
                t(r1, ".text", 15),
                t(r1 + 8, SECTION, s + 27),
                t(r1 + 16, SECTION, s + 39),
                t(r2, ".data", 0),
                t(r2 + 8, SECTION, s),
                t(r2 + 16, SECTION, s + 19),
            ]
        );
        // The records' own fields: addend, type, sympos, flags (the .data place is writable).
        let record = |i: usize| &bytes[HEAD_SIZE + RECORD_SIZE * i..HEAD_SIZE + RECORD_SIZE * (i + 1)];
        assert_eq!(i64::from_le_bytes(record(0)[24..32].try_into().expect("8")), -4);
        assert_eq!(u32_at(record(0), 32), elf::R_X86_64_PC32);
        assert_eq!(u32_at(record(0), 36), 0);
        assert_eq!(u32_at(record(1), 36), 2, "kgt_the_dev at the position KGRAFT_SYMPOS gave");
        assert_eq!(u32_at(record(0), 40), 0);
        assert_eq!(u32_at(record(2), 32), elf::R_X86_64_64);
        assert_eq!(u32_at(record(2), 40), FLAG_WRITABLE);
    }

    #[test]
    fn without_unexported_symbols_the_module_is_unchanged() {
        let m = module();
        let (out, summary) = rewrite_bytes(&m, &[], &[], &BTreeMap::new()).expect("nothing to do");
        assert_eq!(out, m);
        assert_eq!(summary, Summary::default());
    }

    #[test]
    fn refuses_a_module_without_the_engines_table_or_with_another_version() {
        let plain = testobj::build(&[0xe8, 0, 0, 0, 0, 0xc3], &[(1, elf::R_X86_64_PLT32, "hidden")]);
        let e = rewrite_bytes(&plain, &["hidden".to_owned()], &[], &BTreeMap::new()).expect_err("no table");
        assert!(e.message.contains("has no `.kgraft.relocs` section"), "{}", e.message);

        let mut other = head(0);
        other[4] = 2;
        let m = testobj::build_with(
            &[0xe8, 0, 0, 0, 0, 0xc3],
            &[(1, elf::R_X86_64_PLT32, "hidden")],
            &[(SECTION, &other)],
            &[],
        );
        let e = rewrite_bytes(&m, &["hidden".to_owned()], &[], &BTreeMap::new()).expect_err("another version");
        assert!(e.message.contains("version 2"), "{}", e.message);
    }

    #[test]
    fn refuses_places_the_kernel_reads_before_the_engine_runs() {
        let m = testobj::build_with(
            &[0xc3],
            &[],
            &[(SECTION, &head(0)), ("__jump_table", &[0; 16])],
            &[("__jump_table", 8, elf::R_X86_64_64, "hidden_key")],
        );
        let e = rewrite_bytes(&m, &["hidden_key".to_owned()], &[], &BTreeMap::new()).expect_err("refused");
        assert!(e.message.contains("`hidden_key` is referenced from section `__jump_table`"), "{}", e.message);
        assert!(place_allowed(".text.unlikely") && place_allowed(".rodata.str1.1") && place_allowed(".data.rel.ro"));
        assert!(!place_allowed(".data..percpu") && !place_allowed(".altinstr_replacement"));
        assert!(!place_allowed(".textual"));
    }
}
