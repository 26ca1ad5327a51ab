//! Function-by-function comparison of two objects compiled from one translation unit.
//!
//! The objects are built with `-ffunction-sections -fdata-sections`, so every function and
//! every datum has a section of its own and its relocations say what it refers to. Two versions
//! of a function are the same when their bytes are the same outside the places relocations
//! fill, and their relocations are the same once their targets are named by what they are
//! rather than where they lie: a symbol by its name, a string by its text, a constant by its
//! bytes. A static local's number (`fake_sk.1`), which moves when another static local comes or
//! goes, is left out of its name.

use std::collections::{BTreeMap, BTreeSet};

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionKind, SymbolKind, elf};

/// One function of an object.
#[derive(Clone, Debug)]
pub(crate) struct Function {
    /// Its symbol's name (`foo`, `foo.isra.0`, `foo.cold`).
    pub(crate) name: String,
    /// The section that holds it (`.text.foo`, `.init.text`).
    pub(crate) section: String,
    /// Whether its symbol is global.
    pub(crate) global: bool,
    /// Its bytes, with the places relocations fill set to zero.
    code: Vec<u8>,
    /// Its relocations, at offsets from the function's start.
    relocs: Vec<Reloc>,
    /// Whether it starts with the call to `__fentry__` that ftrace makes its patch site.
    pub(crate) fentry: bool,
}

/// One datum of an object (an `OBJECT` symbol).
#[derive(Clone, Debug)]
pub(crate) struct Datum {
    /// The section that holds it.
    pub(crate) section: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its initial bytes with relocated places zeroed (none for `.bss`).
    bytes: Vec<u8>,
    /// Its relocations.
    relocs: Vec<Reloc>,
}

/// A relocation, its target named by what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reloc {
    offset: u64,
    r_type: u32,
    target: Target,
    addend: i64,
}

/// What a relocation refers to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A symbol, by its name (a static local's number left out).
    Symbol(String),
    /// A string of a mergeable string section, by its text.
    Str(Vec<u8>),
    /// A constant of a mergeable section, by its bytes.
    Constant(Vec<u8>),
    /// A place in a section that holds no symbol there, by the section's name.
    Section(String),
}

/// The functions and data of one object file.
#[derive(Debug, Default)]
pub(crate) struct Unit {
    /// The functions, by name.
    pub(crate) functions: BTreeMap<String, Function>,
    /// The data, by name.
    pub(crate) data: BTreeMap<String, Datum>,
}

/// How a function of one object differs from its namesake of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Difference {
    /// The code is not the same length.
    Size { before: usize, after: usize },
    /// The bytes differ, first at this offset.
    Bytes { offset: usize },
    /// A relocation differs: the first one that does, on each side.
    Reloc { before: String, after: String },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Size { before, after } => write!(f, "{before} bytes against {after}"),
            Difference::Bytes { offset } => write!(f, "the code differs from offset {offset:#x}"),
            Difference::Reloc { before, after } => write!(f, "a reference differs: {before} against {after}"),
        }
    }
}

impl Reloc {
    fn describe(&self) -> String {
        let target = match &self.target {
            Target::Symbol(s) => s.clone(),
            Target::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
            Target::Constant(b) => format!("constant {b:02x?}"),
            Target::Section(s) => s.clone(),
        };
        format!("{target}{:+} at {:#x}", self.addend, self.offset)
    }
}

/// Compares the code and references of `before` and `after`; `None` when they are the same.
pub(crate) fn compare(before: &Function, after: &Function) -> Option<Difference> {
    compare_parts(&before.code, &before.relocs, &after.code, &after.relocs)
}

/// Whether two functions make the same references (calls, jumps out, data, strings and
/// constants, each with its kind and addend, as many times each), whatever their instructions.
pub(crate) fn same_references(before: &Function, after: &Function) -> bool {
    let key = |r: &Reloc| (r.r_type, r.target.clone(), r.addend);
    let mut a: Vec<_> = before.relocs.iter().map(key).collect();
    let mut b: Vec<_> = after.relocs.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Compares two data; `None` when their initial values and references are the same.
pub(crate) fn compare_data(before: &Datum, after: &Datum) -> Option<Difference> {
    if before.size != after.size {
        return Some(Difference::Size { before: before.size as usize, after: after.size as usize });
    }
    compare_parts(&before.bytes, &before.relocs, &after.bytes, &after.relocs)
}

fn compare_parts(a: &[u8], ar: &[Reloc], b: &[u8], br: &[Reloc]) -> Option<Difference> {
    if a.len() != b.len() {
        return Some(Difference::Size { before: a.len(), after: b.len() });
    }
    if let Some(offset) = a.iter().zip(b).position(|(x, y)| x != y) {
        return Some(Difference::Bytes { offset });
    }
    let none = || "nothing".to_string();
    for i in 0..ar.len().max(br.len()) {
        let (x, y) = (ar.get(i), br.get(i));
        if x != y {
            return Some(Difference::Reloc {
                before: x.map_or_else(none, Reloc::describe),
                after: y.map_or_else(none, Reloc::describe),
            });
        }
    }
    None
}

/// The name of the function a compiler clone was made from: `foo` for `foo.isra.0`,
/// `foo.constprop.0`, `foo.part.0`, `foo.cold` and their combinations; `None` for a name that
/// is no clone's.
pub(crate) fn clone_origin(name: &str) -> Option<&str> {
    const KINDS: &[&str] = &["isra", "constprop", "part", "cold", "lto_priv", "localalias"];
    let (base, rest) = name.split_once('.')?;
    let clone = rest.split('.').all(|piece| KINDS.contains(&piece) || piece.chars().all(|c| c.is_ascii_digit()));
    (clone && rest.split('.').any(|piece| KINDS.contains(&piece))).then_some(base)
}

/// A static local's name without gcc's number (`fake_sk.1` is `fake_sk`), for comparing two
/// units where the numbers may have moved; other names are returned as they are.
/// `name` as references are compared: without a static's number, and without the counter of a
/// `__UNIQUE_ID_` name (`__UNIQUE_ID_ddebug401`: gcc's `__COUNTER__`, which counts every use
/// in the unit before it, so any code added above changes it).
fn comparable_name(name: &str) -> &str {
    let name = without_local_number(name);
    match name.strip_prefix("__UNIQUE_ID_") {
        Some(rest) if rest.ends_with(|c: char| c.is_ascii_digit()) => {
            name.trim_end_matches(|c: char| c.is_ascii_digit())
        }
        _ => name,
    }
}

pub(crate) fn without_local_number(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && clone_origin(name).is_none() => {
            base
        }
        _ => name,
    }
}

impl Function {
    /// The symbols this function refers to, by name (calls, jumps and data alike).
    pub(crate) fn references(&self) -> BTreeSet<&str> {
        self.relocs
            .iter()
            .filter_map(|r| match &r.target {
                Target::Symbol(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether it lives in a section the kernel frees after boot (`__init`) or never loads.
    pub(crate) fn is_init(&self) -> bool {
        self.section.starts_with(".init.") || self.section.starts_with(".exit.")
    }
}

impl Unit {
    /// Reads the functions and data of the ELF relocatable object `data`.
    pub(crate) fn read(data: &[u8]) -> Result<Unit, String> {
        let file = object::File::parse(data).map_err(|e| format!("not an ELF object: {e}"))?;
        if file.format() != object::BinaryFormat::Elf || file.architecture() != object::Architecture::X86_64 {
            return Err("not an x86_64 ELF object".into());
        }
        let mut unit = Unit::default();
        // The defined symbols of each section, for naming section-relative references.
        let mut by_section: std::collections::HashMap<object::SectionIndex, Vec<(u64, u64, String)>> =
            Default::default();
        for sym in file.symbols() {
            let (Some(index), Ok(name)) = (sym.section_index(), sym.name()) else { continue };
            if matches!(sym.kind(), SymbolKind::Text | SymbolKind::Data) && !name.is_empty() {
                by_section.entry(index).or_default().push((sym.address(), sym.size(), name.to_string()));
            }
        }
        for sym in file.symbols() {
            let (Some(index), Ok(name)) = (sym.section_index(), sym.name()) else { continue };
            let kind = sym.kind();
            if !matches!(kind, SymbolKind::Text | SymbolKind::Data) || name.is_empty() {
                continue;
            }
            let section = file.section_by_index(index).map_err(|e| format!("symbol `{name}`: {e}"))?;
            let section_name = section.name().unwrap_or("").to_string();
            let start = sym.address();
            let size = sym.size();
            let bytes = match section.kind() {
                SectionKind::UninitializedData | SectionKind::UninitializedTls => Vec::new(),
                _ => {
                    let all = section.data().map_err(|e| format!("section {section_name}: {e}"))?;
                    let end = start
                        .checked_add(size)
                        .filter(|&e| e <= all.len() as u64)
                        .ok_or_else(|| format!("symbol `{name}` lies outside its section {section_name}"))?;
                    all[start as usize..end as usize].to_vec()
                }
            };
            let (bytes, relocs) = relocations(&file, &section, start, size, bytes, &by_section)?;
            if kind == SymbolKind::Text {
                let fentry = relocs.first().is_some_and(|r| {
                    r.target == Target::Symbol("__fentry__".into()) && r.offset <= 5 && bytes.len() >= 5
                });
                let function = Function {
                    name: name.to_string(),
                    section: section_name,
                    global: sym.is_global(),
                    code: bytes,
                    relocs,
                    fentry,
                };
                unit.functions.insert(name.to_string(), function);
            } else {
                let datum = Datum { section: section_name, size, bytes, relocs };
                unit.data.insert(name.to_string(), datum);
            }
        }
        Ok(unit)
    }

    /// Takes the line out of every `FILE:LINE` that a string of this unit holds for one of
    /// `files` (`__FILE__` and `__LINE__` in a message): a line that moved, or a body that now
    /// lives in a `.kgp`, is the same code.
    pub(crate) fn without_line_numbers(&mut self, files: &[&str]) {
        let strip = |text: &mut Vec<u8>| {
            for file in files {
                let needle = format!("{file}:");
                let mut out = Vec::with_capacity(text.len());
                let mut i = 0;
                while i < text.len() {
                    if text[i..].starts_with(needle.as_bytes()) {
                        out.extend_from_slice(b"FILE:LINE");
                        i += needle.len();
                        while i < text.len() && text[i].is_ascii_digit() {
                            i += 1;
                        }
                    } else {
                        out.push(text[i]);
                        i += 1;
                    }
                }
                *text = out;
            }
        };
        let relocs = self.functions.values_mut().flat_map(|f| &mut f.relocs);
        for r in relocs.chain(self.data.values_mut().flat_map(|d| &mut d.relocs)) {
            if let Target::Str(text) = &mut r.target {
                strip(text);
            }
        }
    }

    /// Names the patch's own functions as the kernel's: `__kgraft_c_foo` and its parts
    /// (`__kgraft_c_foo.cold`, and `__kgraft_c_foo__sympos2` for a `#[sympos]` replacement)
    /// become `foo`, in definitions and references alike.
    pub(crate) fn strip_prefix(&mut self, prefix: &str) {
        let strip = |name: &mut String| {
            if let Some(rest) = name.strip_prefix(prefix) {
                let (base, part) = rest.split_once('.').map_or((rest, ""), |(b, p)| (b, p));
                let base = match base.rsplit_once("__sympos") {
                    Some((b, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => b,
                    _ => base,
                };
                *name = if part.is_empty() { base.to_string() } else { format!("{base}.{part}") };
            }
        };
        let functions = std::mem::take(&mut self.functions);
        for (_, mut f) in functions {
            strip(&mut f.name);
            for r in &mut f.relocs {
                if let Target::Symbol(s) = &mut r.target {
                    strip(s);
                }
            }
            self.functions.insert(f.name.clone(), f);
        }
    }

    /// The functions of this unit that refer to `name` (call it, jump to it or take its
    /// address).
    pub(crate) fn callers_of(&self, name: &str) -> Vec<&str> {
        self.functions
            .values()
            .filter(|f| f.name != name && f.references().contains(name))
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// The relocations of `section` that fall in `[start, start + size)`, their places zeroed in
/// `bytes` and their targets named.
fn relocations(
    file: &object::File<'_>,
    section: &object::Section<'_, '_>,
    start: u64,
    size: u64,
    mut bytes: Vec<u8>,
    by_section: &std::collections::HashMap<object::SectionIndex, Vec<(u64, u64, String)>>,
) -> Result<(Vec<u8>, Vec<Reloc>), String> {
    let mut out = Vec::new();
    let section_bytes = section.data().unwrap_or(&[]);
    for (offset, reloc) in section.relocations() {
        if offset < start || offset >= start + size {
            continue;
        }
        let RelocationFlags::Elf { r_type } = reloc.flags() else { continue };
        let width = match r_type {
            elf::R_X86_64_64 | elf::R_X86_64_PC64 => 8,
            elf::R_X86_64_NONE => 0,
            _ => 4,
        };
        let at = (offset - start) as usize;
        if let Some(place) = bytes.get_mut(at..at + width) {
            place.fill(0);
        }
        let pc_relative = matches!(r_type, elf::R_X86_64_PC32 | elf::R_X86_64_PLT32 | elf::R_X86_64_PC64);
        let mut addend = reloc.addend();
        let target = match reloc.target() {
            RelocationTarget::Symbol(index) => {
                let sym = file.symbol_by_index(index).map_err(|e| format!("relocation at {offset:#x}: {e}"))?;
                if sym.kind() == SymbolKind::Section {
                    let index = sym.section_index().ok_or("a section symbol without its section")?;
                    let target = file.section_by_index(index).map_err(|e| format!("relocation at {offset:#x}: {e}"))?;
                    // Where the reference points: a PC-relative operand is relative to the
                    // instruction's end, four bytes on, or more when an immediate follows it
                    // (`cmpb $0, x(%rip)`: five).
                    let syms = by_section.get(&index).map_or(&[][..], Vec::as_slice);
                    let skew = if pc_relative { 4 + immediate_after(section_bytes, offset as usize) } else { 0 };
                    let place = addend + skew;
                    // The symbol the place lies in; or the section's only symbol, which an
                    // operand's skew (an immediate after it) can put just outside.
                    let named = syms
                        .iter()
                        .find(|(a, s, _)| place >= *a as i64 && place < (*a + (*s).max(1)) as i64)
                        .or(if syms.len() == 1 { syms.first() } else { None });
                    match named {
                        Some((a, _, name)) => {
                            addend -= *a as i64;
                            Target::Symbol(comparable_name(name).to_string())
                        }
                        None => section_content(&target, place).map_or_else(
                            || Target::Section(target.name().unwrap_or("").to_string()),
                            |content| {
                                addend = -skew;
                                content
                            },
                        ),
                    }
                } else {
                    let name = sym.name().map_err(|e| format!("relocation at {offset:#x}: {e}"))?;
                    // The patch declares a static local by its symbol (`fake_sk.1`), undefined.
                    Target::Symbol(comparable_name(name).to_string())
                }
            }
            _ => Target::Section(String::new()),
        };
        // The kernel applies PLT32 as PC32: a call through either is the same call (gcc uses
        // PC32 for a function of its own unit, PLT32 for an external one).
        let r_type = if r_type == elf::R_X86_64_PLT32 { elf::R_X86_64_PC32 } else { r_type };
        out.push(Reloc { offset: offset - start, r_type, target, addend });
    }
    out.sort_by_key(|r| r.offset);
    Ok((bytes, out))
}

/// The size of the immediate that follows a RIP-relative displacement at `at` of `code`: what
/// the instruction's opcode says, for the forms compilers emit with a memory operand and an
/// immediate (`80`/`83`/`c6`/`c0`/`c1`/`6b`, `f6 /0`: one byte; `81`/`c7`/`69`, `f7 /0`: four,
/// two after `66`; `0f ba`, `0f 3a`: one). Other instructions have none.
fn immediate_after(code: &[u8], at: usize) -> i64 {
    let byte = |back: usize| at.checked_sub(back).and_then(|i| code.get(i)).copied();
    // A RIP-relative operand: ModRM with mod 00 and r/m 101, just before the displacement.
    let Some(modrm) = byte(1).filter(|m| m & 0xc7 == 0x05) else { return 0 };
    let reg = (modrm >> 3) & 7;
    let Some(op) = byte(2) else { return 0 };
    if byte(3) == Some(0x0f) {
        return i64::from(op == 0xba);
    }
    if byte(3) == Some(0x3a) && byte(4) == Some(0x0f) {
        return 1;
    }
    // An operand-size prefix before the opcode (and any REX prefix) makes a word immediate.
    let mut back = 3;
    while byte(back).is_some_and(|b| (0x40..=0x4f).contains(&b)) {
        back += 1;
    }
    let word = if byte(back) == Some(0x66) { 2 } else { 4 };
    match op {
        0x80 | 0x82 | 0x83 | 0xc6 | 0xc0 | 0xc1 | 0x6b => 1,
        0x81 | 0xc7 | 0x69 => word,
        0xf6 if reg <= 1 => 1,
        0xf7 if reg <= 1 => word,
        _ => 0,
    }
}

/// The string or constant at `place` of a mergeable section, if `section` is one.
fn section_content(section: &object::Section<'_, '_>, place: i64) -> Option<Target> {
    let object::SectionFlags::Elf { sh_flags } = section.flags() else { return None };
    if sh_flags & u64::from(elf::SHF_MERGE) == 0 {
        return None;
    }
    let data = section.data().ok()?;
    let from = usize::try_from(place).ok().filter(|&p| p <= data.len())?;
    if sh_flags & u64::from(elf::SHF_STRINGS) != 0 {
        let end = data[from..].iter().position(|&b| b == 0).map_or(data.len(), |n| from + n);
        return Some(Target::Str(data[from..end].to_vec()));
    }
    // A constant pool (`.rodata.cst16`): the entry size is the constant's.
    let name = section.name().ok()?;
    let width: usize = name.rsplit_once("cst").and_then(|(_, n)| n.parse().ok()).unwrap_or(8);
    Some(Target::Constant(data.get(from..from + width)?.to_vec()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_immediate_after_a_rip_relative_operand_is_read_from_the_opcode() {
        // cmpb $0x0, x(%rip): 80 3d disp32 imm8.
        assert_eq!(immediate_after(&[0x80, 0x3d, 0, 0, 0, 0, 0], 2), 1);
        // movl $1, x(%rip): c7 05 disp32 imm32; with 66, movw: imm16.
        assert_eq!(immediate_after(&[0xc7, 0x05, 0, 0, 0, 0, 1, 0, 0, 0], 2), 4);
        assert_eq!(immediate_after(&[0x66, 0xc7, 0x05, 0, 0, 0, 0, 1, 0], 3), 2);
        // mov x(%rip), %rsi: 48 8b 35 disp32: none.
        assert_eq!(immediate_after(&[0x48, 0x8b, 0x35, 0, 0, 0, 0], 3), 0);
        // call rel32 has no ModRM.
        assert_eq!(immediate_after(&[0xe8, 0, 0, 0, 0], 1), 0);
        // btl $3, x(%rip): 0f ba 2d disp32 imm8.
        assert_eq!(immediate_after(&[0x0f, 0xba, 0x2d, 0, 0, 0, 0, 3], 3), 1);
    }

    #[test]
    fn clones_are_named_by_their_origin() {
        assert_eq!(clone_origin("foo.isra.0"), Some("foo"));
        assert_eq!(clone_origin("foo.constprop.0.isra.0"), Some("foo"));
        assert_eq!(clone_origin("foo.part.1"), Some("foo"));
        assert_eq!(clone_origin("foo.cold"), Some("foo"));
        assert_eq!(clone_origin("fake_sk.1"), None);
        assert_eq!(clone_origin("foo"), None);
        assert_eq!(without_local_number("fake_sk.1"), "fake_sk");
        assert_eq!(without_local_number("foo.isra.0"), "foo.isra.0");
        assert_eq!(without_local_number("foo"), "foo");
    }

    /// Compiles `c` with the flags the comparison relies on; `None` without a C compiler.
    pub(crate) fn compile(c: &str, tag: &str) -> Option<Unit> {
        // Tests run in parallel and share tags: each compile has a directory of its own.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kgraft-objdiff-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("t.c"), c).ok()?;
        let out = std::process::Command::new("cc")
            .args(["-O2", "-c", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-pg", "-mfentry", "t.c"])
            .current_dir(&dir)
            .output()
            .ok()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let unit = Unit::read(&std::fs::read(dir.join("t.o")).ok()?).expect("an object");
        let _ = std::fs::remove_dir_all(&dir);
        Some(unit)
    }

    const BEFORE: &str = r#"
        extern int printf(const char *, ...);
        static int counter;
        int table[4] = { 1, 2, 3, 4 };
        static __attribute__((noinline)) int helper(int x) { return x * 3 + counter; }
        static inline int tiny(int x) { return x + 1; }
        int stays(int x) { printf("same %d\n", x); return helper(x); }
        int moves(int x) { return tiny(x) + table[x & 3]; }
        int prints(void) { return printf("old text\n"); }
    "#;

    #[test]
    fn a_changed_inline_helper_changes_its_caller_and_a_string_changes_its_user() {
        let after = BEFORE
            .replace("return x + 1;", "return x + 2;")
            .replace("old text", "new text")
            .replace("{ 1, 2, 3, 4 }", "{ 1, 2, 3, 5 }");
        // A line moved: nothing changes for it.
        let after = after.replacen("\n", "\n\n", 1);
        let (Some(a), Some(b)) = (compile(BEFORE, "a"), compile(&after, "b")) else { return };
        let same = |name: &str| compare(&a.functions[name], &b.functions[name]);
        assert_eq!(same("stays"), None);
        assert_eq!(same("helper"), None);
        assert!(same("moves").is_some(), "tiny was inlined into moves");
        assert!(matches!(same("prints"), Some(Difference::Reloc { .. })), "{:?}", same("prints"));
        assert!(!a.functions.contains_key("tiny"), "tiny is inlined everywhere");
        assert!(a.functions["stays"].fentry);
        assert!(compare_data(&a.data["table"], &b.data["table"]).is_some());
        assert_eq!(a.callers_of("helper"), vec!["stays"]);
    }
}
