//! Kernel images and ELF objects: the BTF, the release and the symbol table inside them.

use std::collections::{BTreeMap, HashMap};

use kgraft_lang::kernel::Symbol;
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolKind};

/// The magic number a raw BTF blob starts with (little-endian `0xeB9F`).
pub(crate) const BTF_MAGIC: [u8; 2] = [0x9f, 0xeb];

/// Decompresses the vmlinux inside an x86 `bzImage` (Debian's `/boot/vmlinuz-R`).
///
/// The payload's place is read from the setup header (`setup_sects` at 0x1f1,
/// `payload_offset` and `payload_length` at 0x248); Debian compresses it with xz.
pub(crate) fn decompress_bzimage(image: &[u8]) -> Result<Vec<u8>, String> {
    decompress_bzimage_to(image, MAX_KERNEL)
}

/// [`decompress_bzimage`], refusing a payload that decompresses to more than `max` bytes.
fn decompress_bzimage_to(image: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?)) };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not an x86 bzImage (no `HdrS` setup header)".into());
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) | None => 4,
        Some(n) => usize::from(*n),
    };
    let (offset, length) = match (u32_at(0x248), u32_at(0x24c)) {
        (Some(o), Some(l)) => (o as usize, l as usize),
        _ => return Err("the setup header is truncated".into()),
    };
    let start = (setup_sects + 1) * 512 + offset;
    let payload = image
        .get(start..start.saturating_add(length).min(image.len()))
        .filter(|p| !p.is_empty())
        .ok_or("the compressed payload lies outside the file")?;
    if payload.starts_with(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
        return unlz4_legacy(&payload[4..], max);
    }
    if payload.starts_with(&ZSTD_MAGIC.to_le_bytes()) {
        return unzstd(payload, max);
    }
    if !payload.starts_with(b"\xfd7zXZ\x00") {
        let magic: Vec<String> = payload.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "the payload is not xz-, lz4- or zstd-compressed (it starts with {}); give --vmlinux",
            magic.join(" ")
        ));
    }
    // The payload ends with the decompressed size, which is not part of the xz stream.
    let mut stream = xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| e.to_string())?;
    // Never more room than `max` and a byte: past it, the payload is no kernel.
    let mut out = Vec::with_capacity((80usize << 20).min(max + 1));
    let mut input = payload;
    loop {
        if out.capacity() - out.len() < (1 << 20) {
            out.reserve_exact((16usize << 20).min(max + 1 - out.len().min(max)));
        }
        let before_in = stream.total_in();
        let status = stream
            .process_vec(input, &mut out, xz2::stream::Action::Run)
            .map_err(|e| format!("the xz payload is corrupt: {e}"))?;
        input = &input[(stream.total_in() - before_in) as usize..];
        if out.len() > max {
            return Err(format!(
                "the xz payload decompresses to more than {} MiB: not a kernel (Debian's 6.1 is about 60 MiB)",
                max >> 20
            ));
        }
        match status {
            xz2::stream::Status::StreamEnd => break,
            _ if input.is_empty() && out.len() < out.capacity() => {
                return Err("the xz payload is truncated".into());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The magic of the LZ4 "legacy" format the kernel's build writes (`lz4 -l`; Debian's cloud
/// kernels).
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;

/// The largest block of the legacy format, decompressed.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Decompresses the blocks of an LZ4 legacy stream (after its magic): each a little-endian
/// compressed size and that many bytes, up to the end of the payload, which the kernel's
/// build ends with the decompressed size (too few bytes for a block).
fn unlz4_legacy(mut input: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while input.len() > 4 {
        let size = u32::from_le_bytes(input[..4].try_into().map_err(|_| "truncated")?);
        input = &input[4..];
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let Some(block) = input.get(..size as usize) else { break };
        input = &input[size as usize..];
        let at = out.len();
        if at > max {
            return Err(format!("the lz4 payload decompresses to more than {} MiB: not a kernel", max >> 20));
        }
        out.resize(at + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[at..])
            .map_err(|e| format!("the lz4 payload is corrupt: {e}"))?;
        out.truncate(at + n);
    }
    if out.is_empty() {
        return Err("the lz4 payload holds no block".into());
    }
    Ok(out)
}

/// The magic of a zstd frame (Debian's 6.12 kernels).
const ZSTD_MAGIC: u32 = 0xfd2f_b528;

/// Decompresses the zstd frame at the start of `payload` (the kernel's build appends the
/// decompressed size after it).
fn unzstd(payload: &[u8], max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut input = payload;
    let decoder =
        ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|e| format!("the zstd payload is corrupt: {e}"))?;
    let mut out = Vec::new();
    decoder.take(max as u64 + 1).read_to_end(&mut out).map_err(|e| format!("the zstd payload is corrupt: {e}"))?;
    if out.len() > max {
        return Err(format!("the zstd payload decompresses to more than {} MiB: not a kernel", max >> 20));
    }
    Ok(out)
}

/// The most a bzImage's payload is decompressed to: a kernel is tens of MiB, and a crafted
/// image could otherwise ask for all the memory there is.
const MAX_KERNEL: usize = 1 << 30;

/// What an ELF image of the kernel (or of a module) holds.
pub(crate) struct ElfInfo {
    /// The `.BTF` section.
    pub(crate) btf: Option<Vec<u8>>,
    /// The release named in the `Linux version R ...` banner, for vmlinux.
    pub(crate) release: Option<String>,
    /// The function symbols with their fentry sites, when the image has a symbol table.
    pub(crate) symbols: Option<BTreeMap<String, Symbol>>,
    /// Every named function and data symbol, in the symbol table's order (a module's kallsyms
    /// order).
    pub(crate) order: Vec<String>,
}

/// Reads an ELF kernel image or module.
pub(crate) fn read_elf(data: &[u8]) -> Result<ElfInfo, String> {
    let file = object::File::parse(data).map_err(|e| format!("not an ELF object: {e}"))?;
    let btf = match file.section_by_name(".BTF") {
        Some(s) => Some(s.data().map_err(|e| format!("cannot read .BTF: {e}"))?.to_vec()),
        None => None,
    };
    let release = banner_release(data);
    let symbols = symbols(&file)?;
    let order = file
        .symbols()
        .filter(|s| s.is_definition() && matches!(s.kind(), SymbolKind::Text | SymbolKind::Data | SymbolKind::Tls))
        .filter_map(|s| s.name().ok().filter(|n| !n.is_empty()).map(str::to_owned))
        .collect();
    Ok(ElfInfo { btf, release, symbols, order })
}

/// Finds `Linux version RELEASE ` in the image.
pub(crate) fn banner_release(data: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"Linux version ";
    let mut from = 0;
    while let Some(at) = find(&data[from..], NEEDLE) {
        let start = from + at + NEEDLE.len();
        let rest = &data[start..data.len().min(start + 80)];
        let end = rest.iter().position(|b| *b == b' ').unwrap_or(0);
        let release = &rest[..end];
        // The banner is followed by ` (builder@host)`; a format string has `%s` instead.
        if end > 0 && rest.get(end + 1) == Some(&b'(') && release.iter().all(|b| b.is_ascii_graphic() && *b != b'%') {
            return Some(String::from_utf8_lossy(release).into_owned());
        }
        from = start;
    }
    None
}

/// The fentry sites of a vmlinux as the kernel's build links it: the addresses between the
/// symbols `__start_mcount_loc` and `__stop_mcount_loc`, inside the init data (the linker
/// script merges the `__mcount_loc` sections there); `None` for other files.
fn linked_mcount_loc<'d>(file: &object::File<'d>) -> Option<&'d [u8]> {
    let address = |name: &str| file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address());
    let (start, stop) = (address("__start_mcount_loc")?, address("__stop_mcount_loc")?);
    let section = file.sections().find(|s| s.address() <= start && stop <= s.address() + s.size() && start < stop)?;
    let data = section.data().ok()?;
    data.get(usize::try_from(start - section.address()).ok()?..usize::try_from(stop - section.address()).ok()?)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Counts the function symbols by name and, from `__mcount_loc`, how many start with an fentry
/// site; `None` when the image has no symbol table.
fn symbols(file: &object::File<'_>) -> Result<Option<BTreeMap<String, Symbol>>, String> {
    let funcs: Vec<_> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
        .filter_map(|s| Some((s.name().ok()?.to_owned(), s.section_index()?, s.address(), s.size())))
        .filter(|(name, ..)| !name.is_empty())
        .collect();
    if funcs.is_empty() {
        return Ok(None);
    }
    // The fentry sites: in a linked vmlinux the section holds addresses; in a module, one
    // relocation per site against its text section.
    let mut sites: Vec<(Option<object::SectionIndex>, u64)> = Vec::new();
    if let Some(data) = linked_mcount_loc(file) {
        sites.extend(data.chunks_exact(8).map(|c| (None, u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))));
    } else if let Some(mcount) = file.section_by_name("__mcount_loc") {
        let relocs: Vec<_> = mcount.relocations().collect();
        if relocs.is_empty() {
            let data = mcount.data().map_err(|e| format!("cannot read __mcount_loc: {e}"))?;
            sites.extend(data.chunks_exact(8).map(|c| (None, u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))));
        } else {
            for (_, r) in relocs {
                let base = match r.target() {
                    RelocationTarget::Symbol(i) => {
                        file.symbol_by_index(i).ok().map(|s| (s.section_index(), s.address()))
                    }
                    RelocationTarget::Section(i) => Some((Some(i), 0)),
                    _ => None,
                };
                if let Some((section, addr)) = base {
                    sites.push((section, addr.wrapping_add(r.addend() as u64)));
                }
            }
        }
    }
    let is_text =
        |i: object::SectionIndex| file.section_by_index(i).map(|s| s.kind() == SectionKind::Text).unwrap_or(false);
    let mut by_start: HashMap<(Option<object::SectionIndex>, u64), u64> = HashMap::new();
    for (section, addr) in &sites {
        *by_start.entry((*section, *addr)).or_default() += 1;
    }
    // Once, not per function: a kernel has some 60,000 functions and 40,000 sites.
    let sites_by_section = sites.iter().any(|(s, _)| s.is_some());
    let mut out: BTreeMap<String, Symbol> = BTreeMap::new();
    for (name, section, addr, size) in funcs {
        if !is_text(section) {
            continue;
        }
        let key_section = if sites_by_section { Some(section) } else { None };
        // The site is the first instruction, or follows a 4-byte `endbr64`.
        let traced = (0..=4).any(|d| by_start.contains_key(&(key_section, addr + d))) && size > 0;
        let entry = out.entry(name).or_default();
        entry.count += 1;
        entry.traceable += u32::from(traced);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage around `payload`, as the kernel's build lays it out.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4usize;
        let start = (setup_sects + 1) * 512;
        let mut image = vec![0u8; start];
        image[0x1f1] = setup_sects as u8;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image
    }

    /// The payloads of Debian's cloud (lz4, legacy frames) and 6.12 (zstd) kernels, each with
    /// the decompressed size the build appends, read back whole and bounded.
    #[test]
    fn lz4_and_zstd_payloads_are_read_and_bounded() {
        let kernel: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 251) as u8 ^ (i >> 13) as u8).collect();
        let size = (kernel.len() as u32).to_le_bytes();
        // lz4: the magic, then blocks of at most 8 MiB, each after its compressed size.
        let mut lz4 = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for block in kernel.chunks(LZ4_LEGACY_BLOCK) {
            let c = lz4_flex::block::compress(block);
            lz4.extend_from_slice(&(c.len() as u32).to_le_bytes());
            lz4.extend_from_slice(&c);
        }
        lz4.extend_from_slice(&size);
        assert_eq!(decompress_bzimage_to(&bzimage(&lz4), 64 << 20).as_deref(), Ok(&kernel[..]));
        let e = decompress_bzimage_to(&bzimage(&lz4), 4 << 20).expect_err("bounded");
        assert!(e.contains("more than 4 MiB"), "{e}");
        // zstd: one frame.
        let mut zstd = ruzstd::encoding::compress_to_vec(&kernel[..], ruzstd::encoding::CompressionLevel::Fastest);
        zstd.extend_from_slice(&size);
        assert_eq!(decompress_bzimage_to(&bzimage(&zstd), 64 << 20).as_deref(), Ok(&kernel[..]));
        let e = decompress_bzimage_to(&bzimage(&zstd), 4 << 20).expect_err("bounded");
        assert!(e.contains("more than 4 MiB"), "{e}");
        // Another compressor is named by its magic.
        let e = decompress_bzimage_to(&bzimage(b"\x1f\x8b\x08\x00rest"), 64 << 20).expect_err("gzip");
        assert!(e.contains("starts with 1f 8b 08 00"), "{e}");
    }

    /// A bzImage whose payload decompresses to more than a kernel could be is refused before it
    /// takes the memory it asks for.
    #[test]
    fn a_payload_too_large_for_a_kernel_is_refused() {
        use std::io::Write;
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 0);
        xz.write_all(&vec![0u8; 64 << 20]).expect("compressed");
        let image = bzimage(&xz.finish().expect("compressed"));
        match decompress_bzimage_to(&image, 16 << 20) {
            Err(e) => assert!(e.contains("more than 16 MiB: not a kernel"), "{e}"),
            Ok(k) => panic!("read whole: {} bytes", k.len()),
        }
        // Within the bound, the same payload is read whole.
        assert_eq!(decompress_bzimage_to(&image, 128 << 20).map(|k| k.len()), Ok(64 << 20));
    }
}
