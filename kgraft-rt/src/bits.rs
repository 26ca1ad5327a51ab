//! Bitfields of kernel structures, read and written through the bytes that hold them.
//!
//! The generated definition of a kernel structure keeps each run of bitfields as a byte array
//! at its offset; its accessor methods call these functions with the field's first bit (counted
//! from bit 0 of the array's first byte, little-endian as on x86) and its width.

/// Reads `width` bits (at most 64) starting at bit `at` of `bytes`, as an unsigned value.
#[inline]
pub fn get(bytes: &[u8], at: u32, width: u32) -> u64 {
    let mut value = 0u64;
    for i in 0..width.min(64) {
        let bit = at + i;
        let byte = bytes.get((bit / 8) as usize).copied().unwrap_or(0);
        value |= u64::from((byte >> (bit % 8)) & 1) << i;
    }
    value
}

/// Reads `width` bits starting at bit `at` of `bytes`, sign-extended from the field's top bit.
#[inline]
pub fn get_signed(bytes: &[u8], at: u32, width: u32) -> i64 {
    let width = width.clamp(1, 64);
    let shift = 64 - width;
    ((get(bytes, at, width) << shift) as i64) >> shift
}

/// Writes the low `width` bits of `value` at bit `at` of `bytes`, leaving the other bits alone.
#[inline]
pub fn set(bytes: &mut [u8], at: u32, width: u32, value: u64) {
    for i in 0..width.min(64) {
        let bit = at + i;
        if let Some(byte) = bytes.get_mut((bit / 8) as usize) {
            let mask = 1u8 << (bit % 8);
            if (value >> i) & 1 == 1 {
                *byte |= mask;
            } else {
                *byte &= !mask;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_across_bytes() {
        let mut b = [0u8; 4];
        set(&mut b, 5, 9, 0x1a5);
        assert_eq!(get(&b, 5, 9), 0x1a5);
        assert_eq!(b, [0xa0, 0x34, 0, 0]);
        set(&mut b, 0, 5, 0x1f);
        assert_eq!(get(&b, 5, 9), 0x1a5, "a neighbour's write leaves the field alone");
        assert_eq!(get_signed(&b, 5, 9), 0x1a5 - 0x200);
        assert_eq!(get_signed(&b, 0, 5), -1);
    }
}
