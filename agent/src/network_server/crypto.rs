//! LoRaWAN 1.0.x server-side cryptography the `lorawan` crate leaves to the device side:
//! session-key derivation from a join, and the join accept's MIC and encryption.

use aes::cipher::{BlockCipherDecrypt, KeyInit};
use aes::Aes128;
use cmac::{Cmac, Mac};
use lorawan_fuota::crypto::{aes128_encrypt, Key128};

/// NwkSKey and AppSKey of a 1.0.x session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Network session key (MIC).
    pub nwk_s_key: Key128,
    /// Application session key (FRMPayload on FPort > 0).
    pub app_s_key: Key128,
}

/// Derives the session keys: `aes128_encrypt(AppKey, prefix | JoinNonce | NetID |
/// DevNonce | pad16)` with prefix 0x01 (NwkSKey) and 0x02 (AppSKey), fields little-endian
/// as on the air.
pub fn derive_session_keys(
    app_key: &Key128,
    join_nonce: u32,
    net_id: u32,
    dev_nonce: u16,
) -> SessionKeys {
    let block = |prefix: u8| {
        let mut block = [0u8; 16];
        block[0] = prefix;
        block[1..4].copy_from_slice(&join_nonce.to_le_bytes()[..3]);
        block[4..7].copy_from_slice(&net_id.to_le_bytes()[..3]);
        block[7..9].copy_from_slice(&dev_nonce.to_le_bytes());
        block
    };
    SessionKeys {
        nwk_s_key: Key128::from_bytes(aes128_encrypt(app_key, block(0x01))),
        app_s_key: Key128::from_bytes(aes128_encrypt(app_key, block(0x02))),
    }
}

/// AES-CMAC of `data` truncated to the 4-byte LoRaWAN MIC.
pub fn cmac_mic(key: &Key128, data: &[u8]) -> [u8; 4] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(&(*key.as_bytes()).into());
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    [tag[0], tag[1], tag[2], tag[3]]
}

/// The fields of a join accept before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinAcceptFields {
    /// JoinNonce (AppNonce in 1.0.2), 24 bits.
    pub join_nonce: u32,
    /// NetID, 24 bits.
    pub net_id: u32,
    /// The device's new address.
    pub dev_addr: u32,
    /// RX1DROffset (bits 6:4) and RX2DataRate (bits 3:0).
    pub dl_settings: u8,
    /// RX1 delay in seconds (0 means 1).
    pub rx_delay: u8,
    /// The 16-byte CFList, if any.
    pub cf_list: Option<[u8; 16]>,
}

/// Builds the PHYPayload of a join accept: MHDR, then `aes128_decrypt(AppKey, ...)` of
/// the fields and their MIC, as LoRaWAN 1.0.x specifies (the device encrypts to read it).
pub fn build_join_accept(app_key: &Key128, fields: &JoinAcceptFields) -> Vec<u8> {
    let mut plain = Vec::with_capacity(33);
    plain.push(0x20); // MHDR: JoinAccept, LoRaWAN R1
    plain.extend_from_slice(&fields.join_nonce.to_le_bytes()[..3]);
    plain.extend_from_slice(&fields.net_id.to_le_bytes()[..3]);
    plain.extend_from_slice(&fields.dev_addr.to_le_bytes());
    plain.push(fields.dl_settings);
    plain.push(fields.rx_delay);
    if let Some(cf_list) = fields.cf_list {
        plain.extend_from_slice(&cf_list);
    }
    let mic = cmac_mic(app_key, &plain);
    plain.extend_from_slice(&mic);

    let cipher = Aes128::new(&(*app_key.as_bytes()).into());
    let mut out = vec![plain[0]];
    // 16 or 32 bytes after the MHDR: whole blocks.
    for chunk in plain[1..].chunks(16) {
        let mut block = [0u8; 16];
        block[..chunk.len()].copy_from_slice(chunk);
        let mut block = block.into();
        cipher.decrypt_block(&mut block);
        out.extend_from_slice(&block);
    }
    out
}
