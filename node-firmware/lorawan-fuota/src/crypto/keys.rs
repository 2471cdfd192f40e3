//! The AES-128 key type and the single-block AES primitives.
//!
//! [`Key128`] wraps 16 key bytes so that keys never end up in logs by accident: its
//! `Debug` prints `Key128(..redacted..)` and it has no `Display`. The bytes are reachable
//! only through [`Key128::as_bytes`], which makes every place that handles raw key
//! material explicit.

use core::fmt;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;

/// A 128-bit AES key (AppKey, GenAppKey, McRootKey, McKEKey, McKey, session keys, ...).
///
/// `Debug` is redacted. Equality compares all 16 bytes without an early exit.
#[derive(Clone, Copy, Eq)]
pub struct Key128([u8; 16]);

impl Key128 {
    /// Wraps 16 key bytes, in the order they are stored or sent (no reversal).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Key128(bytes)
    }

    /// The 16 key bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A key-schedule instance of AES-128 for this key.
    pub(crate) fn cipher(&self) -> Aes128 {
        Aes128::new(&GenericArray::from(self.0))
    }
}

impl From<[u8; 16]> for Key128 {
    fn from(bytes: [u8; 16]) -> Self {
        Key128(bytes)
    }
}

impl PartialEq for Key128 {
    fn eq(&self, other: &Self) -> bool {
        // Fold every byte difference, so the time taken does not depend on where the
        // keys first differ.
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Key128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key128(..redacted..)")
    }
}

/// `aes128_encrypt(K, B)`: AES-128 encryption (ECB, one block) of `block` under `key`.
pub fn aes128_encrypt(key: &Key128, block: [u8; 16]) -> [u8; 16] {
    let mut block = GenericArray::from(block);
    key.cipher().encrypt_block(&mut block);
    block.into()
}

/// `aes128_decrypt(K, B)`: AES-128 decryption (ECB, one block) of `block` under `key`.
///
/// Only the server side of TS005 needs this (to produce `McKey_encrypted`).
pub fn aes128_decrypt(key: &Key128, block: [u8; 16]) -> [u8; 16] {
    let mut block = GenericArray::from(block);
    key.cipher().decrypt_block(&mut block);
    block.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::format;

    #[test]
    fn debug_is_redacted() {
        let key = Key128::from_bytes([0xAB; 16]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "Key128(..redacted..)");
        assert!(!shown.to_lowercase().contains("ab"));
        assert_eq!(format!("{:?}", Some(key)), "Some(Key128(..redacted..))");
    }

    #[test]
    fn equality_compares_all_bytes() {
        let a = Key128::from_bytes([1; 16]);
        let mut other = [1; 16];
        assert_eq!(a, Key128::from(other));
        other[15] = 2;
        assert_ne!(a, Key128::from(other));
        assert_eq!(a.as_bytes(), &[1; 16]);
    }

    #[test]
    fn fips197_aes128_vector() {
        // FIPS-197 appendix C.1.
        let key = Key128::from_bytes([
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
            0x0e, 0x0f,
        ]);
        let plain = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let cipher = [
            0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
            0xc5, 0x5a,
        ];
        assert_eq!(aes128_encrypt(&key, plain), cipher);
        assert_eq!(aes128_decrypt(&key, cipher), plain);
    }
}
