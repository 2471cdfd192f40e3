//! TS005 multicast key hierarchy (applayer.md §2.4).
//!
//! ```text
//! GenAppKey (1.0.x) ──AES(·, 00|pad)──┐
//! AppKey    (1.1)   ──AES(·, 20|pad)──┴─> McRootKey ──AES(·, 00|pad)──> McKEKey
//!
//! server:  McKey_encrypted = AES-DECRYPT(McKEKey, McKey)      (sent in McGroupSetupReq)
//! device:  McKey           = AES-ENCRYPT(McKEKey, McKey_encrypted)
//!
//! McAppSKey = AES(McKey, 01 | McAddr LE | pad)
//! McNwkSKey = AES(McKey, 02 | McAddr LE | pad)
//! ```
//!
//! Function names follow the spec's key names. The McKey itself is chosen by the server
//! (random, unique per group); this module never generates keys.

use super::keys::{aes128_decrypt, aes128_encrypt, Key128};

/// The LoRaWAN MAC version of a device, which selects its McRootKey derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LorawanVersion {
    /// LoRaWAN 1.0.x (1.0.0 to 1.0.4): McRootKey derives from the separately provisioned
    /// GenAppKey (not the 1.0.x join AppKey) with prefix 0x00.
    V1_0,
    /// LoRaWAN 1.1: McRootKey derives from the AppKey with prefix 0x20.
    V1_1,
}

/// One block `prefix | pad16`.
fn prefix_block(prefix: u8) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[0] = prefix;
    block
}

/// One block `prefix | McAddr (u32 LE) | pad16`.
fn mc_addr_block(prefix: u8, mc_addr: u32) -> [u8; 16] {
    let mut block = prefix_block(prefix);
    block[1..5].copy_from_slice(&mc_addr.to_le_bytes());
    block
}

/// McRootKey of a LoRaWAN 1.0.x device: `aes128_encrypt(GenAppKey, 0x00 | pad16)`.
pub fn mc_root_key_from_gen_app_key(gen_app_key: &Key128) -> Key128 {
    Key128::from_bytes(aes128_encrypt(gen_app_key, prefix_block(0x00)))
}

/// McRootKey of a LoRaWAN 1.1 device: `aes128_encrypt(AppKey, 0x20 | pad16)`.
pub fn mc_root_key_from_app_key(app_key: &Key128) -> Key128 {
    Key128::from_bytes(aes128_encrypt(app_key, prefix_block(0x20)))
}

/// McRootKey for a device of the given MAC version.
///
/// `root_key` is the GenAppKey for [`LorawanVersion::V1_0`] and the AppKey for
/// [`LorawanVersion::V1_1`]. The two derivations differ (prefix 0x00 vs 0x20), so the
/// version must match what the device implements.
pub fn mc_root_key(version: LorawanVersion, root_key: &Key128) -> Key128 {
    match version {
        LorawanVersion::V1_0 => mc_root_key_from_gen_app_key(root_key),
        LorawanVersion::V1_1 => mc_root_key_from_app_key(root_key),
    }
}

/// McKEKey (multicast key-encryption key): `aes128_encrypt(McRootKey, 0x00 | pad16)`.
pub fn mc_ke_key(mc_root_key: &Key128) -> Key128 {
    Key128::from_bytes(aes128_encrypt(mc_root_key, prefix_block(0x00)))
}

/// Server side: the 16 bytes sent as `McKey_encrypted` in McGroupSetupReq,
/// `aes128_DECRYPT(McKEKey, McKey)`.
///
/// The spec deliberately uses AES *decryption* here so that the device recovers the key
/// with the encrypt primitive only ([`decrypt_mc_key_from_wire`]).
pub fn encrypt_mc_key_for_wire(mc_ke_key: &Key128, mc_key: &Key128) -> [u8; 16] {
    aes128_decrypt(mc_ke_key, *mc_key.as_bytes())
}

/// Device side: McKey recovered from the `McKey_encrypted` bytes of McGroupSetupReq,
/// `aes128_ENCRYPT(McKEKey, McKey_encrypted)`. Inverse of [`encrypt_mc_key_for_wire`].
pub fn decrypt_mc_key_from_wire(mc_ke_key: &Key128, mc_key_encrypted: &[u8; 16]) -> Key128 {
    Key128::from_bytes(aes128_encrypt(mc_ke_key, *mc_key_encrypted))
}

/// McAppSKey of a multicast group: `aes128_encrypt(McKey, 0x01 | McAddr | pad16)`.
///
/// `mc_addr` is the group's McAddr as a number (e.g. `0x26011234`); it is written
/// little-endian into the block, the same byte order it has on air.
pub fn mc_app_s_key(mc_key: &Key128, mc_addr: u32) -> Key128 {
    Key128::from_bytes(aes128_encrypt(mc_key, mc_addr_block(0x01, mc_addr)))
}

/// McNwkSKey of a multicast group: `aes128_encrypt(McKey, 0x02 | McAddr | pad16)`.
///
/// `mc_addr` is written little-endian, as in [`mc_app_s_key`].
pub fn mc_nwk_s_key(mc_key: &Key128, mc_addr: u32) -> Key128 {
    Key128::from_bytes(aes128_encrypt(mc_key, mc_addr_block(0x02, mc_addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mc_addr_is_little_endian_in_the_block() {
        assert_eq!(
            mc_addr_block(0x01, 0x0102_0304),
            [0x01, 0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn wire_encryption_round_trips() {
        let kek = Key128::from_bytes([7; 16]);
        let mc_key = Key128::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let wire = encrypt_mc_key_for_wire(&kek, &mc_key);
        assert_ne!(&wire, mc_key.as_bytes());
        assert_eq!(decrypt_mc_key_from_wire(&kek, &wire), mc_key);
    }

    #[test]
    fn version_selects_the_derivation() {
        let root = Key128::from_bytes([9; 16]);
        assert_eq!(
            mc_root_key(LorawanVersion::V1_0, &root),
            mc_root_key_from_gen_app_key(&root)
        );
        assert_eq!(
            mc_root_key(LorawanVersion::V1_1, &root),
            mc_root_key_from_app_key(&root)
        );
        assert_ne!(
            mc_root_key(LorawanVersion::V1_0, &root),
            mc_root_key(LorawanVersion::V1_1, &root)
        );
    }
}
