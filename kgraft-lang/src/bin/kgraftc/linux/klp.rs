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

use std::path::Path;

use object::build::elf::{Builder, SectionData};
use object::elf;

use super::Error;

/// The section index of livepatch symbols.
const SHN_LIVEPATCH: u16 = 0xff20;
/// The section flag of livepatch relocation sections.
const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;

/// Copies the module `ko` to `out`, turning references to the `unexported` symbols (all of
/// vmlinux) into livepatch relocations.
pub(crate) fn convert(ko: &Path, out: &Path, unexported: &[String]) -> Result<(), Error> {
    let data =
        std::fs::read(ko).map_err(|e| Error::new(format!("cannot read {}: {e}", ko.display())))?;
    if unexported.is_empty() {
        return std::fs::write(out, &data)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())));
    }
    let bad = |e: object::build::Error| Error::new(format!("cannot rewrite {}: {e}", ko.display()));
    let mut b = Builder::read(&*data).map_err(bad)?;

    let mut klp_syms = Vec::new();
    for sym in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        if sym.section.is_none()
            && sym.st_shndx == elf::SHN_UNDEF
            && unexported.contains(&name)
        {
            sym.name = format!(".klp.sym.vmlinux.{name},0").into_bytes().into();
            sym.st_shndx = SHN_LIVEPATCH;
            klp_syms.push(sym.id());
        }
    }
    let symtab = b
        .sections
        .iter()
        .find(|s| matches!(s.data, SectionData::Symbol))
        .map(|s| s.id())
        .ok_or_else(|| Error::new(format!("{} has no symbol table", ko.display())))?;

    // Split the relocations against those symbols off each relocation section.
    let mut moved = Vec::new();
    for section in b.sections.iter_mut() {
        let SectionData::Relocation(relocs) = &mut section.data else { continue };
        let (klp, keep): (Vec<_>, Vec<_>) = relocs
            .drain(..)
            .partition(|r| r.symbol.is_some_and(|s| klp_syms.contains(&s)));
        *relocs = keep;
        if !klp.is_empty() {
            let Some(target) = section.sh_info_section else {
                return Err(Error::new(format!(
                    "relocation section {} has no target section",
                    String::from_utf8_lossy(&section.name)
                )));
            };
            moved.push((target, klp));
        }
    }
    for (target, relocs) in moved {
        let target_name = String::from_utf8_lossy(&b.sections.get(target).name).into_owned();
        let section = b.sections.add();
        section.name = format!(".klp.rela.vmlinux.{target_name}").into_bytes().into();
        section.sh_type = elf::SHT_RELA;
        section.sh_flags =
            u64::from(elf::SHF_ALLOC) | u64::from(elf::SHF_INFO_LINK) | SHF_RELA_LIVEPATCH;
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
