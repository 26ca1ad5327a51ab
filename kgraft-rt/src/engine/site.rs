//! Patch sites: the 5-byte fentry NOP at the start of every traceable function.
//!
//! A site is found in the list the compiler records (`__mcount_loc`), never assumed to be the
//! symbol's address: with `endbr64` the NOP sits four bytes in. A site holds the NOP while the
//! function is unpatched and a `JMP rel32` while it is redirected.

use core::fmt;

/// The 5-byte NOP that `gcc -mfentry -mnop-mcount` puts at a function's entry.
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

/// The breakpoint opcode written over a site's first byte while the site changes.
pub const INT3: u8 = 0xcc;

/// The opcode of `JMP rel32`.
pub const JMP_REL32: u8 = 0xe9;

/// The length of a patch site.
pub const SITE_LEN: usize = 5;

/// Encodes `JMP target` placed at `site`, or `None` when `target` is out of `rel32` reach.
pub fn encode_jmp(site: usize, target: usize) -> Option<[u8; SITE_LEN]> {
    let next = site.wrapping_add(SITE_LEN) as i64;
    let rel = (target as i64).wrapping_sub(next);
    let rel = i32::try_from(rel).ok()?;
    let r = rel.to_le_bytes();
    Some([JMP_REL32, r[0], r[1], r[2], r[3]])
}

/// Decodes the target of a `JMP rel32` found at `site`, or `None` if the bytes are no such jump.
pub fn decode_jmp(site: usize, bytes: [u8; SITE_LEN]) -> Option<usize> {
    if bytes[0] != JMP_REL32 {
        return None;
    }
    let rel = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Some(site.wrapping_add(SITE_LEN).wrapping_add_signed(rel as isize))
}

/// A site that does not hold the bytes the engine expects there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteError {
    /// The address of the site.
    pub site: usize,
    /// What the engine expected to find.
    pub expected: [u8; SITE_LEN],
    /// What the site holds.
    pub found: [u8; SITE_LEN],
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "patch site {:#x} holds ", self.site)?;
        write_bytes(f, &self.found)?;
        f.write_str(", expected ")?;
        write_bytes(f, &self.expected)
    }
}

/// Writes bytes as space-separated hex pairs.
fn write_bytes(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Checks that the site at `site` holds `expected`, given the bytes `found` there.
pub fn verify(site: usize, found: [u8; SITE_LEN], expected: [u8; SITE_LEN]) -> Result<(), SiteError> {
    if found == expected { Ok(()) } else { Err(SiteError { site, expected, found }) }
}

/// Returns the bytes a site holds when it sends calls to `target`.
///
/// `None` for the target means the original function: the site holds the NOP and execution
/// falls through into the old body. A target outside `rel32` reach yields `None`; the caller
/// then goes through a thunk near the text.
pub fn bytes_for(site: usize, target: Option<usize>) -> Option<[u8; SITE_LEN]> {
    match target {
        None => Some(NOP5),
        Some(t) => encode_jmp(site, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jmp_round_trips_forward_and_backward() {
        for (site, target) in [(0x40_1000, 0x40_2000), (0x40_2000, 0x40_1000), (0x1000, 0x1005)] {
            let bytes = encode_jmp(site, target).expect("in reach");
            assert_eq!(bytes[0], JMP_REL32);
            assert_eq!(decode_jmp(site, bytes), Some(target));
        }
        assert_eq!(encode_jmp(0x1000, 0x1005), Some([0xe9, 0, 0, 0, 0]));
    }

    #[test]
    fn jmp_out_of_reach_is_refused() {
        assert_eq!(encode_jmp(0x40_0000, 0x7fff_0000_0000), None);
    }

    #[test]
    fn nop_is_no_jump() {
        assert_eq!(decode_jmp(0x1000, NOP5), None);
    }

    #[test]
    fn verify_names_site_and_bytes() {
        let err = verify(0x401234, [0x55, 0x48, 0x89, 0xe5, 0x90], NOP5).unwrap_err();
        let text = alloc::format!("{err}");
        assert_eq!(text, "patch site 0x401234 holds 55 48 89 e5 90, expected 0f 1f 44 00 00");
    }
}
