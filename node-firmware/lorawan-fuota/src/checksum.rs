//! CRC-32 for the records the device keeps in flash and OTP (the node's state and store
//! records, the bootloader's state, the provisioning record): one implementation for the
//! crates that link this one.
//!
//! Bitwise: the inputs are a few dozen bytes, and a table would cost the bootloader and
//! the application 1 KB of flash for nothing.

/// CRC-32 (IEEE 802.3: reflected, polynomial 0xEDB88320, initial and final XOR
/// 0xFFFFFFFF), as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc32_has_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
