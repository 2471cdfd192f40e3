//! A small MCUboot image signer for the tests (layout as `imgtool sign` writes it:
//! 32-byte header padded to 0x200, body, protected TLVs with the hardware version,
//! unprotected SHA256 / KEYHASH / ECDSA-P256 TLVs).

use lorawan_fuota::image::{
    encode_hardware_version, ImageVersion, TrustedKey, IMAGE_MAGIC, TLV_ECDSA_SIG,
    TLV_HARDWARE_VERSION, TLV_KEYHASH, TLV_SHA256,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

const HEADER_SIZE: usize = 0x200;

/// The project's test signing key.
pub fn signing_key() -> SigningKey {
    key(0x42)
}

/// A key nobody trusts.
pub fn untrusted_key() -> SigningKey {
    key(0x17)
}

fn key(seed: u8) -> SigningKey {
    let mut bytes = [seed; 32];
    bytes[0] = 0x01;
    SigningKey::from_slice(&bytes).expect("valid scalar")
}

/// The trusted key of a signing key.
pub fn trusted(key: &SigningKey) -> TrustedKey {
    let point = key.verifying_key().to_sec1_point(false);
    TrustedKey::from_sec1_bytes(point.as_bytes()).expect("valid key")
}

/// Deterministic firmware body.
pub fn body(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // Runs of 0xFF, as real images have, to exercise "erased-looking" data.
            if (i / 64) % 7 == 3 {
                0xFF
            } else {
                (x >> 24) as u8
            }
        })
        .collect()
}

fn tlv_area(magic: u16, tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut entries = Vec::new();
    for (kind, value) in tlvs {
        entries.extend_from_slice(&kind.to_le_bytes());
        entries.extend_from_slice(&(value.len() as u16).to_le_bytes());
        entries.extend_from_slice(value);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&((entries.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(&entries);
    out
}

/// A signed image of `body`, version `version`, for `hardware`.
pub fn signed(body: &[u8], version: ImageVersion, hardware: u32, key: &SigningKey) -> Vec<u8> {
    let protected = tlv_area(
        0x6908,
        &[(
            TLV_HARDWARE_VERSION,
            encode_hardware_version(hardware).to_vec(),
        )],
    );
    let mut image = Vec::new();
    image.extend_from_slice(&IMAGE_MAGIC.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes()); // load address
    image.extend_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
    image.extend_from_slice(&(protected.len() as u16).to_le_bytes());
    image.extend_from_slice(&(body.len() as u32).to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes()); // flags
    image.push(version.major);
    image.push(version.minor);
    image.extend_from_slice(&version.revision.to_le_bytes());
    image.extend_from_slice(&version.build.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes());
    image.resize(HEADER_SIZE, 0xFF);
    image.extend_from_slice(body);
    image.extend_from_slice(&protected);
    let digest: [u8; 32] = Sha256::digest(&image).into();
    let spki = key
        .verifying_key()
        .to_public_key_der()
        .expect("DER key")
        .as_bytes()
        .to_vec();
    let signature: Signature = key.sign_prehash(&digest).expect("signature");
    let unprotected = tlv_area(
        0x6907,
        &[
            (TLV_SHA256, digest.to_vec()),
            (TLV_KEYHASH, Sha256::digest(&spki).to_vec()),
            (TLV_ECDSA_SIG, signature.to_der().as_bytes().to_vec()),
        ],
    );
    image.extend_from_slice(&unprotected);
    image
}

/// Length of the hashed region (header, body, protected TLVs) of a signed image.
pub fn hashed_len(image: &[u8]) -> usize {
    let hdr_size = u16::from_le_bytes([image[8], image[9]]) as usize;
    let protected = u16::from_le_bytes([image[10], image[11]]) as usize;
    let body = u32::from_le_bytes([image[12], image[13], image[14], image[15]]) as usize;
    hdr_size + body + protected
}
