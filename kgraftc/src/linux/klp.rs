//! Livepatch relocations: how a patch reaches kernel symbols that are not exported.
//!
//! The module loader resolves only exported symbols. For the others the livepatch core has its
//! own relocations (the kernel's "livepatch module ELF format"): a symbol named
//! `.klp.sym.OBJ.NAME,POS` in the special section index `SHN_LIVEPATCH`, and the relocations
//! against it moved into a section `.klp.rela.OBJ.SECTION` flagged `SHF_RELA_LIVEPATCH`. The
//! loader skips both; the livepatch core looks the symbols up in kallsyms and applies the
//! relocations (for vmlinux while the module loads), and a symbol that does not exist makes the
//! load fail with "symbol 'NAME' not found in symbol table" in the kernel log. Linkers do not
//! keep these flags, so the conversion runs on the linked `.ko`.

use std::collections::BTreeMap;
use std::path::Path;

use object::build::elf::{Builder, SectionData};
use object::elf;

use super::Error;

/// The section index of livepatch symbols.
const SHN_LIVEPATCH: u16 = 0xff20;
/// The section flag of livepatch relocation sections.
const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;

/// Copies the module `ko` to `out`, turning references to the `unexported` symbols into
/// livepatch relocations: against the module `module_symbols` names for a symbol, else vmlinux,
/// at the symbol's position among those of its name where `positions` gives one.
pub(crate) fn convert(
    ko: &Path,
    out: &Path,
    unexported: &[String],
    module_symbols: &[(String, String)],
    positions: &BTreeMap<String, u32>,
) -> Result<(), Error> {
    let data = std::fs::read(ko).map_err(|e| Error::new(format!("cannot read {}: {e}", ko.display())))?;
    if unexported.is_empty() {
        return std::fs::write(out, &data).map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())));
    }
    let bad = |e: object::build::Error| Error::new(format!("cannot rewrite {}: {e}", ko.display()));
    let mut b = Builder::read(&*data).map_err(bad)?;

    let object_of =
        |name: &str| module_symbols.iter().find(|(s, _)| s == name).map_or("vmlinux".to_owned(), |(_, o)| o.clone());
    let mut klp_syms = Vec::new();
    for sym in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        if sym.section.is_none() && sym.st_shndx == elf::SHN_UNDEF && unexported.contains(&name) {
            let object = object_of(&name);
            let pos = positions.get(&name).copied().unwrap_or(0);
            sym.name = format!(".klp.sym.{object}.{name},{pos}").into_bytes().into();
            sym.st_shndx = SHN_LIVEPATCH;
            klp_syms.push((sym.id(), object));
        }
    }
    let symtab = b
        .sections
        .iter()
        .find(|s| matches!(s.data, SectionData::Symbol))
        .map(|s| s.id())
        .ok_or_else(|| Error::new(format!("{} has no symbol table", ko.display())))?;

    // Split the relocations against those symbols off each relocation section, one livepatch
    // relocation section per object the symbols belong to.
    let object_of_symbol = |id| klp_syms.iter().find(|(s, _)| *s == id).map(|(_, o)| o.clone());
    let mut moved = Vec::new();
    for section in b.sections.iter_mut() {
        let SectionData::Relocation(relocs) = &mut section.data else { continue };
        let (klp, keep): (Vec<_>, Vec<_>) =
            relocs.drain(..).partition(|r| r.symbol.is_some_and(|s| object_of_symbol(s).is_some()));
        *relocs = keep;
        if !klp.is_empty() {
            let Some(target) = section.sh_info_section else {
                return Err(Error::new(format!(
                    "relocation section {} has no target section",
                    String::from_utf8_lossy(&section.name)
                )));
            };
            let mut by_object: Vec<(String, Vec<_>)> = Vec::new();
            for r in klp {
                let object = r.symbol.and_then(object_of_symbol).unwrap_or_else(|| "vmlinux".to_owned());
                match by_object.iter_mut().find(|(o, _)| *o == object) {
                    Some((_, list)) => list.push(r),
                    None => by_object.push((object, vec![r])),
                }
            }
            moved.extend(by_object.into_iter().map(|(object, relocs)| (target, object, relocs)));
        }
    }
    for (target, object, relocs) in moved {
        let target_name = String::from_utf8_lossy(&b.sections.get(target).name).into_owned();
        let section = b.sections.add();
        section.name = format!(".klp.rela.{object}.{target_name}").into_bytes().into();
        section.sh_type = elf::SHT_RELA;
        section.sh_flags = u64::from(elf::SHF_ALLOC) | u64::from(elf::SHF_INFO_LINK) | SHF_RELA_LIVEPATCH;
        section.sh_link_section = Some(symtab);
        section.sh_info_section = Some(target);
        section.sh_addralign = 8;
        section.sh_entsize = 24;
        section.data = SectionData::Relocation(relocs);
    }

    let mut buf = Vec::new();
    b.write(&mut buf).map_err(bad)?;
    std::fs::write(out, &buf).map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testobj;
    use object::read::elf::Sym;
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

    #[test]
    fn moves_unexported_references_to_livepatch_sections() {
        let text = [0xe8, 0, 0, 0, 0, 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0xc3];
        let obj = testobj::build(
            &text,
            &[
                (1, elf::R_X86_64_PLT32, "seq_printf"),
                (8, elf::R_X86_64_PC32, "saved_command_line"),
                (15, elf::R_X86_64_PC32, "kgt_the_dev"),
            ],
        );
        let dir = std::env::temp_dir().join(format!("kgraftc-klp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (input, output) = (dir.join("in.ko"), dir.join("out.ko"));
        std::fs::write(&input, obj).expect("a temporary file");
        let unexported = ["saved_command_line".to_owned(), "kgt_the_dev".to_owned()];
        let module_symbols = [("kgt_the_dev".to_owned(), "kgraft_testmod".to_owned())];
        convert(&input, &output, &unexported, &module_symbols, &BTreeMap::from([("kgt_the_dev".to_owned(), 2)]))
            .expect("converts");
        let data = std::fs::read(&output).expect("written");
        let _ = std::fs::remove_dir_all(&dir);
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).expect("a valid object");

        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(".klp.sym.vmlinux.saved_command_line,0"))
            .expect("the livepatch symbol");
        assert_eq!(sym.elf_symbol().st_shndx(file.endian()), SHN_LIVEPATCH);

        let klp = file.section_by_name(".klp.rela.vmlinux..text").expect("the livepatch relocation section");
        let object::SectionFlags::Elf { sh_flags } = klp.flags() else { panic!("ELF flags") };
        assert_eq!(sh_flags & SHF_RELA_LIVEPATCH, SHF_RELA_LIVEPATCH);

        // A module's symbol is looked up in that module, in a relocation section of its own.
        assert!(file.symbols().any(|s| s.name() == Ok(".klp.sym.kgraft_testmod.kgt_the_dev,2")));
        let in_module =
            file.section_by_name(".klp.rela.kgraft_testmod..text").expect("the module's livepatch relocations");
        assert_eq!(in_module.size(), 24);

        // One relocation each: the one against the exported symbol stays where the module
        // loader applies it, the others moved.
        assert_eq!(klp.size(), 24);
        assert_eq!(file.section_by_name(".rela.text").expect("the loader's relocations").size(), 24);
        let mut targets: Vec<String> = file
            .section_by_name(".text")
            .expect("text")
            .relocations()
            .filter_map(|(_, r)| match r.target() {
                RelocationTarget::Symbol(i) => file.symbol_by_index(i).ok()?.name().ok().map(str::to_owned),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [".klp.sym.kgraft_testmod.kgt_the_dev,2", ".klp.sym.vmlinux.saved_command_line,0", "seq_printf"]
        );
    }
}
