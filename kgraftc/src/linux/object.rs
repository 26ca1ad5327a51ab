//! The patch's object: taken out of the staticlib, checked against what the kernel accepts.

use std::path::Path;
use std::process::Command;

use object::read::archive::ArchiveFile;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, elf};

use super::{Error, run, write_if_changed};

/// Writes the crate's own object out of the staticlib `archive` to `dest`.
///
/// With LTO the archive holds one object for the crate and its Rust dependencies, `core`
/// included, plus `compiler_builtins`, which is left out: it is full of GOT relocations, and
/// the kernel exports `memcpy` and `memset` itself.
pub(crate) fn extract(archive: &Path, name: &str, dest: &Path) -> Result<(), Error> {
    let data = std::fs::read(archive).map_err(|e| Error::new(format!("cannot read {}: {e}", archive.display())))?;
    let file =
        ArchiveFile::parse(&*data).map_err(|e| Error::new(format!("{} is not an archive: {e}", archive.display())))?;
    let prefix = format!("{name}-");
    let mut found = Vec::new();
    for member in file.members() {
        let member = member.map_err(|e| Error::new(format!("bad archive member: {e}")))?;
        let member_name = String::from_utf8_lossy(member.name()).into_owned();
        if member_name.starts_with(&prefix) && member_name.ends_with(".o") {
            let bytes =
                member.data(&*data).map_err(|e| Error::new(format!("bad archive member {member_name}: {e}")))?;
            found.push(bytes);
        }
    }
    match found.as_slice() {
        [one] => write_if_changed(dest, one),
        _ => {
            Err(Error::new(format!("expected one object of `{name}` in {}, found {}", archive.display(), found.len())))
        }
    }
}

/// The relocation types the x86_64 module loader applies.
const SUPPORTED: &[(u32, &str)] = &[
    (elf::R_X86_64_NONE, "R_X86_64_NONE"),
    (elf::R_X86_64_64, "R_X86_64_64"),
    (elf::R_X86_64_PC32, "R_X86_64_PC32"),
    (elf::R_X86_64_PLT32, "R_X86_64_PLT32"),
    (elf::R_X86_64_32, "R_X86_64_32"),
    (elf::R_X86_64_32S, "R_X86_64_32S"),
    (elf::R_X86_64_PC64, "R_X86_64_PC64"),
];

/// Returns a name for the x86_64 relocation type `r_type`.
fn reloc_name(r_type: u32) -> String {
    match r_type {
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL".into(),
        elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX".into(),
        elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX".into(),
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32".into(),
        elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32".into(),
        elf::R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF".into(),
        other => SUPPORTED
            .iter()
            .find(|(t, _)| *t == other)
            .map_or_else(|| format!("relocation type {other}"), |(_, n)| (*n).to_string()),
    }
}

/// Refuses an object that the module loader would reject or that uses SIMD registers.
///
/// The kernel does not save user-space SIMD state around kernel code, so an instruction
/// touching `%xmm`, `%ymm`, `%zmm` or `%mm` registers would corrupt the interrupted task.
pub(crate) fn check(path: &Path) -> Result<(), Error> {
    let data = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    let file = object::File::parse(&*data)
        .map_err(|e| Error::new(format!("{} is not an object file: {e}", path.display())))?;
    let mut bad = Vec::new();
    for section in file.sections() {
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::Elf { r_type } = reloc.flags() else { continue };
            if SUPPORTED.iter().any(|(t, _)| *t == r_type) {
                continue;
            }
            let target = match reloc.target() {
                object::RelocationTarget::Symbol(i) => {
                    file.symbol_by_index(i).ok().and_then(|s| s.name().ok().map(str::to_string)).unwrap_or_default()
                }
                _ => String::new(),
            };
            bad.push(format!(
                "  {} against `{target}` at {}+{offset:#x}",
                reloc_name(r_type),
                section.name().unwrap_or("?"),
            ));
        }
    }
    if !bad.is_empty() {
        return Err(Error::new("the patch's object has relocations the kernel's module loader rejects")
            .detail(bad.join("\n"))
            .help(
                "the crate must be built with -Crelocation-model=static and -Ccode-model=kernel, \
                   and without crates that force position-independent code",
            ));
    }

    let listing =
        run(Command::new("objdump").args(["-d", "--no-show-raw-insn", "-w"]).arg(path), "objdump (from binutils)")?;
    let mut function = String::from("?");
    let mut simd = Vec::new();
    for line in listing.lines() {
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
            function = name.1.to_string();
        } else if ["%xmm", "%ymm", "%zmm", "%mm"].iter().any(|r| line.contains(r)) {
            simd.push(format!("  in {function}: {}", line.trim()));
        }
    }
    if !simd.is_empty() {
        simd.truncate(10);
        return Err(Error::new("the patch's object uses SIMD registers, which kernel code may not touch")
            .detail(simd.join("\n"))
            .help("build for x86_64-unknown-none (soft floats, no SSE) and avoid `core::arch` SIMD intrinsics"));
    }
    Ok(())
}

/// Returns the global symbols the object uses but does not define.
pub(crate) fn undefined_symbols(path: &Path) -> Result<Vec<String>, Error> {
    let data = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    let file = object::File::parse(&*data)
        .map_err(|e| Error::new(format!("{} is not an object file: {e}", path.display())))?;
    let mut names: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined() && s.is_global())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The `KGRAFT_SYMPOS` records of the C object at `path`: symbol name to position.
pub(crate) fn sympos_records(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, kgraft_lang::sympos::Position>, Error> {
    let data = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    let file = object::File::parse(&*data)
        .map_err(|e| Error::new(format!("{} is not an object file: {e}", path.display())))?;
    let Some(section) = file.section_by_name(super::sympos::SECTION) else {
        return Ok(std::collections::BTreeMap::new());
    };
    let bytes = section.data().map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    super::sympos::read_records(bytes).map_err(Error::new)
}

/// The undefined symbols the object at `path` calls or jumps to (`R_X86_64_PLT32`): functions,
/// where its other references may be data.
pub(crate) fn called_symbols(path: &Path) -> Result<std::collections::BTreeSet<String>, Error> {
    let data = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    let file = object::File::parse(&*data)
        .map_err(|e| Error::new(format!("{} is not an object file: {e}", path.display())))?;
    let mut names = std::collections::BTreeSet::new();
    for section in file.sections() {
        for (_, reloc) in section.relocations() {
            let (RelocationFlags::Elf { r_type: elf::R_X86_64_PLT32 }, object::RelocationTarget::Symbol(index)) =
                (reloc.flags(), reloc.target())
            else {
                continue;
            };
            if let Ok(sym) = file.symbol_by_index(index)
                && sym.is_undefined()
                && let Ok(name) = sym.name()
            {
                names.insert(name.to_string());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testobj;

    fn check_bytes(name: &str, bytes: &[u8]) -> Result<(), Error> {
        let dir = std::env::temp_dir().join(format!("kgraftc-object-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("t.o");
        std::fs::write(&path, bytes).expect("a temporary file");
        let result = check(&path);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// `call memcpy` (PLT32) and `mov saved_command_line(%rip), %rax` (PC32), then `ret`.
    const PLAIN: &[u8] = &[0xe8, 0, 0, 0, 0, 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0xc3];

    #[test]
    fn accepts_static_relocations() {
        let obj =
            testobj::build(PLAIN, &[(1, elf::R_X86_64_PLT32, "memcpy"), (8, elf::R_X86_64_PC32, "saved_command_line")]);
        check_bytes("plain", &obj).expect("static relocations pass");
    }

    #[test]
    fn refuses_got_relocations() {
        let obj = testobj::build(PLAIN, &[(8, elf::R_X86_64_REX_GOTPCRELX, "memcpy")]);
        let err = check_bytes("got", &obj).expect_err("a GOT relocation is refused");
        let detail = err.detail.unwrap_or_default();
        assert!(detail.contains("R_X86_64_REX_GOTPCRELX against `memcpy`"), "{detail}");
    }

    #[test]
    fn refuses_simd_registers() {
        // movaps %xmm0, (%rdi); ret
        let obj = testobj::build(&[0x0f, 0x29, 0x07, 0xc3], &[]);
        let err = check_bytes("simd", &obj).expect_err("SIMD is refused");
        assert!(err.message.contains("SIMD"), "{}", err.message);
        assert!(err.detail.unwrap_or_default().contains("%xmm0"));
    }

    #[test]
    fn lists_undefined_symbols() {
        let obj =
            testobj::build(PLAIN, &[(1, elf::R_X86_64_PLT32, "memcpy"), (8, elf::R_X86_64_PC32, "saved_command_line")]);
        let path = std::env::temp_dir().join(format!("kgraftc-undef-{}.o", std::process::id()));
        std::fs::write(&path, obj).expect("a temporary file");
        let names = undefined_symbols(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(names.expect("readable"), ["memcpy", "saved_command_line"]);
    }
}
