//! Trusted public keys, in the forms MCUboot images name them.
//!
//! An image names its signer in a KEYHASH TLV (SHA-256 of the public key as DER
//! SubjectPublicKeyInfo, imgtool's default) or a PUBKEY TLV (that DER itself, with
//! `--public-key-format full`). For P-256 that DER is a fixed 26-byte prefix followed by
//! the uncompressed SEC1 point, which is what [`TrustedKey`] keeps.

use core::fmt;

use p256::ecdsa::VerifyingKey;
use sha2::{Digest, Sha256};

/// DER SubjectPublicKeyInfo prefix of a P-256 public key (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 bytes), before the 65-byte uncompressed SEC1 point.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Length of a P-256 public key as DER SubjectPublicKeyInfo.
pub const SPKI_P256_LEN: usize = 91;

/// Length of an uncompressed SEC1 P-256 point.
const SEC1_UNCOMPRESSED_LEN: usize = 65;

/// The bytes given are not a P-256 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKey;

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid P-256 public key")
    }
}

impl core::error::Error for InvalidKey {}

/// A P-256 public key images may be signed with, with its MCUboot key hash.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    spki: [u8; SPKI_P256_LEN],
    hash: [u8; 32],
}

impl TrustedKey {
    /// A key from SEC1 bytes (65-byte uncompressed `04 || X || Y`, or 33-byte compressed).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, InvalidKey> {
        let key = VerifyingKey::from_sec1_bytes(bytes).map_err(|_| InvalidKey)?;
        let point = key.to_sec1_point(false);
        let sec1: &[u8; SEC1_UNCOMPRESSED_LEN] =
            point.as_bytes().try_into().map_err(|_| InvalidKey)?;
        let mut spki = [0u8; SPKI_P256_LEN];
        let (prefix, rest) = spki.split_at_mut(SPKI_P256_PREFIX.len());
        prefix.copy_from_slice(&SPKI_P256_PREFIX);
        rest.copy_from_slice(sec1);
        let hash = Sha256::digest(spki).into();
        Ok(Self { key, spki, hash })
    }

    /// A key from its DER SubjectPublicKeyInfo, as `imgtool getpub -e raw` (or
    /// `-e lang-rust`/`lang-c`) prints it, and as a PUBKEY TLV holds it.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, InvalidKey> {
        let point = der
            .strip_prefix(&SPKI_P256_PREFIX)
            .filter(|point| point.len() == SEC1_UNCOMPRESSED_LEN)
            .ok_or(InvalidKey)?;
        Self::from_sec1_bytes(point)
    }

    /// The key for signature checks.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key as DER SubjectPublicKeyInfo (what a PUBKEY TLV holds).
    pub fn spki_der(&self) -> &[u8; SPKI_P256_LEN] {
        &self.spki
    }

    /// SHA-256 of [`spki_der`](Self::spki_der) (what a KEYHASH TLV holds, and what
    /// `imgtool getpubhash` prints).
    pub fn key_hash(&self) -> &[u8; 32] {
        &self.hash
    }
}
