//! Test helper: builds and signs MCUboot images in Rust (p256 with its std features), the
//! way `imgtool sign` lays them out, so property and negative tests need no Python.
//!
//! Include it with `#[path = "common/image_builder.rs"] mod image_builder;`.
#![allow(dead_code)]

use lorawan_fuota::image::{
    encode_hardware_version, ImageVersion, TrustedKey, IMAGE_MAGIC, TLV_ECDSA_SIG,
    TLV_HARDWARE_VERSION, TLV_KEYHASH, TLV_PUBKEY, TLV_SHA256,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

/// Magic of the protected TLV info header.
pub const PROTECTED_MAGIC: u16 = 0x6908;
/// Magic of the unprotected TLV info header.
pub const UNPROTECTED_MAGIC: u16 = 0x6907;

/// How the image names its signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTlv {
    /// KEYHASH: SHA-256 of the DER public key (imgtool's default).
    Hash,
    /// PUBKEY: the DER public key (`--public-key-format full`).
    Full,
    /// Neither.
    None,
}

/// An image to build.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    /// Header version field.
    pub version: ImageVersion,
    /// `hdr_size` (header plus padding).
    pub header_size: u16,
    /// Header padding byte (imgtool's `--pad-header` uses the erased value 0xff).
    pub header_fill: u8,
    /// Load address field.
    pub load_addr: u32,
    /// Flags field.
    pub flags: u32,
    /// Firmware body.
    pub body: Vec<u8>,
    /// Protected TLVs, in order.
    pub protected: Vec<(u16, Vec<u8>)>,
    /// Key TLV kind.
    pub key_tlv: KeyTlv,
    /// Pad the DER signature with zeros to 72 bytes (imgtool `--pad-sig`).
    pub pad_sig: bool,
}

impl ImageBuilder {
    /// A 0x200-byte-header image of `body`, version 1.2.3+4, KEYHASH, no protected TLVs.
    pub fn new(body: Vec<u8>) -> Self {
        Self {
            version: ImageVersion::new(1, 2, 3, 4),
            header_size: 0x200,
            header_fill: 0xff,
            load_addr: 0,
            flags: 0,
            body,
            protected: Vec::new(),
            key_tlv: KeyTlv::Hash,
            pad_sig: false,
        }
    }

    /// Adds the hardware-version TLV.
    pub fn hardware_version(mut self, hardware_version: u32) -> Self {
        self.protected.push((
            TLV_HARDWARE_VERSION,
            encode_hardware_version(hardware_version).to_vec(),
        ));
        self
    }

    /// The protected TLV area (empty if there are no protected TLVs).
    pub fn protected_area(&self) -> Vec<u8> {
        if self.protected.is_empty() {
            return Vec::new();
        }
        tlv_area(PROTECTED_MAGIC, &self.protected)
    }

    /// Header, body and protected TLVs: what is hashed and signed.
    pub fn hashed_region(&self) -> Vec<u8> {
        let protected = self.protected_area();
        let mut out = Vec::new();
        out.extend_from_slice(&IMAGE_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.load_addr.to_le_bytes());
        out.extend_from_slice(&self.header_size.to_le_bytes());
        out.extend_from_slice(&(protected.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.push(self.version.major);
        out.push(self.version.minor);
        out.extend_from_slice(&self.version.revision.to_le_bytes());
        out.extend_from_slice(&self.version.build.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.resize(usize::from(self.header_size), self.header_fill);
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&protected);
        out
    }

    /// The unprotected TLVs imgtool would write: SHA256, KEYHASH/PUBKEY, ECDSASIG.
    pub fn unprotected_tlvs(&self, key: &SigningKey) -> Vec<(u16, Vec<u8>)> {
        let digest: [u8; 32] = Sha256::digest(self.hashed_region()).into();
        let mut tlvs = vec![(TLV_SHA256, digest.to_vec())];
        let spki = spki_der(key);
        match self.key_tlv {
            KeyTlv::Hash => tlvs.push((TLV_KEYHASH, Sha256::digest(&spki).to_vec())),
            KeyTlv::Full => tlvs.push((TLV_PUBKEY, spki)),
            KeyTlv::None => {}
        }
        let mut sig = der_signature(key, &digest);
        if self.pad_sig {
            sig.resize(72, 0);
        }
        tlvs.push((TLV_ECDSA_SIG, sig));
        tlvs
    }

    /// The signed image.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        assemble(&self.hashed_region(), &self.unprotected_tlvs(key))
    }
}

/// A TLV area: info header (`magic`, `tlv_tot`) then the TLVs.
pub fn tlv_area(magic: u16, tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in tlvs {
        body.extend_from_slice(&kind.to_le_bytes());
        body.extend_from_slice(&(value.len() as u16).to_le_bytes());
        body.extend_from_slice(value);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// An image from its hashed region and unprotected TLVs.
pub fn assemble(hashed: &[u8], unprotected: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = hashed.to_vec();
    out.extend_from_slice(&tlv_area(UNPROTECTED_MAGIC, unprotected));
    out
}

/// DER SubjectPublicKeyInfo of the key's public half.
pub fn spki_der(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("DER public key")
        .as_bytes()
        .to_vec()
}

/// DER ECDSA signature of a SHA-256 digest (deterministic, RFC 6979).
pub fn der_signature(key: &SigningKey, digest: &[u8; 32]) -> Vec<u8> {
    let sig: Signature = key.sign_prehash(digest).expect("sign");
    sig.to_der().as_bytes().to_vec()
}

/// A deterministic test key.
pub fn test_key(seed: u8) -> SigningKey {
    let mut bytes = [seed; 32];
    bytes[0] = 0x01; // well below the group order, never zero
    SigningKey::from_slice(&bytes).expect("valid scalar")
}

/// The trusted key for a signing key.
pub fn trusted(key: &SigningKey) -> TrustedKey {
    let point = key.verifying_key().to_sec1_point(false);
    TrustedKey::from_sec1_bytes(point.as_bytes()).expect("valid key")
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random_body(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 24) as u8
        })
        .collect()
}

/// Offsets of each unprotected TLV of a well-formed image: (kind, header offset, length).
pub fn unprotected_tlv_offsets(
    image: &[u8],
    unprotected_offset: usize,
) -> Vec<(u16, usize, usize)> {
    let tot = u16::from_le_bytes([image[unprotected_offset + 2], image[unprotected_offset + 3]]);
    let end = unprotected_offset + usize::from(tot);
    let mut off = unprotected_offset + 4;
    let mut out = Vec::new();
    while off < end {
        let kind = u16::from_le_bytes([image[off], image[off + 1]]);
        let len = usize::from(u16::from_le_bytes([image[off + 2], image[off + 3]]));
        out.push((kind, off, len));
        off += 4 + len;
    }
    out
}
