//! The executable's own symbols and fentry sites, read from `/proc/self/exe` and `__mcount_loc`.

use std::collections::HashMap;

use crate::ffi;

/// A function symbol of the executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sym {
    /// The symbol's name.
    pub name: String,
    /// Its address.
    pub addr: usize,
    /// Its size in bytes.
    pub size: usize,
    /// Whether it is a local (`static`) symbol.
    pub local: bool,
}

/// The functions of the executable and their patch sites.
#[derive(Debug, Default)]
pub struct Symbols {
    by_name: HashMap<String, Vec<Sym>>,
    sites: Vec<usize>,
}

/// Reads a little-endian integer of `N` bytes at `at`.
fn le<const N: usize>(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + N)?;
    let mut v = [0u8; 8];
    v[..N].copy_from_slice(s);
    Some(u64::from_le_bytes(v))
}

impl Symbols {
    /// Reads the running executable's symbol table and the compiler's list of fentry sites.
    ///
    /// # Errors
    ///
    /// A message when the executable cannot be read or has no symbol table.
    pub fn load() -> Result<Symbols, String> {
        let image = std::fs::read("/proc/self/exe").map_err(|e| format!("reading the host executable: {e}"))?;
        let mut syms = Symbols::parse(&image)?;
        // The section is an array of absolute site addresses that nothing writes; gcc emits it
        // with byte alignment, so the entries are read unaligned.
        let start = (&raw const ffi::__start___mcount_loc).cast::<u8>();
        let stop = (&raw const ffi::__stop___mcount_loc).cast::<u8>();
        let len = (stop as usize - start as usize) / 8;
        syms.sites = (0..len)
            // SAFETY: the linker defines both symbols around the section, so every entry lies
            // inside it.
            .map(|i| unsafe { start.add(i * 8).cast::<usize>().read_unaligned() })
            .collect();
        syms.sites.sort_unstable();
        Ok(syms)
    }

    /// Parses the function symbols of an ELF64 little-endian image.
    fn parse(b: &[u8]) -> Result<Symbols, String> {
        let bad = || "the host executable is not a readable ELF64 file".to_string();
        if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) {
            return Err(bad());
        }
        let shoff = le::<8>(b, 0x28).ok_or_else(bad)? as usize;
        let shentsize = le::<2>(b, 0x3a).ok_or_else(bad)? as usize;
        let shnum = le::<2>(b, 0x3c).ok_or_else(bad)? as usize;
        let section = |i: usize| -> Option<(u32, usize, usize, u32)> {
            let h = shoff + i * shentsize;
            Some((
                le::<4>(b, h + 4)? as u32,
                le::<8>(b, h + 0x18)? as usize,
                le::<8>(b, h + 0x20)? as usize,
                le::<4>(b, h + 0x28)? as u32,
            ))
        };
        let mut out = Symbols::default();
        for i in 0..shnum {
            let (kind, off, size, link) = section(i).ok_or_else(bad)?;
            if kind != 2 {
                continue; // only SHT_SYMTAB
            }
            let (_, stroff, strsize, _) = section(link as usize).ok_or_else(bad)?;
            let strtab = b.get(stroff..stroff + strsize).ok_or_else(bad)?;
            for s in b.get(off..off + size).ok_or_else(bad)?.chunks_exact(24) {
                let info = s[4];
                if info & 0xf != 2 {
                    continue; // only STT_FUNC
                }
                let name_off = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
                let addr = le::<8>(s, 8).ok_or_else(bad)? as usize;
                let size = le::<8>(s, 16).ok_or_else(bad)? as usize;
                let Some(tail) = strtab.get(name_off..) else { continue };
                let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
                let name = String::from_utf8_lossy(&tail[..end]).into_owned();
                let sym = Sym { name: name.clone(), addr, size, local: info >> 4 == 0 };
                out.by_name.entry(name).or_default().push(sym);
            }
        }
        // Several local symbols of one name are numbered by address, as kallsyms lists them.
        for syms in out.by_name.values_mut() {
            syms.sort_by_key(|s| s.addr);
            syms.dedup();
        }
        if out.by_name.is_empty() {
            return Err("the host executable has no symbol table (was it stripped?)".into());
        }
        Ok(out)
    }

    /// Finds the function `name`; `sympos` picks one of several local symbols (1-based), 0 when
    /// the name must be unique.
    ///
    /// # Errors
    ///
    /// A message when there is no such function or the choice is ambiguous.
    pub fn lookup(&self, name: &str, sympos: u32) -> Result<&Sym, String> {
        let all = self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]);
        match (all, sympos) {
            ([], _) => Err(format!("no function `{name}` in the host")),
            ([one], 0 | 1) => Ok(one),
            (many, 0) => Err(format!(
                "`{name}` names {} functions in the host; give its sympos (1 to {})",
                many.len(),
                many.len()
            )),
            (many, n) => many
                .get(n as usize - 1)
                .ok_or_else(|| format!("sympos {n} of `{name}` is out of range: the host has {} of them", many.len())),
        }
    }

    /// Returns the fentry site inside the function `sym`, from the compiler's site list.
    ///
    /// # Errors
    ///
    /// A message when the function has no site (it was built without tracing).
    pub fn site_of(&self, sym: &Sym) -> Result<usize, String> {
        let at = self.sites.partition_point(|&s| s < sym.addr);
        match self.sites.get(at) {
            Some(&s) if s < sym.addr + sym.size.max(1) => Ok(s),
            _ => Err(format!("function `{}` at {:#x} has no fentry site: it is not traceable", sym.name, sym.addr)),
        }
    }

    /// Returns every recorded fentry site.
    pub fn sites(&self) -> &[usize] {
        &self.sites
    }
}
