//! Firmware on the gateway: making signed images ([`signing`]), the keys images must be
//! signed with ([`trust`]), and the content-addressed image cache ([`cache`]) that
//! campaigns read from.
//!
//! Two kinds of image exist (the kind belongs to the device profile): MCUboot images,
//! which our bootloader verifies on the device and the agent verifies before caching; and
//! opaque images for devices with another bootloader, sent as they are and verified by
//! the agent with a detached P-256 signature over their SHA-256.

pub mod cache;
pub mod signing;
pub mod trust;

pub use cache::{CacheError, FirmwareCache, ImportOutcome, LoadedImage, OpaqueImage};
pub use signing::{ImageSigner, ImageSpec, KeyIdentification, SignImageError, SigningKeyError};
pub use trust::{TrustStore, TrustStoreEntry, TrustStoreError};

/// Lower-case hexadecimal, the way digests and key hashes are shown and stored.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}
